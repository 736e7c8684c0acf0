//! Ref transactions, shaped like gix-ref's file transactions: `Store::prepare` takes every
//! lock and checks every expectation, and returns a `Prepared` transaction that nothing else
//! can move under; `Prepared::commit` makes every edit visible at once, and dropping it
//! instead moves nothing. A caller may look at the world once more between the two (a sync
//! re-reads the leader record there). On the files backend gix does both steps in-process;
//! on reftable `git update-ref --stdin` does, in its `start`/`prepare`/`commit` protocol. No
//! hook runs either way.

use std::time::Duration;

use gix::ObjectId;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use super::{NameError, Store, check_name};
use crate::wire::git;

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

/// Why a transaction could not be prepared: nothing moved.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Name(#[from] NameError),
    /// A lock held by another writer, or a ref not holding what an edit expects.
    #[error("cannot lock or check the refs: {0}")]
    Files(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0} exists: another git is writing refs")]
    Locked(std::path::PathBuf),
}

/// Why a prepared transaction could not be committed (files: some edits may have been
/// made, as with git itself when a rename fails half-way).
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot commit the refs: {0}")]
    Files(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Either step of `Store::edit`.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// A transaction whose locks are held and whose expectations held: `commit` it, or drop it
/// and nothing moves.
#[must_use = "a prepared transaction moves nothing until it is committed"]
pub struct Prepared<'a> {
    pub(super) inner: Inner<'a>,
}

pub(super) enum Inner<'a> {
    Nothing,
    Files(gix::refs::file::Transaction<'a, 'a>),
    Reftable(git::RefTransaction),
    /// A whole `packed-refs`, written beside the file as its lock (`replace`).
    Packed(super::replace::PackedLock),
}

/// An error and every cause under it, `: `-separated: gix's outer words ("Could not
/// preprocess reference edits") name no ref; the cause does.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// git's own defaults: `core.filesRefLockTimeout`, `core.packedRefsTimeout`.
const REF_LOCK: Duration = Duration::from_millis(100);
const PACKED_LOCK: Duration = Duration::from_millis(1000);

impl Store {
    /// Take every lock of `edits` and check what each expects: one transaction, all of it or
    /// nothing.
    pub fn prepare(&self, edits: &[Edit]) -> Result<Prepared<'_>, PrepareError> {
        for e in edits {
            check_name(&e.name)?;
        }
        if edits.is_empty() {
            return Ok(Prepared { inner: Inner::Nothing });
        }
        self.known.borrow_mut().clear();
        if !self.reftable {
            use gix::lock::acquire::Fail;
            let edits = edits.iter().map(to_gix).collect::<Result<Vec<_>, _>>()?;
            let prepared = (self.repo.refs.transaction())
                .prepare(edits, Fail::AfterDurationWithBackoff(REF_LOCK), Fail::AfterDurationWithBackoff(PACKED_LOCK))
                .map_err(|e| PrepareError::Files(with_causes(&e).into()))?;
            return Ok(Prepared { inner: Inner::Files(prepared) });
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
        let transaction = git::RefTransaction::prepare(self.repo.git_dir(), commands.as_bytes())?;
        Ok(Prepared { inner: Inner::Reftable(transaction) })
    }

    /// Apply `edits` as one transaction: every one of them, or none.
    pub fn edit(&self, edits: &[Edit]) -> Result<(), EditError> {
        Ok(self.prepare(edits)?.commit()?)
    }
}

impl Store {
    /// Move `name` from `old` (absent when `None`) to `new` as a client's push would: one
    /// `git update-ref` that runs the hooks, so Stargate checks, journals and replicates it
    /// (the leader applying a `git kv` change, docs/ARCHITECTURE.md, `src/kvtree.rs`).
    pub fn update_as_push(
        &self,
        name: &str,
        old: Option<ObjectId>,
        new: ObjectId,
        message: &str,
    ) -> Result<(), git::Error> {
        let old = old.unwrap_or_else(|| ObjectId::null(self.repo.object_hash()));
        git::update_ref_hooked(self.repo.git_dir(), name, &new.to_string(), &old.to_string(), message)
    }
}

impl Prepared<'_> {
    /// Make every edit visible.
    pub fn commit(self) -> Result<(), CommitError> {
        match self.inner {
            Inner::Nothing => Ok(()),
            Inner::Files(transaction) => {
                transaction.commit(None).map(drop).map_err(|e| CommitError::Files(Box::new(e)))
            }
            Inner::Reftable(transaction) => Ok(transaction.commit()?),
            Inner::Packed(lock) => lock.commit(),
        }
    }
}

fn to_gix(e: &Edit) -> Result<RefEdit, PrepareError> {
    let name = gix::refs::FullName::try_from(e.name.as_str()).map_err(|e| PrepareError::Files(Box::new(e)))?;
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

impl Store {
    /// Remove the ref locks (`<ref>.lock`, `packed-refs.lock`, reftable's
    /// `tables.list.lock`) last written before `before`: what a writer killed
    /// mid-transaction leaves, which git never removes by itself and which would fail every
    /// later transaction on those refs. Only for a caller that knows no live writer took one
    /// before then (a passive node's agent, whose refs only it writes, one sync at a time).
    /// Returns the locks removed.
    pub fn clear_stale_locks(&self, before: std::time::SystemTime) -> Vec<std::path::PathBuf> {
        use std::path::{Path, PathBuf};
        fn stale(path: &Path, before: std::time::SystemTime) -> bool {
            std::fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t < before)
        }
        fn walk(dir: &Path, before: std::time::SystemTime, found: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => walk(&path, before, found),
                    Ok(_) if path.extension().is_some_and(|e| e == "lock") && stale(&path, before) => found.push(path),
                    _ => {}
                }
            }
        }
        let git_dir = self.git_dir();
        let mut found = Vec::new();
        walk(&git_dir.join("refs"), before, &mut found);
        for lock in [git_dir.join("packed-refs.lock"), git_dir.join("reftable/tables.list.lock")] {
            if stale(&lock, before) {
                found.push(lock);
            }
        }
        found.retain(|lock| std::fs::remove_file(lock).is_ok());
        found
    }
}
