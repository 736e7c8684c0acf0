//! A handoff of leadership in progress, kept with the lease (`<lock>.handoff` beside a
//! file lease, `<key>/handoff` in etcd) and written by the node that is to lead. While one names a node, every other node leaves the lease
//! alone, so that leadership goes where the operator sent it (git-stargate(1), promote).
//!
//! A planned handoff (`forced: false`) asks the leader of `epoch` to drain and let go of
//! the lease. A forced one records that `to` leads `epoch` without the lock, because the
//! lock's holder is frozen or cut off; `to` takes the lock as soon as it is released. The
//! node named refreshes `heartbeat_ms`; a handoff whose heartbeat is older than
//! [`EXPIRES_AFTER`] is over, so a node that died mid-handoff blocks nobody for long.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A handoff nobody refreshed for this long is ignored.
pub const EXPIRES_AFTER: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The leader asked to hand over (planned), or the one deposed (forced).
    pub from: String,
    /// Planned: the epoch `from` leads and must drain. Forced: the epoch `to` now leads.
    pub epoch: u64,
    pub to: String,
    pub forced: bool,
    /// Who asked for it (audit::user).
    pub user: String,
    pub requested_ms: u64,
    pub heartbeat_ms: u64,
}

impl Handoff {
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.heartbeat_ms) > EXPIRES_AFTER.as_millis() as u64
    }
}
