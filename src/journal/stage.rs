//! Quorum mode (stargate(7), Quorum replication): a write is acknowledged only once a
//! quorum of nodes, the leader counted, holds it durably.
//!
//! The leader's hook, at `prepared` (refs locked, the pushed objects in the repository, the
//! prepare entry journaled), anchors each new value as `refs/stargate/staging/<seq>` so that
//! peers may fetch it, hints the peers (UDP `stargate-stage <repo>`), and asks their health
//! responders (`/staged`) until enough of them hold the entry; only then does git commit.
//! A peer stages with a sync: every prepared write it walks past without its outcome has
//! its values fetched and anchored under `refs/stargate/local/staged/<seq>` before the
//! peer's journal position moves past it, so a node holds every write at or before its
//! position, applied or staged. It refuses writes of an epoch other than the leader
//! record's, so a deposed leader gathers no quorum. A peer's anchors go when the outcome
//! comes; a leader's at `committed` or `aborted`.

use std::path::Path;
use std::time::{Duration, Instant};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::journal::{self, Update};
use crate::lead::node::Quorum;

/// The leader's anchors: `<prefix><seq>`.
pub const STAGING: &str = "refs/stargate/staging/";
/// A peer's anchors: `<prefix>journal` and `<prefix><seq>`.
pub const STAGED: &str = "refs/stargate/local/staged/";
/// The datagram that tells a peer to stage: this prefix, then the repository name.
pub const HINT: &str = "stargate-stage ";

/// Where a node is, for `/staged`: its journal position. Every write at or before it is
/// held here, applied or staged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub journal: Option<String>,
    pub journal_seq: Option<u64>,
    /// The epoch of the leader that wrote the journal's newest entry.
    #[serde(default)]
    pub journal_epoch: Option<u64>,
}

impl Position {
    /// How far this position reaches, as `(epoch, seq)` of its newest entry. A later epoch
    /// is further whatever the sequence numbers: its leader settled everything a quorum had
    /// acknowledged before it led.
    pub fn reach(&self) -> (u64, u64) {
        (self.journal_epoch.unwrap_or(0), self.journal_seq.unwrap_or(0))
    }
}

/// A peer's answer to `/staged`: a newer format is refused, and the peer not counted.
pub fn read_position(peer: &str, body: &str) -> Result<Position, crate::format::JsonError> {
    crate::format::STAGED.from_json(format_args!("node {peer}'s /staged answer"), body.as_bytes())
}

/// This node's position in repository `git_dir`, for `/staged`.
pub fn position(git_dir: &Path) -> Position {
    let Ok(repo) = journal::open(git_dir) else { return Position::default() };
    let tip = journal::tip(&repo).ok().flatten();
    let epoch = |id: ObjectId| journal::read(&repo, id).ok().map(|(e, _)| e.epoch);
    Position {
        journal: tip.map(|(id, _)| id.to_string()),
        journal_seq: tip.map(|(_, s)| s),
        journal_epoch: tip.and_then(|(id, _)| epoch(id)),
    }
}

/// Leader: anchor the new values of `updates` (numbered from `first`) for the peers.
pub fn anchor(repo: &crate::store::Store, first: u64, updates: &[Update]) -> std::io::Result<()> {
    for (i, u) in updates.iter().enumerate().filter(|(_, u)| !u.new.is_null()) {
        repo.swap_loose(&format!("{STAGING}{}", first + i as u64), crate::store::Expect::Any, u.new)
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Leader: drop the anchors of sequence numbers `seqs`.
pub fn unanchor(git_dir: &Path, seqs: impl IntoIterator<Item = u64>) {
    for seq in seqs {
        let _ = std::fs::remove_file(git_dir.join(format!("{STAGING}{seq}")));
    }
}

/// Whether entry `want` is `at` or behind it on the journal chain of `repo` (the leader's,
/// which holds every entry), looking back at most `steps` entries.
fn holds(repo: &crate::store::Store, at: &str, want: ObjectId, want_seq: u64) -> bool {
    let Ok(mut id) = ObjectId::from_hex(at.as_bytes()) else { return false };
    for _ in 0..100_000 {
        if id == want {
            return true;
        }
        let Ok((entry, parent)) = journal::read(repo, id) else { return false };
        if entry.seq < want_seq {
            return false;
        }
        match parent.or(entry.previous) {
            Some(p) => id = p,
            None => return false,
        }
    }
    false
}

/// The quorum was not reached in time: how many nodes held the entry, and why each peer
/// that did not.
#[derive(Debug, thiserror::Error)]
#[error(
    "no quorum ({count} of {needed} needed staged within {timeout_ms} ms; {}): not acknowledged, though a peer that \
     staged it may still carry it past a failover",
    listed(.missing)
)]
pub struct NoQuorum {
    pub count: usize,
    pub needed: usize,
    pub timeout_ms: u64,
    /// Each peer that did not acknowledge, by node id, and why.
    pub missing: Vec<(String, Unstaged)>,
}

/// Why a peer has not acknowledged an entry.
#[derive(Debug, thiserror::Error)]
pub enum Unstaged {
    #[error("no answer")]
    NoAnswer,
    /// Its journal position does not hold the entry.
    #[error("at seq {0}")]
    At(u64),
    #[error("not a /staged answer")]
    NotPosition(#[source] serde_json::Error),
    /// A newer format than this build reads: not counted (docs/ARCHITECTURE.md, Formats and
    /// versions).
    #[error("{0}")]
    Format(crate::format::Unknown),
    /// Its health responder answered another status: the code and the first line.
    #[error("HTTP {code} {line}")]
    Status { code: u16, line: String },
    #[error(transparent)]
    Http(#[from] crate::wire::http::Error),
}

fn listed(missing: &[(String, Unstaged)]) -> String {
    missing.iter().map(|(node, why)| format!("{node}: {why}")).collect::<Vec<_>>().join(", ")
}

/// Leader, at `prepared`: hint the peers and wait until `plan.needed` nodes (this one
/// counted) hold journal entry `entry` of repository `name`. The reason for each peer that
/// does not, when the quorum is not reached in time.
pub fn wait_for_quorum(
    repo: &crate::store::Store,
    name: &str,
    entry: ObjectId,
    seq: u64,
    plan: &Quorum,
) -> Result<usize, NoQuorum> {
    let peers: Vec<String> = plan.peers.iter().map(|p| p.health.clone()).collect();
    super::signal::send_message(&peers, &format!("{HINT}{name}\n"));
    let deadline = Instant::now() + Duration::from_millis(plan.timeout_ms);
    let mut acked = vec![false; plan.peers.len()];
    let mut why: Vec<Unstaged> = plan.peers.iter().map(|_| Unstaged::NoAnswer).collect();
    let mut hinted = Instant::now();
    let path = format!("/staged?repo={name}");
    loop {
        for (i, peer) in plan.peers.iter().enumerate() {
            if acked[i] {
                continue;
            }
            let timeout = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(500));
            if timeout.is_zero() {
                break;
            }
            match crate::wire::http::get(&peer.health, &path, Instant::now() + timeout, timeout) {
                Ok((200, body)) => match read_position(&peer.node, &body) {
                    Ok(p) => {
                        acked[i] = p.journal.as_deref().is_some_and(|at| holds(repo, at, entry, seq));
                        why[i] = Unstaged::At(p.journal_seq.unwrap_or(0));
                    }
                    Err(crate::format::JsonError::Json(e)) => why[i] = Unstaged::NotPosition(e),
                    Err(crate::format::JsonError::Unknown(e)) => why[i] = Unstaged::Format(e),
                },
                Ok((code, body)) => {
                    why[i] = Unstaged::Status { code, line: body.lines().next().unwrap_or("").to_owned() };
                }
                Err(e) => why[i] = Unstaged::Http(e),
            }
        }
        let count = 1 + acked.iter().filter(|a| **a).count();
        if count >= plan.needed {
            return Ok(count);
        }
        if Instant::now() >= deadline {
            let missing = (plan.peers.iter().zip(why).zip(&acked))
                .filter(|(_, a)| !**a)
                .map(|((p, w), _)| (p.node.clone(), w))
                .collect();
            return Err(NoQuorum { count, needed: plan.needed, timeout_ms: plan.timeout_ms, missing });
        }
        // A hint may be lost: say it again now and then.
        if hinted.elapsed() >= Duration::from_millis(200) {
            super::signal::send_message(&peers, &format!("{HINT}{name}\n"));
            hinted = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal a pusher reads when the quorum is not reached: each peer missing, and why.
    #[test]
    fn no_quorum_names_each_missing_peer() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let not_json = serde_json::from_str::<Position>("nope").unwrap_err();
        let e = NoQuorum {
            count: 1,
            needed: 3,
            timeout_ms: 500,
            missing: vec![
                ("b".into(), Unstaged::Http(crate::wire::http::Error::Refused(refused))),
                ("c".into(), Unstaged::Status { code: 503, line: "not leader: this node is passive".into() }),
                ("d".into(), Unstaged::At(6)),
                ("e".into(), Unstaged::NotPosition(not_json)),
                ("f".into(), Unstaged::NoAnswer),
            ],
        };
        assert_eq!(
            e.to_string(),
            "no quorum (1 of 3 needed staged within 500 ms; b: connection refused, c: HTTP 503 not leader: this node is \
             passive, d: at seq 6, e: not a /staged answer, f: no answer): not acknowledged, though a peer that staged \
             it may still carry it past a failover"
        );
    }
}
