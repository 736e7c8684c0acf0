//! The push signal: after a write, the leader's hook sends each replica's agent one UDP
//! datagram naming the repository, so the replica syncs now instead of at its next poll.
//! It is a hint, never trusted: a lost one costs a poll interval (the replica reads the name
//! from the change summary, `changes`), a forged one an idle sync.

use std::path::Path;

use crate::lead::node::{self, Role};

/// On the leader, tell every peer's agent that repository `git_dir` changed: one datagram
/// each, best effort (the replicas' poll is the fallback). Sent from the leader's hook; it
/// reads only this node's state (in `state_dir`), not the shared lease record.
pub fn peers(state_dir: &Path, git_dir: &Path) {
    let Some(state) = node::state(state_dir).filter(|s| s.role == Role::Leader) else { return };
    let (Some(root), Ok(repo)) = (state_dir.parent(), git_dir.canonicalize()) else { return };
    let Ok(name) = repo.strip_prefix(root) else { return };
    let name = name.to_string_lossy();
    send(&state.peers, &name);
    // For the replicas' next look at the summary, should this datagram be lost.
    super::changes::note(state_dir, &name);
}

/// Tell `peers` (UDP `host:port`) that repository `name` changed. Best effort.
pub fn send(peers: &[String], name: &str) {
    send_message(peers, &format!("{PREFIX}{name}\n"));
}

/// One datagram of `message` to each of `peers`. Best effort.
pub fn send_message(peers: &[String], message: &str) {
    let Ok(socket) = std::net::UdpSocket::bind(("0.0.0.0", 0)) else { return };
    for peer in peers {
        let _ = socket.send_to(message.as_bytes(), peer.as_str());
    }
}

/// The datagram a leader sends: this prefix, then the repository name relative to the root.
pub const PREFIX: &str = "stargate-sync ";
