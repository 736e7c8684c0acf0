//! A receive-pack push journaled once (docs/ARCHITECTURE.md, The journal): `pre-receive`
//! sees every command of the push before any ref moves, so on the leader it journals one
//! prepare entry for all of them; each ref's `reference-transaction prepared` then only
//! checks the lease, `committed` and `aborted` do nothing, and `post-receive` (run once,
//! with the commands that succeeded) journals the outcome and signals the replicas. A
//! non-atomic push of N refs so costs two journal entries instead of 2N.
//!
//! What a replica needs still holds: the prepare is journaled before any ref of the push
//! moves, and the outcome after every one that moved, naming those (a replica reads their
//! values from the leader). Should git die in between, or no command succeed (git then runs
//! no `post-receive`), the agent's sweep journals the outcome as ended, as for any write
//! whose git died (`lead::inflight`). A drain waits for the push as for any write in flight.
//!
//! Only where the per-transaction journal adds nothing git's order does not give: not in
//! quorum mode (each transaction waits for its quorum at `prepared`), not with reftable (the
//! journal ref is locked with the store between `prepared` and the end), not under a
//! `GIT_NAMESPACE` (the commands name refs without it), and only when Stargate's own
//! `post-receive` will run after this `pre-receive`.

use std::collections::HashSet;
use std::path::Path;

use gix::ObjectId;

use super::{HookError, Repo};
use crate::error::Result;
use crate::journal::position::Position;
use crate::journal::{self, Body, Outcome, Update};
use crate::lead::inflight;
use crate::lead::node;

/// At `pre-receive` on the leader, after the lease check and the repository's own hook:
/// journal one prepare for every command of the push that a ref transaction will apply,
/// unless the push is journaled per transaction instead (see the module's header).
pub fn begin(repo: &Repo, state_dir: &Path, text: &str, quorum: bool) -> Result<()> {
    let git_dir = repo.git_dir();
    // Under a namespace (gitnamespaces(7)) the hooks' commands name refs without it.
    let namespaced = std::env::var_os("GIT_NAMESPACE").is_some_and(|n| !n.is_empty());
    if quorum || namespaced || !post_receive_follows() || crate::repos::is_reftable(git_dir) {
        return Ok(());
    }
    // Commands git hands to `proc-receive` are applied there, by transactions of their own.
    let updates: Vec<Update> = (journal::parse_updates(text).into_iter())
        .filter(|u| journal::journaled(&u.refname) && !u.refname.starts_with(journal::LOCAL))
        .filter(|u| !crate::managed::PROC_RECEIVE_REFS.iter().any(|p| u.refname.starts_with(p)))
        .collect();
    if updates.is_empty() {
        return Ok(());
    }
    // In flight from here to `post-receive`, marked before the last look at the node state.
    let mut marker = inflight::Marker::begin(state_dir, git_dir).map_err(HookError::Mark)?;
    let view = node::inspect_state(Some(state_dir));
    let epoch = super::require_leader(&view)?;
    let git = journal::open(git_dir).map_err(HookError::Open)?;
    let keep = view.state.as_ref().and_then(|s| s.journal_keep).unwrap_or(journal::DEFAULT_KEEP);
    let pusher = journal::pusher_from_env();
    // The commands' old values are what each ref holds when it moves: git's transaction
    // checks them with the ref locked, and fails the command otherwise.
    let count = updates.len() as u64;
    let (entry, last) = journal::append_by(&git, epoch, &view.me, Body::Prepare(updates), keep, pusher.as_deref())
        .map_err(HookError::Journal)?;
    marker.note_push(entry, last + 1 - count, last).map_err(HookError::Note)?;
    marker.keep();
    Ok(())
}

/// Whether git runs Stargate's `post-receive` after this `pre-receive`: it is in the same
/// hooks directory (a managed repository's own, or the machine-wide `githooks/`; not
/// `githooks-minimal/`).
fn post_receive_follows() -> bool {
    let Some(me) = std::env::args_os().next() else { return false };
    let path = Path::new(&me).with_file_name("post-receive");
    Path::new(&me).file_name().is_some_and(|n| n == "pre-receive") && path.is_file()
}

/// At `reference-transaction`: whether this git process's push was journaled at
/// `pre-receive` (and is not over), so that its transactions journal nothing themselves.
pub fn journaled(state_dir: &Path) -> bool {
    inflight::current(state_dir).is_some_and(|note| note.push)
}

/// At `post-receive`, with the commands that succeeded (`input`): journal the outcome of
/// the push's prepare, naming the updates that were applied, end the push's mark and
/// signal the replicas. The position of the outcome, once journaled; nothing when this
/// push was journaled per transaction. A failure leaves the mark for the agent's sweep.
pub fn end(state_dir: &Path, input: &[u8]) -> Option<Position> {
    let note = inflight::current(state_dir).filter(|note| note.push)?;
    let (prepare, first, last) = note.prepare?;
    let done: HashSet<(String, ObjectId)> =
        (journal::parse_updates(&String::from_utf8_lossy(input)).into_iter()).map(|u| (u.refname, u.new)).collect();
    let keep = node::state(state_dir).and_then(|s| s.journal_keep).unwrap_or(journal::DEFAULT_KEEP);
    let ended = journal::open(&note.git_dir).and_then(|git| {
        let (entry, _) = journal::read(&git, prepare)?;
        let applied: Vec<(u64, Update)> =
            entry.updates.iter().filter(|(_, u)| done.contains(&(u.refname.clone(), u.new))).cloned().collect();
        let (outcome, updates) = match applied.is_empty() {
            true => (Outcome::Aborted, entry.updates.clone()),
            false => (Outcome::Committed, applied),
        };
        let body = Body::Outcome { of: prepare, outcome, updates: updates.clone() };
        let (id, newest) = journal::append_by(&git, entry.epoch, &entry.node, body, keep, None)?;
        if outcome == Outcome::Aborted {
            return Ok(None);
        }
        // Best effort: a value it fails to anchor is still there until gc's grace ends.
        if let Err(e) = git.edit(&journal::retain::edits(&git, &updates, newest, keep)) {
            log::warn!("cannot anchor the values this push replaced: {e}");
        }
        Ok(Some(Position { epoch: entry.epoch, seq: newest, id }))
    });
    match ended {
        Ok(position) => {
            inflight::finish(state_dir, position.map(|p| p.to_string()).as_deref());
            if position.is_some() {
                journal::signal::peers(state_dir, &note.git_dir);
            }
            position
        }
        Err(e) => {
            log::warn!("cannot journal this push's outcome (seq {first}..{last}); the agent will: {e}");
            None
        }
    }
}
