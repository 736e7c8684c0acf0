//! Writes in flight on the leader: transactions its hooks let through at `prepared` that
//! git has not yet committed or aborted. A leader that drains for a handoff waits for them,
//! so that the journal position it hands over includes every write it will acknowledge.
//!
//! The hook creates `<git dir>/stargate/inflight/<pid of git>` *before* its last look at
//! the node state, and removes it at `committed` or `aborted`. The agent publishes
//! "draining" *before* it looks for markers. So a transaction either sees the drain and is
//! refused, or its marker is there when the agent looks: none slips between the two.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("stargate/inflight")
}

/// The marker of the git process running this hook (its parent).
fn marker(git_dir: &Path) -> PathBuf {
    // SAFETY: getppid has no preconditions.
    dir(git_dir).join(unsafe { libc::getppid() }.to_string())
}

/// A marker that disappears when dropped, unless kept for `committed` to remove.
pub struct Marker(Option<PathBuf>);

impl Marker {
    /// Mark this hook's transaction as in flight.
    pub fn begin(git_dir: &Path) -> std::io::Result<Marker> {
        let path = marker(git_dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(&path)?;
        Ok(Marker(Some(path)))
    }

    /// The transaction goes on: `committed` or `aborted` will remove the marker, and read
    /// back `note` (what the transaction left to clean up).
    pub fn keep(mut self, note: &str) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::write(path, note);
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// At `committed` or `aborted`: this transaction is no longer in flight. Returns the note
/// it was kept with.
pub fn end(git_dir: &Path) -> String {
    let path = marker(git_dir);
    let note = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(path);
    note
}

/// Wait until no transaction is in flight in `git_dir`, or `deadline`. Markers of git
/// processes that are gone are removed. Returns the ones still there at the deadline.
pub fn wait(git_dir: &Path, deadline: Instant) -> Vec<u32> {
    loop {
        let live = live(git_dir);
        if live.is_empty() || Instant::now() >= deadline {
            return live;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn live(git_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir(git_dir)) else { return Vec::new() };
    let mut live = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if super::node::pid_alive(pid) {
            live.push(pid);
        } else {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    live
}
