//! The audit trail: one JSON line per change of leadership and per event an operator must
//! be able to reconstruct later (who, when, which epochs, which journal positions, why).
//! Each line goes to the lease's backend (`<lock>.audit` on the shared volume, or keys under
//! `<key>/audit/` in etcd) and to the node's own copy (`<root>/.stargate/audit.log`), so
//! that neither a lost backend nor a lost node loses the history. git-stargate(1) lists
//! the events and fields.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lease::Lock;
use super::record::{Error, io};

/// A node's own copy, in its state directory.
pub fn local_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

/// One line of the audit log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    pub time_ms: u64,
    /// The node the event happened on.
    pub node: String,
    /// Who caused it: the operator who ran the command, or `agent`.
    #[serde(default)]
    pub user: String,
    /// `elected`, `step-down`, `fenced`, `released`, `promote-requested`, `draining`,
    /// `drained`, `demoted`, `promoted`, `forced-promotion`, `caught-up`,
    /// `catch-up-shortfall`, `lost-commits`, `recovered`, `restored`.
    pub event: String,
    /// The epoch after the event.
    pub epoch: u64,
    pub previous_epoch: Option<u64>,
    pub previous_leader: Option<String>,
    /// Journal positions (last sequence number) per repository, where they matter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub positions: BTreeMap<String, u64>,
    pub reason: String,
}

impl Event {
    pub fn new(node: &str, event: &str, epoch: u64, reason: impl Into<String>) -> Event {
        Event {
            time_ms: crate::clock::now_ms(),
            node: node.to_owned(),
            user: "agent".into(),
            event: event.to_owned(),
            epoch,
            reason: reason.into(),
            ..Event::default()
        }
    }
}

/// Append `event` to the shared log of `lock` and, when given, to the node's own copy in
/// `state_dir`. Both are tried; the first failure is returned.
pub fn append(lock: &Lock, state_dir: Option<&Path>, event: &Event) -> Result<(), Error> {
    let line = crate::format::AUDIT
        .to_json(event)
        .map_err(|e| Error::EtcdDamaged { what: "an audit event".into(), why: e.to_string() })?;
    let first = lock.append_audit(&line, &format!("{:020}-{}", event.time_ms, event.node));
    let second = match state_dir {
        Some(dir) => {
            let local = local_path(dir);
            crate::files::append_line(&local, &line).map_err(io(&local))
        }
        None => Ok(()),
    };
    first.and(second)
}

/// Every event of the shared log, oldest first. A line in a newer format than this build
/// reads is left out, with a warning naming it.
pub fn read(lock: &Lock) -> Vec<Event> {
    let lines = lock.read_audit();
    (lines.iter().enumerate())
        .filter_map(|(i, l)| match crate::format::AUDIT.from_json(format_args!("audit log line {}", i + 1), l) {
            Ok(event) => Some(event),
            Err(crate::format::JsonError::Unknown(e)) => {
                log::warn!("{e}");
                None
            }
            Err(crate::format::JsonError::Json(_)) => None,
        })
        .collect()
}

/// The last promotion (planned or forced), if any.
pub fn last_promotion(events: &[Event]) -> Option<&Event> {
    events.iter().rev().find(|e| e.event == "promoted" || e.event == "forced-promotion")
}

/// Who runs this command: the user behind `sudo`, else the login name, else the uid.
pub fn user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        // SAFETY: getuid has no preconditions.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}
