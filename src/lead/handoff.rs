//! A handoff of leadership in progress: `<lock>.handoff` on the shared volume, written by
//! the node that is to lead. While one names a node, every other node leaves the lease
//! alone, so that leadership goes where the operator sent it (git-stargate(1), promote).
//!
//! A planned handoff (`forced: false`) asks the leader of `epoch` to drain and let go of
//! the lease. A forced one records that `to` leads `epoch` without the lock, because the
//! lock's holder is frozen or cut off; `to` takes the lock as soon as it is released. The
//! node named refreshes `heartbeat_ms`; a handoff whose heartbeat is older than
//! [`EXPIRES_AFTER`] is over, so a node that died mid-handoff blocks nobody for long.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lease::{Error, io, sibling};

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

pub fn path(lock: &Path) -> PathBuf {
    sibling(lock, "handoff")
}

/// The handoff in progress, if any (an expired one included: callers judge).
pub fn read(lock: &Path) -> Result<Option<Handoff>, Error> {
    let path = path(lock);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::Damaged { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

pub fn write(lock: &Path, handoff: &Handoff) -> Result<(), Error> {
    let path = path(lock);
    let bytes = serde_json::to_vec(handoff).map_err(|source| Error::Damaged { path: path.clone(), source })?;
    crate::files::write_atomic(&path, &bytes, 0o644, true).map_err(io(&path))
}

/// End the handoff, if it is still the one `to` started.
pub fn clear(lock: &Path, to: &str) -> Result<(), Error> {
    match read(lock) {
        Ok(Some(h)) if h.to == to => std::fs::remove_file(path(lock)).map_err(io(&path(lock))),
        _ => Ok(()),
    }
}
