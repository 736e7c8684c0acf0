//! A repository's refs replaced whole, as `git clone` writes them: what a full mirror of
//! many refs does. On the files backend one `packed-refs` written beside the file as its
//! lock and renamed into place, so that every ref moves at once however many there are;
//! on reftable one `update-ref` transaction, which git writes as one table.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gix::ObjectId;

use super::transaction::Inner;
use super::{CommitError, Edit, PrepareError, Prepared, Store, check_name};

/// A whole `packed-refs` written as its lock, renamed into place by `commit`, removed when
/// dropped uncommitted.
pub(super) struct PackedLock {
    lock: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl PackedLock {
    pub(super) fn commit(mut self) -> Result<(), CommitError> {
        std::fs::rename(&self.lock, &self.path)
            .map_err(|source| CommitError::Io { what: format!("rename {}", self.lock.display()), source })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PackedLock {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.lock);
        }
    }
}

impl Store {
    /// Prepare making the refs `refs`, every one of them and no other, but those under the
    /// prefixes `keep` (a node's own refs), which stay as they are. `current`: the refs as
    /// read when the objects of `refs` were fetched (reftable: each ref moves from that
    /// value, so that one moved meanwhile fails the transaction). `deadline`: for folding
    /// loose refs first (files).
    pub fn prepare_replace(
        &self,
        refs: &HashMap<String, ObjectId>,
        current: &HashMap<String, ObjectId>,
        keep: &[&str],
        deadline: Instant,
    ) -> Result<Prepared<'_>, PrepareError> {
        let kept = |name: &str| keep.iter().any(|k| name.starts_with(k));
        if self.reftable {
            let mut edits: Vec<Edit> = (refs.iter())
                .filter(|(r, oid)| !kept(r) && current.get(*r) != Some(*oid))
                .map(|(r, oid)| Edit::update(r, current.get(r).copied(), Some(*oid)))
                .collect();
            edits.extend(
                (current.iter())
                    .filter(|(r, _)| !kept(r) && !refs.contains_key(*r))
                    .map(|(r, oid)| Edit::update(r, Some(*oid), None)),
            );
            return self.prepare(&edits);
        }
        let git_dir = self.git_dir().to_owned();
        let io = |what: &str| {
            let what = format!("{what} {}", git_dir.display());
            move |source| PrepareError::Io { what, source }
        };
        // Loose refs would hide packed values: fold them in first (values unchanged).
        if has_loose_refs(&git_dir.join("refs"), keep).map_err(io("read the loose refs of"))? {
            crate::wire::git::pack_refs(&git_dir, deadline)?;
        }
        let path = git_dir.join("packed-refs");
        let lock_path = git_dir.join("packed-refs.lock");
        let mut file = match File::options().write(true).create_new(true).open(&lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(PrepareError::Locked(lock_path)),
            Err(e) => return Err(io("lock the packed refs of")(e)),
        };
        let lock = PackedLock { lock: lock_path, path: path.clone(), committed: false };
        let mut entries: BTreeMap<String, ObjectId> = BTreeMap::new();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io("read the packed refs of")(e)),
        };
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with('^')) {
            if let Some((hex, name)) = line.split_once(' ')
                && kept(name)
                && let Ok(oid) = ObjectId::from_hex(hex.as_bytes())
            {
                entries.insert(name.to_owned(), oid);
            }
        }
        for (name, oid) in refs.iter().filter(|(r, _)| !kept(r)) {
            check_name(name)?;
            entries.insert(name.clone(), *oid);
        }
        // Without `peeled`, git peels tags itself when asked; `sorted`: byte order of names.
        let mut out = String::with_capacity(entries.len() * 64 + 32);
        out.push_str("# pack-refs with: sorted \n");
        for (name, oid) in &entries {
            out.push_str(&format!("{oid} {name}\n"));
        }
        std::io::Write::write_all(&mut file, out.as_bytes()).map_err(io("write the packed refs of"))?;
        file.sync_all().map_err(io("write the packed refs of"))?;
        Ok(Prepared { inner: Inner::Packed(lock) })
    }
}

/// Whether any loose ref exists under `dir` (`<repo>/refs`), those under the prefixes
/// `keep` aside.
fn has_loose_refs(dir: &Path, keep: &[&str]) -> std::io::Result<bool> {
    fn walk(dir: &Path, name: &str, keep: &[&str]) -> std::io::Result<bool> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let child = format!("{name}/{}", entry.file_name().to_string_lossy());
            if keep.iter().any(|k| format!("{child}/").starts_with(k) || child.starts_with(k)) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_file() && !child.ends_with(".lock") {
                return Ok(true);
            }
            if kind.is_dir() && walk(&entry.path(), &child, keep)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
    walk(dir, "refs", keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both storages: every ref becomes what it is told, a node's own refs stay, one prepared
    /// and dropped moves nothing.
    #[test]
    fn every_ref_is_replaced_at_once_and_a_nodes_own_refs_stay() {
        let dir = tempfile::tempdir().unwrap();
        for format in ["files", "reftable"] {
            let path = dir.path().join(format!("{format}.git"));
            let out = std::process::Command::new("git")
                .args(["init", "-q", "--bare", &format!("--ref-format={format}")])
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success());
            let store = Store::open(&path).unwrap();
            let a = store.write_object(gix::objs::Tree::empty()).unwrap();
            let commit = |m: &str| {
                let sig =
                    gix::actor::Signature { name: "t".into(), email: "t@t".into(), time: gix::date::Time::new(1, 0) };
                store
                    .write_object(gix::objs::Commit {
                        message: m.into(),
                        tree: a,
                        author: sig.clone(),
                        committer: sig,
                        encoding: None,
                        parents: Default::default(),
                        extra_headers: Vec::new(),
                    })
                    .unwrap()
            };
            let (x, y) = (commit("x"), commit("y"));
            let own = "refs/stargate/local/lost/1/refs/heads/gone";
            store
                .edit(&[Edit::set("refs/heads/gone", x), Edit::set("refs/heads/stays", x), Edit::set(own, x)])
                .unwrap();
            let current: HashMap<String, ObjectId> = store.prefixed("refs/").unwrap().into_iter().collect();
            let want: HashMap<String, ObjectId> =
                [("refs/heads/stays".to_owned(), y), ("refs/heads/new".to_owned(), x)].into_iter().collect();
            let keep = ["refs/stargate/local/"];
            let far = Instant::now() + std::time::Duration::from_secs(30);
            drop(store.prepare_replace(&want, &current, &keep, far).unwrap());
            assert_eq!(store.find("refs/heads/stays").unwrap(), Some(x), "{format}: dropped, nothing moved");
            store.prepare_replace(&want, &current, &keep, far).unwrap().commit().unwrap();
            let after: HashMap<String, ObjectId> = store.prefixed("refs/").unwrap().into_iter().collect();
            let mut expected = want.clone();
            expected.insert(own.to_owned(), x);
            assert_eq!(after, expected, "{format}");
        }
    }
}
