//! Quorum mode: which peers the leader heard answer as followers of its epoch, the last
//! time it asked (stargate(7), Readiness). While it leads, the agent asks every peer's
//! `/readyz` each lease interval and writes what it heard to `<state dir>/quorum.json`;
//! `/readyz` and `git stargate status` read it. A leader is ready only when a write sent
//! now would find a quorum to stage it: otherwise a client that waits for readiness and
//! then writes would be refused after `stargate.quorum.timeout`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lead::node::{PASSIVE, State};

/// What the leader heard from its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    /// The epoch it led when it asked.
    pub epoch: u64,
    /// When it had every answer, on the clock since boot (`clock::boot_ms`).
    pub boot_ms: u64,
    /// The peers whose word counts: reachable, their agent alive, passive, following `epoch`.
    pub counting: Vec<String>,
    /// The others, each with why it does not count.
    pub missing: Vec<(String, String)>,
}

impl Heard {
    /// The nodes whose word counts, the leader included.
    pub fn count(&self) -> usize {
        1 + self.counting.len()
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("quorum.json")
}

pub fn write(state_dir: &Path, heard: &Heard) -> std::io::Result<()> {
    let bytes = crate::format::HEARD.to_json(heard).map_err(std::io::Error::other)?;
    crate::files::write_atomic(&path(state_dir), &bytes, 0o644, false)
}

/// What the agent last wrote; `None` when missing or unusable (the leader is then not
/// ready in quorum mode). Read as a regular file only, at most 1 MiB.
pub fn read(state_dir: &Path) -> Option<Heard> {
    let path = path(state_dir);
    let bytes = crate::files::read_regular(&path, 1 << 20).ok()?;
    crate::format::HEARD.from_json(path.display(), &bytes).inspect_err(|e| log::warn!("{e}")).ok()
}

/// The second line of a passive node's `/readyz` answer: the leader it follows.
pub fn follows_line(node: &str, epoch: u64) -> String {
    format!("leader {node}, epoch {epoch}")
}

/// What a peer's `/readyz` answer (`code` and body) says of its part in a quorum of leader
/// `me` at `epoch`: `None` when its word counts, why not otherwise. It counts when it
/// refuses writes only for being passive (its agent alive) and follows `me` at `epoch`:
/// then it stages what `me` writes.
pub fn judge(code: u16, body: &str, me: &str, epoch: u64) -> Option<String> {
    let mut lines = body.lines().map(|l| crate::wire::sanitize::text(l.trim()));
    let (first, second) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
    match code {
        200 => Some(format!("leads itself ({first})")),
        503 => match first.strip_prefix("not leader: ") {
            Some(PASSIVE) if second == follows_line(me, epoch) => None,
            Some(PASSIVE) if second.is_empty() => Some("follows no leader yet".into()),
            Some(PASSIVE) => Some(format!("follows {}", second.trim_start_matches("leader "))),
            Some(why) => Some(why.to_owned()),
            None => Some(first),
        },
        _ => Some(format!("HTTP {code} {first}")),
    }
}

/// Why leader `state` is not ready for a write, given what its agent last `heard`: `None`
/// outside quorum mode, or when enough peers were heard at its epoch within
/// `stargate.lease.staleAfter`.
pub fn shortfall(state: &State, heard: Option<&Heard>) -> Option<String> {
    let quorum = state.quorum.as_ref()?;
    let Some(heard) = heard.filter(|h| h.epoch == state.epoch) else {
        return Some(format!("no word from the peers yet at epoch {}", state.epoch));
    };
    let age = crate::clock::boot_ms().saturating_sub(heard.boot_ms);
    if age > state.stale_after_ms {
        return Some(format!("no word from the peers for {age} ms"));
    }
    let count = heard.count();
    if count >= quorum.needed {
        return None;
    }
    let missing: Vec<String> = heard.missing.iter().map(|(node, why)| format!("{node}: {why}")).collect();
    Some(format!(
        "no quorum ({count} of {} needed reachable and following epoch {}; {})",
        quorum.needed,
        heard.epoch,
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::node::{Quorum, QuorumPeer, Role};

    #[test]
    fn a_peer_counts_only_when_passive_alive_and_following_this_leader_at_this_epoch() {
        let passive = |second: &str| format!("not leader: {PASSIVE}\n{second}\n");
        assert_eq!(judge(503, &passive("leader b, epoch 7"), "b", 7), None);
        assert_eq!(judge(503, &passive("leader b, epoch 6"), "b", 7).unwrap(), "follows b, epoch 6");
        assert_eq!(judge(503, &passive("leader a, epoch 7"), "b", 7).unwrap(), "follows a, epoch 7");
        assert_eq!(judge(503, &passive(""), "b", 7).unwrap(), "follows no leader yet");
        let dead = "not leader: agent state is stale (4000 ms old)\nleader b, epoch 7\n";
        assert_eq!(judge(503, dead, "b", 7).unwrap(), "agent state is stale (4000 ms old)");
        assert_eq!(judge(200, "leader, epoch 7\n", "b", 7).unwrap(), "leads itself (leader, epoch 7)");
        assert_eq!(judge(404, "no\n", "b", 7).unwrap(), "HTTP 404 no");
        // What a peer says is quoted, never passed through raw.
        assert!(!judge(503, "not leader: \u{1b}[31mx\n", "b", 7).unwrap().contains('\u{1b}'));
    }

    fn leader(epoch: u64, needed: usize) -> State {
        let peer = |n: &str| QuorumPeer { node: n.into(), health: format!("{n}:8080") };
        State {
            node: "b".into(),
            lock: "/l".into(),
            stale_after_ms: 2000,
            peers: Vec::new(),
            pid: 1,
            role: Role::Leader,
            epoch,
            heartbeat_ms: 0,
            heartbeat_boot_ms: None,
            started_ms: 0,
            draining: None,
            record: None,
            valid_until_boot_ms: None,
            quorum: Some(Quorum { needed, timeout_ms: 5000, peers: vec![peer("a"), peer("c")] }),
            journal_keep: None,
            kv_changes: None,
            lease_problem: None,
            version: None,
        }
    }

    #[test]
    fn a_leader_is_ready_only_with_a_quorum_heard_lately_at_its_epoch() {
        let now = crate::clock::boot_ms();
        let heard = |epoch, boot_ms, counting: &[&str]| Heard {
            epoch,
            boot_ms,
            counting: counting.iter().map(|s| s.to_string()).collect(),
            missing: vec![("a".into(), "no answer within 1000 ms".into())],
        };
        assert_eq!(shortfall(&leader(7, 2), Some(&heard(7, now, &["c"]))), None);
        assert_eq!(
            shortfall(&leader(7, 2), Some(&heard(7, now, &[]))).unwrap(),
            "no quorum (1 of 2 needed reachable and following epoch 7; a: no answer within 1000 ms)"
        );
        assert_eq!(
            shortfall(&leader(7, 3), Some(&heard(7, now, &["c"]))).unwrap().split(';').next().unwrap(),
            "no quorum (2 of 3 needed reachable and following epoch 7"
        );
        assert_eq!(shortfall(&leader(7, 2), None).unwrap(), "no word from the peers yet at epoch 7");
        assert_eq!(
            shortfall(&leader(8, 2), Some(&heard(7, now, &["c"]))).unwrap(),
            "no word from the peers yet at epoch 8"
        );
        let old = now.saturating_sub(5000);
        assert!(
            shortfall(&leader(7, 2), Some(&heard(7, old, &["c"]))).unwrap().starts_with("no word from the peers for ")
        );
        let asynchronous = State { quorum: None, ..leader(7, 2) };
        assert_eq!(shortfall(&asynchronous, None), None);
    }
}
