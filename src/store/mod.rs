//! git's on-disk state of one repository, and the only writer of it (docs/ARCHITECTURE.md,
//! `src/store/`): refs however git stores them (stargate(7), Repository formats): the files
//! backend (loose files and `packed-refs`) through gix, in-process; reftable through git's
//! own plumbing (`for-each-ref`, `update-ref --stdin`), because gix cannot read it. Every ref
//! write is a transaction shaped like gix-ref's: prepared (every lock taken and every
//! expectation checked), then committed, or dropped and nothing moved (`transaction`). The
//! hooks' fast paths are here too: a loose object written without a compressor
//! (`objects`), a ref swapped under its lock the way git's files backend does (`loose`);
//! a repository's refs replaced whole, as `git clone` writes them (`replace`); and a small
//! fetched pack's objects stored loose without starting git (`unpack`).
//! Objects are gix's either way: their format does not depend on the ref storage.

mod checksum;
mod loose;
mod objects;
mod replace;
mod transaction;
mod unpack;

pub use checksum::{checksum, differing, mirrored};
pub use loose::{SwapError, read_loose};
pub use objects::ObjectError;
pub use transaction::{CommitError, Edit, EditError, Expect, PrepareError, Prepared};
pub use unpack::UnpackError;

use std::collections::HashMap;
use std::path::Path;

use gix::ObjectId;

use crate::wire::git;

/// A ref name git would not store.
#[derive(Debug, thiserror::Error)]
#[error("refused ref name {name:?}: {why}")]
pub struct NameError {
    pub name: String,
    why: String,
}

/// Why a repository could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {}: {source}", path.display())]
pub struct OpenError {
    path: std::path::PathBuf,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why refs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Name(#[from] NameError),
    /// gix reading loose refs and `packed-refs`.
    #[error("cannot read refs: {0}")]
    Files(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// git listing a reftable store.
    #[error(transparent)]
    Git(#[from] git::Error),
}

fn files_err(e: impl std::error::Error + Send + Sync + 'static) -> ReadError {
    ReadError::Files(Box::new(e))
}

/// A ref name git would store, or why not (also what keeps a name from being read as an
/// option, or splitting an `update-ref --stdin` line).
pub fn check_name(name: &str) -> Result<(), NameError> {
    gix::refs::FullName::try_from(name).map(drop).map_err(|e| NameError { name: name.to_owned(), why: e.to_string() })
}

/// One repository's refs, and its objects through `repo()`.
pub struct Store {
    repo: gix::Repository,
    reftable: bool,
    /// Reftable: values `read_ahead` listed, answered from memory until the next edit.
    known: std::cell::RefCell<HashMap<String, Option<ObjectId>>>,
    /// Where to take the files it creates from (`spare`), when the caller has a pool.
    spares: Option<std::path::PathBuf>,
}

/// Above this many names, one listing of every ref is cheaper than naming each to git.
const NAMES_PER_LISTING: usize = 256;

impl Store {
    /// The repository at `path`, without reading user or system config (which may make
    /// gix run `git`): only the repository's own settings matter here.
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        gix::open_opts(path, gix::open::Options::isolated())
            .map(Store::new)
            .map_err(|e| OpenError { path: path.to_owned(), source: Box::new(e) })
    }

    /// A repository gix opened some other way (`git kv` discovers its clone).
    pub fn new(repo: gix::Repository) -> Store {
        let reftable = crate::repos::is_reftable(repo.git_dir());
        Store { repo, reftable, known: Default::default(), spares: None }
    }

    /// The same store, taking the loose objects and ref locks it writes from the spare files
    /// in `pool` while it has some (`spare`): the leader's hooks, whose node's agent makes them.
    pub fn with_spares(self, pool: std::path::PathBuf) -> Store {
        Store { spares: Some(pool), ..self }
    }

    /// `path`, new, open for writing: a spare file when there is one, else created. Fails
    /// with `AlreadyExists` when `path` exists.
    pub(crate) fn create_new(&self, path: &Path) -> std::io::Result<std::fs::File> {
        if let Some(pool) = &self.spares
            && let Some(file) = crate::spare::take(pool, path)?
        {
            return Ok(file);
        }
        std::fs::OpenOptions::new().write(true).create_new(true).open(path)
    }

    /// Directory `dir` (a fan-out directory of the object store), made if it is missing: a
    /// spare directory when there is one (`spare`).
    pub(crate) fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        match &self.spares {
            Some(pool) if crate::spare::take_dir(pool, dir) => Ok(()),
            _ => std::fs::create_dir_all(dir),
        }
    }

    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    /// Is `old` reachable from `new`? A bounded walk: very long histories count as "no"
    /// (mirroring then keeps a value it need not have; the push log calls a move forced).
    /// A move by one commit, the usual push, is answered from `new`'s parents alone: a walk
    /// opens the commit-graph files each time (a 500-ref push checked 500 moves).
    pub fn is_ancestor(&self, old: ObjectId, new: ObjectId) -> bool {
        if old == new {
            return true;
        }
        if let Ok(commit) = self.repo.find_commit(new)
            && commit.parent_ids().any(|parent| parent == old)
        {
            return true;
        }
        let Ok(walk) = self.repo.rev_walk([new]).all() else { return false };
        walk.take(1_000_000).filter_map(Result::ok).any(|info| info.id == old)
    }

    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    pub fn is_reftable(&self) -> bool {
        self.reftable
    }

    /// The object `name` points at (peeled of nothing; symbolic refs resolved by gix,
    /// left out by git's listing), `None` when there is no such ref.
    pub fn find(&self, name: &str) -> Result<Option<ObjectId>, ReadError> {
        check_name(name)?;
        if !self.reftable {
            let found = self.repo.try_find_reference(name).map_err(files_err)?;
            return Ok(found.and_then(|r| r.try_id().map(|id| id.detach())));
        }
        if let Some(known) = self.known.borrow().get(name) {
            return Ok(*known);
        }
        Ok(self.listed(&[name])?.remove(name))
    }

    /// Reftable: read `names` in one git run, and answer `find` for them from memory until
    /// the next `edit`. Only for a caller that knows they cannot move meanwhile: the hook at
    /// `prepared`, while git holds the whole ref store for its transaction.
    pub fn read_ahead<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), ReadError> {
        if !self.reftable {
            return Ok(());
        }
        let names: Vec<&str> = names.into_iter().collect();
        let mut found = self.find_many(names.iter().copied())?;
        let mut known = self.known.borrow_mut();
        for name in names {
            known.insert(name.to_owned(), found.remove(name));
        }
        Ok(())
    }

    /// The values of those of `names` that exist.
    pub fn find_many<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, ObjectId>, ReadError> {
        let names: Vec<&str> = names.into_iter().collect();
        for name in &names {
            check_name(name)?;
        }
        if !self.reftable {
            let mut out = HashMap::new();
            for name in names {
                if let Some(oid) = self.find(name)? {
                    out.insert(name.to_owned(), oid);
                }
            }
            return Ok(out);
        }
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let mut listed = if names.len() > NAMES_PER_LISTING { self.listed(&[])? } else { self.listed(&names)? };
        Ok(names.iter().filter_map(|n| listed.remove_entry(*n)).collect())
    }

    /// Every ref whose name starts with `prefix` (a whole path component: `refs/kv/` or
    /// `""` for all), symbolic refs left out.
    pub fn prefixed(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, ReadError> {
        if !self.reftable {
            let platform = self.repo.references().map_err(files_err)?;
            let iter = if prefix.is_empty() { platform.all() } else { platform.prefixed(prefix) };
            let mut out = Vec::new();
            for r in iter.map_err(files_err)? {
                let r = r.map_err(files_err)?;
                if let Some(id) = r.try_id() {
                    out.push((r.name().as_bstr().to_string(), id.detach()));
                }
            }
            return Ok(out);
        }
        let patterns: &[&str] = if prefix.is_empty() { &[] } else { &[prefix] };
        let mut out: Vec<_> = self.listed(patterns)?.into_iter().filter(|(n, _)| n.starts_with(prefix)).collect();
        out.sort();
        Ok(out)
    }

    /// Reftable: git's listing of `patterns`, by name.
    fn listed(&self, patterns: &[&str]) -> Result<HashMap<String, ObjectId>, ReadError> {
        let listed = git::list_refs(self.repo.git_dir(), patterns)?;
        Ok(listed
            .into_iter()
            .filter_map(|(name, hex)| Some((name, ObjectId::from_hex(hex.as_bytes()).ok()?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(dir: &Path, name: &str, format: &str) -> (Store, ObjectId, ObjectId) {
        let path = dir.join(name);
        let run = |args: &[&str]| {
            // Isolated from the user's git config, and an identity of its own for commit-tree.
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "Test")
                .env("GIT_AUTHOR_EMAIL", "test@example.com")
                .env("GIT_COMMITTER_NAME", "Test")
                .env("GIT_COMMITTER_EMAIL", "test@example.com")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        run(&["init", "-q", "--bare", &format!("--ref-format={format}"), name]);
        let git_dir = path.to_str().unwrap();
        let tree = run(&["--git-dir", git_dir, "mktree"]);
        let a = run(&["--git-dir", git_dir, "commit-tree", "-m", "a", &tree]);
        let b = run(&["--git-dir", git_dir, "commit-tree", "-m", "b", &tree]);
        let oid = |hex: String| ObjectId::from_hex(hex.as_bytes()).unwrap();
        (Store::open(&path).unwrap(), oid(a), oid(b))
    }

    #[test]
    fn both_storages_read_and_write_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        for format in ["files", "reftable"] {
            let (store, a, b) = repo(dir.path(), &format!("{format}.git"), format);
            assert_eq!(store.is_reftable(), format == "reftable");
            assert_eq!(store.find("refs/heads/main").unwrap(), None);
            store.edit(&[Edit::update("refs/heads/main", None, Some(a)), Edit::set("refs/kv/x", b)]).unwrap();
            assert_eq!(store.find("refs/heads/main").unwrap(), Some(a), "{format}");
            // A wrong expectation fails the whole transaction.
            let stale = [Edit::set("refs/kv/y", a), Edit::update("refs/heads/main", Some(b), Some(b))];
            assert!(store.edit(&stale).is_err(), "{format}");
            assert_eq!(store.find("refs/kv/y").unwrap(), None, "{format}");
            assert!(store.edit(&[Edit::update("refs/kv/x", None, Some(a))]).is_err(), "{format}: absent expected");
            let many = store.find_many(["refs/heads/main", "refs/kv/x", "refs/kv/none"]).unwrap();
            assert_eq!(many, HashMap::from([("refs/heads/main".into(), a), ("refs/kv/x".into(), b)]), "{format}");
            assert_eq!(store.prefixed("refs/kv/").unwrap(), [("refs/kv/x".to_owned(), b)], "{format}");
            assert_eq!(store.prefixed("").unwrap().len(), 2, "{format}");
            store.edit(&[Edit::delete("refs/kv/x"), Edit::update("refs/heads/main", Some(a), None)]).unwrap();
            assert!(store.prefixed("").unwrap().is_empty(), "{format}");
        }
    }

    /// A parent, a grandparent (a walk), the commit itself; not a sibling, nor a child.
    #[test]
    fn ancestors_are_found_by_parent_and_by_walk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = repo(dir.path(), "t.git", "files");
        let child = |parent: ObjectId, message: &str| store.test_commit(message, &[parent]);
        let (a1, b1) = (child(a, "a1"), child(b, "b1"));
        let a2 = child(a1, "a2");
        for (old, new, expected) in [
            (a, a1, true),
            (a, a2, true),
            (a1, a2, true),
            (a, a, true),
            (b, a2, false),
            (a2, a, false),
            (b1, a2, false),
        ] {
            assert_eq!(store.is_ancestor(old, new), expected, "{old} in {new}'s history");
        }
    }

    #[test]
    fn names_git_would_not_store_are_refused_before_git_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, _) = repo(dir.path(), "t.git", "reftable");
        for bad in ["--all", "refs/heads/a b", "refs/heads/x\nupdate refs/heads/y", "refs/heads/a..b", ""] {
            assert!(matches!(store.find(bad), Err(ReadError::Name(..))), "{bad:?}");
            assert!(
                matches!(store.edit(&[Edit::set(bad, a)]), Err(EditError::Prepare(PrepareError::Name(..)))),
                "{bad:?}"
            );
        }
    }

    /// A transaction the files backend refuses says why down to its cause, naming the ref
    /// (gix's outer words alone do not).
    #[test]
    fn a_refused_transaction_names_the_ref_it_stumbled_on() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = repo(dir.path(), "t.git", "files");
        let e = store.edit(&[Edit::set("refs/heads/x", a), Edit::set("refs/heads/x", b)]).unwrap_err().to_string();
        assert!(e.contains("refs/heads/x"), "{e}");
    }

    /// A lock a killed writer left blocks every transaction on its ref until it is old
    /// enough to be taken for stale and removed; a fresh one is left alone.
    #[test]
    fn stale_ref_locks_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = repo(dir.path(), "t.git", "files");
        store.edit(&[Edit::set("refs/heads/main", a)]).unwrap();
        let lock = dir.path().join("t.git/refs/heads/main.lock");
        let file = std::fs::File::create(&lock).unwrap();
        assert!(store.edit(&[Edit::set("refs/heads/main", b)]).is_err(), "the lock blocks");
        let a_minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        assert!(store.clear_stale_locks(a_minute_ago).is_empty(), "fresh: kept");
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120)).unwrap();
        assert_eq!(store.clear_stale_locks(a_minute_ago), vec![lock]);
        store.edit(&[Edit::set("refs/heads/main", b)]).unwrap();
        assert_eq!(store.find("refs/heads/main").unwrap(), Some(b));
    }
}

/// The store is the only writer of git's on-disk state (docs/ARCHITECTURE.md, `src/store/`):
/// no module outside it (and `wire::git`, which runs git) reaches for a raw way to write
/// refs or objects. A new one must go through `Store`, or this test names it.
#[cfg(test)]
mod only_writer {
    /// Ways to write refs or objects other than through `Store`.
    const RAW: &[&str] = &[
        "repo().write_object(",
        "repo.write_object(",
        ".edit_reference",
        "refs.transaction(",
        "\"update-ref\"",
        "\"pack-refs\"",
        "with_extension(\"lock\")",
        "RefTransaction::",
        // A loose ref's text, written by hand.
        "format!(\"{oid}\\n\")",
        "format!(\"{new}\\n\")",
    ];

    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_write_of_refs_and_objects_goes_through_the_store() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut found = Vec::new();
        for file in files {
            let rel = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("store/") || rel == "wire/git.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            // Only the code: a module's tests may build repositories however they like.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                for raw in RAW.iter().filter(|raw| line.contains(*raw)) {
                    found.push(format!("src/{rel}:{}: {raw}", n + 1));
                }
            }
        }
        assert!(found.is_empty(), "writes of git's state outside src/store/:\n{}", found.join("\n"));
    }
}
