//! The leader's agent journals a push for its hooks (docs/ARCHITECTURE.md, A push, step by
//! step). A hook starts cold: opening the repository and writing an entry costs it more than
//! git's start of the hook itself, twice a push. The agent is warm, and keeps the
//! repositories open. The hooks reach it through `<state>/journal.sock` (mode 0600: the
//! agent's user only), a JSON line each way.
//!
//! - `pre-receive` marks the push in flight, notes in the mark that it asks (`asked`), sends
//!   the push's commands (`Prepare`) and exits without waiting: git then moves the pushed
//!   objects out of quarantine and locks the refs, some milliseconds, while the agent
//!   journals. The agent looks at the node as the hooks do, after the mark, refuses an
//!   epoch other than the one `pre-receive` found, appends the prepare, and notes it in the
//!   mark as `pre-receive` would have.
//! - `reference-transaction prepared` of the push's first ref transaction, finding the
//!   prepare asked and not yet noted, waits for it (`Await`): no ref moves before it is in
//!   the journal, and a refusal or failure aborts the transaction.
//! - The `committed` that ends the push notes in the mark that it asks (`concluding`), sends
//!   the outcome (`Outcome`, with its git process) and exits without waiting: git answers
//!   the client meanwhile. The agent journals it only while that push is still waiting for
//!   it (its git runs, its mark concludes that prepare), ends the mark as the hook would
//!   have, and signals the replicas. `post-receive` finds the mark ended, or waits for it
//!   (`Await` of the outcome): git's last word to the client, and so the push's exit, comes
//!   after. Where a command failed, `post-receive` sends the outcome and waits for it.
//!
//! A hook that cannot reach the agent (none runs, or one older than this) journals by
//! itself, as before. One that waits longer than `stargate.lease.staleAfter` (an agent
//! silent that long is frozen, and its state stale) gives up: the push is refused at
//! `prepared`, or its outcome left to `post-receive`, else the agent's sweep, as when a
//! hook's own append fails. The agent journals nothing for a push whose git is gone, nor
//! for an outcome whose hook stopped waiting. At worst a prepare is journaled that no ref
//! follows, settled as one whose hook died; a second outcome of one prepare changes
//! nothing: the first is the one every node reads (`walk`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use super::position::Position;
use super::{Body, Error, Outcome, Update};
use crate::lead::inflight;
use crate::lead::node::{self, Authority};
use crate::store::Store;

/// The socket in the node's state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.sock")
}

/// Longest request the agent reads: a push of 100,000 refs names them in about 10 MB.
pub const MAX_REQUEST: u64 = 256 << 20;

/// What a hook asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Journal the prepare of a push to `git_dir` (absolute) in `epoch`, the epoch the hook
    /// found this node leading: its commands as git gave them (`old new ref` lines). `pid`:
    /// its git process, whose mark says it asked, and gets the prepare noted. Not answered:
    /// the hook does not wait (`Await`).
    Prepare { git_dir: PathBuf, epoch: u64, updates: String, pusher: Option<String>, pid: u32 },
    /// Wait up to `wait_ms` for the entry git process `pid` asked for (`step`): its answer.
    Await {
        pid: u32,
        wait_ms: u64,
        #[serde(default)]
        step: Step,
    },
    /// Journal the outcome of the push whose prepare is entry `prepare`: `done` names the
    /// `(ref, new)` updates that were applied; none given, every one (checked against the
    /// refs). With `pid`, its git process, whose mark says it concludes: not answered (the
    /// hook does not wait; `Await`), and the mark ended once journaled.
    Outcome {
        git_dir: PathBuf,
        prepare: String,
        done: Option<Vec<(String, String)>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
}

/// Which of a push's entries a hook asked for, and waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Its prepare, asked at `pre-receive`.
    #[default]
    Prepare,
    /// Its outcome, asked at the `committed` that ended it.
    Outcome,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Prepare => "prepare",
            Step::Outcome => "outcome",
        }
    }
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "lowercase")]
pub enum Answer {
    /// The prepare is entry `entry`; the journal's sequence number at it is `last`.
    Prepared { entry: String, last: u64 },
    /// The outcome is journaled; at `position` when it is `committed`.
    Concluded { position: Option<String> },
    /// Not journaled, and nothing changed: why (the refs do not hold every new value yet).
    NotYet { why: String },
    /// This node does not lead `epoch` now (as `node::Authority::Refused`).
    Refused { leader: String, epoch: u64, reason: String },
    /// Not journaled: why.
    Failed { why: String },
}

/// Why a hook has no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    /// Nothing was sent: the hook journals by itself.
    #[error("no agent listens on {}: {source}", .path.display())]
    NotListening { path: PathBuf, source: std::io::Error },
    /// Sent, and no answer came (in time): whether the agent journaled is not known.
    #[error("the agent did not answer: {0}")]
    Silent(#[source] std::io::Error),
}

/// Ask the agent whose state directory is `state_dir`, waiting at most `wait` for it.
pub fn ask(state_dir: &Path, request: &Request, wait: Duration) -> Result<Answer, Unanswered> {
    let stream = sent(state_dir, request)?;
    let silent = Unanswered::Silent;
    stream.set_read_timeout(Some(wait.max(Duration::from_millis(100)))).map_err(silent)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(silent)?;
    serde_json::from_str(&line).map_err(|e| silent(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Send `request` to the agent whose state directory is `state_dir`, not waiting for an
/// answer. Sent whole or not at all: the agent reads nothing from a line cut short.
pub fn send(state_dir: &Path, request: &Request) -> Result<(), Unanswered> {
    sent(state_dir, request).map(drop)
}

/// The connection to the agent, `request` written on it.
fn sent(state_dir: &Path, request: &Request) -> Result<UnixStream, Unanswered> {
    let path = socket_path(state_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(source) => return Err(Unanswered::NotListening { path, source }),
    };
    let mut bytes = serde_json::to_vec(request).map_err(|e| Unanswered::Silent(e.into()))?;
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(Unanswered::Silent)?;
    Ok(stream)
}

/// The entries hooks asked for, by git process and step: pending, then answered. Shared by
/// the agent's threads: one journals, another waits for it. The system reuses pids, so an
/// answer is only a hint: the waiter takes what its own mark says.
#[derive(Default)]
pub struct Asked {
    answers: Mutex<Answers>,
    done: Condvar,
}

/// By git process and step: when asked or answered, and the answer once there is one.
type Answers = HashMap<(u32, Step), (Instant, Option<Answer>)>;

/// How long an answer is kept for a `prepared` that has not come for it.
const KEEP_ANSWER: Duration = Duration::from_secs(60);
/// The longest a waiter is kept waiting, whatever it asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

impl Asked {
    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(&self, key: (u32, Step)) {
        let mut answers = self.lock();
        answers.retain(|_, (at, _)| at.elapsed() < KEEP_ANSWER);
        answers.insert(key, (Instant::now(), None));
    }

    fn answer(&self, key: (u32, Step), answer: Answer) {
        self.lock().insert(key, (Instant::now(), Some(answer)));
        self.done.notify_all();
    }

    /// The answer for git process `pid`'s `step`, waiting up to `wait` for it (the request
    /// may not even be read yet).
    fn wait(&self, key: (u32, Step), wait: Duration) -> Option<Answer> {
        let until = Instant::now() + wait.min(MAX_WAIT);
        let mut answers = self.lock();
        loop {
            if let Some((_, Some(answer))) = answers.get(&key) {
                return Some(answer.clone());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            answers = self.done.wait_timeout(answers, left).map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }
}

/// The repositories a thread of the agent opened for the hooks, kept open: opening one costs
/// more than an append. Each is opened again once its `config` changed (another file, size
/// or time): what the journal depends on there, the ref storage format, is set in it.
#[derive(Default)]
pub struct Opened(HashMap<PathBuf, (Stamp, gix::Repository)>);

/// How many repositories stay open at most; past it every one is opened again.
const MAX_OPEN: usize = 1024;

/// What says a file changed: its inode, size and modification time.
type Stamp = (u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl Opened {
    /// Repository `path` (canonical), opened now or earlier.
    fn get(&mut self, path: &Path) -> Result<Store, String> {
        let now = stamp(&path.join("config")).ok_or_else(|| format!("{}: no config", path.display()))?;
        if let Some((then, repo)) = self.0.get(path)
            && *then == now
        {
            return Ok(Store::new(repo.clone()));
        }
        let store = super::open(path).map_err(|e| e.to_string())?;
        if self.0.len() >= MAX_OPEN {
            self.0.clear();
        }
        self.0.insert(path.to_owned(), (now, store.repo().clone()));
        Ok(store)
    }
}

/// The agent's side of one connection: read the request, answer it. Whether an entry was
/// journaled, and the repository to signal the replicas for, once an outcome that moved
/// refs is.
pub fn serve(state_dir: &Path, opened: &mut Opened, asked: &Asked, stream: &mut UnixStream) -> (bool, Option<PathBuf>) {
    let mut line = String::new();
    let read = BufReader::new(Read::take(&mut *stream, MAX_REQUEST)).read_line(&mut line);
    let request = read.map_err(|e| e.to_string()).and_then(|_| serde_json::from_str(&line).map_err(|e| e.to_string()));
    // A hook that stopped waiting for its outcome (this agent was frozen longer than it
    // waits) leaves it to others: nothing is journaled for it late.
    if let Ok(Request::Outcome { pid: None, .. }) = &request
        && hung_up(stream)
    {
        log::warn!("a hook stopped waiting before its request was read; not journaling it");
        return (false, None);
    }
    let unanswered = matches!(request, Ok(Request::Prepare { .. } | Request::Outcome { pid: Some(_), .. }));
    let awaited = matches!(request, Ok(Request::Await { .. }));
    let (answer, signal) = match request {
        Ok(request) => answer(state_dir, opened, asked, request),
        Err(e) => (Answer::Failed { why: format!("malformed request: {e}") }, None),
    };
    if !unanswered {
        let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
        bytes.push(b'\n');
        match stream.write_all(&bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => log::info!("a hook stopped waiting for {answer:?}"),
            Err(e) => log::warn!("cannot answer a hook ({answer:?}): {e}"),
            Ok(()) => {}
        }
    }
    // An answer passed on to a waiter was counted when it was journaled.
    (!awaited && matches!(answer, Answer::Prepared { .. } | Answer::Concluded { .. }), signal)
}

/// Whether the other end of `stream` closed it.
fn hung_up(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, and a zero timeout.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// Do what `request` asks, as the hook would have.
pub fn answer(state_dir: &Path, opened: &mut Opened, asked: &Asked, request: Request) -> (Answer, Option<PathBuf>) {
    match request {
        Request::Await { pid, wait_ms, step } => {
            let why = || format!("no answer for the {} git process {pid} asked for, within {wait_ms} ms", step.name());
            let answer = asked.wait((pid, step), Duration::from_millis(wait_ms));
            (answer.unwrap_or_else(|| Answer::Failed { why: why() }), None)
        }
        Request::Prepare { git_dir, epoch, updates, pusher, pid } => {
            asked.begin((pid, Step::Prepare));
            let answer = match repository(state_dir, opened, &git_dir) {
                Ok(git) => prepare(state_dir, &git, epoch, &updates, pusher.as_deref(), pid),
                Err(why) => Answer::Failed { why },
            };
            asked.answer((pid, Step::Prepare), answer.clone());
            (answer, None)
        }
        Request::Outcome { git_dir, prepare, done, pid } => {
            let asking = pid.map(|pid| (pid, Step::Outcome));
            if let Some(key) = asking {
                asked.begin(key);
            }
            let (answer, signal) =
                match (repository(state_dir, opened, &git_dir), ObjectId::from_hex(prepare.as_bytes())) {
                    (Err(why), _) => (Answer::Failed { why }, None),
                    (_, Err(_)) => (Answer::Failed { why: format!("not an entry id: {prepare}") }, None),
                    (Ok(git), Ok(prepare)) => match pid {
                        Some(pid) => concluding(state_dir, &git, prepare, done, pid),
                        None => outcome(state_dir, &git, prepare, done),
                    },
                };
            if let Some(key) = asking {
                asked.answer(key, answer.clone());
            }
            (answer, signal)
        }
    }
}

/// Journal the outcome git process `pid`'s `committed` asked for, as `outcome`: only while
/// its push is still waiting for it (its git runs, its mark concludes prepare `prepare` of
/// `git`'s repository), and ending the mark as the hook would have.
fn concluding(
    state_dir: &Path,
    git: &Store,
    prepare: ObjectId,
    done: Option<Vec<(String, String)>>,
    pid: u32,
) -> (Answer, Option<PathBuf>) {
    let waiting = inflight::note_of(state_dir, pid)
        .filter(|n| n.concluding && n.git_dir == git.git_dir() && n.prepare.is_some_and(|(id, ..)| id == prepare));
    if !waiting.is_some_and(|n| n.alive()) {
        let why = format!("git process {pid} no longer waits for the outcome of {prepare}");
        return (Answer::Failed { why }, None);
    }
    let (answer, signal) = outcome(state_dir, git, prepare, done);
    if let Answer::Concluded { position } = &answer
        && let Err(e) = inflight::finish_for(state_dir, pid, position.as_deref())
    {
        log::warn!("cannot end git process {pid}'s mark ({e}); its post-receive journals the outcome again");
    }
    (answer, signal)
}

/// Journal the outcome of the push whose prepare is entry `prepare` in `git`, as the hook
/// that ends the push would have; with the repository to signal the replicas for, once an
/// outcome that moved refs is journaled.
fn outcome(
    state_dir: &Path,
    git: &Store,
    prepare: ObjectId,
    done: Option<Vec<(String, String)>>,
) -> (Answer, Option<PathBuf>) {
    let failed = |why: String| (Answer::Failed { why }, None);
    let done = match done {
        None => Done::All,
        Some(listed) => {
            let parsed: Option<HashSet<_>> =
                (listed.into_iter()).map(|(r, new)| Some((r, ObjectId::from_hex(new.as_bytes()).ok()?))).collect();
            match parsed {
                Some(set) => Done::Listed(set),
                None => return failed("an update's new value is not an object id".into()),
            }
        }
    };
    match conclude_push(git, prepare, &done, keep(node::state(state_dir).as_ref())) {
        Ok(Ok(position)) => {
            let signal = position.is_some().then(|| git.git_dir().to_owned());
            (Answer::Concluded { position: position.map(|p| p.to_string()) }, signal)
        }
        Ok(Err(why)) => (Answer::NotYet { why: why.into() }, None),
        Err(e) => failed(e.to_string()),
    }
}

/// Journal the prepare git process `pid` asked for, as `pre-receive` would have: only while
/// its push is still waiting for it (its git runs, its mark asks and names `git`'s
/// repository), after the last look at the node, and noted in the mark.
fn prepare(state_dir: &Path, git: &Store, epoch: u64, updates: &str, pusher: Option<&str>, pid: u32) -> Answer {
    let failed = |why: String| Answer::Failed { why };
    let waiting = inflight::note_of(state_dir, pid)
        .filter(|n| n.asked && n.prepare.is_none() && n.git_dir == git.git_dir() && n.alive());
    if waiting.is_none() {
        return failed(format!("git process {pid} no longer waits for a prepare of {}", git.git_dir().display()));
    }
    let view = node::inspect_state(Some(state_dir));
    match view.authority() {
        Authority::Leader { epoch: leading } if leading == epoch => {}
        Authority::Leader { epoch: leading } => {
            let reason = format!("this node leads epoch {leading} now, not {epoch}");
            return Answer::Refused { leader: view.me, epoch: leading, reason };
        }
        Authority::Refused { leader, epoch, reason } => return Answer::Refused { leader, epoch, reason },
    }
    let updates = super::parse_updates(updates);
    if updates.is_empty() {
        return failed("a prepare without updates".into());
    }
    let count = updates.len() as u64;
    let keep = keep(view.state.as_ref());
    match super::append_by(git, epoch, &view.me, Body::Prepare(updates), keep, pusher) {
        Ok((entry, last)) => match inflight::note_push_for(state_dir, pid, entry, last + 1 - count, last) {
            Ok(()) => Answer::Prepared { entry: entry.to_string(), last },
            Err(e) => failed(format!("cannot note the prepare in git process {pid}'s mark: {e}")),
        },
        Err(e) => failed(e.to_string()),
    }
}

/// Repository `git_dir` for the journal, if it is one below this node's root.
fn repository(state_dir: &Path, opened: &mut Opened, git_dir: &Path) -> Result<Store, String> {
    let refuse = |why: &str| format!("{}: {why}", git_dir.display());
    let root = state_dir.parent().and_then(|r| r.canonicalize().ok()).ok_or_else(|| refuse("no root"))?;
    let path = git_dir.canonicalize().map_err(|e| refuse(&e.to_string()))?;
    if !path.starts_with(&root) || path == root {
        return Err(refuse("not a repository below this node's root"));
    }
    let store = opened.get(&path).map_err(|e| refuse(&e))?;
    Ok(store.with_spares(state_dir.join(crate::spare::DIR)))
}

/// `stargate.journal.keep` as the agent published it (in `state`).
pub fn keep(state: Option<&node::State>) -> u64 {
    state.and_then(|s| s.journal_keep).unwrap_or(super::DEFAULT_KEEP)
}

/// Which of a push's prepared updates were applied.
pub enum Done {
    /// Every one: each transaction committed. Checked against the refs all the same.
    All,
    /// Those `post-receive` lists (ref name, new value).
    Listed(HashSet<(String, ObjectId)>),
}

impl Done {
    /// As a request says it.
    pub fn listed(&self) -> Option<Vec<(String, String)>> {
        match self {
            Done::All => None,
            Done::Listed(set) => Some(set.iter().map(|(r, id)| (r.clone(), id.to_string())).collect()),
        }
    }
}

/// Journal the outcome of the push whose prepare is entry `prepare`: `committed` naming
/// what `done` says was applied, `aborted` if nothing. `Ok(Err)`, journaling nothing, when
/// the refs do not hold what `Done::All` says.
pub fn conclude_push(
    git: &Store,
    prepare: ObjectId,
    done: &Done,
    keep: u64,
) -> Result<Result<Option<Position>, &'static str>, Error> {
    let (entry, _) = super::read(git, prepare)?;
    let applied: Vec<(u64, Update)> = match done {
        Done::All => {
            let now = |u: &Update| git.find(&u.refname).ok().flatten().unwrap_or(ObjectId::null(u.new.kind()));
            if entry.updates.iter().any(|(_, u)| now(u) != u.new) {
                return Ok(Err("a ref does not hold its new value yet"));
            }
            entry.updates.clone()
        }
        Done::Listed(done) => {
            (entry.updates.iter()).filter(|(_, u)| done.contains(&(u.refname.clone(), u.new))).cloned().collect()
        }
    };
    let (outcome, updates) = match applied.is_empty() {
        true => (Outcome::Aborted, entry.updates.clone()),
        false => (Outcome::Committed, applied),
    };
    super::conclude(git, prepare, &entry, outcome, updates, keep).map(Ok)
}

/// Updates as git writes them to a hook, a line each.
pub fn lines(updates: &[Update]) -> String {
    updates.iter().map(|u| format!("{} {} {}\n", u.old, u.new, u.refname)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request, and each answer, is one JSON line that reads back the same.
    #[test]
    fn requests_and_answers_round_trip_as_json_lines() {
        let requests = [
            Request::Prepare {
                git_dir: "/srv/a b.git".into(),
                epoch: 3,
                updates: "x y z\n".into(),
                pusher: None,
                pid: 9,
            },
            Request::Await { pid: 9, wait_ms: 2000, step: Step::Prepare },
            Request::Await { pid: 9, wait_ms: 2000, step: Step::Outcome },
            Request::Outcome {
                git_dir: "/srv/a.git".into(),
                prepare: "ab".into(),
                done: Some(vec![("r".into(), "n".into())]),
                pid: None,
            },
            Request::Outcome { git_dir: "/srv/a.git".into(), prepare: "ab".into(), done: None, pid: Some(9) },
        ];
        for r in requests {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        let answers = [
            Answer::Prepared { entry: "ab".into(), last: 7 },
            Answer::Concluded { position: Some("1:7:ab".into()) },
            Answer::NotYet { why: "w".into() },
            Answer::Refused { leader: "b".into(), epoch: 4, reason: "r".into() },
            Answer::Failed { why: "f".into() },
        ];
        for a in answers {
            assert_eq!(serde_json::from_str::<Answer>(&serde_json::to_string(&a).unwrap()).unwrap(), a);
        }
    }

    /// A malformed request, or one for a repository outside the node's root, is answered
    /// `failed` and journals nothing.
    #[test]
    fn a_malformed_request_or_a_repository_outside_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("root/.stargate");
        std::fs::create_dir_all(&state).unwrap();
        let outside = dir.path().join("other.git");
        crate::wire::git::init_bare(&outside).unwrap();
        let (mut opened, asked) = (Opened::default(), Asked::default());

        let (mut hook, mut agent) = UnixStream::pair().unwrap();
        hook.write_all(b"{\"op\":\"prepare\"\n").unwrap();
        assert_eq!(serve(&state, &mut opened, &asked, &mut agent), (false, None));
        let mut line = String::new();
        BufReader::new(&hook).read_line(&mut line).unwrap();
        let Answer::Failed { why } = serde_json::from_str(&line).unwrap() else { panic!("{line}") };
        assert!(why.starts_with("malformed request"), "{why}");

        let zero = ObjectId::null(gix::hash::Kind::Sha1).to_string();
        for git_dir in [outside.clone(), dir.path().join("root"), dir.path().join("root/missing.git")] {
            let request = Request::Outcome { git_dir: git_dir.clone(), prepare: zero.clone(), done: None, pid: None };
            let (answer, signal) = answer(&state, &mut opened, &asked, request);
            assert!(
                matches!(&answer, Answer::Failed { why } if why.starts_with(&git_dir.display().to_string())),
                "{answer:?}"
            );
            assert_eq!(signal, None);
        }
        // A prepare outside the root is answered to whoever waits for it.
        let request =
            Request::Prepare { git_dir: outside.clone(), epoch: 1, updates: String::new(), pusher: None, pid: 7 };
        assert!(matches!(answer(&state, &mut opened, &asked, request).0, Answer::Failed { .. }));
        assert!(matches!(asked.wait((7, Step::Prepare), Duration::ZERO), Some(Answer::Failed { .. })));
        assert!(crate::journal::open(&outside).unwrap().find(crate::journal::REF).unwrap().is_none());
    }

    /// A node's root (kept while the first is), its state directory, and a bare `kv.git`.
    fn node_with_a_repository() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".stargate");
        std::fs::create_dir_all(&state).unwrap();
        let repo = dir.path().join("kv.git");
        crate::wire::git::init_bare(&repo).unwrap();
        (dir, state, repo)
    }

    /// A prepare no git process waits for any more (no mark asks for it) is not journaled.
    #[test]
    fn a_prepare_nobody_waits_for_is_not_journaled() {
        let (_root, state, repo) = node_with_a_repository();
        let (mut opened, asked) = (Opened::default(), Asked::default());
        let zero = ObjectId::null(gix::hash::Kind::Sha1);
        let updates = format!("{zero} {zero} refs/heads/main\n");
        let request = Request::Prepare { git_dir: repo.clone(), epoch: 1, updates, pusher: None, pid: u32::MAX };
        let (answer, _) = answer(&state, &mut opened, &asked, request);
        assert!(matches!(&answer, Answer::Failed { why } if why.contains("no longer waits")), "{answer:?}");
        assert_eq!(asked.wait((u32::MAX, Step::Prepare), Duration::ZERO), Some(answer));
        assert!(crate::journal::open(&repo).unwrap().find(crate::journal::REF).unwrap().is_none());
    }

    /// An outcome a push's `committed` asked ahead is journaled only while that push waits
    /// for it (its mark concludes that prepare), ends the mark with the position, and is
    /// answered to `post-receive`'s wait.
    #[test]
    fn an_outcome_asked_ahead_is_journaled_for_the_push_that_waits_for_it_and_ends_its_mark() {
        let (_root, state, repo) = node_with_a_repository();
        let git = crate::journal::open(&repo).unwrap();
        let tree = git.write_loose(&gix::objs::Tree::empty()).unwrap().to_string();
        let new =
            ObjectId::from_hex(crate::wire::git::commit_tree(&repo, &tree, &[], "pushed").unwrap().as_bytes()).unwrap();
        let update = Update { old: ObjectId::null(gix::hash::Kind::Sha1), new, refname: "refs/heads/main".into() };
        let mut marker = inflight::Marker::begin(&state, &repo).unwrap();
        let (entry, last) = crate::journal::append_by(&git, 1, "a", Body::Prepare(vec![update]), 100, None).unwrap();
        marker.note_push(entry, last, last).unwrap();
        let pid = marker.pid();
        marker.keep();
        git.edit(&[crate::store::Edit::set("refs/heads/main", new)]).unwrap();
        let (mut opened, asked) = (Opened::default(), Asked::default());
        let ahead = |prepare: &str| Request::Outcome {
            git_dir: repo.clone(),
            prepare: prepare.to_owned(),
            done: None,
            pid: Some(pid),
        };
        let tip = || git.find(crate::journal::REF).unwrap();

        let (early, signal) = answer(&state, &mut opened, &asked, ahead(&entry.to_string()));
        assert!(
            matches!(&early, Answer::Failed { why } if why.contains("no longer waits")),
            "not concluding yet: {early:?}"
        );
        assert_eq!((tip(), signal), (Some(entry), None));
        inflight::note_concluding(&state).unwrap();
        let other = "2222222222222222222222222222222222222222";
        assert!(
            matches!(answer(&state, &mut opened, &asked, ahead(other)).0, Answer::Failed { .. }),
            "another prepare"
        );
        assert_eq!(tip(), Some(entry));

        let (concluded, signal) = answer(&state, &mut opened, &asked, ahead(&entry.to_string()));
        let Answer::Concluded { position: Some(position) } = concluded.clone() else { panic!("{concluded:?}") };
        assert_ne!(tip(), Some(entry), "journaled");
        assert_eq!(signal, Some(repo.canonicalize().unwrap()));
        assert_eq!(asked.wait((pid, Step::Outcome), Duration::ZERO), Some(concluded), "answered to the wait");
        assert!(inflight::note_of(&state, pid).is_none(), "the mark is ended");
        assert_eq!(inflight::last_position(&state), Some(position), "with the position, for post-receive");
    }

    /// A waiter gets the answer recorded before or while it waits, and nothing past its
    /// time; answers are kept per git process.
    #[test]
    fn a_waiter_gets_the_answer_for_its_git_process() {
        let asked = std::sync::Arc::new(Asked::default());
        let (prepare, outcome) = ((1, Step::Prepare), (1, Step::Outcome));
        assert_eq!(asked.wait(prepare, Duration::from_millis(20)), None, "nothing asked");
        asked.begin(prepare);
        assert_eq!(asked.wait(prepare, Duration::from_millis(20)), None, "pending");
        let answering = std::sync::Arc::clone(&asked);
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            answering.answer((1, Step::Prepare), Answer::Prepared { entry: "ab".into(), last: 3 });
        });
        assert_eq!(
            asked.wait(prepare, Duration::from_secs(10)),
            Some(Answer::Prepared { entry: "ab".into(), last: 3 })
        );
        later.join().unwrap();
        assert_eq!(asked.wait((2, Step::Prepare), Duration::ZERO), None, "another process");
        assert_eq!(asked.wait(outcome, Duration::ZERO), None, "another step of the same process");
        // A hook of the version before asks without naming the step: its prepare.
        let old: Request = serde_json::from_str(r#"{"op":"await","pid":1,"wait_ms":5}"#).unwrap();
        assert_eq!(old, Request::Await { pid: 1, wait_ms: 5, step: Step::Prepare });
    }

    /// A repository stays open until its config changes.
    #[test]
    fn a_repository_is_opened_again_once_its_config_changed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("kv.git");
        crate::wire::git::init_bare(&repo).unwrap();
        let mut opened = Opened::default();
        opened.get(&repo).unwrap();
        let first = opened.0[&repo].0;
        opened.get(&repo).unwrap();
        assert_eq!(opened.0[&repo].0, first, "kept");
        let config = std::fs::read_to_string(repo.join("config")).unwrap();
        std::fs::write(repo.join("config"), format!("{config}[stargate]\n\tx = y\n")).unwrap();
        opened.get(&repo).unwrap();
        assert_ne!(opened.0[&repo].0, first, "opened again");
        std::fs::remove_file(repo.join("config")).unwrap();
        assert!(opened.get(&repo).is_err(), "no config: not a repository to journal");
    }
}
