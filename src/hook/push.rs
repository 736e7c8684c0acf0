//! A receive-pack push journaled once (docs/ARCHITECTURE.md, A push, step by step):
//! `pre-receive` sees every command of the push before any ref moves, so on the leader it
//! journals one prepare entry for all of them; each ref's `reference-transaction prepared`
//! then only checks the lease, and `committed` counts its commands in the in-flight mark.
//! The transaction that commits the last command journals the outcome and signals the
//! replicas. When a command fails, `post-receive` (run once, after git answered, with the
//! commands that succeeded) journals the outcome instead, naming only the refs that moved.
//! A non-atomic push of N refs so costs two journal entries instead of 2N.
//!
//! The leader's agent writes both entries (`journal::service`): `pre-receive` asks for the
//! prepare and exits, the push's first `prepared` waits for it (git moves the pushed objects
//! out of quarantine and locks the refs meanwhile); the `committed` that ends the push asks
//! for the outcome and exits, and `post-receive` waits for it (git sends the client its
//! report meanwhile; the push ends for the client only after `post-receive`). Where no agent
//! listens, the hooks write them as before, the outcome before git answers the client.
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
use std::time::Duration;

use gix::ObjectId;

use super::{HookError, Repo};
use crate::error::{Error, Result};
use crate::journal::position::Position;
use crate::journal::service::{self, Answer, Done, Step, Unanswered};
use crate::journal::{self, Body, Update};
use crate::lead::inflight;
use crate::lead::node;

/// At `pre-receive` on the leader, after the lease check (`seen`: the node as it found it,
/// leading) and the repository's own hook: journal one prepare for every command of the
/// push that a ref transaction will apply, unless the push is journaled per transaction
/// instead (see the module's header). `me`: the path git started this `pre-receive` by.
pub fn begin(repo: &Repo, state_dir: &Path, text: &str, me: &Path, seen: &node::View) -> Result<()> {
    let quorum = seen.state.as_ref().is_some_and(|s| s.quorum.is_some());
    let git_dir = repo.git_dir();
    // Under a namespace (gitnamespaces(7)) the hooks' commands name refs without it.
    let namespaced = std::env::var_os("GIT_NAMESPACE").is_some_and(|n| !n.is_empty());
    if quorum || namespaced || !post_receive_follows(me) || crate::repos::is_reftable(git_dir) {
        return Ok(());
    }
    // Commands git hands to `proc-receive` are applied there, by transactions of their own.
    let updates: Vec<Update> = (journal::parse_updates(text).into_iter())
        .filter(counts)
        .filter(|u| !crate::managed::PROC_RECEIVE_REFS.iter().any(|p| u.refname.starts_with(p)))
        .collect();
    if updates.is_empty() {
        return Ok(());
    }
    // In flight from here to `post-receive`, marked before the last look at the node state:
    // the agent's, as it journals (it looks as the hooks do, and refuses an epoch other than
    // the one this hook saw), else this hook's.
    let epoch = super::require_leader(seen)?;
    let mut marker = inflight::Marker::begin(state_dir, git_dir).map_err(HookError::Mark)?;
    let pusher = journal::pusher_from_env();
    // The commands' old values are what each ref holds when it moves: git's transaction
    // checks them with the ref locked, and fails the command otherwise.
    let count = updates.len() as u64;
    let request = service::Request::Prepare {
        git_dir: marker.git_dir().to_owned(),
        epoch,
        updates: service::lines(&updates),
        pusher: pusher.clone(),
        pid: marker.pid(),
    };
    // Asked of the agent, which notes the prepare in the mark; `prepared` waits for it.
    marker.note_asked().map_err(HookError::Note)?;
    match service::send(state_dir, &request) {
        Ok(()) => {
            marker.keep();
            return Ok(());
        }
        Err(e) => log::debug!("journaling this push here: {e}"),
    }
    // The last look at the node state, after the mark: the agent's above, this hook's here.
    let view = node::inspect_state(Some(state_dir));
    let epoch = super::require_leader(&view)?;
    let git = super::journal_store(git_dir, state_dir).map_err(HookError::Open)?;
    let keep = service::keep(view.state.as_ref());
    let (entry, last) = journal::append_by(&git, epoch, &view.me, Body::Prepare(updates), keep, pusher.as_deref())
        .map_err(HookError::Journal)?;
    marker.note_push(entry, last + 1 - count, last).map_err(HookError::Note)?;
    marker.keep();
    Ok(())
}

/// At `reference-transaction prepared`: whether this git process's push was journaled at
/// `pre-receive` (and is not over), so that its transactions journal nothing themselves.
/// A prepare asked of the agent and not yet noted is waited for: its refusal, or no answer
/// in time, refuses the transaction.
pub fn prepared(state_dir: &Path) -> Result<bool> {
    let Some(note) = inflight::current(state_dir).filter(|n| n.alive()) else { return Ok(false) };
    if note.prepare.is_some() || !note.asked {
        return Ok(note.push);
    }
    match awaited(state_dir, note.pid, Step::Prepare) {
        // The mark says whose it is: this push's transaction, noted by the agent.
        Ok(Answer::Prepared { entry, .. }) => match inflight::current(state_dir).and_then(|n| n.prepare) {
            Some((id, _, _)) if ObjectId::from_hex(entry.as_bytes()).ok() == Some(id) => Ok(true),
            _ => Err(HookError::Agent(format!("its prepare {entry} is not noted in this push's mark")).into()),
        },
        Ok(Answer::Refused { leader, epoch, reason }) => {
            eprintln!("stargate: {reason}");
            Err(Error::not_leader(&leader, epoch))
        }
        Ok(Answer::Failed { why }) => Err(HookError::Agent(why).into()),
        Ok(other) => Err(HookError::Agent(format!("{other:?}")).into()),
        Err(e) => Err(HookError::Agent(e.to_string()).into()),
    }
}

/// The agent's answer for what git process `pid` asked of it (`step`), waited for up to
/// `answer_within`.
fn awaited(state_dir: &Path, pid: u32, step: Step) -> std::result::Result<Answer, Unanswered> {
    let wait = answer_within(node::state(state_dir).as_ref());
    let request = service::Request::Await { pid, wait_ms: wait.as_millis() as u64, step };
    service::ask(state_dir, &request, wait + Duration::from_millis(500))
}

/// How long a hook waits for the agent's answer: as long as the agent may be silent before
/// its state counts as stale (`stargate.lease.staleAfter`).
fn answer_within(state: Option<&node::State>) -> Duration {
    Duration::from_millis(state.map_or(2000, |s| s.stale_after_ms))
}

/// Whether git runs Stargate's `post-receive` after this `pre-receive`: it is in the same
/// hooks directory (a managed repository's own, or the machine-wide `githooks/`; not
/// `githooks-minimal/`).
fn post_receive_follows(me: &Path) -> bool {
    me.file_name().is_some_and(|n| n == "pre-receive") && me.with_file_name("post-receive").is_file()
}

/// At `reference-transaction`: whether this git process's push was journaled at
/// `pre-receive` (and is not over), so that its transactions journal nothing themselves.
pub fn journaled(state_dir: &Path) -> bool {
    open(state_dir).is_some()
}

/// This git process's push journaled at `pre-receive`, while its outcome is still to come:
/// not a push of an earlier process that had the same pid, whose mark the agent has not
/// swept yet.
pub fn open(state_dir: &Path) -> Option<inflight::Note> {
    inflight::current(state_dir).filter(|note| note.push && note.alive())
}

/// Whether an update is one a push journals (`begin`) and counts (`committed`).
fn counts(u: &Update) -> bool {
    journal::journaled(&u.refname) && !u.refname.starts_with(journal::LOCAL)
}

/// At `committed`: whether the transaction (its `updates`) is one of a push journaled at
/// `pre-receive`. If so its commands are counted in the mark, and the transaction that
/// commits the last of them journals the outcome (`conclude`). Otherwise (a command failed)
/// `post-receive` journals it (`end`).
pub fn committed(state_dir: &Path, updates: &[Update]) -> bool {
    let Some(note) = open(state_dir) else { return false };
    let Some((_, first, last)) = note.prepare else { return true };
    let count = updates.iter().filter(|u| counts(u)).count();
    if let Err(e) = inflight::note_committed(state_dir, count) {
        log::warn!("cannot count this push's committed updates ({e}); post-receive journals its outcome");
        return true;
    }
    if note.committed + count as u64 == last + 1 - first {
        conclude(state_dir, &note);
    }
    true
}

/// At the `committed` that ends the push in `note`: ask the agent for its outcome and go
/// on (git reports to the client meanwhile), noted in the mark for the agent and for
/// `post-receive`, which waits for it (`end`). Where no agent listens, journal it here.
fn conclude(state_dir: &Path, note: &inflight::Note) {
    let Some((prepare, ..)) = note.prepare else { return };
    if let Err(e) = inflight::note_concluding(state_dir) {
        log::warn!("cannot note that this push's outcome is asked ({e}); waiting for it");
        finish(state_dir, note, Done::All);
        return;
    }
    let request = service::Request::Outcome {
        git_dir: note.git_dir.clone(),
        prepare: prepare.to_string(),
        done: None,
        pid: Some(note.pid),
    };
    match service::send(state_dir, &request) {
        Ok(()) => {}
        Err(Unanswered::NotListening { .. }) => {
            let keep = service::keep(node::state(state_dir).as_ref());
            ended_as(state_dir, note, here(state_dir, note, prepare, &Done::All, keep));
        }
        Err(e) => log::warn!("cannot ask for this push's outcome ({e}); post-receive journals it"),
    }
}

/// At `post-receive`, with the commands that succeeded (`input`): the outcome of the push
/// `note` names (`open`: still in flight), journaled. The agent's, when the `committed`
/// that ended the push asked for it, waited for; else journaled now, naming the updates
/// that were applied. The position of the outcome, once journaled.
pub fn end(state_dir: &Path, note: &inflight::Note, input: &[u8]) -> Option<Position> {
    if note.concluding {
        match concluded(state_dir, note) {
            Ok(()) => return inflight::last_position(state_dir).and_then(|p| p.parse().ok()),
            Err(why) => log::warn!("the agent did not journal this push's outcome ({why}); journaling it now"),
        }
    }
    let done: HashSet<(String, ObjectId)> =
        (journal::parse_updates(&String::from_utf8_lossy(input)).into_iter()).map(|u| (u.refname, u.new)).collect();
    finish(state_dir, note, Done::Listed(done))
}

/// The outcome the agent journaled for the `committed` that ended the push in `note`,
/// waited for: `Ok` once the mark is ended (the answer alone is a hint: pids are reused).
fn concluded(state_dir: &Path, note: &inflight::Note) -> std::result::Result<(), String> {
    match awaited(state_dir, note.pid, Step::Outcome) {
        Ok(Answer::Concluded { .. }) if open(state_dir).is_none() => Ok(()),
        Ok(Answer::Concluded { .. }) => Err("this push's mark is not ended".into()),
        Ok(answer) => Err(format!("{answer:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Journal the outcome of the push in `note` (`committed` naming what `done` says was
/// applied, `aborted` if nothing), end its mark with the position, signal the replicas; the
/// agent when it listens (`journal::service`), else this hook. A failure, or refs that do
/// not hold what `Done::All` says, leaves the mark as it is: `post-receive`, else the
/// agent's sweep, journals the outcome.
fn finish(state_dir: &Path, note: &inflight::Note, done: Done) -> Option<Position> {
    let (prepare, ..) = note.prepare?;
    let state = node::state(state_dir);
    let request = service::Request::Outcome {
        git_dir: note.git_dir.clone(),
        prepare: prepare.to_string(),
        done: done.listed(),
        pid: None,
    };
    let ended = match service::ask(state_dir, &request, answer_within(state.as_ref())) {
        // The agent signals the replicas itself, once it has answered.
        Ok(Answer::Concluded { position }) => Ok(Ok(position.and_then(|p| p.parse::<Position>().ok()))),
        Ok(Answer::NotYet { why }) => Ok(Err(why)),
        Ok(answer) => Err(format!("{answer:?}")),
        Err(e @ Unanswered::Silent(_)) => Err(e.to_string()),
        Err(Unanswered::NotListening { .. }) => here(state_dir, note, prepare, &done, service::keep(state.as_ref())),
    };
    ended_as(state_dir, note, ended)
}

/// Journal the outcome of the push in `note` (its prepare `prepare`) in this hook (no agent
/// listens), keeping `keep` entries, and signal the replicas.
fn here(state_dir: &Path, note: &inflight::Note, prepare: ObjectId, done: &Done, keep: u64) -> Ended {
    let ended = (super::journal_store(&note.git_dir, state_dir))
        .and_then(|git| service::conclude_push(&git, prepare, done, keep))
        .map_err(|e| e.to_string())?;
    if let Ok(Some(_)) = ended {
        journal::signal::peers(state_dir, &note.git_dir);
    }
    Ok(ended.map_err(str::to_owned))
}

/// An outcome journaled (at a position when it committed), not journaled and why
/// (`Ok(Err)`: nothing changed), or a failure.
type Ended = std::result::Result<std::result::Result<Option<Position>, String>, String>;

/// End the mark of the push in `note` as `ended` says: with the position once journaled,
/// else not at all (`post-receive`, else the agent's sweep, journals it).
fn ended_as(state_dir: &Path, note: &inflight::Note, ended: Ended) -> Option<Position> {
    let (_, first, last) = note.prepare?;
    match ended {
        Ok(Ok(position)) => {
            inflight::finish(state_dir, position.map(|p| p.to_string()).as_deref());
            position
        }
        Ok(Err(why)) => {
            log::warn!("not journaling this push's outcome yet (seq {first}..{last}): {why}");
            None
        }
        Err(e) => {
            log::warn!("cannot journal this push's outcome (seq {first}..{last}); the agent will: {e}");
            None
        }
    }
}
