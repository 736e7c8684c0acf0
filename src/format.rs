//! Versions of what nodes persist and exchange, and how a reader treats one it does not know
//! (docs/ARCHITECTURE.md, Formats and versions). Every format has a number; this module holds
//! the numbers this build reads and writes, the error a reader gives for a newer one, and the
//! JSON helpers that put the number in a record (`"format": N`) and check it before anything
//! else in the record is believed.
//!
//! The rule, in short: a field added that an older reader may ignore (serde skips unknown
//! fields; the newer reader defaults it when absent) changes no number; a change an older
//! reader would misread raises the number; a reader meeting a number above its own refuses,
//! naming what it read and both numbers, and the caller fails closed. A record without a
//! number is format 1: what 0.1.0 wrote.

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One format: its name in messages, the highest version this build reads, and the version
/// it writes. A release that raises `reads` keeps `writes` at the version before, so that a
/// node of the release before reads what it writes; the next release raises `writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub name: &'static str,
    pub reads: u64,
    pub writes: u64,
}

/// `<root>/.stargate/node.json` (`lead::node::State`). Format 1 gained `version` (the build
/// that wrote it) after 0.1.0: an addition, so still format 1.
pub const NODE_STATE: Format = Format { name: "node state", reads: 1, writes: 1 };
/// The leader record (`<lock>.leader`, the etcd key and `<key>/last`).
pub const LEADER_RECORD: Format = Format { name: "leader record", reads: 1, writes: 1 };
/// The leading mark (`<lock>.leading`, `<key>/leading`).
pub const LEADING: Format = Format { name: "leading mark", reads: 1, writes: 1 };
/// A handoff in progress (`<lock>.handoff`, `<key>/handoff`).
pub const HANDOFF: Format = Format { name: "handoff record", reads: 1, writes: 1 };
/// One line of the audit log (shared and local).
pub const AUDIT: Format = Format { name: "audit event", reads: 1, writes: 1 };
/// The highest epoch a node has seen (`<root>/.stargate/epoch.json`).
pub const EPOCH_SEEN: Format = Format { name: "highest epoch seen", reads: 1, writes: 1 };
/// What a quorum-mode leader heard (`<root>/.stargate/quorum.json`).
pub const HEARD: Format = Format { name: "quorum heard", reads: 1, writes: 1 };
/// A replica's published figures (`<root>/.stargate/replication.json`).
pub const REPLICATION: Format = Format { name: "replication figures", reads: 1, writes: 1 };
/// A staged position, as `/staged` answers it.
pub const STAGED: Format = Format { name: "staged position", reads: 1, writes: 1 };
/// A journal entry (a commit message on `refs/stargate/journal`): a `format N` line, none
/// in format 1.
pub const JOURNAL_ENTRY: Format = Format { name: "journal entry", reads: 1, writes: 1 };
/// The change summary as `/changes` answers it: format 1 is headed `stargate-changes `, a
/// later one `stargate-changes/<N> ` (an older reader then finds no summary and polls every
/// repository, as it does without one).
pub const CHANGES: Format = Format { name: "change summary", reads: 1, writes: 1 };

/// Every format this build reads and writes.
pub const ALL: [Format; 11] = [
    NODE_STATE,
    LEADER_RECORD,
    LEADING,
    HANDOFF,
    AUDIT,
    EPOCH_SEEN,
    HEARD,
    REPLICATION,
    STAGED,
    JOURNAL_ENTRY,
    CHANGES,
];

/// A record, message or answer in a format newer than this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what}: {format} format {found}, and this build ({build}) reads {format} format {known} at most; \
     a newer Stargate wrote it, so it is not used: upgrade this node",
    build = crate::version::VERSION
)]
pub struct Unknown {
    /// What was read: a path, a key, a peer's answer, a journal entry.
    pub what: String,
    pub format: &'static str,
    pub found: u64,
    pub known: u64,
}

/// Why a JSON record was not read.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error(transparent)]
    Unknown(#[from] Unknown),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl Format {
    /// `Ok` when this build reads version `found` of this format.
    pub fn check(self, what: impl Display, found: u64) -> Result<(), Unknown> {
        if found <= self.reads {
            return Ok(());
        }
        Err(Unknown { what: what.to_string(), format: self.name, found, known: self.reads })
    }

    /// A JSON record of this format read from `bytes`: its `format` checked first (absent:
    /// 1), so that a newer record is refused as such rather than misread or called damaged.
    pub fn from_json<T: DeserializeOwned>(self, what: impl Display, bytes: &[u8]) -> Result<T, JsonError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        if let Some(found) = value.get("format") {
            let found: Result<u64, serde_json::Error> =
                found.as_u64().ok_or_else(|| serde::de::Error::custom("\"format\" is not a number"));
            self.check(what, found?)?;
        }
        Ok(serde_json::from_value(value)?)
    }

    /// `value` as a JSON record of this format, `"format"` first.
    pub fn to_json(self, value: &impl Serialize) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = format!("{{\"format\":{}", self.writes).into_bytes();
        let body = serde_json::to_vec(value)?;
        match body.strip_prefix(b"{") {
            Some(b"}") => out.push(b'}'),
            Some(rest) => {
                out.push(b',');
                out.extend_from_slice(rest);
            }
            None => return Err(serde::ser::Error::custom("a record is a JSON object")),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        epoch: u64,
        #[serde(default)]
        added: Option<String>,
    }

    const F: Format = Format { name: "test record", reads: 2, writes: 2 };

    /// Format first; the record round-trips; no number is format 1; a number at or below the
    /// reader's is read; above it, refused with both numbers and what was read.
    #[test]
    fn a_record_carries_its_format_and_a_newer_one_is_refused() {
        let bytes = F.to_json(&R { epoch: 7, added: None }).unwrap();
        assert!(bytes.starts_with(b"{\"format\":2,\"epoch\":7"), "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(F.from_json::<R>("x", &bytes).unwrap(), R { epoch: 7, added: None });
        assert_eq!(F.from_json::<R>("x", b"{\"epoch\":3}").unwrap().epoch, 3);
        // An older reader meets a field added since: ignored (the additive rule).
        assert_eq!(F.from_json::<R>("x", b"{\"format\":1,\"epoch\":3,\"new\":true}").unwrap().epoch, 3);
        let err = F.from_json::<R>("/l/stargate.lock.leader", b"{\"format\":3,\"epoch\":\"three\"}").unwrap_err();
        let JsonError::Unknown(u) = &err else { panic!("{err}") };
        assert_eq!((u.found, u.known, u.format), (3, 2, "test record"));
        let text = err.to_string();
        assert!(text.starts_with("/l/stargate.lock.leader: test record format 3, and this build ("), "{text}");
        assert!(text.contains("reads test record format 2 at most"), "{text}");
        assert!(matches!(F.from_json::<R>("x", b"{\"format\":\"2\",\"epoch\":1}"), Err(JsonError::Json(_))));
        assert!(matches!(F.from_json::<R>("x", b"nope"), Err(JsonError::Json(_))));
        #[derive(serde::Serialize)]
        struct Empty {}
        assert_eq!(F.to_json(&Empty {}).unwrap(), b"{\"format\":2}");
    }

    /// The writer's half of the rule: this build writes what it reads, or the version before
    /// (the release that raises a format), never more, so that the release before reads
    /// everything this one writes.
    #[test]
    fn every_format_is_written_as_the_release_before_reads_it() {
        for f in ALL {
            assert!(f.writes == f.reads || f.writes + 1 == f.reads, "{f:?}");
            assert!(f.writes >= 1, "{f:?}");
        }
        let names: std::collections::HashSet<_> = ALL.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), ALL.len(), "each format named once");
    }
}
