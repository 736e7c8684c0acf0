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

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::refs::{Edit, Store};

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
    Git(String),
    #[error("journal commit {0} is not a journal entry")]
    Malformed(ObjectId),
}

fn git_err(e: impl std::fmt::Display) -> Error {
    Error::Git(e.to_string())
}

/// One ref update, as `reference-transaction` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub old: ObjectId,
    pub new: ObjectId,
    pub refname: String,
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first entry of a journal: no updates.
    Start,
    /// A transaction git has prepared: what it will do, not yet done.
    Prepare,
    /// How the transaction of prepare entry `of` ended.
    Outcome { of: ObjectId, outcome: Outcome },
    /// Written before the journal had outcomes: its updates are read as done when walked.
    Legacy,
}

/// How a prepared transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// git committed it (its `committed` hook).
    Committed,
    /// git aborted it (its `aborted` hook).
    Aborted,
    /// Its git process ended without a word: it is over, and the leader's refs hold what
    /// it did.
    Ended,
    /// A new leader applied it (quorum mode: it was staged on a node the election heard).
    TakenOver,
    /// A new leader did not apply it: its values were not to be had here (async mode), or
    /// its refs had moved on.
    Dropped,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Committed, Outcome::Aborted, Outcome::Ended, Outcome::TakenOver, Outcome::Dropped];

    pub fn word(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Aborted => "aborted",
            Outcome::Ended => "ended",
            Outcome::TakenOver => "taken-over",
            Outcome::Dropped => "dropped",
        }
    }

    /// Whether the leader's refs may have moved: a replica then reads and applies them.
    pub fn applies(self) -> bool {
        matches!(self, Outcome::Committed | Outcome::Ended | Outcome::TakenOver)
    }
}

/// One journal commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// The journal's sequence number at this entry: the last one given out at or before it.
    pub seq: u64,
    pub epoch: u64,
    pub node: String,
    pub time_ms: u64,
    /// A prepare's updates, numbered; an outcome that applies repeats them.
    pub updates: Vec<(u64, Update)>,
    /// Entries before this one in its generation (0 for a checkpoint or the first entry).
    pub depth: u64,
    /// A checkpoint: the last entry of the previous generation.
    pub previous: Option<ObjectId>,
    /// A checkpoint: the prepares of earlier generations still without an outcome.
    pub open: Vec<ObjectId>,
}

impl Entry {
    /// The updates this entry makes a replica apply: an applying outcome's, a legacy
    /// entry's; none for a prepare (not done yet), an abort or a start.
    pub fn applied(&self) -> &[(u64, Update)] {
        match self.kind {
            Kind::Outcome { outcome, .. } if outcome.applies() => &self.updates,
            Kind::Legacy => &self.updates,
            _ => &[],
        }
    }

    fn message(&self) -> String {
        let mut m = format!(
            "stargate journal {}\n\nepoch {}\nnode {}\ntime {}\ndepth {}\n",
            self.seq, self.epoch, self.node, self.time_ms, self.depth
        );
        match self.kind {
            Kind::Start => m += "state start\n",
            Kind::Prepare => m += "state prepared\n",
            Kind::Outcome { of, outcome } => m += &format!("state {} {of}\n", outcome.word()),
            Kind::Legacy => {}
        }
        if let Some(previous) = self.previous {
            m += &format!("previous {previous}\n");
        }
        for open in &self.open {
            m += &format!("open {open}\n");
        }
        for (seq, u) in &self.updates {
            m += &format!("{seq} {} {} {}\n", u.old, u.new, u.refname);
        }
        m
    }

    fn parse(id: ObjectId, message: &str) -> Result<Entry, Error> {
        let bad = || Error::Malformed(id);
        let mut lines = message.lines();
        let seq = lines.next().and_then(|l| l.strip_prefix("stargate journal ")).ok_or_else(bad)?;
        let mut entry = Entry {
            kind: Kind::Legacy,
            seq: seq.parse().map_err(|_| bad())?,
            epoch: 0,
            node: String::new(),
            time_ms: 0,
            updates: Vec::new(),
            depth: 0,
            previous: None,
            open: Vec::new(),
        };
        let oid = |hex: &str| ObjectId::from_hex(hex.as_bytes()).map_err(|_| bad());
        for line in lines.filter(|l| !l.is_empty()) {
            let (key, rest) = line.split_once(' ').ok_or_else(bad)?;
            match key {
                "epoch" => entry.epoch = rest.parse().map_err(|_| bad())?,
                "node" => entry.node = rest.to_owned(),
                "time" => entry.time_ms = rest.parse().map_err(|_| bad())?,
                "depth" => entry.depth = rest.parse().map_err(|_| bad())?,
                "previous" => entry.previous = Some(oid(rest)?),
                "open" => entry.open.push(oid(rest)?),
                "state" => {
                    entry.kind = match rest.split_once(' ') {
                        None if rest == "start" => Kind::Start,
                        None if rest == "prepared" => Kind::Prepare,
                        Some((word, of)) => {
                            let outcome = Outcome::ALL.into_iter().find(|o| o.word() == word).ok_or_else(bad)?;
                            Kind::Outcome { of: oid(of)?, outcome }
                        }
                        None => return Err(bad()),
                    }
                }
                seq => {
                    let seq: u64 = seq.parse().map_err(|_| bad())?;
                    let mut f = rest.splitn(3, ' ');
                    let (Some(old), Some(new), Some(refname)) = (f.next(), f.next(), f.next()) else {
                        return Err(bad());
                    };
                    entry.updates.push((seq, Update { old: oid(old)?, new: oid(new)?, refname: refname.to_owned() }));
                }
            }
        }
        Ok(entry)
    }
}

/// Parse `reference-transaction` stdin: `<old> <new> <ref>` per line. Symbolic updates
/// (`ref:<target>` values) are not journaled: mirroring copies refs, not symrefs.
pub fn parse_updates(input: &str) -> Vec<Update> {
    input
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ' ');
            let old = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
            let new = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
            Some(Update { old, new, refname: f.next()?.to_owned() })
        })
        .collect()
}

/// Each node's own refs, never mirrored: `refs/stargate/local/lost/...` keeps lost commits.
pub const LOCAL: &str = "refs/stargate/local/";

/// Refs the journal records: everything a mirror copies, except itself and node-local refs.
pub fn journaled(refname: &str) -> bool {
    refname.starts_with("refs/") && !refname.starts_with("refs/stargate/")
}

/// Open a repository for journal and ref work (see `refs::Store::open`).
pub fn open(path: &Path) -> Result<Store, Error> {
    Store::open(path).map_err(git_err)
}

/// The journal tip and its sequence number, as the journal ref says (on a reftable
/// leader, entries still pending publication are not counted).
pub fn tip(store: &Store) -> Result<Option<(ObjectId, u64)>, Error> {
    let Some(id) = store.find(REF).map_err(git_err)? else { return Ok(None) };
    Ok(Some((id, read(store, id)?.0.seq)))
}

/// The newest entry, published or not (reftable: still pending publication).
pub fn head(store: &Store) -> Result<Option<ObjectId>, Error> {
    let (published, pending) = unpublished(store)?;
    Ok(pending.map(|p| p.tip).or(published))
}

/// The entry stored in journal commit `id`, and its parent.
pub fn read(store: &Store, id: ObjectId) -> Result<(Entry, Option<ObjectId>), Error> {
    let commit = store.repo().find_commit(id).map_err(git_err)?;
    let message = commit.message_raw().map_err(git_err)?.to_string();
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

/// What a replica learns from the entries after its position (`walk`).
#[derive(Debug, Default)]
pub struct Walked {
    /// The refs whose leader value to read and apply, each with every value the journal
    /// says the leader's ref held (old or new of any of its updates): none of those is a
    /// loss.
    pub refs: BTreeMap<String, HashSet<ObjectId>>,
    /// The updates applied, for lag: sequence number, ref, the leader's time of the entry
    /// that applied it.
    pub applied: Vec<(u64, String, u64)>,
    /// Prepares walked past whose outcome is not among the entries: open after the walk.
    pub opened: Entries,
    /// The sequence numbers of every outcome among the entries: no longer open.
    pub closed: Vec<u64>,
}

/// What entries after a position (oldest first) ask of a replica.
pub fn walk(entries: &[(ObjectId, Entry)]) -> Walked {
    let mut walked = Walked::default();
    let outcomes: HashSet<ObjectId> = (entries.iter())
        .filter_map(|(_, e)| match e.kind {
            Kind::Outcome { of, .. } => Some(of),
            _ => None,
        })
        .collect();
    for (id, entry) in entries {
        for (_, u) in entry.updates.iter().filter(|(_, u)| journaled(&u.refname)) {
            walked.refs.entry(u.refname.clone()).or_default().extend([u.old, u.new]);
        }
        match entry.kind {
            Kind::Prepare if !outcomes.contains(id) => walked.opened.push((*id, entry.clone())),
            Kind::Outcome { .. } => walked.closed.extend(entry.updates.iter().map(|(seq, _)| *seq)),
            _ => {}
        }
        for (seq, u) in entry.applied().iter().filter(|(_, u)| journaled(&u.refname)) {
            walked.applied.push((*seq, u.refname.clone(), entry.time_ms));
        }
    }
    // Only what some entry applies is read from the leader; the rest were known values.
    let applying: HashSet<&str> = walked.applied.iter().map(|(_, r, _)| r.as_str()).collect();
    walked.refs.retain(|r, _| applying.contains(r.as_str()));
    walked
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
    let repo = store.repo();
    let empty_tree = write_loose(repo, &gix::objs::Tree::empty())?;
    // Reftable: one transaction is prepared at a time (git holds the store), so no race
    // for the tip; the lock only orders this against a publication's cleanup.
    let pending_lock = if store.is_reftable() { Some(lock_pending(store.git_dir())?) } else { None };
    let mut last_error = String::new();
    for attempt in 0..50u64 {
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
            name: "stargate".into(),
            email: format!("stargate@{node}").into(),
            time: gix::date::Time::new((entry.time_ms / 1000) as i64, 0),
        };
        let commit = gix::objs::Commit {
            message: entry.message().into(),
            tree: empty_tree,
            author: signature.clone(),
            committer: signature,
            encoding: None,
            parents: tip.as_ref().map(|(id, _)| *id).filter(|_| !checkpoint).into_iter().collect(),
            extra_headers: Vec::new(),
        };
        let id = write_loose(repo, &commit)?;
        if pending_lock.is_some() {
            let base = pending.map_or(published, |p| p.base);
            write_pending(store.git_dir(), &Pending { tip: id, base }).map_err(git_err)?;
            return Ok((id, entry.seq));
        }
        if let Some(previous) = entry.previous {
            // Reachable before the new generation is: a replica in it can still be served.
            write_ref(store, PREVIOUS, previous).map_err(git_err)?;
        }
        match swap_loose_ref(store, tip.as_ref().map(|(old, _)| *old), id) {
            Ok(()) => return Ok((id, entry.seq)),
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(1 + rand::random_range(0..=attempt)));
    }
    Err(Error::Git(format!("cannot append to {REF}: {last_error}")))
}

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

/// Reftable: entries appended since the journal ref last moved. `tip` is the newest;
/// `base` the journal ref's value when the first of them was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    tip: ObjectId,
    base: Option<ObjectId>,
}

fn pending_path(git_dir: &Path) -> PathBuf {
    git_dir.join("stargate/journal.pending")
}

/// Whether entries may wait for publication (reftable; nothing else writes the file).
pub fn pending(git_dir: &Path) -> bool {
    pending_path(git_dir).exists()
}

fn read_pending(git_dir: &Path) -> Option<Pending> {
    let text = std::fs::read_to_string(pending_path(git_dir)).ok()?;
    let mut f = text.split_whitespace();
    let tip = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
    let base = f.next().and_then(|b| ObjectId::from_hex(b.as_bytes()).ok());
    Some(Pending { tip, base })
}

fn write_pending(git_dir: &Path, p: &Pending) -> std::io::Result<()> {
    let base = p.base.map(|b| format!(" {b}")).unwrap_or_default();
    let path = pending_path(git_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::files::write_atomic(&path, format!("{}{base}\n", p.tip).as_bytes(), 0o644, false)
}

/// The lock ordering appends and a publication's cleanup of the pending file (flock,
/// released when dropped).
fn lock_pending(git_dir: &Path) -> Result<std::fs::File, Error> {
    let dir = git_dir.join("stargate");
    std::fs::create_dir_all(&dir).map_err(git_err)?;
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("journal.lock"))
        .map_err(git_err)?;
    file.lock().map_err(git_err)?;
    Ok(file)
}

/// How far a pending chain is walked back looking for the journal ref.
const PENDING_WALK: usize = 10_000;

/// The journal ref, and the pending entries when they continue the ref: a pending file
/// left from another leadership (its chain does not reach the ref) is stale.
fn unpublished(store: &Store) -> Result<(Option<ObjectId>, Option<Pending>), Error> {
    let published = store.find(REF).map_err(git_err)?;
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

/// Write `object` as a loose object, the way git does: zlib data in a temporary file,
/// then renamed to its id's path (mode 0444). The zlib stream uses stored (uncompressed)
/// blocks. Why not `write_object`: gix's deflate sets up some 700 KB of state for a
/// 300-byte journal commit, and on a VM the page faults of touching that cost more than the rest
/// of the hook (measured: 1.5 ms of a 3.9 ms `prepared`). An object already stored loose
/// is not written again.
fn write_loose(repo: &gix::Repository, object: &impl gix::objs::WriteTo) -> Result<ObjectId, Error> {
    let mut data = Vec::new();
    object.write_to(&mut data).map_err(git_err)?;
    let id = gix::objs::compute_hash(repo.object_hash(), object.kind(), &data).map_err(git_err)?;
    let hex = id.to_string();
    let dir = repo.objects.store_ref().path().join(&hex[..2]);
    let path = dir.join(&hex[2..]);
    if path.is_file() {
        return Ok(id);
    }
    let mut raw = gix::objs::encode::loose_header(object.kind(), data.len() as u64).to_vec();
    raw.extend_from_slice(&data);
    std::fs::create_dir_all(&dir).map_err(git_err)?;
    let tmp = dir.join(format!("tmp_obj_{}_{}", std::process::id(), rand::random::<u32>()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(&zlib_stored(&raw))?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(git_err(e));
    }
    Ok(id)
}

/// `data` as a zlib stream of stored deflate blocks (RFC 1950/1951): valid for every
/// inflater, and no compressor state at all.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&[0x78, 0x01]); // deflate, 32 KiB window, fastest; (0x7801 % 31 == 0)
    let mut chunks = data.chunks(u16::MAX as usize).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let len = chunk.len() as u16;
        out.push(u8::from(chunks.peek().is_none())); // BFINAL on the last; BTYPE 00: stored
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// Move the journal ref from `expected` to `new` the way git's files backend does:
/// `<ref>.lock` created exclusively, the old value checked under it, then renamed into
/// place. (A gix transaction would also want `packed-refs.lock`, which receive-pack holds
/// at `prepared` when a push deletes a ref.)
fn swap_loose_ref(repo: &Store, expected: Option<ObjectId>, new: ObjectId) -> std::io::Result<()> {
    let path = repo.git_dir().join(REF);
    let lock = path.with_extension("lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&lock)?;
    let result = (|| {
        let current = repo.find(REF).map_err(std::io::Error::other)?;
        if current != expected {
            return Err(std::io::Error::other(format!("{REF} moved to {current:?} meanwhile")));
        }
        file.write_all(format!("{new}\n").as_bytes())?;
        std::fs::rename(&lock, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
    result
}

/// Set ref `name` to `oid`, whatever it held, without hooks: for Stargate's own refs
/// beside the journal. On the files backend a loose ref under its lock, never
/// `packed-refs.lock` (see `swap_loose_ref`).
pub fn write_ref(repo: &Store, name: &str, oid: ObjectId) -> std::io::Result<()> {
    if repo.is_reftable() {
        return repo.edit(&[Edit::set(name, oid)]).map_err(std::io::Error::other);
    }
    crate::refs::check_name(name).map_err(std::io::Error::other)?;
    let path = repo.git_dir().join(name);
    let lock = path.with_extension("lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&lock)?;
    let written = file.write_all(format!("{oid}\n").as_bytes()).and_then(|()| std::fs::rename(&lock, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_message() {
        let a = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let z = ObjectId::null(gix::hash::Kind::Sha1);
        let updates = vec![
            (7, Update { old: z, new: a, refname: "refs/heads/main".into() }),
            (8, Update { old: a, new: z, refname: "refs/kv/x y".into() }),
        ];
        let mut entry = Entry {
            kind: Kind::Prepare,
            seq: 8,
            epoch: 3,
            node: "a".into(),
            time_ms: 1_700_000_000_123,
            updates,
            depth: 4,
            previous: Some(a),
            open: vec![a, a],
        };
        assert_eq!(Entry::parse(a, &entry.message()).unwrap(), entry);
        for outcome in Outcome::ALL {
            entry.kind = Kind::Outcome { of: a, outcome };
            assert_eq!(Entry::parse(a, &entry.message()).unwrap(), entry);
        }
        entry.kind = Kind::Start;
        assert_eq!(Entry::parse(a, &entry.message()).unwrap(), entry);
        // What a leader without outcomes wrote: read as legacy, its updates applied when walked.
        let legacy = format!("stargate journal 8\n\nepoch 3\nnode a\ntime 1\ndepth 0\n8 {z} {a} refs/heads/main\n");
        let parsed = Entry::parse(a, &legacy).unwrap();
        assert_eq!((parsed.kind, parsed.seq, parsed.applied().len()), (Kind::Legacy, 8, 1));
        assert!(Entry::parse(a, "not a journal\n").is_err());
        assert!(Entry::parse(a, "stargate journal 1\n\nepoch x\n").is_err());
        assert!(Entry::parse(a, "stargate journal 1\n\nstate won 1111\n").is_err());
    }

    /// A prepare is not a write: walking past it moves nothing, and its outcome, whenever it
    /// comes, applies it (committed, ended, taken over) or closes it (aborted, dropped).
    #[test]
    fn a_walk_applies_outcomes_not_prepares() {
        let z = ObjectId::null(gix::hash::Kind::Sha1);
        let id = |n: u8| ObjectId::from_bytes_or_panic(&[n; 20]);
        let prepare = |seq: u64, refname: &str| Entry {
            kind: Kind::Prepare,
            seq,
            epoch: 1,
            node: "a".into(),
            time_ms: seq * 10,
            updates: vec![(seq, Update { old: z, new: id(seq as u8), refname: refname.into() })],
            depth: 0,
            previous: None,
            open: Vec::new(),
        };
        let outcome = |of: u8, p: &Entry, outcome: Outcome| Entry {
            kind: Kind::Outcome { of: id(of), outcome },
            time_ms: p.time_ms + 5,
            ..p.clone()
        };
        let (p1, p2, p3) = (prepare(1, "refs/heads/a"), prepare(2, "refs/heads/b"), prepare(3, "refs/heads/c"));
        // Caught between prepared and commit: nothing to apply, the prepare stays open.
        let walked = walk(&[(id(1), p1.clone())]);
        assert!(walked.refs.is_empty() && walked.applied.is_empty());
        assert_eq!(walked.opened.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![id(1)]);
        // Its outcome in a later walk applies it, from the leader's value at that time.
        let walked = walk(&[(id(2), p2.clone()), (id(11), outcome(1, &p1, Outcome::Committed))]);
        assert_eq!(walked.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/a"]);
        assert_eq!(walked.applied, vec![(1, "refs/heads/a".to_owned(), 15)]);
        assert_eq!(walked.opened.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![id(2)]);
        assert_eq!(walked.closed, vec![1]);
        // Aborted and dropped close without applying; ended and taken over apply.
        let walked = walk(&[
            (id(12), outcome(2, &p2, Outcome::Aborted)),
            (id(3), p3.clone()),
            (id(13), outcome(3, &p3, Outcome::Ended)),
        ]);
        assert_eq!(walked.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/c"]);
        assert!(walked.opened.is_empty());
        assert_eq!(walked.closed, vec![2, 3]);
        let walked =
            walk(&[(id(13), outcome(3, &p3, Outcome::Dropped)), (id(14), outcome(1, &p1, Outcome::TakenOver))]);
        assert_eq!(walked.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/a"]);
    }

    /// Prepares still open when a generation ends are named by its checkpoint, so that
    /// whoever reads only the current generation still knows them; their outcome closes them.
    #[test]
    fn open_prepares_are_carried_across_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(dir.path()).unwrap();
        let store = open(dir.path()).unwrap();
        let oid = store.repo().write_object(gix::objs::Tree::empty()).unwrap().detach();
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

    /// Objects written by `write_loose` (stored zlib blocks, one and several) read back by git.
    #[test]
    fn loose_objects_written_here_are_read_by_git() {
        let dir = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(dir.path()).unwrap();
        let git =
            |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir.path()).args(args).output().unwrap();
        let store = open(dir.path()).unwrap();
        let repo = store.repo();
        let tree = repo.write_object(gix::objs::Tree::empty()).unwrap().detach();
        let signature = gix::actor::Signature {
            name: "t".into(),
            email: "t@t".into(),
            time: gix::date::Time::new(1_700_000_000, 0),
        };
        for len in [0usize, 300, 65_000, 200_000] {
            let commit = gix::objs::Commit {
                message: "m".repeat(len).into(),
                tree,
                author: signature.clone(),
                committer: signature.clone(),
                encoding: None,
                parents: Default::default(),
                extra_headers: Vec::new(),
            };
            let id = write_loose(repo, &commit).unwrap();
            let out = git(&["cat-file", "commit", &id.to_string()]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let mut expected = Vec::new();
            gix::objs::WriteTo::write_to(&commit, &mut expected).unwrap();
            assert!(out.stdout == expected, "message of {len} bytes read back differently");
            assert_eq!(write_loose(repo, &commit).unwrap(), id, "written again: same id");
        }
        let fsck = git(&["fsck", "--strict", "--unreachable"]);
        assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
    }

    fn reftable_repo(dir: &Path) -> (Store, ObjectId) {
        let out = std::process::Command::new("git")
            .args(["init", "-q", "--bare", "--ref-format=reftable"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let store = open(dir).unwrap();
        let oid = store.repo().write_object(gix::objs::Tree::empty()).unwrap().detach();
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

    #[test]
    fn transaction_input_is_parsed_and_filtered() {
        let input = "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/main\nref:refs/heads/a ref:refs/heads/b HEAD\ngarbage\n";
        let updates = parse_updates(input);
        assert_eq!(updates.len(), 1);
        assert!(journaled("refs/heads/main") && journaled("refs/kv/default"));
        assert!(!journaled(REF) && !journaled("refs/stargate/local/lost/1/refs/heads/x") && !journaled("HEAD"));
    }
}
