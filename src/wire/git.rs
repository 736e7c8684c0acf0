//! The only module that runs the `git` binary.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// The watchdog killed it (whole process group) at its deadline.
    #[error("git {args} ran past its deadline and was killed")]
    Timeout { args: String },
    #[error("git {args} failed ({status}): {stderr}")]
    Failed { args: String, status: String, stderr: String },
}

fn command(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run<I, S>(dir: Option<&Path>, args: I) -> Result<Output, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = command(dir).args(&args).output().map_err(Error::Spawn)?;
    if out.status.success() { Ok(out) } else { Err(failed(&args, &out)) }
}

fn failed(args: &[std::ffi::OsString], out: &Output) -> Error {
    let args = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    Error::Failed {
        args,
        status: out.status.to_string(),
        stderr: crate::wire::sanitize::text(&String::from_utf8_lossy(&out.stderr)).trim().to_owned(),
    }
}

/// Every config entry visible from `dir` (all scopes, includes resolved), in file order.
/// Keys come as git prints them: section and variable lower-cased, subsection as written.
pub fn config_list(dir: Option<&Path>) -> Result<Vec<(String, String)>, Error> {
    let out = run(dir, ["config", "--null", "--list"])?;
    let mut entries = Vec::new();
    for entry in out.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let (key, value) = entry.split_once('\n').unwrap_or((&entry, "true"));
        entries.push((key.to_owned(), value.to_owned()));
    }
    Ok(entries)
}

/// `git config --replace-all <key> <value>` in the repository at `git_dir`: every value of
/// the key there replaced by one.
pub fn config_replace_all(git_dir: &Path, key: &str, value: &str) -> Result<(), Error> {
    let args = ["config", "--replace-all", key, value];
    let mut cmd = command(None);
    for var in LOCAL_ENV {
        cmd.env_remove(var);
    }
    let out = cmd.arg("--git-dir").arg(git_dir).args(args).output().map_err(Error::Spawn)?;
    match out.status.success() {
        true => Ok(()),
        false => Err(failed(&args.map(std::ffi::OsString::from), &out)),
    }
}

/// `git config --get <key>` as seen from `dir` (a repository, or any directory for the
/// machine's and the user's settings); `None` when unset.
pub fn config_get(dir: &Path, key: &str) -> Result<Option<String>, Error> {
    let args = ["config", "--get", key];
    let out = command(Some(dir)).args(args).output().map_err(Error::Spawn)?;
    match out.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())),
        Some(1) => Ok(None),
        _ => Err(failed(&args.map(std::ffi::OsString::from), &out)),
    }
}

/// What `git push` did with one ref.
#[derive(Debug, PartialEq, Eq)]
pub enum PushResult {
    Ok,
    /// Refused; `reason` is git's summary (e.g. "[rejected] (non-fast-forward)"), `stderr`
    /// carries the remote's own words.
    Rejected {
        reason: String,
        stderr: String,
    },
}

/// `git push --porcelain <remote> <src>:<dst>` from `repo`, with extra `-c` settings. With
/// `lease`, only if the remote's `dst` is that value now (`Some(None)`: does not exist), as
/// `--force-with-lease` says; the remote's ref update is a compare-and-swap on it.
pub fn push(
    repo: &Path,
    config: &[&str],
    remote: &str,
    src: &str,
    dst: &str,
    lease: Option<Option<&str>>,
) -> Result<PushResult, Error> {
    let mut cmd = command(Some(repo));
    for c in config {
        cmd.args(["-c", c]);
    }
    let refspec = format!("{src}:{dst}");
    cmd.args(["push", "--porcelain", "--no-verify"]);
    if let Some(expected) = lease {
        cmd.arg(format!("--force-with-lease={dst}:{}", expected.unwrap_or("")));
    }
    cmd.args([remote, &refspec]);
    let out = cmd.stderr(Stdio::piped()).output().map_err(Error::Spawn)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = crate::wire::sanitize::text(&String::from_utf8_lossy(&out.stderr));
    // Porcelain lines: "<flag>\t<from>:<to>\t<summary> (<reason>)"; flag '!' is a rejection.
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(spec), summary) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if spec.ends_with(&format!(":{dst}")) {
            return Ok(match flag {
                "!" => PushResult::Rejected { reason: summary.unwrap_or("").to_owned(), stderr },
                _ => PushResult::Ok,
            });
        }
    }
    let args = vec!["push".into(), remote.into(), refspec.into()];
    Err(failed(&args, &Output { stderr: stderr.into_bytes(), ..out }))
}

/// `git push --porcelain <remote> <src>:<dst>` from `repo` without a lease, for a ref a
/// `proc-receive` hook handles on the server: the result, and the ref the server reported
/// as written (the hook's `option refname`, else `dst` itself, as git prints it).
pub fn push_for(repo: &Path, remote: &str, src: &str, dst: &str) -> Result<(PushResult, String), Error> {
    let mut cmd = command(Some(repo));
    let refspec = format!("{src}:{dst}");
    cmd.args(["push", "--porcelain", "--no-verify", remote, &refspec]);
    let out = cmd.stderr(Stdio::piped()).output().map_err(Error::Spawn)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = crate::wire::sanitize::text(&String::from_utf8_lossy(&out.stderr));
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(spec), summary) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(to) = spec.strip_prefix(&format!("{src}:")) else { continue };
        return Ok(match flag {
            "!" => (PushResult::Rejected { reason: summary.unwrap_or("").to_owned(), stderr }, to.to_owned()),
            _ => (PushResult::Ok, to.to_owned()),
        });
    }
    let args = vec!["push".into(), remote.into(), refspec.into()];
    Err(failed(&args, &Output { stderr: stderr.into_bytes(), ..out }))
}

/// `git update-ref -m <message> <name> <new> <old>` in `git_dir`, with the hooks
/// `core.hooksPath` names (unlike every other ref write here): a write on the leader's
/// behalf that must be checked, journaled and replicated like a push's (the `git kv`
/// change a `proc-receive` hook applies, docs/ARCHITECTURE.md). `old` all zeros: the ref
/// must not exist. What the hooks printed is in the error.
pub fn update_ref_hooked(git_dir: &Path, name: &str, new: &str, old: &str, message: &str) -> Result<(), Error> {
    let mut cmd = command(None);
    cmd.arg("--git-dir").arg(git_dir).args(["update-ref", "-m", message, name, new, old]);
    let out = cmd.output().map_err(Error::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(&["update-ref".into(), name.into(), new.into(), old.into()], &out))
    }
}

/// `git push --porcelain --atomic <remote> <src>:<dst>…` from `repo`, each ref with a
/// lease on its value there now (`None`: it must not exist): all move, or none.
pub fn push_atomic(
    repo: &Path,
    remote: &str,
    updates: &[(String, String, Option<String>)],
) -> Result<PushResult, Error> {
    let mut cmd = command(Some(repo));
    cmd.args(["push", "--porcelain", "--no-verify", "--atomic"]);
    for (_, dst, expected) in updates {
        cmd.arg(format!("--force-with-lease={dst}:{}", expected.as_deref().unwrap_or("")));
    }
    cmd.arg(remote);
    cmd.args(updates.iter().map(|(src, dst, _)| format!("{src}:{dst}")));
    let out = cmd.stderr(Stdio::piped()).output().map_err(Error::Spawn)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = crate::wire::sanitize::text(&String::from_utf8_lossy(&out.stderr));
    let rejected: Vec<&str> = stdout.lines().filter(|l| l.starts_with('!')).collect();
    match (out.status.success(), rejected.is_empty()) {
        (true, true) => Ok(PushResult::Ok),
        (_, false) => Ok(PushResult::Rejected { reason: rejected.join("; "), stderr }),
        (false, true) => Err(failed(
            &["push".into(), "--atomic".into(), remote.into()],
            &Output { stderr: stderr.into_bytes(), ..out },
        )),
    }
}

/// A date as git reads one (`2026-12-01 10:00`, `2 hours ago`, `yesterday`, `@<Unix
/// time>`): seconds since the epoch, from `git rev-parse --since=<date>` in `repo`. As
/// leniently as git: what it cannot read is now.
pub fn parse_date(repo: &Path, date: &str) -> Result<u64, Error> {
    let out = run(Some(repo), ["rev-parse".to_owned(), format!("--since={date}")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().strip_prefix("--max-age=").and_then(|s| s.parse().ok()).ok_or_else(|| Error::Failed {
        args: format!("rev-parse --since={date}"),
        status: "0".into(),
        stderr: text.trim().to_owned(),
    })
}

/// `git fetch` in `repo` with the given arguments, extra `-c` settings and environment.
pub fn fetch(repo: &Path, config: &[&str], args: &[&str], env: &[(&str, &str)]) -> Result<(), Error> {
    let mut all: Vec<&str> = Vec::new();
    for c in config {
        all.extend(["-c", c]);
    }
    all.push("fetch");
    all.extend(args);
    let mut cmd = command(Some(repo));
    cmd.args(&all).envs(env.iter().copied());
    let out = cmd.output().map_err(Error::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        let args: Vec<std::ffi::OsString> = all.iter().map(Into::into).collect();
        Err(failed(&args, &out))
    }
}

/// The branch the repository at `url` names as its HEAD (`ls-remote --symref`), if any.
pub fn remote_head(repo: &Path, url: &str) -> Result<Option<String>, Error> {
    let out = run(Some(repo), ["ls-remote", "--symref", "--", url, "HEAD"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().find_map(|l| l.strip_prefix("ref: ")?.strip_suffix("\tHEAD").map(str::to_owned)))
}

/// `git symbolic-ref HEAD <branch>` in the repository at `git_dir`.
pub fn set_head(git_dir: &Path, branch: &str) -> Result<(), Error> {
    let mut cmd = on_repo(git_dir);
    cmd.args(["symbolic-ref", "HEAD", branch]);
    let out = cmd.output().map_err(Error::Spawn)?;
    if out.status.success() { Ok(()) } else { Err(failed(&["symbolic-ref".into(), branch.into()], &out)) }
}

/// A git command for the agent's mirroring: in its own process group (so the watchdog can
/// kill it with everything it spawned), never prompting, carrying the sync token.
pub struct Bounded {
    cmd: Command,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    show_progress: bool,
}

impl Bounded {
    pub fn new(dir: &Path, args: &[&str]) -> Bounded {
        let mut cmd = command(Some(dir));
        cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").process_group(0);
        Bounded { cmd, args: args.iter().map(|a| a.to_string()).collect(), stdin: None, show_progress: false }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Bounded {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(mut self, input: Vec<u8>) -> Bounded {
        self.stdin = Some(input);
        self
    }

    /// Let git's own progress reach our stderr (a person running `git stargate sync`).
    pub fn show_progress(mut self, yes: bool) -> Bounded {
        self.show_progress = yes;
        self
    }

    /// Run to completion or kill the process group at `deadline`.
    pub fn run(mut self, deadline: Instant) -> Result<Output, Error> {
        let input = self.stdin.take();
        let mut running = self.start()?;
        if let (Some(input), Some(mut pipe)) = (input, running.stdin.take()) {
            std::thread::spawn(move || pipe.write_all(&input));
        }
        running.wait(deadline)
    }

    /// Start it with stdin piped, for `Running::write`; stdout and stderr are collected.
    pub fn start(mut self) -> Result<Running, Error> {
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        self.cmd.stderr(if self.show_progress { Stdio::inherit() } else { Stdio::piped() });
        let mut child = self.cmd.spawn().map_err(Error::Spawn)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Ok(Running { child, args: self.args, stdin, stdout, stderr })
    }
}

/// A started `Bounded` command; dropped unfinished, its process group is killed.
pub struct Running {
    child: std::process::Child,
    args: Vec<String>,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Running {
    /// Feed its stdin. A command that died early shows as an error here or in `wait`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        match &mut self.stdin {
            Some(pipe) => pipe.write_all(data).map_err(Error::Spawn),
            None => Err(Error::Spawn(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    /// Close stdin and wait for the end, killing the process group at `deadline`.
    pub fn wait(mut self, deadline: Instant) -> Result<Output, Error> {
        self.stdin.take();
        let status = loop {
            if let Some(status) = self.child.try_wait().map_err(Error::Spawn)? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Error::Timeout { args: self.args.join(" ") });
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let out = Output {
            status,
            stdout: self.stdout.take().and_then(|t| t.join().ok()).unwrap_or_default(),
            stderr: self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default(),
        };
        if out.status.success() {
            Ok(out)
        } else {
            Err(failed(&self.args.iter().map(Into::into).collect::<Vec<_>>(), &out))
        }
    }

    fn kill(&mut self) {
        // SAFETY: kills the process group this child leads, nothing else.
        unsafe { libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Objects arriving as a pack, stored the way `git fetch` stores them: below
/// `UNPACK_LIMIT` objects as loose objects, else as a pack (`git index-pack --fix-thin`)
/// with a `.keep` file, so that a concurrent `git gc` cannot drop it before refs point at
/// it. The caller removes the `.keep` afterwards. A pack of few objects and at most
/// `IN_PROCESS_UP_TO` bytes is kept in memory for the caller to store (`finish`), else
/// (or when the caller cannot) `git unpack-objects` does.
pub struct PackStore {
    repo: std::path::PathBuf,
    progress: bool,
    head: Vec<u8>,
    running: Option<Running>,
}

fn bad_pack(why: &str) -> Error {
    Error::Failed { args: "index-pack".into(), status: "bad pack".into(), stderr: why.into() }
}

/// git's default `fetch.unpackLimit`.
const UNPACK_LIMIT: u32 = 100;

/// The largest pack `finish` offers its caller to store: one write's objects, mostly.
const IN_PROCESS_UP_TO: usize = 1 << 20;

impl PackStore {
    pub fn new(repo: &Path, progress: bool) -> PackStore {
        PackStore { repo: repo.to_owned(), progress, head: Vec::new(), running: None }
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if let Some(running) = &mut self.running {
            return running.write(data);
        }
        self.head.extend_from_slice(data);
        if self.head.len() < 12 {
            return Ok(());
        }
        let (Some(b"PACK"), Some(&count)) = (self.head.first_chunk::<4>(), self.head[8..].first_chunk::<4>()) else {
            return Err(bad_pack("protocol error: not a pack"));
        };
        let few = u32::from_be_bytes(count) < UNPACK_LIMIT;
        if few && self.head.len() <= IN_PROCESS_UP_TO {
            return Ok(());
        }
        self.start(few)
    }

    /// git, from what came so far on.
    fn start(&mut self, few: bool) -> Result<(), Error> {
        // unpack-objects shows progress on a terminal unless told not to.
        let args: &[&str] = match (few, self.progress) {
            (true, true) => &["unpack-objects"],
            (true, false) => &["unpack-objects", "-q"],
            (false, true) => &["index-pack", "--stdin", "--fix-thin", "--keep=stargate sync", "-v"],
            (false, false) => &["index-pack", "--stdin", "--fix-thin", "--keep=stargate sync"],
        };
        let mut running = Bounded::new(&self.repo, args).show_progress(self.progress).start()?;
        running.write(&std::mem::take(&mut self.head))?;
        self.running = Some(running);
        Ok(())
    }

    /// Wait for the pack to be stored: by `in_process` when it is small (the whole pack),
    /// or by git, also when `in_process` fails (git then says what is wrong with it).
    /// Returns the `.keep` file to remove, if any.
    pub fn finish<E: std::fmt::Display>(
        mut self,
        deadline: Instant,
        in_process: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Result<Option<std::path::PathBuf>, Error> {
        if self.running.is_none() {
            match self.head.len() {
                0 => return Ok(None),
                1..12 => return Err(bad_pack("early eof: truncated pack")),
                _ => {}
            }
            match in_process(&self.head) {
                Ok(()) => return Ok(None),
                Err(e) => log::debug!("{}: a pack left to git: {e}", self.repo.display()),
            }
            self.start(true)?;
        }
        let Some(running) = self.running.take() else { return Ok(None) };
        let out = running.wait(deadline)?;
        let keep =
            String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("keep\t").map(str::to_owned));
        Ok(keep.map(|hash| self.repo.join(format!("objects/pack/pack-{hash}.keep"))))
    }
}

pub fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// `git init --bare -q <path>`.
///
/// Without hooks: git runs `reference-transaction` for the new repository's HEAD, and when
/// `core.hooksPath` names Stargate's hooks for the whole machine, a passive node would refuse
/// that as a write (a scratch repository lies below `stargate.root`). Creating an empty
/// repository writes nothing anyone mirrors.
pub fn init_bare(path: &Path) -> Result<(), Error> {
    init_bare_as(path, None)
}

/// `init_bare` with `object_format` (`sha1`, `sha256`), else git's default.
pub fn init_bare_as(path: &Path, object_format: Option<&str>) -> Result<(), Error> {
    let mut args = ["-c", "core.hooksPath=/dev/null", "init", "--bare", "-q"].map(std::ffi::OsString::from).to_vec();
    args.extend(object_format.map(|f| format!("--object-format={f}").into()));
    args.push(path.into());
    run(None, args).map(drop)
}

/// `init_bare` with the files ref backend whatever `init.defaultRefFormat` says, for a
/// scratch repository whose refs Stargate reads and writes as files, with `object_format`
/// (`sha1`, `sha256`). (The variable, unlike `--ref-format`, is ignored by a git older
/// than reftable.)
pub fn init_bare_files(path: &Path, object_format: &str) -> Result<(), Error> {
    let mut cmd = command(None);
    cmd.args(["-c", "core.hooksPath=/dev/null", "init", "--bare", "-q"]);
    cmd.arg(format!("--object-format={object_format}")).arg(path);
    let out = cmd.env("GIT_DEFAULT_REF_FORMAT", "files").output().map_err(Error::Spawn)?;
    if out.status.success() { Ok(()) } else { Err(failed(&["init".into(), path.as_os_str().into()], &out)) }
}

/// A git command on the repository at `git_dir` alone: the variables a hook inherits
/// (`GIT_DIR`, `GIT_OBJECT_DIRECTORY`, ...) removed, and no hooks of its own.
fn on_repo(git_dir: &Path) -> Command {
    let mut cmd = command(None);
    for var in LOCAL_ENV {
        cmd.env_remove(var);
    }
    cmd.arg("-c").arg("core.hooksPath=/dev/null").arg("--git-dir").arg(git_dir);
    cmd
}

/// The refs of `git_dir` matching `patterns` (`for-each-ref`'s: a full name, or a prefix
/// ending at a `/`; every ref when empty) as `(name, object id)`, symbolic refs left out.
/// For ref storage gix cannot read (reftable): git reads it as it stores it.
pub fn list_refs(git_dir: &Path, patterns: &[&str]) -> Result<Vec<(String, String)>, Error> {
    let mut cmd = on_repo(git_dir);
    cmd.args(["for-each-ref", "--format=%(objectname) %(refname) %(symref)"]).args(patterns);
    let out = cmd.output().map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(failed(&[git_dir.as_os_str().into(), "for-each-ref".into()], &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (oid, rest) = l.split_once(' ')?;
            let (name, symref) = rest.split_once(' ').unwrap_or((rest, ""));
            symref.is_empty().then(|| (name.to_owned(), oid.to_owned()))
        })
        .collect())
}

/// `git ls-remote <url> <patterns>…` run from `repo`, as `(name, object id)`; peeled
/// tags (`^{}`) left out.
pub fn ls_remote(repo: &Path, url: &str, patterns: &[&str]) -> Result<Vec<(String, String)>, Error> {
    let mut args = vec!["ls-remote", "--", url];
    args.extend(patterns);
    let out = run(Some(repo), &args)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (oid, name) = l.split_once('\t')?;
            (!name.ends_with("^{}")).then(|| (name.to_owned(), oid.to_owned()))
        })
        .collect())
}

/// Bring the objects of `refnames` at `url` into `git_dir`, moving no ref of it (no
/// refspec destination, no FETCH_HEAD, no hooks).
pub fn fetch_objects(git_dir: &Path, url: &str, refnames: &[&str]) -> Result<(), Error> {
    if refnames.is_empty() {
        return Ok(());
    }
    let mut cmd = on_repo(git_dir);
    cmd.args(["fetch", "-q", "--no-write-fetch-head", "--no-tags", "--", url]).args(refnames);
    let out = cmd.output().map_err(Error::Spawn)?;
    if out.status.success() { Ok(()) } else { Err(failed(&["fetch".into(), url.into()], &out)) }
}

/// Whether commit `ancestor` is reachable from `descendant` in `git_dir`.
pub fn is_ancestor(git_dir: &Path, ancestor: &str, descendant: &str) -> Result<bool, Error> {
    let mut cmd = on_repo(git_dir);
    cmd.args(["merge-base", "--is-ancestor", ancestor, descendant]);
    let out = cmd.output().map_err(Error::Spawn)?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(failed(&["merge-base".into(), ancestor.into(), descendant.into()], &out)),
    }
}

/// A three-way merge of commits `ours` and `theirs` in `git_dir` without a work tree
/// (`git merge-tree --write-tree`): the merged tree, or the paths that conflict.
pub fn merge_tree(git_dir: &Path, ours: &str, theirs: &str) -> Result<Result<String, Vec<String>>, Error> {
    let mut cmd = on_repo(git_dir);
    cmd.args(["merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs]);
    let out = cmd.output().map_err(Error::Spawn)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (out.status.code(), lines.next()) {
        (Some(0), Some(tree)) => Ok(Ok(tree.trim().to_owned())),
        (Some(1), Some(_)) => Ok(Err(lines.filter(|l| !l.is_empty()).map(str::to_owned).collect())),
        _ => Err(failed(&["merge-tree".into(), ours.into(), theirs.into()], &out)),
    }
}

/// `git commit-tree <tree> -p <parent>… -m <message>` in `git_dir`: the new commit's id.
pub fn commit_tree(git_dir: &Path, tree: &str, parents: &[&str], message: &str) -> Result<String, Error> {
    let mut cmd = on_repo(git_dir);
    cmd.args(["-c", "user.name=stargate", "-c", "user.email=stargate@localhost", "commit-tree", tree]);
    for p in parents {
        cmd.args(["-p", p]);
    }
    cmd.args(["-m", message]);
    let out = cmd.output().map_err(Error::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(failed(&["commit-tree".into(), tree.into()], &out))
    }
}

/// `git pack-refs --all` in `git_dir`, without hooks, by `deadline`: folds loose refs into
/// `packed-refs`, values unchanged (a move of storage, not of refs).
pub fn pack_refs(git_dir: &Path, deadline: Instant) -> Result<(), Error> {
    Bounded::new(git_dir, &["-c", "core.hooksPath=/dev/null", "pack-refs", "--all"])
        .show_progress(false)
        .run(deadline)
        .map(drop)
}

/// `git update-ref --stdin` in its transaction protocol (`start`, `prepare`, `commit`):
/// `commands` (`update <ref> <new> [<old>]`, `delete <ref> [<old>]` lines) prepared as one
/// transaction (every ref locked, every old value checked), then committed, or aborted when
/// dropped: all of them or none. No hook runs, as none runs for gix's transactions on the
/// files backend.
pub struct RefTransaction {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    git_dir: std::path::PathBuf,
}

impl RefTransaction {
    pub fn prepare(git_dir: &Path, commands: &[u8]) -> Result<RefTransaction, Error> {
        let mut cmd = on_repo(git_dir);
        cmd.args(["update-ref", "--stdin"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(Error::Spawn)?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let stderr = child.stderr.take().map(drain);
        let Some(stdout) = stdout else { return Err(Error::Spawn(std::io::Error::other("no pipe from git"))) };
        let mut transaction = RefTransaction {
            child,
            stdin,
            stdout: std::io::BufReader::new(stdout),
            stderr,
            git_dir: git_dir.to_owned(),
        };
        let mut input = b"start\n".to_vec();
        input.extend_from_slice(commands);
        input.extend_from_slice(b"prepare\n");
        transaction.say(&input)?;
        transaction.expect("start: ok")?;
        transaction.expect("prepare: ok")?;
        Ok(transaction)
    }

    pub fn commit(mut self) -> Result<(), Error> {
        self.say(b"commit\n")?;
        self.expect("commit: ok")?;
        drop(self.stdin.take());
        let status = self.child.wait().map_err(Error::Spawn)?;
        if status.success() { Ok(()) } else { Err(self.failed(status.to_string())) }
    }

    fn say(&mut self, line: &[u8]) -> Result<(), Error> {
        let written = match self.stdin.as_mut() {
            Some(pipe) => pipe.write_all(line).and_then(|()| pipe.flush()),
            None => Err(std::io::Error::other("closed")),
        };
        // A refusal ends git at once: its words are on stderr, not in the pipe's error.
        written.map_err(|_| self.failed("ended".into()))
    }

    fn expect(&mut self, want: &str) -> Result<(), Error> {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut self.stdout, &mut line) {
            Ok(_) if line.trim_end() == want => Ok(()),
            _ => {
                drop(self.stdin.take());
                let status = self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(self.failed(status))
            }
        }
    }

    fn failed(&mut self, status: String) -> Error {
        let stderr = self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
        Error::Failed {
            args: format!("--git-dir {} update-ref --stdin", self.git_dir.display()),
            status,
            stderr: crate::wire::sanitize::text(&String::from_utf8_lossy(&stderr)).trim().to_owned(),
        }
    }
}

impl Drop for RefTransaction {
    /// Not committed: abort, which releases every lock.
    fn drop(&mut self) {
        if let Some(mut pipe) = self.stdin.take() {
            let _ = pipe.write_all(b"abort\n");
        }
        let _ = self.child.wait();
    }
}

/// Those of `oids` whose closure is not all present: each object reachable from it and
/// from no ref must exist (the connectivity check `git fetch` makes after a fetch). A
/// killed `unpack-objects` leaves the objects it had written, so an object that exists may
/// still lack some of what it points to.
pub fn incomplete(repo: &Path, oids: &[String]) -> Vec<String> {
    let connected = |some: &[String]| {
        let mut args = vec!["rev-list".to_owned(), "--objects".into(), "--quiet".into()];
        args.extend(some.iter().cloned());
        args.extend(["--not".into(), "--all".into()]);
        run(Some(repo), &args).is_ok()
    };
    if oids.is_empty() || connected(oids) {
        return Vec::new();
    }
    oids.iter().filter(|oid| !connected(std::slice::from_ref(*oid))).cloned().collect()
}

/// Objects of `oids` that no ref reaches, refs under `exclude` (a glob) left out.
pub fn unreachable(repo: &Path, oids: &[String], exclude: &str) -> Result<Vec<String>, Error> {
    let mut args = vec!["rev-list".to_owned()];
    args.extend(oids.iter().cloned());
    args.extend(["--not".into(), format!("--exclude={exclude}"), "--all".into()]);
    let out = run(Some(repo), &args)?;
    let commits: std::collections::HashSet<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    Ok(oids.iter().filter(|o| commits.contains(*o)).cloned().collect())
}

/// Why a git command failed, for retry decisions (stargate(7), `stargate.retry.retryable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Timeout,
    Connection,
    Eof,
    Http5xx,
    Transport,
    /// Authentication, 4xx, missing repository, or anything unrecognised.
    Permanent,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connection => "connection",
            ErrorClass::Eof => "eof",
            ErrorClass::Http5xx => "http5xx",
            ErrorClass::Transport => "transport",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl Error {
    /// Fail-fast causes win over transient symptoms: a missing repository also ends with
    /// "the remote end hung up", and must not be retried.
    pub fn class(&self) -> ErrorClass {
        let text = match self {
            Error::Timeout { .. } => return ErrorClass::Timeout,
            Error::Spawn(_) => return ErrorClass::Permanent,
            // Killed by a signal (SIGPIPE when the other end died): the transfer broke.
            Error::Failed { status, stderr, .. } if stderr.is_empty() && status.contains("signal") => {
                return ErrorClass::Transport;
            }
            // ssh's own status when the connection broke or the command on the other end was
            // killed (the leader's upload-pack, sshd or machine gone mid-transfer): with
            // nothing said, not a refusal (those say why: host key, permission denied).
            Error::Failed { status, stderr, .. } if stderr.is_empty() && status == "exit status: 255" => {
                return ErrorClass::Transport;
            }
            Error::Failed { stderr, .. } => stderr.to_lowercase(),
        };
        const PERMANENT: [&str; 9] = [
            "authentication failed",
            "permission denied",
            "host key verification failed",
            "does not appear to be a git repository",
            "repository not found",
            "not found",
            "returned error: 4",
            "could not read username",
            "access denied",
        ];
        const TRANSIENT: [(&str, ErrorClass); 17] = [
            ("connection refused", ErrorClass::Connection),
            // curl's words for a web server that does not accept (git over http).
            ("failed to connect", ErrorClass::Connection),
            ("couldn't connect to server", ErrorClass::Connection),
            ("connection reset", ErrorClass::Connection),
            ("connection timed out", ErrorClass::Connection),
            ("unable to connect", ErrorClass::Connection),
            ("network is unreachable", ErrorClass::Connection),
            ("no route to host", ErrorClass::Connection),
            ("could not resolve host", ErrorClass::Connection),
            ("early eof", ErrorClass::Eof),
            ("hung up unexpectedly", ErrorClass::Eof),
            ("unexpected disconnect", ErrorClass::Eof),
            ("returned error: 5", ErrorClass::Http5xx),
            ("http 5", ErrorClass::Http5xx),
            ("rpc failed", ErrorClass::Transport),
            ("protocol error", ErrorClass::Transport),
            // The serving process died (OOM killer, a restart): the shell's own words.
            ("killed", ErrorClass::Transport),
        ];
        if PERMANENT.iter().any(|p| text.contains(p)) {
            return ErrorClass::Permanent;
        }
        TRANSIENT.iter().find(|(p, _)| text.contains(p)).map_or(ErrorClass::Permanent, |(_, c)| *c)
    }

    pub fn text(&self) -> String {
        match self {
            Error::Failed { stderr, .. } => stderr.clone(),
            other => other.to_string(),
        }
    }
}

/// Variables that point a git process at a particular repository (`git rev-parse
/// --local-env-vars`); a process started for another repository must not inherit them.
pub const LOCAL_ENV: &[&str] = &[
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
];

/// Start `git upload-pack <repo>` (or `receive-pack`, `upload-archive`) for a local
/// repository, as git's own file transport does: stdin shared with the caller (the
/// requesting git), stdout and stderr piped, `GIT_PROTOCOL` set when given. `program`
/// overrides the command (`--upload-pack`), run through the shell like git does.
pub fn spawn_service(
    service: &str,
    program: Option<&str>,
    repo: &Path,
    protocol: Option<&str>,
) -> std::io::Result<std::process::Child> {
    let mut cmd = service_command(service, program, repo, protocol);
    cmd.stdin(Stdio::inherit()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
}

/// Start `git upload-pack <repo>` speaking protocol v2 over its stdin and stdout, in its
/// own process group (a watchdog kills it with all it started). `program` as above.
pub fn spawn_upload_pack(program: Option<&str>, repo: &Path) -> std::io::Result<std::process::Child> {
    let mut cmd = service_command("git-upload-pack", program, repo, Some("version=2"));
    cmd.env("GIT_TERMINAL_PROMPT", "0").process_group(0);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
}

fn service_command(service: &str, program: Option<&str>, repo: &Path, protocol: Option<&str>) -> Command {
    let mut cmd = match program {
        None => {
            let mut c = Command::new("git");
            c.arg(service.strip_prefix("git-").unwrap_or(service)).arg(repo);
            c
        }
        Some(program) => {
            let mut c = Command::new("sh");
            let quoted = super::endpoint::sq_quote(&repo.to_string_lossy());
            c.arg("-c").arg(format!("{program} {quoted}"));
            c
        }
    };
    for var in LOCAL_ENV {
        cmd.env_remove(var);
    }
    match protocol {
        Some(p) => cmd.env("GIT_PROTOCOL", p),
        None => cmd.env_remove("GIT_PROTOCOL"),
    };
    cmd
}

/// Start git's own remote helper for `http://` or `https://` URLs, `git remote-http(s)
/// <alias> <url>`, with piped stdin and stdout.
pub fn spawn_remote_helper(alias: &str, url: &str) -> std::io::Result<std::process::Child> {
    let scheme = if url.starts_with("http://") { "remote-http" } else { "remote-https" };
    Command::new("git").args([scheme, alias, url]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()
}

/// Start git's own helper for an `http://` or `https://` repository URL as git's fetch
/// would for `local` (its configuration: client certificate, CA, proxy, credentials), to
/// be asked for a protocol v2 connection (`stateless-connect`); never prompts, in its own
/// process group.
pub fn spawn_stateless_connect(url: &str, local: &Path) -> std::io::Result<std::process::Child> {
    let scheme = if url.starts_with("http://") { "remote-http" } else { "remote-https" };
    let mut cmd = Command::new("git");
    for var in LOCAL_ENV {
        cmd.env_remove(var);
    }
    cmd.args([scheme, url, url]).env("GIT_DIR", local).env("GIT_TERMINAL_PROMPT", "0").env_remove("GIT_PROTOCOL");
    cmd.process_group(0).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
}

/// What git's receive-pack does for `receive.denyCurrentBranch=updateInstead` when there is
/// no `push-to-checkout` hook (its `push_to_deploy`), run in the work tree: refuse when the
/// work tree or the index has changes, else check out `new`. The error is git's own words.
pub fn push_to_deploy(new: &str) -> Result<(), &'static str> {
    let git = |args: &[&str]| command(None).args(args).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !git(&["update-index", "-q", "--ignore-submodules", "--refresh"]) {
        return Err("Up-to-date check failed");
    }
    if !git(&["diff-files", "--quiet", "--ignore-submodules", "--"]) {
        return Err("Working directory has unstaged changes");
    }
    let head = match git(&["rev-parse", "--verify", "-q", "HEAD^{commit}"]) {
        true => "HEAD".to_owned(),
        false => empty_tree().ok_or("Up-to-date check failed")?,
    };
    if !git(&["diff-index", "--quiet", "--cached", "--ignore-submodules", &head, "--"]) {
        return Err("Working directory has staged changes");
    }
    if !git(&["read-tree", "-u", "-m", new]) {
        return Err("Could not update working tree to new HEAD");
    }
    Ok(())
}

/// The empty tree's id in this repository's hash.
fn empty_tree() -> Option<String> {
    let out = run(None, ["hash-object", "-t", "tree", "/dev/null"]).ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What git really prints when nothing listens, per transport: retried, not given up.
    #[test]
    fn a_server_that_does_not_accept_is_a_connection_failure_on_every_transport() {
        for url in ["http://127.0.0.1:1/x", "git://127.0.0.1:1/x", "ssh://127.0.0.1:1/x"] {
            let err = run(None, ["-c", "core.sshCommand=ssh -o BatchMode=yes", "ls-remote", url]).unwrap_err();
            assert_eq!(err.class(), ErrorClass::Connection, "{url}: {err}");
        }
        let missing = Error::Failed {
            args: String::new(),
            status: String::new(),
            stderr: "fatal: repository 'http://h/x/' not found".into(),
        };
        assert_eq!(missing.class(), ErrorClass::Permanent);
    }

    /// ssh exits 255 without a word when the other end's command is killed mid-transfer:
    /// retried. With ssh's reason (a refusal), not.
    #[test]
    fn an_ssh_session_that_broke_silently_is_retried_and_a_refusal_is_not() {
        let failed = |stderr: &str| Error::Failed {
            args: "upload-pack ssh://h/x".into(),
            status: "exit status: 255".into(),
            stderr: stderr.into(),
        };
        assert_eq!(failed("").class(), ErrorClass::Transport);
        assert_eq!(failed("Host key verification failed.").class(), ErrorClass::Permanent);
        assert_eq!(failed("root@h: Permission denied (publickey).").class(), ErrorClass::Permanent);
    }

    /// A pack of `commits` empty commits (one object each, and their one empty tree), made
    /// in a scratch repository, and the newest commit's id.
    fn a_pack_of(commits: usize) -> (Vec<u8>, String) {
        let src = tempfile::tempdir().unwrap();
        init_bare(src.path()).unwrap();
        let git = |args: &[&str]| run(Some(src.path()), args).unwrap().stdout;
        let tree = String::from_utf8(git(&["write-tree"])).unwrap();
        let mut tip = String::new();
        for i in 0..commits {
            let mut args = vec!["-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", tree.trim(), "-m"];
            let message = i.to_string();
            args.push(&message);
            if !tip.is_empty() {
                args.extend(["-p", &tip]);
            }
            tip = String::from_utf8(git(&args)).unwrap().trim().to_owned();
        }
        let mut pack = command(Some(src.path()));
        pack.args(["pack-objects", "--stdout", "--revs", "-q"]).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = pack.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{tip}\n").as_bytes()).unwrap();
        (child.wait_with_output().unwrap().stdout, tip)
    }

    fn has(repo: &Path, oid: &str) -> bool {
        run(Some(repo), ["cat-file", "-e", oid]).is_ok()
    }

    /// A small pack goes to the caller whole, in pieces as it came; git stores it when the
    /// caller cannot, and a pack of many objects always, kept by a `.keep` file.
    #[test]
    fn a_small_pack_is_offered_to_the_caller_and_git_stores_the_rest() {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let (small, tip) = a_pack_of(3);
        let repo = tempfile::tempdir().unwrap();
        init_bare(repo.path()).unwrap();
        let mut store = PackStore::new(repo.path(), false);
        for piece in small.chunks(7) {
            store.write(piece).unwrap();
        }
        let mut offered = Vec::new();
        let keep = store.finish(deadline, |pack| {
            offered = pack.to_vec();
            Err("not this one")
        });
        assert_eq!(keep.unwrap(), None, "unpack-objects keeps no pack");
        assert!(offered == small, "the whole pack offered");
        assert!(has(repo.path(), &tip), "git stored what the caller did not");

        let mut store = PackStore::new(repo.path(), false);
        store.write(&small).unwrap();
        assert_eq!(store.finish(deadline, |_| Ok::<(), String>(())).unwrap(), None);

        let (large, tip) = a_pack_of(UNPACK_LIMIT as usize);
        let mut store = PackStore::new(repo.path(), false);
        store.write(&large).unwrap();
        let keep = store.finish(deadline, |_| -> Result<(), String> { panic!("a pack of many objects is git's") });
        let keep = keep.unwrap().expect("index-pack keeps its pack");
        assert!(keep.is_file() && has(repo.path(), &tip), "{keep:?}");

        let mut store = PackStore::new(repo.path(), false);
        store.write(&small[..small.len() - 5]).unwrap();
        assert!(store.finish(deadline, |_| Err("truncated")).is_err(), "git refuses a truncated pack as well");
    }
}
