//! A `git kv` namespace's tree and the changes made to it (git-kv(1), DATA MODEL): what a
//! key and a namespace may be, one key set or deleted in a tree, the change one
//! `set`/`del`/`cas` commit carries, and that change applied to whatever tip the namespace
//! has now. The client (`kv`) builds changes; the leader's `proc-receive` hook (`hook`)
//! applies them in arrival order (docs/ARCHITECTURE.md, `src/kvtree.rs`).
//!
//! A change is named by its commit message, which the client writes and the leader keeps:
//! `set <key>`, `set <n> keys` with one key a line after a blank line, `del <key>`, or
//! `cas <key>` with `expect <blob id>` after a blank line. The values are the pushed
//! commit's own tree at those keys: only the keys named change, so keys another writer
//! changed meanwhile stay as they are.

use gix::ObjectId;
use gix::objs::tree::EntryKind;

/// Where clients push a change for the leader to apply: `refs/for/kv/<namespace>`.
pub const FOR_PREFIX: &str = "refs/for/kv/";
/// A namespace's ref: `refs/kv/<namespace>`.
pub const PREFIX: &str = "refs/kv/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid key '{0}': {1}")]
    InvalidKey(String, &'static str),
    #[error("invalid namespace '{0}': {1}")]
    InvalidNamespace(String, &'static str),
    #[error("{0}: not found")]
    NotFound(String),
    #[error("'{key}' conflicts with existing key '{existing}'")]
    Conflict { key: String, existing: String },
    /// `cas` found another value (`None`: no value) at the key.
    #[error("'{key}' does not hold the expected value")]
    Mismatch { key: String, current: Option<ObjectId> },
    /// The pushed commit does not name a change this version understands.
    #[error("not a git kv change: {0}")]
    NotAChange(String),
    #[error("{0}")]
    Repo(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

fn repo_err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Repo(Box::new(e))
}

/// 1–1024 bytes; `/`-separated components, none empty or starting with `.`; no
/// whitespace or control characters, no backslash.
pub fn validate_key(key: &str) -> Result<(), Error> {
    let bad = |why| Err(Error::InvalidKey(key.to_owned(), why));
    if key.is_empty() || key.len() > 1024 {
        return bad("must be 1 to 1024 bytes long");
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return bad("no whitespace, control characters or backslashes");
    }
    for component in key.split('/') {
        if component.is_empty() {
            return bad("empty path component (leading, trailing or doubled '/')");
        }
        if component.starts_with('.') {
            return bad("a path component may not start with '.'");
        }
        if component.len() > 255 {
            return bad("a path component may be 255 bytes at most");
        }
    }
    Ok(())
}

/// A namespace is one ref component: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_namespace(ns: &str) -> Result<(), Error> {
    if !crate::config::valid_id(ns) {
        return Err(Error::InvalidNamespace(
            ns.to_owned(),
            "expected 1-64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
        ));
    }
    if ns.ends_with(".lock") {
        return Err(Error::InvalidNamespace(ns.to_owned(), "may not end in '.lock'"));
    }
    Ok(())
}

/// What one write does to the keys it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Each key to its value in the pushed tree (last writer wins).
    Set(Vec<String>),
    /// The key gone; refused when it has no value.
    Del(String),
    /// The key to its value in the pushed tree, only if it now holds the blob `expect`.
    Cas { key: String, expect: ObjectId },
}

impl Change {
    /// The commit message naming this change (the module's header has the grammar).
    pub fn message(&self) -> String {
        match self {
            Change::Set(keys) if keys.len() == 1 => format!("set {}", keys[0]),
            Change::Set(keys) => format!("set {} keys\n\n{}", keys.len(), keys.join("\n")),
            Change::Del(key) => format!("del {key}"),
            Change::Cas { key, expect } => format!("cas {key}\n\nexpect {expect}"),
        }
    }

    /// The change a commit message names; every key valid.
    pub fn parse(message: &str) -> Result<Change, Error> {
        let bad = || Error::NotAChange(message.lines().next().unwrap_or("").to_owned());
        let (head, body) = message.split_once("\n\n").unwrap_or((message, ""));
        let (word, rest) = head.trim_end().split_once(' ').ok_or_else(bad)?;
        let change = match word {
            "set" if rest.ends_with(" keys") => {
                let keys: Vec<String> = body.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
                if rest.strip_suffix(" keys").and_then(|n| n.parse().ok()) != Some(keys.len()) {
                    return Err(bad());
                }
                Change::Set(keys)
            }
            "set" => Change::Set(vec![rest.to_owned()]),
            "del" => Change::Del(rest.to_owned()),
            "cas" => {
                let hex = body.lines().find_map(|l| l.strip_prefix("expect ")).ok_or_else(bad)?;
                Change::Cas {
                    key: rest.to_owned(),
                    expect: ObjectId::from_hex(hex.trim().as_bytes()).map_err(|_| bad())?,
                }
            }
            _ => return Err(bad()),
        };
        change.keys().iter().try_for_each(|k| validate_key(k))?;
        Ok(change)
    }

    pub fn keys(&self) -> Vec<&str> {
        match self {
            Change::Set(keys) => keys.iter().map(String::as_str).collect(),
            Change::Del(key) | Change::Cas { key, .. } => vec![key.as_str()],
        }
    }
}

/// The tree of `tip`, or the empty tree for a namespace that does not exist yet.
pub fn tree_of(repo: &gix::Repository, tip: Option<ObjectId>) -> Result<gix::Tree<'_>, Error> {
    match tip {
        None => Ok(repo.empty_tree()),
        Some(id) => repo.find_commit(id).and_then(|c| c.tree()).map_err(repo_err),
    }
}

/// The blob at `key` in `tree`, if it holds one there.
pub fn blob_at(tree: &gix::Tree<'_>, key: &str) -> Result<Option<ObjectId>, Error> {
    match tree.lookup_entry_by_path(key).map_err(repo_err)? {
        Some(entry) if entry.mode().is_blob() => Ok(Some(entry.object_id())),
        _ => Ok(None),
    }
}

/// Where `key` would clash with `base`: a prefix of it is a value, or it holds other keys.
fn conflict(base: &gix::Tree<'_>, key: &str) -> Result<Option<String>, Error> {
    let mut prefix = String::new();
    for component in key.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(component);
        match base.lookup_entry_by_path(&prefix).map_err(repo_err)? {
            None => return Ok(None),
            Some(e) if prefix != key && !e.mode().is_tree() => return Ok(Some(prefix)),
            Some(e) if prefix == key && e.mode().is_tree() => return Ok(Some(format!("{key}/…"))),
            Some(_) => {}
        }
    }
    Ok(None)
}

/// `base` being edited into a new tree.
pub struct Edit<'a, 'repo> {
    pub base: &'a gix::Tree<'repo>,
    pub editor: &'a mut gix::object::tree::Editor<'repo>,
}

impl Edit<'_, '_> {
    /// `key` to the blob `value`; refused when it clashes with the base's keys.
    pub fn set(&mut self, key: &str, value: ObjectId) -> Result<(), Error> {
        if let Some(existing) = conflict(self.base, key)? {
            return Err(Error::Conflict { key: key.to_owned(), existing });
        }
        self.editor.upsert(key, EntryKind::Blob, value).map_err(repo_err)?;
        Ok(())
    }

    /// `key` removed; refused when the base has no value there.
    pub fn del(&mut self, key: &str) -> Result<(), Error> {
        if blob_at(self.base, key)?.is_none() {
            return Err(Error::NotFound(key.to_owned()));
        }
        self.editor.remove(key).map_err(repo_err)?;
        Ok(())
    }
}

/// The commit `pushed` (a change, its values in its own tree) applied to the namespace's
/// tip `tip`: a new commit on `tip` with the tree of `tip` where only the keys the change
/// names differ, and `pushed`'s message, author and committer. Refused as the change would
/// be on that tip (`NotFound`, `Conflict`, `Mismatch`); nothing is written then.
pub fn apply(store: &crate::store::Store, tip: Option<ObjectId>, pushed: ObjectId) -> Result<ObjectId, Error> {
    let repo = store.repo();
    let commit = repo.find_commit(pushed).map_err(repo_err)?;
    let decoded = commit.decode().map_err(repo_err)?;
    let message = decoded.message.to_string();
    let change = Change::parse(&message)?;
    let theirs = commit.tree().map_err(repo_err)?;
    let base = tree_of(repo, tip)?;
    let mut editor = base.edit().map_err(repo_err)?;
    let mut edit = Edit { base: &base, editor: &mut editor };
    let value = |key: &str| blob_at(&theirs, key)?.ok_or_else(|| Error::NotAChange(format!("no value for '{key}'")));
    match &change {
        Change::Set(keys) => keys.iter().try_for_each(|k| edit.set(k, value(k)?))?,
        Change::Del(key) => edit.del(key)?,
        Change::Cas { key, expect } => {
            let current = blob_at(&base, key)?;
            if current != Some(*expect) {
                return Err(Error::Mismatch { key: key.clone(), current });
            }
            edit.set(key, value(key)?)?;
        }
    }
    let tree = editor.write().map_err(repo_err)?.detach();
    let new = gix::objs::Commit {
        message: decoded.message.to_owned(),
        tree,
        author: decoded.author().map_err(repo_err)?.to_owned().map_err(repo_err)?,
        committer: decoded.committer().map_err(repo_err)?.to_owned().map_err(repo_err)?,
        encoding: None,
        parents: tip.into_iter().collect(),
        extra_headers: Vec::new(),
    };
    store.write_object(&new).map_err(repo_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["a", "app/db/password", "x-1_y.z", "ünïcode", "a:b@c"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", ".git", "a/../b", "a b", "a\nb", "a\\b", &"k".repeat(1025)] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn namespaces() {
        assert!(validate_namespace("prod-1").is_ok());
        for bad in ["", "a/b", "..", "-x", "x.lock", "a b"] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_change_round_trips_through_its_message() {
        let oid = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        for change in [
            Change::Set(vec!["a".into()]),
            Change::Set(vec!["a".into(), "b/c".into()]),
            Change::Del("x/y".into()),
            Change::Cas { key: "k".into(), expect: oid },
        ] {
            assert_eq!(Change::parse(&change.message()).unwrap(), change);
            assert_eq!(Change::parse(&format!("{}\n", change.message())).unwrap(), change);
        }
        for bad in ["", "set", "frob a", "set 2 keys\n\na", "cas k", "cas k\n\nexpect zz", "set a b", "del .x"] {
            assert!(Change::parse(bad).is_err(), "{bad:?}");
        }
    }
}
