//! The leader lease: an exclusive `flock` on `stargate.lock` (shared volume), and beside it
//! the leader record, whose epoch is the fencing token, plus the audit log of elections.
//!
//! Only the lock holder writes the record, always with temp file + fsync + rename, so a
//! reader sees the old record or the new one, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("leader record {path} is damaged: {source}")]
    Damaged { path: PathBuf, source: serde_json::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
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

pub fn audit_path(lock: &Path) -> PathBuf {
    sibling(lock, "audit")
}

fn sibling(lock: &Path, ext: &str) -> PathBuf {
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
    write_atomic(&path, &bytes, 0o644, true).map_err(io(&path))
}

/// Replace `path` with `bytes` so that readers see either the old or the new content.
/// `durable` also fsyncs the file and its directory (records that must survive a crash).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

/// One line of the audit log: who did what to the lease, when, under which epochs.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEvent<'a> {
    pub time_ms: u64,
    pub node: &'a str,
    /// `elected`, `step-down`, `fenced`, `released`.
    pub event: &'a str,
    pub epoch: u64,
    pub previous_epoch: Option<u64>,
    pub previous_leader: Option<&'a str>,
    pub reason: &'a str,
}

/// Append one event as a JSON line; `O_APPEND` keeps concurrent writers' lines whole.
pub fn audit(lock: &Path, event: &AuditEvent<'_>) -> Result<(), Error> {
    let path = audit_path(lock);
    let mut line = serde_json::to_vec(event).map_err(|source| Error::Damaged { path: path.clone(), source })?;
    line.push(b'\n');
    let mut f = OpenOptions::new().append(true).create(true).open(&path).map_err(io(&path))?;
    f.write_all(&line).map_err(io(&path))
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
