//! The replication journal, kept inside git: `refs/stargate/journal` is a chain of commits
//! that says what the leader did to its refs, in order, each entry carrying sequence
//! numbers, the epoch, the leader and the time (docs/ARCHITECTURE.md, The journal).
//!
//! A transaction leaves two entries. At `reference-transaction prepared` (refs locked,
//! nothing moved yet) the leader appends a **prepare** entry: its updates, numbered. When
//! the transaction ends it appends the **outcome** of that prepare: `committed` or
//! `aborted` as git's hook says; `ended` when its git process died without a word (the
//! leader's agent finds it, and the leader's refs then hold whatever it did); `taken-over`
//! or `dropped` when a new leader decided it (quorum mode applies what a quorum staged).
//! Only outcomes that applied name refs for a replica to read: a replica that walks past a
//! prepare whose outcome has not come yet moves nothing for it, and applies it when the
//! outcome comes. So a write is never skipped for having been caught between `prepared`
//! and git's commit, and an aborted write is known to be aborted, never guessed from the
//! leader's current ref values. A crash leaves at worst a prepare without outcome (the
//! agent's sweep, or the next election, writes one), never a moved ref without an entry.
//! A receive-pack push to the leader is journaled as one transaction, from `pre-receive`
//! (before any of its refs moves) to `post-receive` (after the last), whose outcome names
//! only the refs that moved (`hook::push`).
//!
//! The journal is bounded (stargate(7), Journal): every `keep`-th entry is a checkpoint, a
//! commit without a parent that names the entry before it (`previous`) and the prepares
//! then still open; `refs/stargate/journal-previous` keeps that previous generation
//! reachable. Sequence numbers go on across checkpoints. What anyone can fetch, a client's
//! `git clone --mirror` included, is at most two generations; a replica whose position is
//! older mirrors in full.
//!
//! With reftable ref storage, git holds the whole ref store locked from `prepared` until
//! the transaction ends, so the journal ref cannot move at `prepared`. There entries are
//! written as objects and named in `<repo>/stargate/journal.pending`, and the end of the
//! transaction publishes them: one `update-ref` moving the journal ref to the newest
//! pending entry, which carries any earlier one a crashed hook left unpublished.

pub mod changes;
mod entry;
mod pending;
pub mod position;
pub mod retain;
pub mod service;
pub mod signal;
pub mod stage;

use std::collections::HashSet;
use std::path::Path;

use gix::ObjectId;
use position::Position;

pub use entry::{Entry, Kind, LOCAL, Outcome, Update, Walked, journaled, parse_updates, walk};
#[cfg(test)]
use pending::pending;
pub use pending::publish;
use pending::{Pending, lock_pending, unpublished, write_pending};

use crate::store::{self, Expect, Store};

pub const REF: &str = "refs/stargate/journal";
/// The generation before the current one, kept reachable for replicas still in it.
pub const PREVIOUS: &str = "refs/stargate/journal-previous";
/// Entries per generation unless `stargate.journal.keep` says otherwise.
pub const DEFAULT_KEEP: u64 = 10_000;
/// How far back a replica walks before it gives up and mirrors everything.
pub const MAX_WALK: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("journal: {0}")]
    Open(#[from] store::OpenError),
    #[error("journal: {0}")]
    Read(#[from] store::ReadError),
    #[error("journal: cannot read entry {id}: {source}")]
    Entry { id: ObjectId, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("journal commit {0} is not a journal entry")]
    Malformed(ObjectId),
    /// Written by a newer leader (docs/ARCHITECTURE.md, Formats and versions): no sync is
    /// applied from it.
    #[error("{0}")]
    Format(#[from] crate::format::Unknown),
    #[error("journal: {0}")]
    Object(#[from] store::ObjectError),
    #[error("journal: {0}")]
    Edit(#[from] store::EditError),
    #[error("journal: {0}")]
    Swap(#[from] store::SwapError),
    #[error("cannot append to {REF}: {0}")]
    Contended(store::SwapError),
    #[error("journal: {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Open a repository for journal and ref work (see `refs::Store::open`).
pub fn open(path: &Path) -> Result<Store, Error> {
    Ok(Store::open(path)?)
}

/// The journal tip and its sequence number, as the journal ref says (on a reftable
/// leader, entries still pending publication are not counted).
pub fn tip(store: &Store) -> Result<Option<(ObjectId, u64)>, Error> {
    let Some(id) = store.find(REF)? else { return Ok(None) };
    Ok(Some((id, read(store, id)?.0.seq)))
}

/// The newest entry, published or not (reftable: still pending publication).
pub fn head(store: &Store) -> Result<Option<ObjectId>, Error> {
    let (published, pending) = unpublished(store)?;
    Ok(pending.map(|p| p.tip).or(published))
}

/// The entry stored in journal commit `id`, and its parent.
pub fn read(store: &Store, id: ObjectId) -> Result<(Entry, Option<ObjectId>), Error> {
    let entry = |e: Box<dyn std::error::Error + Send + Sync>| Error::Entry { id, source: e };
    let commit = store.repo().find_commit(id).map_err(|e| entry(Box::new(e)))?;
    let message = commit.message_raw().map_err(|e| entry(Box::new(e)))?.to_string();
    let parent = commit.parent_ids().next().map(|p| p.detach());
    Ok((Entry::parse(id, &message)?, parent))
}

/// Entries with their commit ids, oldest first.
pub type Entries = Vec<(ObjectId, Entry)>;

/// What walking the journal back from a tip found.
#[derive(Debug)]
pub enum Range {
    /// The entries after `since`, oldest first.
    Found(Entries),
    /// The walk reached a checkpoint before `since`: `entries` (oldest first) are the
    /// current generation; the rest is behind `previous` (the leader's `PREVIOUS`).
    Checkpoint { entries: Entries, previous: ObjectId },
    /// `since` is not behind `tip` (a new replica, a journal rewritten after a failover,
    /// or more than `MAX_WALK` entries).
    NotFound,
}

/// Walk back from `tip` to `since`.
pub fn range(repo: &Store, tip: ObjectId, since: Option<ObjectId>) -> Result<Range, Error> {
    let mut entries = Vec::new();
    let mut at = Some(tip);
    while let Some(id) = at {
        if Some(id) == since {
            entries.reverse();
            return Ok(Range::Found(entries));
        }
        if entries.len() >= MAX_WALK {
            return Ok(Range::NotFound);
        }
        let (entry, parent) = read(repo, id)?;
        let previous = entry.previous;
        entries.push((id, entry));
        if let (None, Some(previous), Some(_)) = (parent, previous, since) {
            entries.reverse();
            return Ok(Range::Checkpoint { entries, previous });
        }
        at = parent;
    }
    Ok(Range::NotFound)
}

/// The prepares at or before `tip` still without an outcome, oldest first: those of the
/// generation of `tip`, and those its checkpoint names as open from before.
pub fn open_prepares(store: &Store, tip: ObjectId) -> Result<Entries, Error> {
    let mut closed = HashSet::new();
    let mut open = Vec::new();
    let mut at = Some(tip);
    let mut carried = Vec::new();
    for _ in 0..MAX_WALK {
        let Some(id) = at else { break };
        let (entry, parent) = read(store, id)?;
        match entry.kind {
            Kind::Outcome { of, .. } => {
                closed.insert(of);
            }
            Kind::Prepare if !closed.contains(&id) => open.push((id, entry.clone())),
            _ => {}
        }
        if parent.is_none() {
            carried = entry.open.clone();
        }
        at = parent;
    }
    open.reverse();
    let mut older = Vec::new();
    for id in carried.into_iter().filter(|id| !closed.contains(id)) {
        // Behind a checkpoint: readable while the previous generation is kept.
        if let Ok((entry, _)) = read(store, id) {
            older.push((id, entry));
        }
    }
    older.extend(open);
    Ok(older)
}

/// Start the journal of a repository that has none with an entry of no updates (a new
/// leader, at election): replicas then mirror it in full once, and follow the journal
/// from there, instead of mirroring in full at every poll. Returns whether it wrote one.
pub fn genesis(store: &Store, epoch: u64, node: &str) -> Result<bool, Error> {
    if store.is_reftable() {
        // A hook killed between its transaction's end and the publication left entries.
        publish(store)?;
    }
    if tip(store)?.is_some() {
        return Ok(false);
    }
    append(store, epoch, node, Body::Start, DEFAULT_KEEP)?;
    if store.is_reftable() {
        publish(store)?;
    }
    Ok(true)
}

/// What to append.
#[derive(Debug, Clone)]
pub enum Body {
    /// A journal's first entry.
    Start,
    /// A prepared transaction's updates, to be numbered after the tip.
    Prepare(Vec<Update>),
    /// The outcome of prepare entry `of`, whose numbered updates it repeats.
    Outcome { of: ObjectId, outcome: Outcome, updates: Vec<(u64, Update)> },
}

/// Append one entry (the leader, or a node about to lead); every `keep`-th entry starts a
/// new generation. Concurrent transactions on other refs race for the journal ref; the
/// loser re-reads the tip and numbers after it. Returns the new entry and the journal's
/// sequence number at it (a prepare's last).
pub fn append(store: &Store, epoch: u64, node: &str, body: Body, keep: u64) -> Result<(ObjectId, u64), Error> {
    append_by(store, epoch, node, body, keep, None)
}

/// Journal `outcome` of prepare entry `of` (`prepare`, as read), naming `updates`
/// (published at once on reftable). A committed outcome anchors the values its updates
/// replaced, and is a position to say.
pub fn conclude(
    git: &Store,
    of: ObjectId,
    prepare: &Entry,
    outcome: Outcome,
    updates: Vec<(u64, Update)>,
    keep: u64,
) -> Result<Option<Position>, Error> {
    let body = Body::Outcome { of, outcome, updates: updates.clone() };
    let (id, newest) = append(git, prepare.epoch, &prepare.node, body, keep)?;
    if git.is_reftable() {
        publish(git)?;
    }
    if outcome != Outcome::Committed {
        return Ok(None);
    }
    // Best effort: a value it fails to anchor is still there until gc's grace ends.
    if let Err(e) = git.edit(&retain::edits(git, &updates, newest, keep)) {
        log::warn!("cannot anchor the values this write replaced: {e}");
    }
    Ok(Some(Position { epoch: prepare.epoch, seq: newest, id }))
}

/// The name the journal records as a write's pusher, from the environment git's server
/// gives the hooks: `STARGATE_PUSHER` (set by the site, e.g. in an ssh key's
/// `environment=`), gitolite's `GL_USER`, `git http-backend`'s `REMOTE_USER`
/// (stargate-hook(1), Push log). Control characters and `<>` removed; at most 128 bytes.
pub fn pusher_from_env() -> Option<String> {
    ["STARGATE_PUSHER", "GL_USER", "REMOTE_USER"].iter().find_map(|var| {
        let v = std::env::var(var).ok()?;
        let clean: String = v.chars().filter(|c| !c.is_control() && !matches!(c, '<' | '>')).take(128).collect();
        let clean = clean.trim().to_owned();
        (!clean.is_empty()).then_some(clean)
    })
}

/// Who pushed the write journal entry `id` prepared, when its server said (the entry's
/// author; `stargate` itself otherwise).
pub fn pusher(store: &Store, id: ObjectId) -> Option<String> {
    let commit = store.repo().find_commit(id).ok()?;
    let author = commit.author().ok()?;
    let name = author.name.to_string();
    (name != AUTHOR).then_some(name)
}

/// The author of every entry no pusher is known for.
const AUTHOR: &str = "stargate";

/// As `append`, a prepare naming `pusher` as its author (`pusher_from_env`): the entry's
/// message, which every node parses, stays the same.
pub fn append_by(
    store: &Store,
    epoch: u64,
    node: &str,
    body: Body,
    keep: u64,
    pusher: Option<&str>,
) -> Result<(ObjectId, u64), Error> {
    let empty_tree = store.write_loose(&gix::objs::Tree::empty())?;
    // Reftable: one transaction is prepared at a time (git holds the store), so no race
    // for the tip; the lock only orders this against a publication's cleanup.
    let pending_lock = if store.is_reftable() { Some(lock_pending(store.git_dir())?) } else { None };
    for attempt in 0..ATTEMPTS {
        let (published, pending) = unpublished(store)?;
        let tip = match pending.map(|p| p.tip).or(published) {
            Some(id) => Some((id, read(store, id)?.0)),
            None => None,
        };
        let seq = tip.as_ref().map_or(0, |(_, e)| e.seq);
        let depth = tip.as_ref().map_or(0, |(_, e)| e.depth + 1);
        let checkpoint = depth >= keep.max(2);
        let (kind, updates, seq) = match &body {
            Body::Start => (Kind::Start, Vec::new(), seq),
            Body::Prepare(updates) => {
                let numbered: Vec<_> =
                    updates.iter().cloned().enumerate().map(|(i, u)| (seq + 1 + i as u64, u)).collect();
                (Kind::Prepare, numbered, seq + updates.len() as u64)
            }
            Body::Outcome { of, outcome, updates } => {
                (Kind::Outcome { of: *of, outcome: *outcome }, updates.clone(), seq)
            }
        };
        // A checkpoint names the prepares open before it, but for the one it closes itself.
        let closes = match kind {
            Kind::Outcome { of, .. } => Some(of),
            _ => None,
        };
        let open = match (&tip, checkpoint) {
            (Some((id, _)), true) => {
                open_prepares(store, *id)?.into_iter().map(|(id, _)| id).filter(|id| Some(*id) != closes).collect()
            }
            _ => Vec::new(),
        };
        let entry = Entry {
            kind,
            seq,
            epoch,
            node: node.to_owned(),
            time_ms: crate::clock::now_ms(),
            updates,
            depth: if checkpoint { 0 } else { depth },
            previous: tip.as_ref().map(|(id, _)| *id).filter(|_| checkpoint),
            open,
        };
        let signature = gix::actor::Signature {
            name: AUTHOR.into(),
            email: format!("stargate@{node}").into(),
            time: gix::date::Time::new((entry.time_ms / 1000) as i64, 0),
        };
        let author = match pusher {
            Some(name) => gix::actor::Signature { name: name.into(), ..signature.clone() },
            None => signature.clone(),
        };
        let commit = gix::objs::Commit {
            message: entry.message().into(),
            tree: empty_tree,
            author,
            committer: signature,
            encoding: None,
            parents: tip.as_ref().map(|(id, _)| *id).filter(|_| !checkpoint).into_iter().collect(),
            extra_headers: Vec::new(),
        };
        let id = store.write_loose(&commit)?;
        if pending_lock.is_some() {
            let base = pending.map_or(published, |p| p.base);
            write_pending(store.git_dir(), &Pending { tip: id, base })
                .map_err(|source| Error::Io { what: "cannot name the entry pending".into(), source })?;
            return Ok((id, entry.seq));
        }
        if let Some(previous) = entry.previous {
            // Reachable before the new generation is: a replica in it can still be served.
            store.swap_loose(PREVIOUS, Expect::Any, previous)?;
        }
        let expected = tip.as_ref().map_or(Expect::Absent, |(old, _)| Expect::Value(*old));
        match store.swap_loose(REF, expected, id) {
            Ok(()) => return Ok((id, entry.seq)),
            // Another transaction's entry got there first: number after it.
            Err(e @ (store::SwapError::Moved { .. } | store::SwapError::Locked(_))) if attempt + 1 < ATTEMPTS => {
                log::debug!("{}: {e}; appending again", store.git_dir().display());
            }
            Err(e @ (store::SwapError::Moved { .. } | store::SwapError::Locked(_))) => {
                return Err(Error::Contended(e));
            }
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(std::time::Duration::from_millis(1 + rand::random_range(0..=attempt)));
    }
    unreachable!("the last attempt returns")
}

/// How often an append races other transactions for the journal ref before it gives up.
const ATTEMPTS: u64 = 50;

/// Append the outcome of prepare entry `of`, repeating its updates.
pub fn append_outcome(
    store: &Store,
    epoch: u64,
    node: &str,
    of: ObjectId,
    outcome: Outcome,
    keep: u64,
) -> Result<(ObjectId, u64), Error> {
    let (prepare, _) = read(store, of)?;
    append(store, epoch, node, Body::Outcome { of, outcome, updates: prepare.updates }, keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Edit;

    /// Prepares still open when a generation ends are named by its checkpoint, so that
    /// whoever reads only the current generation still knows them; their outcome closes them.
    #[test]
    fn open_prepares_are_carried_across_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(dir.path()).unwrap();
        let store = open(dir.path()).unwrap();
        let oid = store.write_object(gix::objs::Tree::empty()).unwrap();
        let keep = 3;
        assert!(genesis(&store, 1, "a").unwrap());
        let (p1, s1) = append(&store, 1, "a", update(oid), keep).unwrap();
        let (p2, s2) = append(&store, 1, "a", update(oid), keep).unwrap();
        assert_eq!((s1, s2), (1, 2));
        let ids = |entries: Entries| entries.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids(open_prepares(&store, p2).unwrap()), vec![p1, p2]);
        let (o2, seq) = append_outcome(&store, 1, "a", p2, Outcome::Committed, keep).unwrap();
        assert_eq!(seq, 2, "an outcome gives out no number");
        let (checkpoint, parent) = read(&store, o2).unwrap();
        assert_eq!((parent, checkpoint.previous, &checkpoint.open), (None, Some(p2), &vec![p1]));
        assert_eq!(checkpoint.applied().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2]);
        assert_eq!(ids(open_prepares(&store, o2).unwrap()), vec![p1], "carried by the checkpoint");
        let (o1, _) = append_outcome(&store, 1, "a", p1, Outcome::Aborted, keep).unwrap();
        assert!(open_prepares(&store, o1).unwrap().is_empty());
        let (p3, s3) = append(&store, 1, "a", update(oid), keep).unwrap();
        assert_eq!((s3, ids(open_prepares(&store, p3).unwrap())), (3, vec![p3]));
    }

    fn reftable_repo(dir: &Path) -> (Store, ObjectId) {
        let out = std::process::Command::new("git")
            .args(["init", "-q", "--bare", "--ref-format=reftable"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let store = open(dir).unwrap();
        let oid = store.write_object(gix::objs::Tree::empty()).unwrap();
        (store, oid)
    }

    fn update(oid: ObjectId) -> Body {
        Body::Prepare(vec![Update {
            old: ObjectId::null(gix::hash::Kind::Sha1),
            new: oid,
            refname: "refs/heads/main".into(),
        }])
    }

    /// Reftable: entries appended at `prepared` wait in the pending file; the next append
    /// chains after them (a crashed hook never published its entry), one publication moves
    /// the ref over all of them, and a generation started among them moves `PREVIOUS` too.
    #[test]
    fn reftable_entries_chain_while_pending_and_publish_together() {
        let dir = tempfile::tempdir().unwrap();
        let (store, oid) = reftable_repo(dir.path());
        assert!(genesis(&store, 1, "a").unwrap());
        let (first, seq) = tip(&store).unwrap().unwrap();
        assert_eq!(seq, 0);
        assert!(!pending(dir.path()), "genesis publishes at once");
        let (e1, s1) = append(&store, 1, "a", update(oid), 3).unwrap();
        assert_eq!(tip(&store).unwrap(), Some((first, 0)), "not published before the transaction ends");
        let (e2, s2) = append(&store, 1, "a", update(oid), 3).unwrap();
        assert_eq!((s1, s2), (1, 2));
        assert_eq!(read(&store, e2).unwrap().1, Some(e1), "chained after the pending entry");
        // Another transaction's end published part of the chain meanwhile.
        store.edit(&[Edit::update(REF, Some(first), Some(e1))]).unwrap();
        let (e3, s3) = append(&store, 1, "a", update(oid), 3).unwrap();
        let checkpoint = read(&store, e3).unwrap().0;
        assert_eq!((s3, checkpoint.previous), (3, Some(e2)), "a new generation among the pending entries");
        assert_eq!(checkpoint.open, vec![e1, e2], "the prepares still open");
        assert!(publish(&store).unwrap(), "from where the ref is, not where the chain began");
        assert_eq!(tip(&store).unwrap(), Some((e3, 3)));
        assert_eq!(store.find(PREVIOUS).unwrap(), Some(e2));
        assert!(!pending(dir.path()));
        assert!(!publish(&store).unwrap(), "nothing left to publish");
        assert!(!genesis(&store, 1, "a").unwrap());
    }

    /// A pending file left by another leadership (its chain does not reach the journal ref,
    /// which mirroring moved since) is never published over the ref, nor chained after.
    #[test]
    fn a_stale_pending_entry_is_neither_published_nor_continued() {
        let dir = tempfile::tempdir().unwrap();
        let (store, oid) = reftable_repo(dir.path());
        genesis(&store, 1, "a").unwrap();
        let (stale, _) = append(&store, 1, "a", update(oid), DEFAULT_KEEP).unwrap();
        let (published, _) = tip(&store).unwrap().unwrap();
        // Another leader's journal, mirrored here: a chain that does not contain `stale`.
        let other = tempfile::tempdir().unwrap();
        let (theirs, _) = reftable_repo(other.path());
        genesis(&theirs, 2, "b").unwrap();
        let (their_tip, _) = append(&theirs, 2, "b", update(oid), DEFAULT_KEEP).unwrap();
        publish(&theirs).unwrap();
        let out = std::process::Command::new("git")
            .args(["--git-dir", dir.path().to_str().unwrap(), "fetch", "-q"])
            .arg(other.path())
            .arg(format!("+{REF}:{REF}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_ne!(published, their_tip);
        assert!(!publish(&store).unwrap(), "the stale entry is dropped");
        assert_eq!(tip(&store).unwrap().map(|t| t.0), Some(their_tip));
        assert!(!pending(dir.path()));
        let (next, seq) = append(&store, 3, "a", update(oid), DEFAULT_KEEP).unwrap();
        assert_eq!(read(&store, next).unwrap().1, Some(their_tip), "continues the ref, not {stale}");
        assert_eq!(seq, 2);
    }
}
