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

const MARKER_TEXT: &str = "This repository is served by Stargate: its hooks accept a write only on the\n\
current leader (stargate(7), MANAGED REPOSITORIES). Remove this file to release it.\n";

pub fn is_marked(git_dir: &Path) -> bool {
    git_dir.join(MARKER).is_file()
}

/// Create repository `name` under `root` as a replica or a new leader does for one another
/// node has: empty and managed (`manage`), or a passive node would accept pushes to it.
/// Nothing is left behind on failure.
pub fn create_empty(root: &Path, name: &str, object_format: Option<&str>) -> Result<(), CreateError> {
    let path = root.join(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(CreateError::Dir)?;
    }
    crate::wire::git::init_bare_as(&path, object_format)?;
    if let Err(e) = manage(&path) {
        let _ = std::fs::remove_dir_all(&path);
        return Err(CreateError::Manage(e));
    }
    Ok(())
}

/// Why `create_empty` created nothing.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The directory it goes in (an owner's) cannot be created.
    #[error("{0}")]
    Dir(#[source] std::io::Error),
    #[error(transparent)]
    Git(#[from] crate::wire::git::Error),
    #[error(transparent)]
    Manage(ManageError),
}

/// Every hook githooks(5) names that git finds by name in the hooks directory
/// (`fsmonitor-watchman` is run from `core.fsmonitor` instead). `githooks/` has a shim for
/// each, install.sh a link, and a managed repository's hooks directory a link (`manage`).
pub const HOOK_NAMES: &[&str] = &[
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "p4-changelist",
    "p4-prepare-changelist",
    "p4-post-changelist",
    "p4-pre-submit",
    "post-index-change",
];

/// The hooks Stargate runs itself in a managed repository (stargate-hook(1), MANAGED
/// REPOSITORIES): the two that decide, `proc-receive` for the refs it takes, and
/// `post-receive`, which tells the client its position. Each chains to the repository's
/// own hook of the same name.
pub const OWN_HOOKS: &[&str] = &["pre-receive", "reference-transaction", "proc-receive", "post-receive"];

/// Where a managed repository's hooks directory is, inside its git directory: what its
/// `core.hooksPath` names.
pub const HOOKS_DIR: &str = "stargate/hooks";

/// The ref prefixes git hands to the `proc-receive` hook in a managed repository
/// (`receive.procReceiveRefs`): `git kv` changes, applied by the leader; Stargate's own
/// refs, which a push (`git push --mirror`) may carry and which stay as they are.
pub const PROC_RECEIVE_REFS: &[&str] = &["refs/for/kv/", "refs/stargate/"];

/// Why a repository cannot be managed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{} is not a git repository", .0.display())]
    NotRepository(std::path::PathBuf),
    #[error(
        "{} is not a bare repository: Stargate manages bare repositories only (a push would \
         update its work tree and its refs apart); serve a bare clone instead (git clone --bare)",
        .0.display()
    )]
    NotBare(std::path::PathBuf),
    #[error("cannot find the stargate-hook binary to link the hooks to: {0}")]
    Binary(#[source] std::io::Error),
    #[error("cannot lay out its hooks in {}: {source}", .path.display())]
    Hooks { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot set its hooks in its config: {0}")]
    Config(#[source] std::io::Error),
    #[error("cannot mark it as managed: {0}")]
    Mark(#[source] std::io::Error),
}

/// Whether the repository at `git_dir` has a work tree, or is laid out as one: its git
/// directory is a `.git` (whatever `core.bare` says: git runs the hooks of a `.git` made
/// bare by its config with `GIT_DIR=.`), or its config says `bare = false`. Read without
/// running git: the hooks ask.
pub fn has_work_tree(git_dir: &Path) -> bool {
    let dot_git = |p: &Path| p.file_name().is_some_and(|n| n == ".git");
    dot_git(git_dir) || sets(git_dir, "bare", "false") || git_dir.canonicalize().is_ok_and(|p| dot_git(&p))
}

/// Make the bare repository at `git_dir` Stargate's (stargate(7), MANAGED REPOSITORIES):
/// its own hooks directory (`HOOKS_DIR`: a link to this binary for each of `OWN_HOOKS`, and
/// for every other hook git knows a link to the repository's own `hooks/<name>`, so git
/// starts no process for a hook the repository does not have), `core.hooksPath` naming
/// it and `receive.procReceiveRefs` in the repository's config, and the marker. Only what
/// is missing or wrong is written, so that running it again (the agent does, at every
/// start) costs a read of the config and a few `readlink`s. Returns whether anything
/// changed.
pub fn manage(git_dir: &Path) -> Result<bool, ManageError> {
    if !(git_dir.join("HEAD").is_file() && git_dir.join("objects").is_dir()) {
        if git_dir.join(".git").exists() {
            return Err(ManageError::NotBare(git_dir.to_owned()));
        }
        return Err(ManageError::NotRepository(git_dir.to_owned()));
    }
    if has_work_tree(git_dir) {
        return Err(ManageError::NotBare(git_dir.to_owned()));
    }
    let git_dir = git_dir.canonicalize().map_err(|e| ManageError::NotRepository(git_dir.join(e.to_string())))?;
    let binary = hook_binary().map_err(ManageError::Binary)?;
    let dir = git_dir.join(HOOKS_DIR);
    let hooks_err = |source| ManageError::Hooks { path: dir.clone(), source };
    std::fs::create_dir_all(&dir).map_err(hooks_err)?;
    let mut changed = false;
    for name in HOOK_NAMES {
        let target = match OWN_HOOKS.contains(name) {
            true => binary.clone(),
            false => Path::new("../../hooks").join(name),
        };
        changed |= link(&dir.join(name), &target).map_err(hooks_err)?;
    }
    let config = std::fs::read_to_string(git_dir.join("config")).unwrap_or_default();
    let values = |key: &str| -> Vec<String> {
        config
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case(key).then(|| unquoted(v))
            })
            .collect()
    };
    let hooks_path = dir.to_string_lossy();
    if hooks_path.contains(['\n', '\r', '\0']) {
        return Err(ManageError::Config(std::io::Error::other("a path git config cannot hold")));
    }
    let mut add = String::new();
    if values("hookspath").last().map(String::as_str) != Some(&*hooks_path) {
        add += &format!("[core]\n\thooksPath = {}\n", quoted(&hooks_path));
    }
    let handed = values("procreceiverefs");
    let missing: Vec<&&str> = PROC_RECEIVE_REFS.iter().filter(|p| !handed.iter().any(|v| v == **p)).collect();
    if !missing.is_empty() {
        add += "[receive]\n";
        missing.iter().for_each(|p| add += &format!("\tprocReceiveRefs = {p}\n"));
    }
    if !add.is_empty() {
        append_config(&git_dir, &add).map_err(ManageError::Config)?;
        changed = true;
    }
    changed |= mark(&git_dir).map_err(ManageError::Mark)?;
    Ok(changed)
}

/// A config value as git writes one: in double quotes, `\\` and `"` escaped, when it holds
/// what git would otherwise read as a comment, a quote or an escape, or ends in a space.
fn quoted(value: &str) -> String {
    if !value.contains(['"', '\\', '#', ';']) && value.trim() == value {
        return value.to_owned();
    }
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A config value as git reads it: quotes removed, `\\`, `\"`, `\n`, `\t` undone, a
/// comment (`#`, `;`) outside quotes dropped, and the spaces around it trimmed.
fn unquoted(raw: &str) -> String {
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

/// Append `text` (whole sections) to the repository's `config` as git writes it: the new
/// file under `config.lock`, taken exclusively (a `git config` running meanwhile makes this
/// fail, not lose its write), then renamed over the old one. No git process: the agent
/// manages every repository it finds at its start.
fn append_config(git_dir: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let config = git_dir.join("config");
    let lock = git_dir.join("config.lock");
    let mut old = std::fs::read(&config)?;
    if !old.is_empty() && !old.ends_with(b"\n") {
        old.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&lock)?;
    let written = (|| {
        file.write_all(&old)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&lock, &config)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
    written
}

/// This program, which the hooks of a managed repository link to. A binary replaced while
/// the process runs (an upgrade) shows as `<path> (deleted)`: the path is the new one.
fn hook_binary() -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.exists() {
        return Ok(exe);
    }
    let text = exe.to_string_lossy();
    Ok(std::path::PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text)))
}

/// Make `path` a symbolic link to `target`, replacing whatever is there in one rename;
/// returns whether it was not already.
fn link(path: &Path, target: &Path) -> std::io::Result<bool> {
    if std::fs::read_link(path).is_ok_and(|t| t == target) {
        return Ok(false);
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(true)
}

/// Mark the repository at `git_dir` as managed; returns whether it was not yet.
pub fn mark(git_dir: &Path) -> std::io::Result<bool> {
    let path = git_dir.join(MARKER);
    if path.is_file() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::files::write_atomic(&path, MARKER_TEXT.as_bytes(), 0o644, false)?;
    Ok(true)
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

    /// What `manage` writes into a repository's config is what git reads back, whatever
    /// the path holds, and a second `manage` writes nothing.
    #[test]
    fn manage_writes_a_config_git_reads() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("a dir #1; \"x\" \\y").join("r.git");
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git").arg("--git-dir").arg(&repo).args(args).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let out = std::process::Command::new("git").args(["init", "-q", "--bare"]).arg(&repo).output().unwrap();
        assert!(out.status.success());
        git(&["config", "core.hooksPath", "/elsewhere"]);
        assert!(manage(&repo).unwrap());
        let hooks = repo.canonicalize().unwrap().join(HOOKS_DIR);
        assert_eq!(git(&["config", "core.hooksPath"]).trim_end(), hooks.to_str().unwrap());
        assert_eq!(git(&["config", "--get-all", "receive.procReceiveRefs"]), "refs/for/kv/\nrefs/stargate/\n");
        assert_eq!(git(&["config", "core.bare"]).trim_end(), "true");
        assert!(is_marked(&repo));
        assert_eq!(std::fs::read_link(hooks.join("update")).unwrap(), Path::new("../../hooks/update"));
        assert!(!repo.join("config.lock").exists());
        assert!(!manage(&repo).unwrap(), "nothing more to write");
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
