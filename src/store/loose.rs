//! A loose ref swapped the way git's files backend does: `<ref>.lock` created exclusively,
//! the old value checked under it, then renamed into place. The hooks' way at `prepared`,
//! where a gix transaction would also want `packed-refs.lock`, which receive-pack holds
//! then when a push deletes a ref. On reftable, a transaction of one edit.

use std::io::Write;

use gix::ObjectId;

use super::{EditError, Expect, NameError, ReadError, Store, check_name};

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Name(#[from] NameError),
    /// Another writer holds the ref's lock.
    #[error("{0}.lock exists: another writer holds the ref")]
    Locked(String),
    #[error("{name} moved to {current:?} meanwhile")]
    Moved { name: String, current: Option<ObjectId> },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("{name}: {source}")]
    Io { name: String, source: std::io::Error },
}

/// What loose ref `name` of the files repository at `git_dir` holds, read from its file
/// without opening the repository (a hook's cheap look); `None` when there is no such file
/// (packed, or reftable) or it holds no object id.
pub fn read_loose(git_dir: &std::path::Path, name: &str) -> Option<ObjectId> {
    let text = std::fs::read_to_string(git_dir.join(name)).ok()?;
    ObjectId::from_hex(text.trim().as_bytes()).ok()
}

impl Store {
    /// Move loose ref `name` to `new` from what `expected` says it holds.
    pub fn swap_loose(&self, name: &str, expected: Expect, new: ObjectId) -> Result<(), SwapError> {
        check_name(name)?;
        if self.reftable {
            return Ok(self.edit(&[super::Edit { name: name.to_owned(), expect: expected, new: Some(new) }])?);
        }
        let io = |source| SwapError::Io { name: name.to_owned(), source };
        let path = self.git_dir().join(name);
        let lock = path.with_extension("lock");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = match self.create_new(&lock) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(SwapError::Locked(name.to_owned())),
            Err(e) => return Err(io(e)),
        };
        let swapped = (|| {
            if expected != Expect::Any {
                let current = self.find(name)?;
                if current != if let Expect::Value(v) = expected { Some(v) } else { None } {
                    return Err(SwapError::Moved { name: name.to_owned(), current });
                }
            }
            file.write_all(format!("{new}\n").as_bytes()).map_err(io)?;
            std::fs::rename(&lock, &path).map_err(io)
        })();
        if swapped.is_err() {
            let _ = std::fs::remove_file(&lock);
        }
        swapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_checks_under_the_lock_and_a_held_lock_refuses() {
        let dir = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (ObjectId::from_bytes_or_panic(&[1; 20]), ObjectId::from_bytes_or_panic(&[2; 20]));
        let name = "refs/stargate/journal";
        store.swap_loose(name, Expect::Absent, a).unwrap();
        assert!(matches!(store.swap_loose(name, Expect::Absent, b), Err(SwapError::Moved { .. })));
        store.swap_loose(name, Expect::Value(a), b).unwrap();
        assert_eq!(store.find(name).unwrap(), Some(b));
        std::fs::write(dir.path().join("refs/stargate/journal.lock"), "").unwrap();
        assert!(matches!(store.swap_loose(name, Expect::Any, a), Err(SwapError::Locked(_))));
        assert_eq!(store.find(name).unwrap(), Some(b), "nothing moved");
        assert!(dir.path().join("refs/stargate/journal.lock").exists(), "another's lock left alone");
    }
}
