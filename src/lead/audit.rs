//! The audit trail: one JSON line per change of leadership (who, when, which epochs, why),
//! appended beside the lease on the shared volume.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lease::{Error, io, sibling};

pub fn path(lock: &Path) -> PathBuf {
    sibling(lock, "audit")
}

/// One line of the audit log: who did what to the lease, when, under which epochs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event<'a> {
    pub time_ms: u64,
    pub node: &'a str,
    /// `elected`, `step-down`, `fenced`, `released`.
    pub event: &'a str,
    pub epoch: u64,
    pub previous_epoch: Option<u64>,
    pub previous_leader: Option<&'a str>,
    pub reason: &'a str,
}

/// Append `event` to the audit log of the lease at `lock`.
pub fn append(lock: &Path, event: &Event<'_>) -> Result<(), Error> {
    let path = path(lock);
    let line = serde_json::to_vec(event).map_err(|source| Error::Damaged { path: path.clone(), source })?;
    crate::files::append_line(&path, &line).map_err(io(&path))
}
