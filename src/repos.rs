//! The repositories a node serves: the bare repositories under `stargate.root`, named
//! relative to it (`name.git` or `owner/name.git`).

use std::path::Path;

/// One repository found under the root.
#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    pub readable: bool,
}

/// A repository name under `stargate.root`: `name.git` or `owner/name.git`, each part a
/// plain name, so no `..` and no absolute paths.
pub fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|p| crate::config::valid_id(p)) && name.ends_with(".git")
}

/// A repository name, as an operator typed it, that cannot be one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository name '{}': {why}", crate::wire::sanitize::text(.typed))]
pub struct InvalidName {
    pub typed: String,
    pub why: &'static str,
}

/// The canonical name of a repository to create from what an operator typed:
/// `name[.git]` or `owner/name[.git]`, each part 1-64 of `A-Z a-z 0-9 . _ -`, not starting
/// with `.` or `-`; `.git` is added when missing and may appear only once, at the end.
pub fn canonical(typed: &str) -> Result<String, InvalidName> {
    let bad = |why| Err(InvalidName { typed: typed.to_owned(), why });
    if typed.is_empty() || typed.starts_with('/') || typed.ends_with('/') {
        return bad("expected name or owner/name, relative to stargate.root");
    }
    let parts: Vec<&str> = typed.split('/').collect();
    if parts.len() > 2 {
        return bad("at most one '/' (owner/name)");
    }
    let last = parts[parts.len() - 1];
    let base = last.strip_suffix(".git").unwrap_or(last);
    for part in parts[..parts.len() - 1].iter().chain([&base]) {
        if !crate::config::valid_id(part) || *part == ".." {
            return bad("each part is 1-64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'");
        }
        if part.ends_with(".git") {
            return bad("'.git' only once, at the end");
        }
    }
    let name = match parts.len() {
        1 => format!("{base}.git"),
        _ => format!("{}/{base}.git", parts[0]),
    };
    if valid_name(&name) { Ok(name) } else { bad("not a repository name") }
}

/// Bare repositories under `root`, as `name.git` or `owner/name.git` (two levels at most),
/// sorted by name. Directories starting with `.` (such as `.stargate`) are skipped.
pub fn list(root: &Path) -> std::io::Result<Vec<Repo>> {
    let mut found = Vec::new();
    scan(root, root, 2, &mut found)?;
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn scan(root: &Path, dir: &Path, depth: u32, found: &mut Vec<Repo>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) || !path.is_dir() {
            continue;
        }
        if path.join("HEAD").is_file() && path.join("objects").is_dir() {
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            let readable = std::fs::read(path.join("HEAD")).is_ok() && std::fs::read_dir(path.join("objects")).is_ok();
            found.push(Repo { name, readable });
        } else if depth > 1 {
            scan(root, &path, depth - 1, found)?;
        }
    }
    Ok(())
}

/// The repositories under a root as found by successive scans: each scan reads the
/// directories, and looks closer (`HEAD`, `objects`) only at names it has not seen, so a
/// node with 10,000 repositories pays one `readdir` per scan, not 20,000 `stat`s.
#[derive(Debug, Default)]
pub struct Scan {
    known: std::collections::BTreeSet<String>,
    /// Directories that are no repository (owners' folders), by name.
    folders: std::collections::BTreeSet<String>,
}

impl Scan {
    /// Scan `root` again: the repositories not seen before. One that disappeared is
    /// forgotten, and found anew if it comes back.
    pub fn update(&mut self, root: &Path) -> std::io::Result<Vec<Repo>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut new = Vec::new();
        self.walk(root, root, 2, &mut seen, &mut new)?;
        self.known.retain(|n| seen.contains(n));
        self.folders.retain(|n| seen.contains(n));
        new.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(new)
    }

    /// Every repository known after the last `update`, sorted.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.known.iter()
    }

    fn walk(
        &mut self,
        root: &Path,
        dir: &Path,
        depth: u32,
        seen: &mut std::collections::BTreeSet<String>,
        new: &mut Vec<Repo>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            if file_name.to_string_lossy().starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            seen.insert(name.clone());
            if self.known.contains(&name) {
                continue;
            }
            if !self.folders.contains(&name) && path.join("HEAD").is_file() && path.join("objects").is_dir() {
                let readable =
                    std::fs::read(path.join("HEAD")).is_ok() && std::fs::read_dir(path.join("objects")).is_ok();
                if readable {
                    self.known.insert(name.clone());
                }
                new.push(Repo { name, readable });
            } else if depth > 1 {
                self.folders.insert(name);
                self.walk(root, &path, depth - 1, seen, new)?;
            }
        }
        Ok(())
    }
}

/// The file, inside a repository's git directory, that makes it Stargate's for the hooks
/// even when the node's state directory is gone (stargate(7), MANAGED REPOSITORIES).
pub const MARKER: &str = "stargate/managed";

pub fn is_marked(git_dir: &Path) -> bool {
    git_dir.join(MARKER).is_file()
}

/// Whether the repository at `git_dir` has a work tree, or is laid out as one: its git
/// directory is a `.git` (whatever `core.bare` says: git runs the hooks of a `.git` made
/// bare by its config with `GIT_DIR=.`), or its config says `bare = false`. Read without
/// running git: the hooks ask.
pub fn has_work_tree(git_dir: &Path) -> bool {
    let dot_git = |p: &Path| p.file_name().is_some_and(|n| n == ".git");
    dot_git(git_dir) || sets(git_dir, "bare", "false") || git_dir.canonicalize().is_ok_and(|p| dot_git(&p))
}

/// A config value as git reads it: quotes removed, `\\`, `\"`, `\n`, `\t` undone, a
/// comment (`#`, `;`) outside quotes dropped, and the spaces around it trimmed.
pub fn unquoted(raw: &str) -> String {
    let (mut value, mut quoted, mut chars) = (String::new(), false, raw.trim().chars());
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => match chars.next() {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some('b') => {
                    value.pop();
                }
                Some(other) => value.push(other),
                None => {}
            },
            '#' | ';' if !quoted => break,
            _ => value.push(c),
        }
    }
    if quoted { value } else { value.trim_end().to_owned() }
}

/// Whether the repository's own `config` sets `name` (lower case, as `extensions.<name>`
/// is written) to `value`: how git decides a repository's formats, read without running
/// git (the hooks ask).
fn sets(git_dir: &Path, name: &str, value: &str) -> bool {
    let Ok(config) = std::fs::read_to_string(git_dir.join("config")) else { return false };
    config.lines().any(|l| {
        let l = l.trim().to_ascii_lowercase();
        (l.strip_prefix(name).map(str::trim_start)).and_then(|r| r.strip_prefix('=')).is_some_and(|v| v.trim() == value)
    })
}

/// Whether the repository's own `config` sets the variable `name` (lower case, any
/// section) to `value`; read without running git (the hooks ask).
pub fn sets_in_config(git_dir: &Path, name: &str, value: &str) -> bool {
    sets(git_dir, name, value)
}

/// Whether the repository's own config hands `refname` to the `proc-receive` hook
/// (`receive.procReceiveRefs`, as `manage` sets it; a value with the `!` modifier excluded).
/// Read without running git: the hooks ask.
pub fn hands_over(git_dir: &Path, refname: &str) -> bool {
    let Ok(config) = std::fs::read_to_string(git_dir.join("config")) else { return false };
    config.lines().any(|l| {
        let Some((key, value)) = l.split_once('=') else { return false };
        let value = unquoted(value);
        let (modifiers, prefix) = value.split_once(':').unwrap_or(("", &value));
        key.trim().eq_ignore_ascii_case("procreceiverefs")
            && !modifiers.contains('!')
            && !prefix.is_empty()
            && refname.starts_with(prefix)
    })
}

/// The repository's object format: `sha256` when `extensions.objectFormat` says so, else
/// `sha1`.
pub fn object_format(git_dir: &Path) -> &'static str {
    if sets(git_dir, "objectformat", "sha256") { "sha256" } else { "sha1" }
}

/// Whether the repository keeps its refs in reftable (`extensions.refStorage`).
pub fn is_reftable(git_dir: &Path) -> bool {
    sets(git_dir, "refstorage", "reftable")
}

/// Why quorum mode cannot serve a reftable repository yet: its anchors are refs written at
/// `prepared`, while git holds the whole reftable store locked (stargate(7), Repository
/// formats).
pub const QUORUM_REFTABLE: &str = "reftable ref storage in quorum mode";

/// Why Stargate cannot serve the repository at `git_dir` yet, if it cannot, on a node in
/// quorum mode when `quorum` (stargate(7), Repository formats).
pub fn unsupported_in(git_dir: &Path, quorum: bool) -> Option<&'static str> {
    (quorum && is_reftable(git_dir)).then_some(QUORUM_REFTABLE)
}

/// The refusal of a write to a repository Stargate cannot serve.
pub fn unsupported_refusal(why: &str) -> String {
    format!(
        "this repository uses {why}, which Stargate cannot replicate yet: writes are refused \
         (stargate(7), Repository formats)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_reports_each_repository_once_and_forgets_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            std::fs::create_dir_all(dir.path().join(name).join("objects")).unwrap();
            std::fs::write(dir.path().join(name).join("HEAD"), "ref: refs/heads/main\n").unwrap();
        };
        mk("a.git");
        mk("owner/b.git");
        let mut scan = Scan::default();
        let names = |v: Vec<Repo>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(scan.update(dir.path()).unwrap()), ["a.git", "owner/b.git"]);
        assert!(scan.update(dir.path()).unwrap().is_empty());
        mk("owner/c.git");
        assert_eq!(names(scan.update(dir.path()).unwrap()), ["owner/c.git"]);
        std::fs::remove_dir_all(dir.path().join("a.git")).unwrap();
        assert!(scan.update(dir.path()).unwrap().is_empty());
        assert_eq!(scan.names().cloned().collect::<Vec<_>>(), ["owner/b.git", "owner/c.git"]);
        mk("a.git");
        assert_eq!(names(scan.update(dir.path()).unwrap()), ["a.git"]);
    }

    #[test]
    fn formats_git_writes_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git").args(args).current_dir(dir.path()).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        git(&["init", "-q", "--bare", "files.git"]);
        git(&["init", "-q", "--bare", "--object-format=sha256", "sha.git"]);
        git(&["init", "-q", "--bare", "--ref-format=reftable", "table.git"]);
        assert_eq!(object_format(&dir.path().join("files.git")), "sha1");
        assert_eq!(object_format(&dir.path().join("sha.git")), "sha256");
        assert_eq!(unsupported_in(&dir.path().join("table.git"), false), None);
        assert_eq!(unsupported_in(&dir.path().join("table.git"), true), Some(QUORUM_REFTABLE));
        assert_eq!(unsupported_in(&dir.path().join("files.git"), true), None);
        assert_eq!(unsupported_in(&dir.path().join("sha.git"), true), None);
    }

    #[test]
    fn names_to_create_are_canonical_or_refused() {
        for (typed, name) in
            [("kv", "kv.git"), ("kv.git", "kv.git"), ("team/app", "team/app.git"), ("a.b/c_d.git", "a.b/c_d.git")]
        {
            assert_eq!(canonical(typed).as_deref(), Ok(name), "{typed}");
        }
        for bad in [
            "",
            "/abs",
            "a/",
            "../x",
            "a/../b",
            "a/b/c",
            "x.git.git",
            "o.git/x",
            ".hidden",
            "-x",
            "a b",
            "a\nb",
            "a\u{1b}[2J",
        ] {
            assert!(canonical(bad).is_err(), "{bad:?}");
        }
    }
}
