//! Reftable: git holds the whole ref store locked from `prepared` until the transaction
//! ends, so the journal ref cannot move when an entry is appended. The entries are written
//! as objects and named in `<repo>/stargate/journal.pending`; the end of the transaction
//! publishes them with one `update-ref`, which carries any earlier one a crashed hook left
//! unpublished.

use std::path::{Path, PathBuf};

use gix::ObjectId;

use super::{Error, PREVIOUS, REF, read};
use crate::store::{Edit, Store};

/// Reftable: entries appended since the journal ref last moved. `tip` is the newest;
/// `base` the journal ref's value when the first of them was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) tip: ObjectId,
    pub(super) base: Option<ObjectId>,
}

fn pending_path(git_dir: &Path) -> PathBuf {
    git_dir.join("stargate/journal.pending")
}

/// Whether entries wait for publication (reftable; nothing else writes the file).
#[cfg(test)]
pub(super) fn pending(git_dir: &Path) -> bool {
    pending_path(git_dir).exists()
}

fn read_pending(git_dir: &Path) -> Option<Pending> {
    let text = std::fs::read_to_string(pending_path(git_dir)).ok()?;
    let mut f = text.split_whitespace();
    let tip = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
    let base = f.next().and_then(|b| ObjectId::from_hex(b.as_bytes()).ok());
    Some(Pending { tip, base })
}

pub(super) fn write_pending(git_dir: &Path, p: &Pending) -> std::io::Result<()> {
    let base = p.base.map(|b| format!(" {b}")).unwrap_or_default();
    let path = pending_path(git_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::files::write_atomic(&path, format!("{}{base}\n", p.tip).as_bytes(), 0o644, false)
}

/// The lock ordering appends and a publication's cleanup of the pending file (flock,
/// released when dropped).
pub(super) fn lock_pending(git_dir: &Path) -> Result<std::fs::File, Error> {
    let dir = git_dir.join("stargate");
    let io = |source| Error::Io { what: format!("cannot lock {}", dir.display()), source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file =
        std::fs::File::options().create(true).truncate(false).write(true).open(dir.join("journal.lock")).map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// How far a pending chain is walked back looking for the journal ref.
const PENDING_WALK: usize = 10_000;

/// The journal ref, and the pending entries when they continue the ref: a pending file
/// left from another leadership (its chain does not reach the ref) is stale.
pub(super) fn unpublished(store: &Store) -> Result<(Option<ObjectId>, Option<Pending>), Error> {
    let published = store.find(REF)?;
    let Some(p) = read_pending(store.git_dir()) else { return Ok((published, None)) };
    if Some(p.tip) == published {
        return Ok((published, None));
    }
    let mut at = Some(p.tip);
    for _ in 0..PENDING_WALK {
        let Some(id) = at else { break };
        if Some(id) == published {
            return Ok((published, Some(p)));
        }
        if Some(id) == p.base {
            break;
        }
        let (entry, parent) = read(store, id)?;
        at = parent.or(entry.previous);
    }
    Ok((published, (at.is_none() && published.is_none()).then_some(p)))
}

/// Reftable: move the journal ref to the newest pending entry (and the previous
/// generation's ref, when a checkpoint is among them), in one transaction. Returns whether
/// the ref moved. It may not: another transaction holds the ref store (its own end then
/// publishes this entry with its own), or git's compaction does for a moment (so a failed
/// attempt is retried a few times, for some 35 ms).
///
/// First as if the ref were still where the pending entries began, which it almost always
/// is: one git run. Only when that fails is the ref read.
pub fn publish(store: &Store) -> Result<bool, Error> {
    let Some(p) = read_pending(store.git_dir()) else { return Ok(false) };
    if move_ref(store, p.tip, p.base)? {
        return Ok(true);
    }
    for pause in [5, 10, 20, 0] {
        let (published, pending) = {
            let _lock = lock_pending(store.git_dir())?;
            let (published, pending) = unpublished(store)?;
            if pending.is_none() {
                let _ = std::fs::remove_file(pending_path(store.git_dir()));
                return Ok(false);
            }
            (published, pending)
        };
        if let Some(p) = pending
            && move_ref(store, p.tip, published)?
        {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(pause));
    }
    Ok(false)
}

/// Move the journal ref from `from` to pending entry `tip`, and the previous generation's
/// ref with it when a checkpoint lies between; then forget `tip` as pending. Whether the
/// ref moved: not when it was not at `from`, or the store was busy.
fn move_ref(store: &Store, tip: ObjectId, from: Option<ObjectId>) -> Result<bool, Error> {
    let mut edits = Vec::new();
    let mut at = Some(tip);
    while let Some(id) = at.filter(|id| Some(*id) != from) {
        let (entry, parent) = read(store, id)?;
        if let Some(previous) = entry.previous {
            edits.push(Edit::set(PREVIOUS, previous));
            break;
        }
        at = parent;
    }
    edits.push(Edit::update(REF, from, Some(tip)));
    if let Err(e) = store.edit(&edits) {
        log::debug!("{}: journal not published yet: {e}", store.git_dir().display());
        return Ok(false);
    }
    let _lock = lock_pending(store.git_dir())?;
    if read_pending(store.git_dir()).is_some_and(|p| p.tip == tip) {
        let _ = std::fs::remove_file(pending_path(store.git_dir()));
    }
    Ok(true)
}
