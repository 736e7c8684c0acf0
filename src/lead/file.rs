//! The file backend of the lease: an exclusive `flock` on `stargate.lock` (on a volume
//! every node mounts) is the lease; beside it `<lock>.leader` is the record, whose epoch
//! grows by one at each election, `<lock>.handoff` a promotion in progress and
//! `<lock>.audit` the audit log.
//!
//! Only the lock holder writes the record (or, after a forced promotion, the node that
//! seized it), always with temp file + fsync + rename, so a reader sees the old record or
//! the new one, never a torn one. The epoch written is after the record's and after the
//! highest this node has seen, so that a record restored from a backup cannot make two
//! nodes lead one epoch (`epoch`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::epoch::Highest;
use super::handoff::Handoff;
use super::record::{Acquired, Claim, Error, Leading, Record, io};
use crate::format::{Format, HANDOFF, JsonError, LEADER_RECORD, LEADING};

fn sibling(lock: &Path, ext: &str) -> PathBuf {
    let mut name = lock.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(ext);
    lock.with_file_name(name)
}

pub fn record_path(lock: &Path) -> PathBuf {
    sibling(lock, "leader")
}

pub fn audit_path(lock: &Path) -> PathBuf {
    sibling(lock, "audit")
}

pub fn leading_path(lock: &Path) -> PathBuf {
    sibling(lock, "leading")
}

pub fn handoff_path(lock: &Path) -> PathBuf {
    sibling(lock, "handoff")
}

/// The most a record file may hold; each is a few hundred bytes.
const MAX_RECORD: u64 = 64 * 1024;

/// A record beside the lock, read as a regular file only and bounded, so that a symbolic
/// link or a device in its place is refused at once, by name.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, format: Format) -> Result<Option<T>, Error> {
    match crate::files::read_regular(path, MAX_RECORD) {
        Ok(bytes) => match format.from_json(path.display(), &bytes) {
            Ok(value) => Ok(Some(value)),
            Err(JsonError::Unknown(e)) => Err(e.into()),
            Err(JsonError::Json(source)) => Err(Error::Damaged { path: path.to_owned(), source }),
        },
        Err(e) if e.is_missing() => Ok(None),
        Err(crate::files::ReadError::Io { source, .. }) => Err(io(path)(source)),
        Err(e) => Err(e.into()),
    }
}

fn write_json(path: &Path, format: Format, value: &impl serde::Serialize) -> Result<(), Error> {
    let mut bytes = format.to_json(value).map_err(|source| Error::Damaged { path: path.to_owned(), source })?;
    bytes.push(b'\n');
    crate::files::write_atomic(path, &bytes, 0o644, true).map_err(io(path))
}

/// The current record, or `None` before the first election.
pub fn read_record(lock: &Path) -> Result<Option<Record>, Error> {
    read_json(&record_path(lock), LEADER_RECORD)
}

fn write_record(lock: &Path, record: &Record) -> Result<(), Error> {
    write_json(&record_path(lock), LEADER_RECORD, record)
}

/// The epoch announced as leading (see `Lock::read_leading`).
pub fn read_leading(lock: &Path) -> Result<Option<Leading>, Error> {
    read_json(&leading_path(lock), LEADING)
}

pub fn write_leading(lock: &Path, leading: &Leading) -> Result<(), Error> {
    write_json(&leading_path(lock), LEADING, leading)
}

pub fn read_handoff(lock: &Path) -> Result<Option<Handoff>, Error> {
    read_json(&handoff_path(lock), HANDOFF)
}

pub fn write_handoff(lock: &Path, handoff: &Handoff) -> Result<(), Error> {
    write_json(&handoff_path(lock), HANDOFF, handoff)
}

pub fn remove_handoff(lock: &Path) -> Result<(), Error> {
    let path = handoff_path(lock);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
        _ => Ok(()),
    }
}

pub fn append_audit(lock: &Path, line: &[u8]) -> Result<(), Error> {
    let path = audit_path(lock);
    crate::files::append_line(&path, line).map_err(io(&path))
}

pub fn read_audit(lock: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(audit_path(lock)).unwrap_or_default();
    text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

/// An open handle on the lock file; holding the flock on it is holding the lease.
pub struct Flock {
    file: File,
    path: PathBuf,
    locked: bool,
    /// The highest epoch this node has seen (the agent's): every epoch written is after it.
    highest: Option<Arc<Highest>>,
}

impl Flock {
    pub fn open(path: &Path, highest: Option<Arc<Highest>>) -> Result<Flock, Error> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io(path))?;
        Ok(Flock { file, path: path.to_owned(), locked: false, highest })
    }

    /// The epoch after `record`'s and after every one seen, and the leader to catch up from:
    /// the record's, unless this node has seen a newer one (the record was restored).
    fn next(&self, record: Option<Record>) -> (u64, Option<Record>) {
        match &self.highest {
            Some(h) => (h.next_epoch(record.as_ref()), h.previous(record)),
            None => (record.as_ref().map_or(0, |r| r.epoch) + 1, record),
        }
    }

    /// Write `record` as the new epoch, and remember it as seen.
    fn record(&self, record: &Record) -> Result<(), Error> {
        write_record(&self.path, record)?;
        match &self.highest {
            Some(h) => h.check_record(record),
            None => Ok(()),
        }
    }

    pub fn locked(&self) -> bool {
        self.locked
    }

    /// Take the lock if nobody holds it. Never blocks.
    pub fn take(&mut self) -> Result<bool, Error> {
        if self.locked {
            return Ok(true);
        }
        match self.file.try_lock() {
            Ok(()) => {
                self.locked = true;
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&self.path)(e)),
        }
    }

    /// The lock, then the next epoch in the record.
    pub fn try_acquire(&mut self, claim: &Claim) -> Result<Option<Acquired>, Error> {
        if !self.take()? {
            return Ok(None);
        }
        let (epoch, previous) = match read_record(&self.path) {
            Ok(p) => self.next(p),
            Err(e) => {
                self.release();
                return Err(e);
            }
        };
        let record = claim.record(epoch);
        if let Err(e) = self.record(&record) {
            self.release();
            return Err(e);
        }
        Ok(Some(Acquired { record, previous }))
    }

    /// The next epoch after `current` (and after every one seen), with the lock if it is
    /// free, else without it.
    pub fn seize(&mut self, claim: &Claim, current: &Record) -> Result<Record, Error> {
        self.take()?;
        let record = claim.record(self.next(Some(current.clone())).0);
        self.record(&record)?;
        Ok(record)
    }

    /// Still leading while the record names `mine`; the record when it does. `Error::Behind`
    /// when the record is older than what this node has seen (restored from a backup).
    pub fn renew(&self, mine: &Record) -> Result<Option<Record>, Error> {
        let record = super::epoch::read_checked(self.highest.as_deref(), || read_record(&self.path))?;
        Ok(record.filter(|r| r.epoch == mine.epoch && r.node == mine.node))
    }

    pub fn release(&mut self) {
        if self.locked
            && let Err(e) = self.file.unlock()
        {
            log::error!("{}", io(&self.path)(e));
        }
        self.locked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compatibility rule on the records beside the lock (docs/ARCHITECTURE.md, Formats
    /// and versions): what 0.1.0 wrote (no format) is read; what this build writes says its
    /// format first; a later format is an error naming the file and both numbers, never a
    /// record followed.
    #[test]
    fn records_of_the_previous_release_are_read_and_a_later_format_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("stargate.lock");
        let previous = r#"{"epoch":4,"node":"b","url":"git://b/","health":null,"since_ms":9}"#;
        std::fs::write(record_path(&lock), previous).unwrap();
        let record = read_record(&lock).unwrap().unwrap();
        assert_eq!((record.epoch, record.node.as_str()), (4, "b"));
        write_record(&lock, &record).unwrap();
        let written = std::fs::read_to_string(record_path(&lock)).unwrap();
        assert!(written.starts_with(r#"{"format":1,"epoch":4,"node":"b""#), "{written}");
        assert_eq!(read_record(&lock).unwrap(), Some(record));

        std::fs::write(record_path(&lock), written.replacen(r#""format":1"#, r#""format":2"#, 1)).unwrap();
        let err = read_record(&lock).unwrap_err();
        let text = err.to_string();
        assert!(matches!(&err, Error::Format(u) if (u.found, u.known) == (2, 1)), "{text}");
        assert!(
            text.starts_with(&format!("{}: leader record format 2, and this build (", record_path(&lock).display()))
        );

        let handoff =
            r#"{"format":7,"from":"a","epoch":4,"to":"b","forced":false,"user":"u","requested_ms":1,"heartbeat_ms":1}"#;
        std::fs::write(handoff_path(&lock), handoff).unwrap();
        assert!(matches!(read_handoff(&lock), Err(Error::Format(u)) if u.format == "handoff record" && u.found == 7));
        std::fs::write(handoff_path(&lock), handoff.replace(r#""format":7,"#, "")).unwrap();
        assert_eq!(read_handoff(&lock).unwrap().map(|h| h.to), Some("b".to_owned()));
    }
}
