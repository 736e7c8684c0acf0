//! Managing a repository: what makes a bare repository under `stargate.root` Stargate's
//! on a node (docs/ARCHITECTURE.md, Managed repositories and their hooks; stargate(7),
//! MANAGED REPOSITORIES): its own hooks directory, `core.hooksPath` and
//! `receive.procReceiveRefs` in its config, and the marker. The agent, `git stargate
//! create`, `import` and `manage`, and a replica creating a repository all come here.

use std::path::Path;

const MARKER_TEXT: &str = "This repository is served by Stargate: its hooks accept a write only on the\n\
current leader (stargate(7), MANAGED REPOSITORIES). Remove this file to release it.\n";

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
    if crate::repos::has_work_tree(git_dir) {
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
                k.trim().eq_ignore_ascii_case(key).then(|| crate::repos::unquoted(v))
            })
            .collect()
    };
    let hooks_path = dir.to_string_lossy();
    if hooks_path.contains(['\n', '\r', '\0']) {
        return Err(ManageError::Config(std::io::Error::other("a path git config cannot hold")));
    }
    let mut add = String::new();
    let set = values("hookspath");
    if set.is_empty() {
        add += &format!("[core]\n\thooksPath = {}\n", quoted(&hooks_path));
    } else if set.len() > 1 || set[0] != hooks_path {
        // Another value (an operator's, an older layout's): replaced, never a second one,
        // which would make git config refuse to set the key afterwards. Rare: git does it.
        crate::wire::git::config_replace_all(&git_dir, "core.hooksPath", &hooks_path)
            .map_err(|e| ManageError::Config(std::io::Error::other(e.to_string())))?;
        changed = true;
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
    let path = git_dir.join(crate::repos::MARKER);
    if path.is_file() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::files::write_atomic(&path, MARKER_TEXT.as_bytes(), 0o644, false)?;
    Ok(true)
}
#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(git(&["config", "--get-all", "core.hooksPath"]).trim_end(), hooks.to_str().unwrap());
        git(&["config", "core.hooksPath", "/elsewhere"]);
        assert!(manage(&repo).unwrap(), "another value is replaced");
        assert_eq!(git(&["config", "--get-all", "core.hooksPath"]).trim_end(), hooks.to_str().unwrap());
        assert_eq!(git(&["config", "--get-all", "receive.procReceiveRefs"]), "refs/for/kv/\nrefs/stargate/\n");
        assert_eq!(git(&["config", "core.bare"]).trim_end(), "true");
        assert!(crate::repos::is_marked(&repo));
        assert_eq!(std::fs::read_link(hooks.join("update")).unwrap(), Path::new("../../hooks/update"));
        assert!(!repo.join("config.lock").exists());
        assert!(!manage(&repo).unwrap(), "nothing more to write");
    }
}
