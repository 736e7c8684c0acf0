//! A repository's refs, however git stores them (stargate(7), Repository formats): the
//! files backend (loose files and `packed-refs`) through gix, in-process; reftable through
//! git's own plumbing (`for-each-ref`, `update-ref --stdin`), because gix cannot read it.
//! Objects are gix's either way: their format does not depend on the ref storage.

use std::collections::HashMap;
use std::path::Path;

use gix::ObjectId;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use crate::wire::git;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Gix(String),
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error("refused ref name {0:?}: {1}")]
    Name(String, String),
}

fn gix_err(e: impl std::fmt::Display) -> Error {
    Error::Gix(e.to_string())
}

/// What an edit expects the ref to hold before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Any,
    Absent,
    Value(ObjectId),
}

/// One ref change of a transaction: to `new`, or deleted when `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub name: String,
    pub expect: Expect,
    pub new: Option<ObjectId>,
}

impl Edit {
    /// From `old` (absent when `None`) to `new` (deleted when `None`).
    pub fn update(name: &str, old: Option<ObjectId>, new: Option<ObjectId>) -> Edit {
        Edit { name: name.to_owned(), expect: old.map_or(Expect::Absent, Expect::Value), new }
    }

    /// To `oid`, whatever it held.
    pub fn set(name: &str, oid: ObjectId) -> Edit {
        Edit { name: name.to_owned(), expect: Expect::Any, new: Some(oid) }
    }

    /// Gone, whatever it held.
    pub fn delete(name: &str) -> Edit {
        Edit { name: name.to_owned(), expect: Expect::Any, new: None }
    }
}

/// A ref name git would store, or why not (also what keeps a name from being read as an
/// option, or splitting an `update-ref --stdin` line).
pub fn check_name(name: &str) -> Result<(), Error> {
    gix::refs::FullName::try_from(name).map(drop).map_err(|e| Error::Name(name.to_owned(), e.to_string()))
}

/// One repository's refs, and its objects through `repo()`.
pub struct Store {
    repo: gix::Repository,
    reftable: bool,
    /// Reftable: values `read_ahead` listed, answered from memory until the next edit.
    known: std::cell::RefCell<HashMap<String, Option<ObjectId>>>,
}

/// Above this many names, one listing of every ref is cheaper than naming each to git.
const NAMES_PER_LISTING: usize = 256;

impl Store {
    /// The repository at `path`, without reading user or system config (which may make
    /// gix run `git`): only the repository's own settings matter here.
    pub fn open(path: &Path) -> Result<Store, Error> {
        gix::open_opts(path, gix::open::Options::isolated()).map(Store::new).map_err(gix_err)
    }

    /// A repository gix opened some other way (`git kv` discovers its clone).
    pub fn new(repo: gix::Repository) -> Store {
        let reftable = crate::repos::is_reftable(repo.git_dir());
        Store { repo, reftable, known: Default::default() }
    }

    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    pub fn is_reftable(&self) -> bool {
        self.reftable
    }

    /// The object `name` points at (peeled of nothing; symbolic refs resolved by gix,
    /// left out by git's listing), `None` when there is no such ref.
    pub fn find(&self, name: &str) -> Result<Option<ObjectId>, Error> {
        check_name(name)?;
        if !self.reftable {
            let found = self.repo.try_find_reference(name).map_err(gix_err)?;
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
    pub fn read_ahead<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
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
    pub fn find_many<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<HashMap<String, ObjectId>, Error> {
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
    pub fn prefixed(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, Error> {
        if !self.reftable {
            let platform = self.repo.references().map_err(gix_err)?;
            let iter = if prefix.is_empty() { platform.all() } else { platform.prefixed(prefix) };
            let mut out = Vec::new();
            for r in iter.map_err(gix_err)? {
                let r = r.map_err(gix_err)?;
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

    /// Apply `edits` as one transaction: every one of them, or none.
    pub fn edit(&self, edits: &[Edit]) -> Result<(), Error> {
        for e in edits {
            check_name(&e.name)?;
        }
        if edits.is_empty() {
            return Ok(());
        }
        self.known.borrow_mut().clear();
        if !self.reftable {
            let edits = edits.iter().map(to_gix).collect::<Result<Vec<_>, _>>()?;
            self.repo.edit_references(edits).map_err(gix_err)?;
            return Ok(());
        }
        let null = ObjectId::null(self.repo.object_hash());
        let mut commands = String::with_capacity(edits.len() * 100);
        for e in edits {
            let old = match e.expect {
                Expect::Any => String::new(),
                Expect::Absent => format!(" {null}"),
                Expect::Value(oid) => format!(" {oid}"),
            };
            match e.new {
                Some(new) => commands += &format!("update {} {new}{old}\n", e.name),
                None => commands += &format!("delete {}{old}\n", e.name),
            }
        }
        Ok(git::update_refs(self.repo.git_dir(), commands.as_bytes())?)
    }

    /// Reftable: git's listing of `patterns`, by name.
    fn listed(&self, patterns: &[&str]) -> Result<HashMap<String, ObjectId>, Error> {
        let listed = git::list_refs(self.repo.git_dir(), patterns)?;
        Ok(listed
            .into_iter()
            .filter_map(|(name, hex)| Some((name, ObjectId::from_hex(hex.as_bytes()).ok()?)))
            .collect())
    }
}

/// The refs a mirror copies, as an operator compares them: every ref but Stargate's own
/// (`refs/stargate/*`), by name.
pub fn mirrored(refs: impl IntoIterator<Item = (String, ObjectId)>) -> std::collections::BTreeMap<String, ObjectId> {
    refs.into_iter().filter(|(name, _)| !name.starts_with("refs/stargate/")).collect()
}

/// One checksum of a set of refs (`mirrored`): the XOR of SHA-1 over `<oid> <refname>` of
/// each, as Gitaly does. Equal sets give equal sums, whatever the order; one differing ref
/// changes it.
pub fn checksum(refs: &std::collections::BTreeMap<String, ObjectId>) -> String {
    let mut sum = [0u8; 20];
    for (name, oid) in refs {
        let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
        hasher.update(format!("{oid} {name}").as_bytes());
        if let Ok(digest) = hasher.try_finalize() {
            for (s, d) in sum.iter_mut().zip(digest.as_bytes()) {
                *s ^= d;
            }
        }
    }
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of the refs (`mirrored`) whose values differ between two listings.
pub fn differing(
    a: impl IntoIterator<Item = (String, ObjectId)>,
    b: impl IntoIterator<Item = (String, ObjectId)>,
) -> Vec<String> {
    let (a, b) = (mirrored(a), mirrored(b));
    if checksum(&a) == checksum(&b) {
        return Vec::new();
    }
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names.into_iter().filter(|n| a.get(*n) != b.get(*n)).cloned().collect()
}

fn to_gix(e: &Edit) -> Result<RefEdit, Error> {
    let name = gix::refs::FullName::try_from(e.name.as_str()).map_err(gix_err)?;
    let expected = match e.expect {
        Expect::Any => PreviousValue::Any,
        Expect::Absent => PreviousValue::MustNotExist,
        Expect::Value(oid) => PreviousValue::MustExistAndMatch(oid.into()),
    };
    let change = match e.new {
        Some(new) => Change::Update { log: LogChange::default(), expected, new: new.into() },
        None => Change::Delete { expected, log: RefLog::AndReference },
    };
    Ok(RefEdit { change, name, deref: false })
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

    #[test]
    fn names_git_would_not_store_are_refused_before_git_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, _) = repo(dir.path(), "t.git", "reftable");
        for bad in ["--all", "refs/heads/a b", "refs/heads/x\nupdate refs/heads/y", "refs/heads/a..b", ""] {
            assert!(matches!(store.find(bad), Err(Error::Name(..))), "{bad:?}");
            assert!(matches!(store.edit(&[Edit::set(bad, a)]), Err(Error::Name(..))), "{bad:?}");
        }
    }
}
