//! Writes in flight on the leader: transactions its hooks let through at `prepared` that
//! git has not yet committed or aborted. A leader that drains for a handoff waits for them,
//! so that the journal position it hands over includes every write it will acknowledge;
//! and a transaction whose git process died in between is found here, so that its prepare
//! entry gets an outcome (docs/ARCHITECTURE.md, The journal).
//!
//! The hook creates `<state dir>/inflight/<pid of git>` *before* its last look at the node
//! state, notes in it the prepare entry it journaled, and removes it at `committed` or
//! `aborted` once the outcome is journaled. The agent publishes "draining" *before* it
//! looks for markers. So a transaction either sees the drain and is refused, or its marker
//! is there when the agent looks: none slips between the two. One directory for the whole
//! node: a drain or a sweep reads it once, whatever the number of repositories.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gix::ObjectId;

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("inflight")
}

/// The git process running this hook's transaction: the parent, or, when a wrapper
/// script runs the hook (`sh` between them), the nearest ancestor that is git.
fn git_pid() -> u32 {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() }.unsigned_abs();
    let mut pid = parent;
    for _ in 0..8 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.starts_with("git") {
            return pid;
        }
        match parent_of(pid) {
            Some(p) if p > 1 => pid = p,
            _ => break,
        }
    }
    parent
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// When process `pid` started (clock ticks since boot), so that a marker is never taken
/// for the live process of another program that got the same pid later.
fn started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
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
}

impl Note {
    fn text(&self) -> String {
        let mut text = format!("git_dir {}\nstarted {}\n", self.git_dir.display(), self.started.unwrap_or(0));
        if let Some((id, first, last)) = self.prepare {
            text += &format!("prepare {id} {first} {last}\n");
        }
        text
    }

    fn parse(pid: u32, text: &str) -> Option<Note> {
        let mut note = Note { git_dir: PathBuf::new(), pid, started: None, prepare: None };
        for line in text.lines() {
            let (key, rest) = line.split_once(' ')?;
            match key {
                "git_dir" => note.git_dir = PathBuf::from(rest),
                "started" => note.started = rest.parse().ok().filter(|t| *t != 0),
                "prepare" => {
                    let mut f = rest.split(' ');
                    let id = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
                    note.prepare = Some((id, f.next()?.parse().ok()?, f.next()?.parse().ok()?));
                }
                _ => {}
            }
        }
        (!note.git_dir.as_os_str().is_empty()).then_some(note)
    }

    /// Whether the git process that wrote it still runs.
    fn alive(&self) -> bool {
        match self.started {
            Some(t) => started(self.pid) == Some(t),
            None => super::node::pid_alive(self.pid),
        }
    }
}

/// This hook's transaction, marked as in flight.
pub struct Marker {
    path: PathBuf,
    note: Note,
    keep: bool,
}

impl Marker {
    /// Mark this hook's transaction in `git_dir` as in flight.
    pub fn begin(state_dir: &Path, git_dir: &Path) -> std::io::Result<Marker> {
        let pid = git_pid();
        let git_dir = git_dir.canonicalize()?;
        let note = Note { git_dir, pid, started: started(pid), prepare: None };
        let path = dir(state_dir).join(pid.to_string());
        std::fs::create_dir_all(dir(state_dir))?;
        write(&path, &note)?;
        Ok(Marker { path, note, keep: false })
    }

    /// Note the prepare entry journaled for this transaction.
    pub fn note_prepare(&mut self, id: ObjectId, first: u64, last: u64) -> std::io::Result<()> {
        self.note.prepare = Some((id, first, last));
        write(&self.path, &self.note)
    }

    /// The transaction goes on: `committed` or `aborted` journals its outcome and removes
    /// the marker (`finish`).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Marker {
    /// A refusal at `prepared` before anything was journaled: nothing to finish.
    fn drop(&mut self) {
        if !self.keep && self.note.prepare.is_none() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A marker is written whole (temporary file, then rename): the agent reads the markers
/// while hooks write them, and one read torn would look like no marker at all.
fn write(path: &Path, note: &Note) -> std::io::Result<()> {
    crate::files::write_atomic(path, note.text().as_bytes(), 0o644, false)
}

/// At `committed` or `aborted`: the marker of this hook's transaction, if it has one.
pub fn current(state_dir: &Path) -> Option<Note> {
    let pid = git_pid();
    Note::parse(pid, &std::fs::read_to_string(dir(state_dir).join(pid.to_string())).ok()?)
}

/// This hook's transaction is no longer in flight (its outcome is journaled).
pub fn finish(state_dir: &Path) {
    let _ = std::fs::remove_file(dir(state_dir).join(git_pid().to_string()));
}

/// Remove the marker of `note`'s transaction (an orphan, dealt with).
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
            // No marker of ours (markers are written whole): removed once no process
            // runs under its name, never while one might still be writing it.
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
        let note = Note { git_dir: "/srv/git/kv.git".into(), pid: me, started: started(me), prepare: Some((id, 4, 6)) };
        assert_eq!(Note::parse(me, &note.text()), Some(note.clone()));
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

    /// A marker is rewritten while the agent sweeps (every tick) and a draining leader
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
            finish(&state);
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
