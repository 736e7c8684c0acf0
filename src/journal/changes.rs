//! The leader's change summary (stargate(7), Change summary): which repositories were
//! written, so that a replica's idle cost is one request per interval for the whole node,
//! not one sync per repository.
//!
//! The summary is one file, `<root>/.stargate/changes`: a header naming its generation
//! (`stargate-changes <16 hex digits>`), then one repository name per line, appended by the
//! leader's `reference-transaction committed` hook (next to the UDP signal) and by the
//! leader's agent for every repository it finds new. The hooks only append (one `write` with
//! `O_APPEND`, never creating the file); the agent alone starts a generation, when it is
//! elected and when the file passes `ROTATE_AT`. The health responder serves what was
//! appended since a replica's cursor (`GET /changes?since=<generation>.<offset>`), or, for a
//! cursor it cannot follow, `reset` with every repository of the node.
//!
//! A line must never be lost between the two generations: the agent first links the current
//! file as `changes.previous`, then renames the new one over `changes`, so that the path
//! always exists; a hook that appended to the file just replaced finds the inode it wrote
//! to no longer at the path, and appends to the new file too. A replica whose cursor names
//! the previous generation gets the rest of it and the whole of the current one.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The file, in the node's state directory.
pub const FILE: &str = "changes";
/// The generation before it.
pub const PREVIOUS: &str = "changes.previous";
/// A new generation starts past this size.
pub const ROTATE_AT: u64 = 1 << 20;
const HEADER: &str = "stargate-changes ";
/// The most of a file one answer reads: a replica that far behind is answered `reset`.
const MAX_READ: u64 = 4 << 20;

/// The leader's hook, after a write to repository `name`: one line, best effort (a replica
/// that misses it syncs the repository at its next sweep). Never creates the file.
pub fn note(state_dir: &Path, name: &str) {
    let path = state_dir.join(FILE);
    let line = format!("{name}\n");
    let Ok(written) = append(&path, line.as_bytes()) else { return };
    // Replaced by a new generation meanwhile: the line goes into the new one as well.
    if std::fs::metadata(&path).is_ok_and(|m| m.ino() != written) {
        let _ = append(&path, line.as_bytes());
    }
}

/// Append `bytes` to the existing file `path`; the inode written to.
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    // Never through a symbolic link: the hook would append to whatever it names.
    let mut file = OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    file.write_all(bytes)?;
    Ok(file.metadata()?.ino())
}

/// The agent, when elected and when the file is missing or past `ROTATE_AT`: start a new
/// generation. Returns it.
pub fn start(state_dir: &Path) -> std::io::Result<u64> {
    let generation = loop {
        let g: u64 = rand::random();
        if g != 0 {
            break g;
        }
    };
    let path = state_dir.join(FILE);
    let tmp = state_dir.join(format!(".{FILE}.{}", std::process::id()));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(format!("{HEADER}{generation:016x}\n").as_bytes())?;
    }
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    if path.exists() {
        let link = state_dir.join(format!(".{PREVIOUS}.{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(&path, &link)?;
        std::fs::rename(&link, state_dir.join(PREVIOUS))?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(generation)
}

/// The leader's agent at every tick: a generation is started when none exists or the file
/// has grown past `ROTATE_AT`.
pub fn maintain(state_dir: &Path) {
    // Anything but a regular file in its place (a symbolic link) is replaced too.
    let size = std::fs::symlink_metadata(state_dir.join(FILE)).map(|m| m.is_file().then_some(m.len()));
    if size.as_ref().is_ok_and(|s| s.is_some_and(|s| s <= ROTATE_AT)) {
        return;
    }
    match start(state_dir) {
        Ok(g) => log::info!("change summary: generation {g:016x} started"),
        Err(e) => log::warn!("cannot start a change summary in {}: {e}", state_dir.display()),
    }
}

/// A replica's position in a leader's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub generation: u64,
    pub offset: u64,
}

impl Cursor {
    /// The query of `/changes` that asks for what follows this cursor.
    pub fn query(cursor: Option<Cursor>) -> String {
        match cursor {
            Some(c) => format!("/changes?since={:016x}.{}", c.generation, c.offset),
            None => "/changes".to_owned(),
        }
    }

    /// `<16 hex digits>.<offset>`, as in the query.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (g, o) = text.split_once('.')?;
        if g.len() != 16 || o.is_empty() || o.len() > 19 || !o.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Cursor { generation: u64::from_str_radix(g, 16).ok()?, offset: o.parse().ok()? })
    }
}

/// What a replica learns from one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Where to ask from next time.
    pub cursor: Cursor,
    /// The cursor could not be followed: `names` is every repository of the leader, and
    /// every repository of the replica must be synced once.
    pub reset: bool,
    /// Repositories written since the cursor (or, with `reset`, every one), each once.
    pub names: Vec<String>,
}

/// One generation as read from disk: its number, its length up to the last whole line,
/// and the names after `from`.
struct Generation {
    generation: u64,
    end: u64,
    names: Vec<String>,
}

/// Read the generation in `path` from byte `from` (0: from the header's end).
fn read_from(path: &Path, from: u64) -> Option<Generation> {
    let mut file = crate::files::open_regular(path).ok()?;
    let mut head = [0u8; HEADER.len() + 17];
    file.read_exact(&mut head).ok()?;
    let head = std::str::from_utf8(&head).ok()?;
    let hex = head.strip_prefix(HEADER)?.strip_suffix('\n')?;
    let generation = u64::from_str_radix(hex, 16).ok()?;
    let header_end = head.len() as u64;
    let from = from.max(header_end);
    let len = file.metadata().ok()?.len();
    if from > len || len - from > MAX_READ {
        return None;
    }
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut rest = Vec::new();
    file.take(len - from).read_to_end(&mut rest).ok()?;
    // Only whole lines: a hook may be writing the last one.
    let whole = rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let names = String::from_utf8_lossy(&rest[..whole]).lines().map(str::to_owned).collect();
    Some(Generation { generation, end: from + whole as u64, names })
}

/// The health responder's answer to `/changes` (`query` is what follows `?`, if anything):
/// the body, or `None` when this node keeps no summary (it never led, or an older agent).
/// `all` lists every repository of the node, for a reset.
/// `Err` names the file when it is there but not a regular file (`files::open_regular`).
pub fn answer(
    state_dir: &Path,
    query: Option<&str>,
    all: impl FnOnce() -> Vec<String>,
) -> Result<Option<String>, crate::files::ReadError> {
    let since = query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("since="))).and_then(Cursor::parse);
    let (current, previous) = (state_dir.join(FILE), state_dir.join(PREVIOUS));
    let Some(now) = generation(&current)? else { return Ok(None) };
    // The usual answer reads only what follows the cursor.
    let followed = match since {
        Some(c) if c.generation == now => {
            read_from(&current, c.offset).filter(|r| r.generation == c.generation && c.offset <= r.end)
        }
        Some(c) => read_from(&previous, c.offset)
            .filter(|r| r.generation == c.generation && c.offset <= r.end)
            .and_then(|older| {
                let newer = read_from(&current, 0)?;
                Some(Generation { names: [older.names, newer.names].concat(), ..newer })
            }),
        None => None,
    };
    let reset = followed.is_none();
    let (end, mut names) = match followed {
        Some(r) => (r.end, r.names),
        None => match read_from(&current, 0) {
            Some(r) => (r.end, all()),
            None => return Ok(None),
        },
    };
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| crate::repos::valid_name(n) && seen.insert(n.clone()));
    // Format 1's header names no format (docs/ARCHITECTURE.md, Formats and versions).
    let header = match crate::format::CHANGES.writes {
        1 => HEADER.to_owned(),
        n => format!("{}/{n} ", HEADER.trim_end()),
    };
    let mut body = format!("{header}{now:016x} {end}{}\n", if reset { " reset" } else { "" });
    for n in names {
        body.push_str(&n);
        body.push('\n');
    }
    Ok(Some(body))
}

/// The generation of the file at `path`, from its header: `None` when there is no file or
/// no header, `Err` when it is not a regular file.
fn generation(path: &Path) -> Result<Option<u64>, crate::files::ReadError> {
    let mut file = match crate::files::open_regular(path) {
        Ok(file) => file,
        Err(e) if e.is_missing() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; HEADER.len() + 17];
    if file.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let hex = std::str::from_utf8(&head).ok().and_then(|h| h.strip_prefix(HEADER)?.strip_suffix('\n'));
    Ok(hex.and_then(|hex| u64::from_str_radix(hex, 16).ok()))
}

/// Why an answer of `/changes` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty answer")]
    Empty,
    #[error("not a change summary")]
    NotSummary,
    #[error("bad header {0:?}")]
    Header(String),
    #[error("bad repository name {0:?}")]
    Name(String),
    /// A later format (`stargate-changes/<N> `): the replica polls every repository, as
    /// without a summary (docs/ARCHITECTURE.md, Formats and versions).
    #[error("{0}")]
    Format(crate::format::Unknown),
}

/// Parse an answer of `/changes`. Strict: anything unexpected is an error, and the replica
/// then polls every repository as if the leader kept no summary.
pub fn parse(body: &str) -> Result<Changes, ParseError> {
    let mut lines = body.lines();
    let head = lines.next().ok_or(ParseError::Empty)?;
    // Format 1 is headed `stargate-changes `, a later one `stargate-changes/<N> `.
    let rest = match head.strip_prefix(HEADER) {
        Some(rest) => rest,
        None => {
            let (word, rest) = head.split_once(' ').ok_or(ParseError::NotSummary)?;
            let found = word.strip_prefix(HEADER.trim_end()).and_then(|w| w.strip_prefix('/'));
            let found =
                found.ok_or(ParseError::NotSummary)?.parse().map_err(|_| ParseError::Header(head.to_owned()))?;
            crate::format::CHANGES.check("the leader's change summary", found).map_err(ParseError::Format)?;
            rest
        }
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let (generation, end, reset) = match fields[..] {
        [g, e] => (g, e, false),
        [g, e, "reset"] => (g, e, true),
        _ => return Err(ParseError::Header(head.to_owned())),
    };
    let cursor = Cursor::parse(&format!("{generation}.{end}")).ok_or_else(|| ParseError::Header(head.to_owned()))?;
    let mut names = Vec::new();
    for name in lines {
        if !crate::repos::valid_name(name) {
            return Err(ParseError::Name(name.to_owned()));
        }
        names.push(name.to_owned());
    }
    Ok(Changes { cursor, reset, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        vec!["a.git".into(), "o/b.git".into()]
    }

    /// A symbolic link in the summary's place: the answer names the file and refuses it,
    /// a hook's note does not write through it, and the agent replaces it.
    #[test]
    fn a_summary_replaced_by_a_symbolic_link_is_refused_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let target = d.join("elsewhere");
        std::fs::write(&target, format!("{HEADER}{:016x}\n", 7)).unwrap();
        std::os::unix::fs::symlink(&target, d.join(FILE)).unwrap();
        let e = answer(d, None, all).unwrap_err();
        assert_eq!(e.to_string(), format!("{} is a symbolic link; refused", d.join(FILE).display()));
        note(d, "kv.git");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), format!("{HEADER}{:016x}\n", 7), "written through");
        maintain(d);
        assert!(std::fs::symlink_metadata(d.join(FILE)).unwrap().is_file(), "the agent replaced the link");
        assert!(answer(d, None, all).unwrap().is_some());
    }

    #[test]
    fn a_cursor_follows_appends_across_generations() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(answer(d, None, all).unwrap(), None, "no summary before the agent starts one");
        note(d, "lost.git");
        assert!(!d.join(FILE).exists(), "hooks never create the file");
        start(d).unwrap();
        let first = parse(&answer(d, None, all).unwrap().unwrap()).unwrap();
        assert!(first.reset);
        assert_eq!(first.names, all());
        let q = |c: Cursor| Cursor::query(Some(c)).split_once('?').unwrap().1.to_owned();
        let idle = parse(&answer(d, Some(&q(first.cursor)), all).unwrap().unwrap()).unwrap();
        assert_eq!((idle.reset, idle.names.len(), idle.cursor), (false, 0, first.cursor));
        note(d, "a.git");
        note(d, "a.git");
        note(d, "o/b.git");
        let some = parse(&answer(d, Some(&q(idle.cursor)), all).unwrap().unwrap()).unwrap();
        assert_eq!(some.names, ["a.git", "o/b.git"]);
        assert!(!some.reset);
        // A write in the old generation after its cursor, then a new generation.
        note(d, "c.git");
        start(d).unwrap();
        note(d, "d.git");
        let across = parse(&answer(d, Some(&q(some.cursor)), all).unwrap().unwrap()).unwrap();
        assert_eq!(across.names, ["c.git", "d.git"]);
        assert_ne!(across.cursor.generation, some.cursor.generation);
        // Two generations on, the cursor is unknown: reset.
        start(d).unwrap();
        start(d).unwrap();
        let gone = parse(&answer(d, Some(&q(across.cursor)), all).unwrap().unwrap()).unwrap();
        assert!(gone.reset);
        // A cursor past the end is not followed either.
        let past = Cursor { offset: 1 << 40, ..gone.cursor };
        assert!(parse(&answer(d, Some(&q(past)), all).unwrap().unwrap()).unwrap().reset);
    }

    #[test]
    fn a_hook_that_appended_to_a_replaced_generation_appends_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        start(d).unwrap();
        // As a hook that opened the file just before the rotation and wrote just after it.
        let mut old = OpenOptions::new().append(true).open(d.join(FILE)).unwrap();
        let cursor = parse(&answer(d, None, all).unwrap().unwrap()).unwrap().cursor;
        start(d).unwrap();
        old.write_all(b"late.git\n").unwrap();
        let q = Cursor::query(Some(cursor));
        let seen = parse(&answer(d, q.split_once('?').map(|x| x.1), all).unwrap().unwrap()).unwrap();
        assert_eq!(seen.names, ["late.git"], "the previous generation is still read to its end");
        assert_eq!(old.metadata().unwrap().ino(), std::fs::metadata(d.join(PREVIOUS)).unwrap().ino());
        // note() itself writes into the current file when the inode it wrote to was replaced.
        note(d, "x.git");
        let text = std::fs::read_to_string(d.join(FILE)).unwrap();
        assert!(text.ends_with("x.git\n"), "{text}");
    }

    #[test]
    fn answers_are_parsed_strictly() {
        let header = |h: &str| ParseError::Header(h.to_owned());
        for (bad, why) in [
            ("", ParseError::Empty),
            ("nope", ParseError::NotSummary),
            ("stargate-changes 12 3", header("stargate-changes 12 3")),
            ("stargate-changes 0000000000000001 x", header("stargate-changes 0000000000000001 x")),
            ("stargate-changes 0000000000000001 1\n../x.git", ParseError::Name("../x.git".into())),
        ] {
            assert_eq!(parse(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            parse("stargate-changes 0000000000000001 1 x").map(drop).map_err(|e| e.to_string()),
            Err(r#"bad header "stargate-changes 0000000000000001 1 x""#.to_owned())
        );
        // Format 1 said aloud is read; a later format is refused as such, naming both numbers.
        assert_eq!(parse("stargate-changes/1 00000000000000ff 30\na.git\n").unwrap().names, ["a.git"]);
        let later = parse("stargate-changes/2 00000000000000ff 30\na.git\n").unwrap_err();
        assert!(matches!(&later, ParseError::Format(u) if (u.found, u.known) == (2, 1)), "{later}");
        assert!(later.to_string().starts_with("the leader's change summary: change summary format 2,"), "{later}");
        let ok = parse("stargate-changes 00000000000000ff 30 reset\na.git\n").unwrap();
        assert_eq!(ok.cursor, Cursor { generation: 255, offset: 30 });
        assert!(ok.reset);
    }
}
