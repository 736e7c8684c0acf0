//! The leader lease: an exclusive `flock` on `stargate.lock` (shared volume), and beside it
//! the leader record, whose epoch is the fencing token.
//!
//! Only the lock holder writes the record, always with temp file + fsync + rename, so a
//! reader sees the old record or the new one, never a torn one.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("leader record {path} is damaged: {source}")]
    Damaged { path: PathBuf, source: serde_json::Error },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
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

pub fn record_path(lock: &Path) -> PathBuf {
    sibling(lock, "leader")
}

pub(crate) fn sibling(lock: &Path, ext: &str) -> PathBuf {
    let mut name = lock.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(ext);
    lock.with_file_name(name)
}

/// The current record, or `None` before the first election.
pub fn read_record(lock: &Path) -> Result<Option<Record>, Error> {
    let path = record_path(lock);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::Damaged { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

pub fn write_record(lock: &Path, record: &Record) -> Result<(), Error> {
    let path = record_path(lock);
    let mut bytes = serde_json::to_vec(record).map_err(|source| Error::Damaged { path: path.clone(), source })?;
    bytes.push(b'\n');
    crate::files::write_atomic(&path, &bytes, 0o644, true).map_err(io(&path))
}

/// An open handle on the lock file; holding the flock on it is holding the lease.
pub struct Lease {
    file: File,
    path: PathBuf,
}

impl Lease {
    pub fn open(path: &Path) -> Result<Lease, Error> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io(path))?;
        Ok(Lease { file, path: path.to_owned() })
    }

    /// Take the lease if nobody holds it. Never blocks.
    pub fn try_acquire(&self) -> Result<bool, Error> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&self.path)(e)),
        }
    }

    pub fn release(&self) -> Result<(), Error> {
        self.file.unlock().map_err(io(&self.path))
    }
}
