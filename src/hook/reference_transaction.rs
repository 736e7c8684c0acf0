//! `reference-transaction <state>`: at `prepared` every ref of the transaction is locked
//! and a non-zero exit aborts it, so the lease is checked once more here. A leader that
//! lost the lease after `pre-receive` therefore still cannot commit, and nothing but the
//! agent's own mirroring writes on a passive node.
//!
//! On the leader, `prepared` also journals the transaction's prepare entry (before any ref
//! moves, and after the repository's own hook agreed), `committed` and `aborted` its
//! outcome, and `committed` signals the replicas to sync now instead of at their next poll;
//! unless the transaction is one of a push journaled at `pre-receive` (`push`), which only
//! checks the lease, and is counted at `committed`. Transactions that only move refs between
//! storage forms (`pack-refs`, `gc`) change no value: they are neither checked nor
//! journaled, on any node.

use std::collections::HashMap;
use std::path::Path;

use gix::ObjectId;

use super::{HookError, Repo, chain};
use crate::error::{Error, Result};
use crate::journal::stage;
use crate::journal::{self, Body, Outcome, Update};
use crate::lead::inflight;
use crate::lead::node::{self, SyncClaim};

const NAME: &str = "reference-transaction";

pub fn run(repo: &Repo, state_dir: Option<&Path>, args: &[String]) -> Result<()> {
    let state = args.first().ok_or_else(|| Error::Usage("reference-transaction <state>".into()))?;
    let input = super::read_input()?;
    let all = journal::parse_updates(&String::from_utf8_lossy(&input));
    let t = Transaction { repo, state_dir, args, input, all };
    match state.as_str() {
        "prepared" => t.prepared(),
        "committed" => t.committed(),
        "aborted" => t.aborted(),
        _ => t.chain(),
    }
}

/// One run of the hook: git's arguments and the updates it wrote on stdin.
struct Transaction<'a> {
    repo: &'a Repo,
    state_dir: Option<&'a Path>,
    args: &'a [String],
    input: Vec<u8>,
    all: Vec<Update>,
}

/// A write being refused at `prepared`: logged with what it would have changed.
fn refusing(changes: &[Update]) -> impl Fn(Error) -> Error + '_ {
    move |e| {
        for u in changes {
            log::warn!("refused: {} {} -> {}", u.refname, u.old, u.new);
        }
        e
    }
}

impl Transaction<'_> {
    /// The repository's own hook of the same name.
    fn chain(&self) -> Result<()> {
        chain::run(NAME, self.args, self.repo, &self.input)
    }

    /// `prepared`: every ref of the transaction locked, nothing moved; a non-zero exit
    /// aborts it. In order: the agent's own mirroring passes; moves of storage and a node's
    /// own refs need no leader; this node must lead the current epoch; the repository's own
    /// hook; the write marked in flight; this node must still lead (the last look); the
    /// prepare entry; in quorum mode, a quorum of nodes holding it. A push's transaction,
    /// marked and journaled at `pre-receive`, stops after the looks.
    fn prepared(&self) -> Result<()> {
        match self.state_dir.map(node::sync_claim) {
            Some(SyncClaim::Valid) => return self.chain(),
            Some(SyncClaim::Refused(why)) => return Err(Error::Refused(why)),
            _ => {}
        }
        // Judged before anything moves: at `committed` every real change looks stored already.
        let refs = Refs::new(self.repo.git_dir(), &self.all);
        // A node's own refs (kept lost commits) are neither mirrored nor journaled: an
        // operator may remove them on any node. Symbolic refs (HEAD, as `git init` writes
        // it) are neither journaled nor mirrored: like storage moves, they need no leader.
        let changes: Vec<Update> = (self.all.iter())
            .filter(|u| !refs.storage_only(u) && !u.refname.starts_with(journal::LOCAL))
            .cloned()
            .collect();
        if changes.is_empty() {
            return self.chain();
        }
        let refuse = refusing(&changes);
        // Pushed there, a `git kv` change is the leader's to apply (`proc_receive`); that it
        // reaches a transaction means git was not told to hand it over.
        if let Some(u) = changes.iter().find(|u| u.refname.starts_with(crate::kvtree::FOR_PREFIX)) {
            let why = format!(
                "refusing {}: git kv changes there are applied by the leader, and this node's git lacks \
                 receive.procReceiveRefs=refs/for/kv/ (stargate(7), Managed repositories)",
                u.refname
            );
            return Err(refuse(Error::Refused(why)));
        }
        // A push journaled at `pre-receive` (`push`): marked in flight already, so the look
        // after the repository's own hook is the last one, and there is nothing to journal.
        // Quorum mode, begun since: each write must wait for its quorum here; push again.
        let pushed = match self.state_dir {
            Some(state_dir) => super::push::prepared(state_dir).map_err(&refuse)?,
            None => false,
        };
        if let Some(state_dir) = self.state_dir.filter(|_| pushed) {
            let look = || {
                let view = node::inspect_state(Some(state_dir));
                super::require_leader(&view)?;
                match view.state.is_some_and(|s| s.quorum.is_some()) {
                    true => Err(Error::Refused("quorum mode began during this push: push again".into())),
                    false => Ok(()),
                }
            };
            look().map_err(&refuse)?;
            if chain::ran(NAME, self.args, self.repo, &self.input)? {
                look().map_err(&refuse)?;
            }
            return Ok(());
        }
        super::require_leader(&node::inspect_state(self.state_dir)).map_err(&refuse)?;
        self.chain()?;
        // The journal records what each ref really held, whatever the caller expected.
        let updates: Vec<Update> = (changes.iter().filter(|u| journal::journaled(&u.refname)))
            .map(|u| Update { old: refs.current(&u.refname).unwrap_or(u.old), ..u.clone() })
            .collect();
        if updates.is_empty() {
            return Ok(());
        }
        // In flight from here to `committed` or `aborted`, marked before the last look at
        // the node state: a draining leader waits for it (see `lead::inflight`).
        let state_dir = self.state_dir.ok_or(HookError::NoState)?;
        let mut marker = inflight::Marker::begin(state_dir, self.repo.git_dir()).map_err(HookError::Mark)?;
        // Judged again: the repository's own hook may have taken its time.
        let view = node::inspect_state(Some(state_dir));
        let epoch = super::require_leader(&view).map_err(&refuse)?;
        let git = refs.into_store().map_err(HookError::Open)?.with_spares(state_dir.join(crate::spare::DIR));
        let quorum = view.state.as_ref().and_then(|s| s.quorum.clone());
        if quorum.is_some() && git.is_reftable() {
            return Err(refuse(Error::Refused(crate::repos::unsupported_refusal(crate::repos::QUORUM_REFTABLE))));
        }
        let (entry, last) = journal::append_by(
            &git,
            epoch,
            &view.me,
            Body::Prepare(updates.clone()),
            journal::service::keep(view.state.as_ref()),
            journal::pusher_from_env().as_deref(),
        )
        .map_err(HookError::Journal)?;
        let first = last + 1 - (updates.len() as u64).max(1);
        // From here on `aborted` or `committed` journals the outcome, or, should git die
        // first, the agent's sweep does (`Outcome::Ended`).
        marker.note_prepare(entry, first, last).map_err(HookError::Note)?;
        marker.keep();
        let Some(plan) = quorum else { return Ok(()) };
        stage::anchor(&git, first, &updates).map_err(HookError::Anchor)?;
        let name = repo_name(state_dir, self.repo.git_dir()).unwrap_or_default();
        stage::wait_for_quorum(&git, &name, entry, last, &plan)
            .map(drop)
            .map_err(|why| refuse(Error::Refused(why.to_string())))
    }

    /// `committed`: the outcome journaled before the write stops counting as in flight (a
    /// draining leader hands over only once its journal names every committed write), then
    /// the replicas signalled (a hint: one after a gc only costs them an idle sync).
    fn committed(&self) -> Result<()> {
        if self.state_dir.is_some_and(|s| super::push::committed(s, &self.all)) {
            return self.chain();
        }
        end(self.state_dir, Outcome::Committed);
        if let Some(state_dir) = self.state_dir
            && self.all.iter().any(|u| u.old != u.new && journal::journaled(&u.refname))
        {
            crate::journal::signal::peers(state_dir, self.repo.git_dir());
        }
        self.chain()
    }

    /// `aborted`: the outcome journaled, so that replicas that walked past the prepare know.
    fn aborted(&self) -> Result<()> {
        if self.state_dir.is_some_and(super::push::journaled) {
            return self.chain();
        }
        end(self.state_dir, Outcome::Aborted);
        self.chain()
    }
}

/// The transaction this hook journaled at `prepared` ended: journal its outcome, drop its
/// quorum anchors, and only then stop counting it as in flight. A failure leaves the
/// marker, so that the agent's sweep writes the outcome.
fn end(state_dir: Option<&Path>, outcome: Outcome) {
    let Some(state_dir) = state_dir else { return };
    let Some(note) = inflight::current(state_dir) else { return };
    let Some((prepare, first, last)) = note.prepare else {
        return inflight::finish(state_dir, None);
    };
    let keep = journal::service::keep(node::state(state_dir).as_ref());
    let done = super::journal_store(&note.git_dir, state_dir).and_then(|git| {
        let (entry, _) = journal::read(&git, prepare)?;
        journal::conclude(&git, prepare, &entry, outcome, entry.updates.clone(), keep)
    });
    match done {
        Ok(position) => {
            stage::unanchor(&note.git_dir, first..=last);
            inflight::finish(state_dir, position.map(|p| p.to_string()).as_deref());
        }
        Err(e) => log::warn!("cannot journal this write's outcome ({}); the agent will: {e}", outcome.word()),
    }
}

/// The repository's name relative to the root whose node state is `state_dir`.
fn repo_name(state_dir: &Path, git_dir: &Path) -> Option<String> {
    let root = state_dir.parent()?;
    let repo = git_dir.canonicalize().ok()?;
    Some(repo.strip_prefix(root.canonicalize().ok()?).ok()?.to_string_lossy().into_owned())
}

/// An update that changes how a ref is stored, not its value. Judged against the ref's
/// actual value: `old` in the hook's input is the caller's expectation (all zeros for
/// `update-ref -d` without one), not what the ref holds.
///
/// `pack-refs` first copies loose refs into the packed store (reported as `0000 -> X`
/// while the ref already is X), then prunes each loose copy (`X -> 0000` while
/// `packed-refs` holds the same X and nobody holds `packed-refs.lock`). Any real deletion
/// of a packed ref holds that lock while it is prepared, so it is never taken for a prune.
/// Reftable has no such moves (its compaction runs no transaction): there only a ref set
/// to the value it holds changes nothing.
struct Refs<'a> {
    git_dir: &'a Path,
    /// `packed-refs`, read once on first use: a transaction may name 100k refs.
    packed: std::cell::OnceCell<HashMap<String, ObjectId>>,
    /// Reftable: the repository, with the transaction's refs and the journal's read ahead
    /// in one git run on first use (nothing moves them while git holds the store for this
    /// transaction), kept for the journal append. Unreadable, the refs read as absent:
    /// every update then counts as a change, judged and journaled with the old value git
    /// reported.
    table: Option<std::cell::OnceCell<Option<crate::store::Store>>>,
    updates: &'a [Update],
}

impl<'a> Refs<'a> {
    fn new(git_dir: &'a Path, updates: &'a [Update]) -> Refs<'a> {
        let table = crate::repos::is_reftable(git_dir).then(std::cell::OnceCell::new);
        Refs { git_dir, packed: std::cell::OnceCell::new(), table, updates }
    }

    /// The store read so far (reftable), else a newly opened one, for the journal.
    fn into_store(self) -> std::result::Result<crate::store::Store, journal::Error> {
        match self.table.and_then(|mut t| t.take()).flatten() {
            Some(store) => Ok(store),
            None => journal::open(self.git_dir),
        }
    }

    fn storage_only(&self, u: &Update) -> bool {
        if !u.new.is_null() {
            return self.current(&u.refname) == Some(u.new);
        }
        if self.table.is_some() {
            return false;
        }
        let loose = self.loose(&u.refname);
        loose.is_some() && !self.git_dir.join("packed-refs.lock").exists() && loose == self.packed(&u.refname)
    }

    /// What `refname` holds now: its loose file, else its `packed-refs` line (reftable:
    /// git's answer).
    fn current(&self, refname: &str) -> Option<ObjectId> {
        if let Some(table) = &self.table {
            let store = table.get_or_init(|| {
                let names = (self.updates.iter().map(|u| u.refname.as_str()))
                    .chain([journal::REF])
                    .filter(|n| crate::store::check_name(n).is_ok());
                let store = crate::store::Store::open(self.git_dir);
                match store
                    .map_err(|e| e.to_string())
                    .and_then(|store| store.read_ahead(names).map(|()| store).map_err(|e| e.to_string()))
                {
                    Ok(store) => Some(store),
                    Err(e) => {
                        log::warn!("cannot read the refs of this transaction: {e}");
                        None
                    }
                }
            });
            return store.as_ref().and_then(|s| s.find(refname).ok().flatten());
        }
        self.loose(refname).or_else(|| self.packed(refname))
    }

    fn loose(&self, refname: &str) -> Option<ObjectId> {
        crate::store::read_loose(self.git_dir, refname)
    }

    fn packed(&self, refname: &str) -> Option<ObjectId> {
        let packed = self.packed.get_or_init(|| {
            let text = std::fs::read_to_string(self.git_dir.join("packed-refs")).unwrap_or_default();
            (text.lines())
                .filter_map(|l| {
                    let (hex, name) = l.split_once(' ')?;
                    Some((name.to_owned(), ObjectId::from_hex(hex.as_bytes()).ok()?))
                })
                .collect()
        });
        packed.get(refname).copied()
    }
}
