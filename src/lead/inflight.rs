//! Writes in flight on the leader: transactions its hooks let through at `prepared` that
//! git has not yet committed or aborted. A leader that drains for a handoff waits for them,
//! so that the journal position it hands over includes every write it will acknowledge;
//! and a transaction whose git process died in between is found here, so that its prepare
//! entry gets an outcome (docs/ARCHITECTURE.md, The journal).
//!
//! Each git process has one marker, `<state dir>/inflight/<pid of git>`, a log its hooks
//! append to, one transaction after another: `git_dir` and `started` lines when a
//! transaction begins, *before* the hook's last look at the node state; a `prepare` line
//! once its prepare entry is journaled; an `end` line at `committed` or `aborted` once the
//! outcome is journaled. Its last transaction without an `end` is in flight. A receive-pack
//! push journaled at `pre-receive` is one such transaction, from `pre-receive` to its
//! outcome, its `prepare` line ending in `push` and its commands counted by `committed <n>`
//! lines as their transactions commit (`hook::push`); an `asked` line before it says that
//! `pre-receive` asked the agent for the prepare, and the agent writes that `prepare` line
//! (`journal::service`). The agent
//! publishes "draining" *before* it looks for markers. So a transaction either sees the
//! drain and is refused, or its `git_dir` line is there when the agent looks: none slips
//! between the two. One directory for the whole node: a drain or a sweep reads it once,
//! whatever the number of repositories.
//!
//! Appended, not replaced: a non-atomic push of many refs is one transaction per ref in
//! one git process, and replacing a file per transaction (a new inode, the old one freed)
//! cost more than the rest of the hook on a busy filesystem (docs/BENCHMARKS.md). A line
//! is one `write` to a file opened for appending, and a reader ignores a last line without
//! its newline; the agent removes the marker once its git process has exited.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gix::ObjectId;

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("inflight")
}

/// The git process running this hook's transaction: the parent, or, when a wrapper
/// script runs the hook (`sh` between them), the nearest ancestor that is git.
/// Looked up once per process: a hook asks several times, and its git does not change.
fn git_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(|| {
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() }.unsigned_abs();
        let mut pid = parent;
        for _ in 0..8 {
            if crate::files::read_proc(pid, "comm").unwrap_or_default().starts_with("git") {
                return pid;
            }
            match parent_of(pid) {
                Some(p) if p > 1 => pid = p,
                _ => break,
            }
        }
        parent
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    crate::files::read_proc_stat(pid)?.split_whitespace().nth(1)?.parse().ok()
}

/// When process `pid` started (clock ticks since boot), so that a marker is never taken
/// for the live process of another program that got the same pid later.
fn started(pid: u32) -> Option<u64> {
    let stat = crate::files::read_proc_stat(pid)?;
    let mut fields = stat.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X") {
        return None;
    }
    // After the state: field 4 (ppid) .. field 22 (starttime) of proc_pid_stat(5).
    fields.nth(18)?.parse().ok()
}

/// What a marker says: the repository, the git process and, once journaled, the prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub git_dir: PathBuf,
    pub pid: u32,
    started: Option<u64>,
    /// The prepare entry and its sequence numbers `first..=last`.
    pub prepare: Option<(ObjectId, u64, u64)>,
    /// The prepare is a receive-pack push's, journaled at `pre-receive` for all its
    /// commands: the transaction that commits the last of them, or else `post-receive`,
    /// journals the outcome (`hook::push`).
    pub push: bool,
    /// A push's updates committed so far, by its transactions' `committed` lines.
    pub committed: u64,
    /// `pre-receive` asked the leader's agent for the push's prepare (`journal::service`),
    /// which writes its `prepare` line once journaled: `prepared` waits for it.
    pub asked: bool,
    /// The `committed` that ended the push asked the agent for its outcome, which writes
    /// the `end` line once journaled: `post-receive` waits for it.
    pub concluding: bool,
}

impl Note {
    /// The lines that begin a transaction (those 0.1.0 wrote as its whole marker).
    fn begin_text(&self) -> String {
        format!("git_dir {}\nstarted {}\n", self.git_dir.display(), self.started.unwrap_or(0))
    }

    /// The transaction in flight in a marker's log: its last one, unless an `end` follows.
    /// `None` for an idle marker (every transaction ended), an empty one, or one that is no
    /// marker at all. A last line still being written (no newline yet) is not read.
    fn parse(pid: u32, text: &str) -> Option<Note> {
        let mut note: Option<Note> = None;
        for (key, rest) in lines(text) {
            match (key, note.as_mut()) {
                ("git_dir", _) if !rest.is_empty() => {
                    note = Some(Note {
                        git_dir: PathBuf::from(rest),
                        pid,
                        started: None,
                        prepare: None,
                        push: false,
                        committed: 0,
                        asked: false,
                        concluding: false,
                    })
                }
                ("asked", Some(n)) => n.asked = true,
                ("concluding", Some(n)) => n.concluding = true,
                ("started", Some(n)) => n.started = rest.parse().ok().filter(|t| *t != 0),
                ("prepare", Some(n)) => {
                    if let Some(prepare) = parse_prepare(rest) {
                        n.prepare = Some(prepare);
                        n.push = rest.ends_with(PUSH);
                    }
                }
                ("committed", Some(n)) => n.committed += rest.parse::<u64>().unwrap_or(0),
                ("end", _) => note = None,
                _ => {}
            }
        }
        note
    }

    /// Whether the git process that wrote it still runs.
    pub fn alive(&self) -> bool {
        match self.started {
            Some(t) => started(self.pid) == Some(t),
            None => super::node::pid_alive(self.pid),
        }
    }
}

/// A mark's complete lines (a last one without its newline is still being written), each
/// as its word and the rest.
fn lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(|line| line.split_once(' ').unwrap_or((line, "")))
}

/// What ends the `prepare` line of a push's prepare (`note_push`): a fourth word, which
/// 0.1.0 and `parse_prepare` skip.
const PUSH: &str = " push";

/// `<entry> <first> <last>` of a `prepare` line.
fn parse_prepare(rest: &str) -> Option<(ObjectId, u64, u64)> {
    let mut f = rest.split(' ');
    let id = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
    Some((id, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// This hook's transaction, marked as in flight.
pub struct Marker {
    path: PathBuf,
    /// The git process whose marker it is.
    pid: u32,
    /// The repository, canonical.
    git_dir: PathBuf,
    prepared: bool,
    keep: bool,
}

/// Past this size a marker starts over when a transaction begins: a git process that runs
/// many transactions (a non-atomic push of many refs) reads and appends to a bounded file.
const START_OVER: u64 = 64 * 1024;

impl Marker {
    /// Mark this hook's transaction in `git_dir` as in flight.
    pub fn begin(state_dir: &Path, git_dir: &Path) -> std::io::Result<Marker> {
        let pid = git_pid();
        let git_dir = git_dir.canonicalize()?;
        let note = Note {
            git_dir: git_dir.clone(),
            pid,
            started: started(pid),
            prepare: None,
            push: false,
            committed: 0,
            asked: false,
            concluding: false,
        };
        let path = dir(state_dir).join(pid.to_string());
        let mut file = match std::fs::OpenOptions::new().append(true).open(&path) {
            Ok(file) => file,
            // A new git process: its mark is a spare file when the agent made some.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir(state_dir))?;
                match crate::spare::take(&state_dir.join(crate::spare::DIR), &path) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                std::fs::OpenOptions::new().append(true).create(true).open(&path)?
            }
            Err(e) => return Err(e),
        };
        // Emptied, the marker reads as idle: safe, as the transaction's last look at the
        // node state comes after the line below.
        if file.metadata()?.len() > START_OVER {
            file.set_len(0)?;
        }
        std::io::Write::write_all(&mut file, note.begin_text().as_bytes())?;
        Ok(Marker { path, pid, git_dir, prepared: false, keep: false })
    }

    /// The repository of the transaction, canonical.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The git process whose marker it is.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Note that the push's prepare is asked of the leader's agent, which notes it
    /// (`note_push_for`) once journaled; before asking, for the agent to find.
    pub fn note_asked(&mut self) -> std::io::Result<()> {
        append(&self.path, "asked\n")
    }

    /// Note the prepare entry journaled for this transaction.
    pub fn note_prepare(&mut self, id: ObjectId, first: u64, last: u64) -> std::io::Result<()> {
        self.prepared = true;
        append(&self.path, &format!("prepare {id} {first} {last}\n"))
    }

    /// Note the prepare entry `pre-receive` journaled for every command of a push: each
    /// ref's transaction then only checks the lease, and `post-receive` ends it.
    pub fn note_push(&mut self, id: ObjectId, first: u64, last: u64) -> std::io::Result<()> {
        self.prepared = true;
        append(&self.path, &push_line(id, first, last))
    }

    /// The transaction goes on: `committed` or `aborted` journals its outcome and ends
    /// the marker's transaction (`finish`).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Marker {
    /// A refusal at `prepared` before anything was journaled: nothing to finish.
    fn drop(&mut self) {
        if !self.keep && !self.prepared {
            let _ = append(&self.path, END);
        }
    }
}

/// The line that ends a marker's transaction.
const END: &str = "end\n";

/// One line (or the lines of one step), in one `write` to the end of the marker: the agent
/// reads markers while hooks write them, and a reader never takes a line it sees only in
/// part (`Note::parse`).
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path)?.write_all(line.as_bytes())
}

/// The `prepare` line of a push's prepare.
fn push_line(id: ObjectId, first: u64, last: u64) -> String {
    format!("prepare {id} {first} {last}{PUSH}\n")
}

/// The agent, for a push whose prepare `pre-receive` asked of it: note the prepare in the
/// marker of git process `pid`.
pub fn note_push_for(state_dir: &Path, pid: u32, id: ObjectId, first: u64, last: u64) -> std::io::Result<()> {
    append(&dir(state_dir).join(pid.to_string()), &push_line(id, first, last))
}

/// The transaction in flight in the marker of git process `pid`, if any.
pub fn note_of(state_dir: &Path, pid: u32) -> Option<Note> {
    Note::parse(pid, &std::fs::read_to_string(dir(state_dir).join(pid.to_string())).ok()?)
}

/// At `committed` or `aborted`: the marker of this hook's transaction, if it has one.
pub fn current(state_dir: &Path) -> Option<Note> {
    note_of(state_dir, git_pid())
}

/// The pid of this hook's git process and its mark.
fn own_mark(state_dir: &Path) -> Option<(u32, String)> {
    let pid = git_pid();
    Some((pid, std::fs::read_to_string(dir(state_dir).join(pid.to_string())).ok()?))
}

/// At `committed` of a transaction of a push journaled at `pre-receive`: `count` more of
/// its updates committed.
pub fn note_committed(state_dir: &Path, count: usize) -> std::io::Result<()> {
    append(&dir(state_dir).join(git_pid().to_string()), &format!("committed {count}\n"))
}

/// At the `committed` that ends a push: its outcome is asked of the leader's agent, which
/// ends the mark (`finish_for`) once journaled; before asking, for the agent to find.
pub fn note_concluding(state_dir: &Path) -> std::io::Result<()> {
    append(&dir(state_dir).join(git_pid().to_string()), "concluding\n")
}

/// This hook's transaction is no longer in flight (its outcome is journaled). `position`:
/// the journal's position at that outcome, when it committed, for `post-receive` to say
/// (`last_position`) without opening the repository.
pub fn finish(state_dir: &Path, position: Option<&str>) {
    let _ = finish_for(state_dir, git_pid(), position);
}

/// The agent, for a push whose outcome its `committed` asked of it: end the mark of git
/// process `pid` as `finish` would.
pub fn finish_for(state_dir: &Path, pid: u32, position: Option<&str>) -> std::io::Result<()> {
    let line = match position {
        Some(p) => format!("end {p}\n"),
        None => END.to_owned(),
    };
    append(&dir(state_dir).join(pid.to_string()), &line)
}

/// The position the last committed transaction of this hook's git process noted in its
/// mark (`finish`), if the mark is that process's: at or after every update it committed.
pub fn last_position(state_dir: &Path) -> Option<String> {
    let (pid, text) = own_mark(state_dir)?;
    let me = started(pid)?;
    // Only lines after a begin of this git process count: not an earlier one's that had
    // the same pid and whose mark the agent had not removed yet.
    let (mut ours, mut position) = (false, None);
    for (key, rest) in lines(&text) {
        match key {
            "started" => {
                ours = rest.parse::<u64>().ok() == Some(me);
                position = position.filter(|_| ours);
            }
            "end" if ours && !rest.is_empty() => position = Some(rest.to_owned()),
            _ => {}
        }
    }
    position
}

/// Remove the marker of `note`'s git process (an orphan, dealt with).
pub fn forget(state_dir: &Path, note: &Note) {
    let _ = std::fs::remove_file(dir(state_dir).join(note.pid.to_string()));
}

/// Every marker, and whether its git process still runs.
fn markers(state_dir: &Path) -> Vec<(Note, bool)> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        match Note::parse(pid, &text) {
            Some(note) => {
                let alive = note.alive();
                found.push((note, alive));
            }
            // Idle (every transaction ended), or no marker of ours: removed once no
            // process runs under its name, never while one might still write to it.
            None if !super::node::pid_alive(pid) => {
                let _ = std::fs::remove_file(entry.path());
            }
            None => {}
        }
    }
    found
}

/// Wait until no transaction is in flight on this node, or `deadline`. Returns the git
/// pids still running at the deadline.
pub fn wait(state_dir: &Path, deadline: Instant) -> Vec<u32> {
    loop {
        let live: Vec<u32> = markers(state_dir).into_iter().filter(|(_, alive)| *alive).map(|(n, _)| n.pid).collect();
        if live.is_empty() || Instant::now() >= deadline {
            return live;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Transactions whose git process ended without `committed` or `aborted`: their prepare
/// entries wait for an outcome (see `journal`, `Outcome::Ended`).
pub fn orphans(state_dir: &Path) -> Vec<Note> {
    markers(state_dir).into_iter().filter(|(_, alive)| !alive).map(|(n, _)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_tell_a_dead_process_from_a_live_one() {
        let id = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let me = std::process::id();
        let note = Note {
            git_dir: "/srv/git/kv.git".into(),
            pid: me,
            started: started(me),
            prepare: Some((id, 4, 6)),
            push: false,
            committed: 0,
            asked: false,
            concluding: false,
        };
        let text = format!("{}prepare {id} 4 6\n", note.begin_text());
        assert_eq!(Note::parse(me, &text), Some(note.clone()));
        // A push whose prepare was asked of the agent, then noted by it.
        let asked = format!("{}asked\n", note.begin_text());
        let parsed = Note::parse(me, &asked).unwrap();
        assert!(parsed.asked && parsed.prepare.is_none());
        let noted = Note::parse(me, &format!("{asked}{}", push_line(id, 4, 6))).unwrap();
        assert_eq!((noted.asked, noted.prepare, noted.push), (true, Some((id, 4, 6)), true));
        assert_eq!(Note::parse(me, &format!("{asked}end\n{}", push_line(id, 4, 6))), None, "noted late: over");
        // Its outcome asked of the agent, then journaled by it.
        let concluding = format!("{asked}{}committed 1\nconcluding\n", push_line(id, 4, 6));
        assert!(Note::parse(me, &concluding).is_some_and(|n| n.concluding && n.committed == 1));
        assert_eq!(Note::parse(me, &format!("{concluding}end 1:6:{id}\n")), None, "ended by the agent");
        assert!(note.alive());
        // The same pid, started at another time: another process.
        let reused = Note { started: note.started.map(|t| t + 1), ..note.clone() };
        assert!(!reused.alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let gone = Note { pid, started: started(pid), ..note };
        child.wait().unwrap();
        assert!(!gone.alive());
        assert_eq!(Note::parse(1, "garbage"), None);
    }

    /// A push journaled at `pre-receive` says so in its `prepare` line's fourth word, which
    /// the parser 0.1.0 had (three words read, the rest skipped) reads as any prepare.
    #[test]
    fn a_push_prepare_is_told_from_a_transaction_s() {
        let a = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let begun = "git_dir /srv/a.git\nstarted 7\n";
        let push = Note::parse(9, &format!("{begun}prepare {a} 4 9 push\n")).expect("in flight");
        assert_eq!((push.prepare, push.push), (Some((a, 4, 9)), true));
        let own = Note::parse(9, &format!("{begun}prepare {a} 4 9\n")).expect("in flight");
        assert_eq!((own.prepare, own.push), (Some((a, 4, 9)), false));
        assert_eq!(Note::parse(9, &format!("{begun}prepare {a} 4 9 push\nend 1:9:{a}\n")), None, "ended");
        let counted = Note::parse(9, &format!("{begun}prepare {a} 4 9 push\ncommitted 1\ncommitted 4\ncommitted 2"));
        assert_eq!(counted.map(|n| n.committed), Some(5), "a line still being written is not counted");
        assert_eq!(parse_prepare(&format!("{a} 4 9 push")), Some((a, 4, 9)));
    }

    /// A marker is the log of its git process's transactions: the last one counts, in
    /// flight until its `end`; a line still being written is not read; what 0.1.0 wrote
    /// (one transaction, no `end`) reads as it did.
    #[test]
    fn a_marker_is_in_flight_from_its_last_begin_to_its_end() {
        let a = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let b = ObjectId::from_hex(b"2222222222222222222222222222222222222222").unwrap();
        let ended = format!("git_dir /srv/a.git\nstarted 7\nprepare {a} 1 1\nend\n");
        assert_eq!(Note::parse(9, &ended), None, "idle");
        let second = format!("{ended}git_dir /srv/b.git\nstarted 7\n");
        let note = Note::parse(9, &second).expect("in flight");
        assert_eq!((note.git_dir.to_str(), note.started, note.prepare), (Some("/srv/b.git"), Some(7), None));
        let noted = format!("{second}prepare {b} 2 3\n");
        assert_eq!(Note::parse(9, &noted).and_then(|n| n.prepare), Some((b, 2, 3)), "not the first transaction's");
        assert_eq!(Note::parse(9, &format!("{noted}en")).and_then(|n| n.prepare), Some((b, 2, 3)), "a partial end");
        assert_eq!(
            Note::parse(9, &format!("{second}prepare {b} 2")).and_then(|n| n.prepare),
            None,
            "a partial prepare"
        );
        assert_eq!(Note::parse(9, &format!("{ended}git_dir /srv/b.g")), None, "a partial begin");
        assert_eq!(Note::parse(9, &format!("{noted}end\n")), None);
        let old = format!("git_dir /srv/kv.git\nstarted 7\nprepare {a} 4 6\n");
        assert_eq!(Note::parse(9, &old).and_then(|n| n.prepare), Some((a, 4, 6)), "as 0.1.0 wrote it");
    }

    /// One git process, many transactions (a non-atomic push of many refs): one file,
    /// which starts over past its bound, so that each transaction reads a bounded marker.
    #[test]
    fn a_git_process_keeps_one_bounded_marker_across_its_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join("kv.git");
        std::fs::create_dir(&git_dir).unwrap();
        let state = dir.path().join("state");
        let id = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let path = super::dir(&state).join(git_pid().to_string());
        for n in 0..2000 {
            let mut marker = Marker::begin(&state, &git_dir).unwrap();
            assert!(current(&state).is_some_and(|note| note.prepare.is_none()), "in flight, nothing journaled");
            if n % 3 == 0 {
                drop(marker);
                assert!(current(&state).is_none(), "refused before journaling: over");
                continue;
            }
            marker.note_prepare(id, n, n).unwrap();
            marker.keep();
            assert_eq!(current(&state).and_then(|note| note.prepare), Some((id, n, n)));
            finish(&state, Some(&format!("1:{n}:{id}")));
            assert_eq!(last_position(&state), Some(format!("1:{n}:{id}")), "for post-receive");
            assert!(current(&state).is_none(), "finished");
            assert!(std::fs::metadata(&path).unwrap().len() <= START_OVER + 4096);
        }
        assert_eq!(std::fs::read_dir(super::dir(&state)).unwrap().count(), 1, "one marker");
        assert!(orphans(&state).is_empty());
    }

    /// A marker is written while the agent sweeps (every tick) and a draining leader
    /// waits (every 2 ms): a reader must never see it torn, and never take it for garbage.
    /// A marker torn and removed left the committed hook without its prepare entry: no
    /// outcome was journaled, and replicas never applied that acknowledged write.
    #[test]
    fn a_marker_rewritten_while_the_agent_reads_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join("kv.git");
        std::fs::create_dir(&git_dir).unwrap();
        let state = dir.path().join("state");
        let id = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (state, stop) = (state.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(orphans(&state).is_empty(), "this process is alive");
                    reads += 1;
                }
                reads
            })
        };
        for n in 0..1000 {
            let mut marker = Marker::begin(&state, &git_dir).unwrap();
            marker.note_prepare(id, n, n).unwrap();
            marker.keep();
            let note = current(&state).expect("the marker is where the committed hook looks");
            assert_eq!(note.prepare, Some((id, n, n)));
            finish(&state, None);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    /// Something in the markers' directory that is no marker (a partial file some other
    /// program left) is removed only once no process runs under its name.
    #[test]
    fn an_unreadable_marker_of_a_live_process_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        std::fs::create_dir_all(super::dir(state)).unwrap();
        let live = super::dir(state).join(std::process::id().to_string());
        std::fs::write(&live, "").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = super::dir(state).join(child.id().to_string());
        child.wait().unwrap();
        std::fs::write(&dead, "not a marker").unwrap();
        assert!(orphans(state).is_empty());
        assert!(live.exists(), "kept while its process runs");
        assert!(!dead.exists(), "removed once its process is gone");
    }
}
