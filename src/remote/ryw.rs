//! Reading your own writes (git-remote-stargate(1), READING YOUR OWN WRITES). After a push,
//! the helper asks the node it pushed to for its journal position (`/position`), which is at
//! or after every update of the push, and keeps it with the clone. A later read that
//! `stargate.readFrom` sends to a replica goes there only once that replica has applied the
//! position (`/applied`); otherwise it waits up to `stargate.readYourWrites.timeout`, then
//! reads from the leader. A position the replica says it will never apply (its journal
//! went on at a later epoch without it: the write was lost in a failover) is forgotten and
//! the read goes to the leader, which then holds everything that survived.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::journal::position::Position;

/// What a clone knows of its last push through one URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    At(Position),
    /// Pushed, but the position could not be learnt (the node went away after the push):
    /// reads go to the leader until one tells its position.
    Unknown,
}

/// Where positions are kept: `$GIT_DIR/stargate/positions` when git runs the helper in a
/// repository, and the user's `$XDG_STATE_HOME/stargate/positions` (by default
/// `~/.local/state/stargate/positions`) for reads outside one (`git ls-remote` anywhere).
/// One line per URL, `<url>\t<position or "unknown">`, the most recent last.
pub struct Memory {
    files: Vec<PathBuf>,
}

/// Lines kept per file; the oldest go first.
const MAX_LINES: usize = 256;

impl Memory {
    pub fn here() -> Memory {
        let repo = std::env::var_os("GIT_DIR").map(|d| PathBuf::from(d).join("stargate").join("positions"));
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| PathBuf::from(d).is_absolute())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))
            .map(|d| d.join("stargate").join("positions"));
        Memory { files: repo.into_iter().chain(state).collect() }
    }

    /// What was last kept for `url`: the repository's word first.
    pub fn recall(&self, url: &str) -> Option<Known> {
        self.files.iter().find_map(|f| parse(&std::fs::read_to_string(f).ok()?, url))
    }

    /// Keep `known` for `url` (or forget it), in every place. Best effort: a clone that
    /// cannot keep a position only reads without the guarantee, and says so with `-v`.
    pub fn keep(&self, url: &str, known: Option<Known>) -> Vec<String> {
        let mut failures = Vec::new();
        for file in &self.files {
            let old = std::fs::read_to_string(file).unwrap_or_default();
            let mut lines: Vec<&str> = old.lines().filter(|l| l.split('\t').next() != Some(url)).collect();
            let line = known.map(|k| match k {
                Known::At(p) => format!("{url}\t{p}"),
                Known::Unknown => format!("{url}\tunknown"),
            });
            lines.extend(line.as_deref());
            let skip = lines.len().saturating_sub(MAX_LINES);
            let text: String = lines[skip..].iter().map(|l| format!("{l}\n")).collect();
            let written = file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| crate::files::write_atomic(file, text.as_bytes(), 0o644, false));
            if let Err(e) = written {
                failures.push(format!("cannot keep the position in {}: {e}", file.display()));
            }
        }
        failures
    }
}

fn parse(text: &str, url: &str) -> Option<Known> {
    let value = text.lines().rev().find_map(|l| l.strip_prefix(url)?.strip_prefix('\t'))?;
    match value {
        "unknown" => Some(Known::Unknown),
        v => v.parse().ok().map(Known::At),
    }
}

/// This node's position in repository `repo`, from its health responder at `addr`.
pub fn position_of(addr: &str, repo: &str, timeout: Duration) -> Result<Position, String> {
    let path = format!("/position?repo={repo}");
    match crate::wire::http::get(addr, &path, Instant::now() + timeout, timeout) {
        Ok((200, body)) => body.parse().map_err(|e| format!("{e}")),
        Ok((code, body)) => Err(format!("{code} {}", first_line(&body))),
        Err(e) => Err(e.to_string()),
    }
}

/// May a read of `repo` go to the replica whose health responder is at `addr`?
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It has applied the position (after waiting this long).
    Applied(Duration),
    /// Read from the leader instead, for this reason.
    Leader(String),
    /// The replica will never apply the position (lost in a failover): forget it, and
    /// read from the leader.
    Superseded(String),
}

impl Verdict {
    pub fn is_superseded(&self) -> bool {
        matches!(self, Verdict::Superseded(_))
    }
}

/// Ask the replica at `addr` whether it has applied `want`, again and again (5 ms, then
/// doubling to 50 ms) until it has or `wait` passes; each ask within `ask_timeout`.
pub fn wait_for(addr: &str, repo: &str, want: &Position, wait: Duration, ask_timeout: Duration) -> Verdict {
    let start = Instant::now();
    let deadline = start + wait;
    let path = format!("/applied?repo={repo}&position={want}");
    let mut pause = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = crate::wire::http::get(addr, &path, Instant::now() + ask_timeout, ask_timeout);
        let behind = match answer {
            Ok((200, _)) => return Verdict::Applied(start.elapsed()),
            Ok((410, body)) => return Verdict::Superseded(first_line(&body)),
            Ok((503, body)) if body.starts_with("behind") => first_line(&body),
            Ok((code, body)) => return Verdict::Leader(format!("it answered {code} {}", first_line(&body))),
            Err(e) => return Verdict::Leader(format!("cannot ask it: {e}")),
        };
        if left.is_zero() {
            return Verdict::Leader(format!("it has not applied {want} within {} ms ({behind})", wait.as_millis()));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn first_line(body: &str) -> String {
    crate::wire::sanitize::text(body.lines().next().unwrap_or("").trim()).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest line of a URL wins; other URLs are left alone; forgetting removes it; a
    /// damaged line reads as nothing kept.
    #[test]
    fn positions_are_kept_per_url() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory { files: vec![dir.path().join("a/positions"), dir.path().join("b/positions")] };
        let id = gix::ObjectId::from_hex(b"5e1f2a00000000000000000000000000000000aa").unwrap();
        let (p1, p2) = (Position { epoch: 1, seq: 4, id }, Position { epoch: 2, seq: 9, id });
        assert!(memory.keep("a,b/kv.git", Some(Known::At(p1))).is_empty());
        assert!(memory.keep("a,b/other.git", Some(Known::Unknown)).is_empty());
        assert!(memory.keep("a,b/kv.git", Some(Known::At(p2))).is_empty());
        assert_eq!(memory.recall("a,b/kv.git"), Some(Known::At(p2)));
        assert_eq!(memory.recall("a,b/other.git"), Some(Known::Unknown));
        assert_eq!(memory.recall("a,b/kv"), None, "a prefix of a URL is not that URL");
        memory.keep("a,b/kv.git", None);
        assert_eq!(memory.recall("a,b/kv.git"), None);
        std::fs::write(dir.path().join("a/positions"), "a,b/kv.git\tgarbage\n").unwrap();
        std::fs::remove_file(dir.path().join("b/positions")).unwrap();
        assert_eq!(memory.recall("a,b/kv.git"), None);
        for i in 0..MAX_LINES + 10 {
            memory.keep(&format!("n/{i}.git"), Some(Known::Unknown));
        }
        let kept = std::fs::read_to_string(dir.path().join("b/positions")).unwrap();
        assert_eq!(kept.lines().count(), MAX_LINES);
        assert_eq!(memory.recall(&format!("n/{}.git", MAX_LINES + 9)), Some(Known::Unknown));
        assert_eq!(memory.recall("n/0.git"), None, "the oldest went first");
    }
}
