//! What the lease's backends share: the leader record, a node's claim to it, what taking
//! the lease gives, and the backends' errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::etcd;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("leader record {path} is damaged: {source}")]
    Damaged { path: PathBuf, source: serde_json::Error },
    /// A symbolic link, not a regular file, or too large (`files::read_regular`).
    #[error("lease: {0}")]
    Unreadable(#[from] crate::files::ReadError),
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    #[error("etcd: {what} is damaged: {why}")]
    EtcdDamaged { what: String, why: String },
    /// Written by a newer Stargate (docs/ARCHITECTURE.md, Formats and versions): not
    /// followed, so no write is accepted on it.
    #[error("{0}")]
    Format(#[from] crate::format::Unknown),
    /// Older than what this node has seen (docs/ARCHITECTURE.md, Fencing).
    #[error("{0}")]
    Behind(super::epoch::Refusal),
    #[error(
        "the highest epoch seen, {path}, is damaged: {source}; check the audit log for the last epoch before removing it (stargate(7), Epoch)"
    )]
    SeenDamaged { path: PathBuf, source: serde_json::Error },
}

/// The lease failing ends a program as a fatal error (docs/ARCHITECTURE.md, Errors and exit
/// codes: modules above `error` convert into it).
impl From<Error> for crate::error::Error {
    fn from(e: Error) -> Self {
        crate::error::Error::fatal(e)
    }
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// Who leads, since when, under which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub epoch: u64,
    pub node: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub health: Option<String>,
    /// Milliseconds since the Unix epoch when this epoch began.
    pub since_ms: u64,
}

/// The epoch whose leader has caught up and accepts writes, written beside the record once
/// it does (`Lock::announce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leading {
    pub epoch: u64,
    pub node: String,
}

/// What a node puts in the record when it takes the lease.
#[derive(Debug, Clone)]
pub struct Claim {
    pub node: String,
    pub url: Option<String>,
    pub health: Option<String>,
}

impl Claim {
    pub(crate) fn record(&self, epoch: u64) -> Record {
        Record {
            epoch,
            node: self.node.clone(),
            url: self.url.clone(),
            health: self.health.clone(),
            since_ms: crate::clock::now_ms(),
        }
    }
}

/// What taking the lease gave: the new record, and the one it replaced.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub record: Record,
    pub previous: Option<Record>,
}
