//! The repository's own hooks, run after Stargate allowed the write (at once in a
//! repository Stargate does not manage): `hooks/<name>` of the repository, with the same
//! arguments, stdin, working directory and environment git gave Stargate. Its exit status
//! is the hook's, and what it prints reaches the client as git would relay it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{HookError, Repo};
use crate::error::{Error, Result};

/// Set for a chained hook: `<hook name> <repository>`. A chained hook that is itself a
/// Stargate shim (hooks copied into the repository) then does nothing, instead of checking
/// and journaling the same write twice or chaining to itself forever.
const NESTED: &str = "STARGATE_CHAINED";

fn nested_key(name: &str, repo: &Repo) -> String {
    let dir = repo.git_dir().canonicalize().unwrap_or_else(|_| repo.git_dir().to_owned());
    format!("{name} {}", dir.display())
}

/// Whether this process is a chained hook of the same name and repository as its caller.
pub fn is_nested_copy(name: &str, repo: &Repo) -> bool {
    std::env::var_os(NESTED).is_some_and(|v| v.to_string_lossy() == nested_key(name, repo))
}

/// The repository's own hook `name`: missing, not executable (git ignores those too, with
/// its hint), or this very program (a link to `stargate-hook`) is none.
fn find(name: &str, repo: &Repo) -> Option<PathBuf> {
    let path = repo.hooks.join(name);
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o111 == 0 {
        hint_ignored(&path, repo);
        return None;
    }
    let me = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    if me.is_some() && path.canonicalize().ok() == me {
        return None;
    }
    Some(path)
}

/// git's hint for a hook that is there but not executable (advice.ignoredHook), which git
/// cannot give when it runs Stargate's hook in its place. Off as git's is with
/// `GIT_ADVICE=0` or the repository's `advice.ignoredHook = false` (hooks read no other
/// config); given once per hook process, where git gives it once per git process.
fn hint_ignored(path: &Path, repo: &Repo) {
    if std::env::var_os("GIT_ADVICE").is_some_and(|v| v == "0" || v == "false")
        || crate::repos::sets_in_config(repo.git_dir(), "ignoredhook", "false")
    {
        return;
    }
    eprintln!(
        "hint: The '{}' hook was ignored because it's not set as executable.\n\
         hint: You can disable this warning with `git config advice.ignoredHook false`.",
        path.display()
    );
}

fn command(path: &Path, name: &str, args: &[String], repo: &Repo) -> Command {
    let mut cmd = Command::new(path);
    cmd.args(args).env(NESTED, nested_key(name, repo));
    cmd
}

/// A script without `#!` is run by `/bin/sh`, as git's run-command does.
fn shell(path: &Path, name: &str, args: &[String], repo: &Repo) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(path).args(args).env(NESTED, nested_key(name, repo));
    cmd
}

fn cannot_run(path: &Path, source: std::io::Error) -> Error {
    HookError::OwnHook { path: path.to_owned(), source }.into()
}

/// Become the repository's own hook `name` (stdin untouched), or end well if it has none.
pub fn exec(name: &str, args: &[String], repo: &Repo) -> Result<()> {
    let Some(path) = find(name, repo) else { return Ok(()) };
    let mut e = command(&path, name, args, repo).exec();
    if e.raw_os_error() == Some(libc::ENOEXEC) {
        e = shell(&path, name, args, repo).exec();
    }
    Err(cannot_run(&path, e))
}

/// Run the repository's own hook `name` with `input` on its stdin (the input Stargate has
/// read already); fails with its exit status.
pub fn run(name: &str, args: &[String], repo: &Repo, input: &[u8]) -> Result<()> {
    ran(name, args, repo, input).map(drop)
}

/// As `run`; whether the repository has such a hook (it ran, and agreed).
pub fn ran(name: &str, args: &[String], repo: &Repo, input: &[u8]) -> Result<bool> {
    let Some(path) = find(name, repo) else { return Ok(false) };
    let spawn = |mut cmd: Command| cmd.stdin(Stdio::piped()).spawn();
    let mut child = match spawn(command(&path, name, args, repo)) {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => spawn(shell(&path, name, args, repo)),
        other => other,
    }
    .map_err(|e| cannot_run(&path, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook need not read its input: a broken pipe is its choice, not an error.
        let input = input.to_vec();
        std::thread::spawn(move || stdin.write_all(&input));
    }
    let status = child.wait().map_err(|e| cannot_run(&path, e))?;
    match status.code() {
        Some(0) => Ok(true),
        Some(code) => Err(Error::ChainedHook(u8::try_from(code).unwrap_or(1).max(1))),
        None => match std::os::unix::process::ExitStatusExt::signal(&status) {
            Some(signal) => Err(Error::ChainedSignal(signal)),
            None => Err(Error::ChainedHook(255)),
        },
    }
}

/// `push-to-checkout <new commit>`: git runs it, when it exists, instead of updating the
/// work tree itself (`receive.denyCurrentBranch=updateInstead`). The shim always exists, so
/// without a repository hook Stargate does what git would have done.
pub fn push_to_checkout(repo: &Repo, args: &[String]) -> Result<()> {
    if find("push-to-checkout", repo).is_some() {
        return exec("push-to-checkout", args, repo);
    }
    let new = args.first().ok_or_else(|| Error::Usage("push-to-checkout <commit>".into()))?;
    crate::wire::git::push_to_deploy(new).map_err(|why| {
        eprintln!("{why}");
        Error::ChainedHook(1)
    })
}

/// `proc-receive`: git runs it for the refs `receive.procReceiveRefs` names. Without a
/// repository hook those refs are refused as git refuses them when it finds no hook: its
/// words, and each ref `fail to run proc-receive hook`, answered through the protocol so
/// that git adds nothing of its own (a hook that does not negotiate makes git say `fail
/// to negotiate version with proc-receive hook`).
pub fn proc_receive(repo: &Repo, args: &[String]) -> Result<()> {
    use super::proc_receive::{flush, read_section, write_pkt};
    if find("proc-receive", repo).is_some() {
        return exec("proc-receive", args, repo);
    }
    eprintln!("error: {NO_PROC_RECEIVE}");
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let talk = (|| {
        read_section(&mut input)?;
        write_pkt(&mut output, b"version=1\n")?;
        flush(&mut output)?;
        for command in read_section(&mut input)? {
            if let Some(refname) = String::from_utf8_lossy(&command).split_whitespace().nth(2) {
                write_pkt(&mut output, format!("ng {refname} {NOT_RUN}\n").as_bytes())?;
            }
        }
        flush(&mut output)
    })();
    talk.map_err(|e| HookError::Protocol(e).into())
}

/// git's words when it finds no `proc-receive` hook, and for each ref it then refuses.
const NO_PROC_RECEIVE: &str = "cannot find hook 'proc-receive'";
const NOT_RUN: &str = "fail to run proc-receive hook";

/// In a managed repository, the refs of a push for `proc-receive` that are not Stargate's
/// (`refs/for/kv/`), run through the repository's own `proc-receive` in a conversation of
/// their own: git's `version` lines replayed, these `commands`, no push options. Returns
/// its report lines; without a hook of its own, each ref is refused as git would.
pub fn proc_receive_relay(
    repo: &Repo,
    args: &[String],
    version: &[Vec<u8>],
    commands: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>> {
    use super::proc_receive::{flush, read_section, write_pkt};
    let refused = |why: &str| {
        let refs =
            commands.iter().filter_map(|c| String::from_utf8_lossy(c).split_whitespace().nth(2).map(str::to_owned));
        refs.map(|r| format!("ng {r} {why}").into_bytes()).collect()
    };
    let Some(path) = find("proc-receive", repo) else {
        eprintln!("error: {NO_PROC_RECEIVE}");
        return Ok(refused(NOT_RUN));
    };
    let spawn = |mut cmd: Command| cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn();
    let mut child = match spawn(command(&path, "proc-receive", args, repo)) {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => spawn(shell(&path, "proc-receive", args, repo)),
        other => other,
    }
    .map_err(|e| cannot_run(&path, e))?;
    let (Some(mut to), Some(mut from)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(cannot_run(&path, std::io::Error::other("no pipes")));
    };
    let talk = (|| {
        for line in version {
            write_pkt(&mut to, &[line.as_slice(), b"\n"].concat())?;
        }
        flush(&mut to)?;
        let reply = read_section(&mut from)?;
        for line in commands {
            write_pkt(&mut to, &[line.as_slice(), b"\n"].concat())?;
        }
        flush(&mut to)?;
        if reply.iter().any(|l| l.windows(12).any(|w| w == b"push-options")) {
            flush(&mut to)?;
        }
        read_section(&mut from)
    })();
    drop(to);
    let status = child.wait().map_err(|e| cannot_run(&path, e))?;
    match talk {
        Ok(report) if status.success() => Ok(report),
        _ => Ok(refused("proc-receive hook failed")),
    }
}
