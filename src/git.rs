//! The only module that runs the `git` binary.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
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
        stderr: crate::sanitize::text(&String::from_utf8_lossy(&out.stderr)).trim().to_owned(),
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

/// `git push --porcelain <remote> <src>:<dst>` from `repo`, with extra `-c` settings.
pub fn push(repo: &Path, config: &[&str], remote: &str, src: &str, dst: &str) -> Result<PushResult, Error> {
    let mut cmd = command(Some(repo));
    for c in config {
        cmd.args(["-c", c]);
    }
    let refspec = format!("{src}:{dst}");
    cmd.args(["push", "--porcelain", "--no-verify", remote, &refspec]);
    let out = cmd.stderr(Stdio::piped()).output().map_err(Error::Spawn)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = crate::sanitize::text(&String::from_utf8_lossy(&out.stderr));
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
