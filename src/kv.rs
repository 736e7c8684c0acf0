//! `git kv`: a key/value store kept in git (git-kv(1)). A namespace is the ref
//! `refs/kv/<namespace>`; its tree holds one blob per key (a `/` in a key makes a subtree).
//! Every `set`/`del` is one commit (several pairs of one `set` too), written with gix and
//! pushed to the cluster with a lease on the tip it was built on: the first try builds on
//! the tip this clone already has, so a writer that is current pays one push and no fetch.
//! A push that lost a race (or found the clone's tip stale) fetches, is rebuilt on the new
//! tip and retried after a jittered backoff, until `kv.timeout`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gix::ObjectId;
use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;

use crate::config::Config;
use crate::wire::git::{self, PushResult};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid key '{0}': {1}")]
    InvalidKey(String, &'static str),
    #[error("invalid namespace '{0}': {1}")]
    InvalidNamespace(String, &'static str),
    #[error("{0}: not found")]
    NotFound(String),
    /// The remote's own "not leader (…)" words.
    #[error("{0}")]
    NotLeader(String),
    #[error("'{key}' conflicts with existing key '{existing}'")]
    Conflict { key: String, existing: String },
    #[error("push to {remote} refused: {reason}")]
    Rejected { remote: String, reason: String },
    /// Another writer got there first: rebuilt and retried, shown only if attempts run out.
    #[error("lost a race: {0}")]
    Race(String),
    #[error("gave up after {0} attempts in {1:?}: other writers kept moving the namespace (kv.timeout)")]
    TooManyRaces(u32, Duration),
    #[error("{0}")]
    Usage(String),
    #[error(
        "no remote '{0}' in this repository: add one that reaches the cluster \
         (git remote add {0} stargate::<node>,<node>/<repo>) or set kv.remote (git-kv(1))"
    )]
    NoRemote(String),
    /// The last line git printed is the reason given; the whole error is its source.
    #[error("cannot fetch from remote '{remote}': {why}")]
    Fetch { remote: String, why: String, source: crate::wire::git::Error },
    #[error("cannot read standard input: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("not in a git repository: {0}")]
    Discover(#[source] gix::Error),
    /// Reading or writing the local repository (gix, or its refs).
    #[error("{0}")]
    Repo(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The class of each failure, for the exit code: 9 when the leader refused, 1 for a key
/// that is not there or conflicts, 129 for a malformed key or namespace.
impl From<Error> for crate::error::Error {
    fn from(e: Error) -> Self {
        use crate::error::Error as Exit;
        match e {
            Error::NotLeader(words) => Exit::NotLeader(words),
            Error::NotFound(_) | Error::Conflict { .. } => Exit::Refused(e.to_string()),
            Error::InvalidKey(..) | Error::InvalidNamespace(..) | Error::Usage(_) | Error::Stdin(_) => {
                Exit::Usage(e.to_string())
            }
            _ => Exit::fatal(e),
        }
    }
}

fn repo_err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Repo(Box::new(e))
}

/// Read and write keys in a git-backed key/value store.
#[derive(Parser)]
#[command(name = "git kv", version = crate::version::VERSION)]
struct Cli {
    /// Namespace to use (default: kv.namespace, else "default").
    #[arg(long, short = 'n', global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set KEY to VALUE; several pairs, or `--stdin`, in one commit and one push.
    Set {
        /// KEY VALUE [KEY VALUE...]: each key `/`-separated names, e.g. `service/db/url`;
        /// each value stored as given.
        #[arg(value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
        /// Read further pairs from standard input, one per line: the key, one space, the
        /// value (the rest of the line).
        #[arg(long)]
        stdin: bool,
    },
    /// Print the value of KEY.
    Get {
        /// The key to read.
        key: String,
        /// Read from the leader even when the remote would read from a replica.
        #[arg(long)]
        from_leader: bool,
    },
    /// Delete KEY (one commit, pushed).
    Del {
        /// The key to delete.
        key: String,
    },
    /// List keys, optionally only those starting with PREFIX.
    List {
        /// Only keys starting with this.
        prefix: Option<String>,
        /// Read from the leader even when the remote would read from a replica.
        #[arg(long)]
        from_leader: bool,
    },
}

struct Store {
    refs: crate::store::Store,
    dir: PathBuf,
    remote: String,
    refname: String,
}

pub fn main(args: &[String]) -> crate::error::Result<()> {
    let cli: Cli = crate::args::parse("git kv", args)?;
    let cfg = Config::load(None)?;
    let namespace = cli.namespace.unwrap_or_else(|| cfg.kv_namespace().to_owned());
    validate_namespace(&namespace)?;
    let repo = gix::discover(".").map_err(Error::Discover)?;
    let dir = repo.workdir().unwrap_or_else(|| repo.git_dir()).to_owned();
    let remote = cfg.kv_remote().to_owned();
    // A URL given as kv.remote is git's business; a remote name must exist.
    if !remote.contains([':', '/']) && cfg.remote_url(&remote).is_none() {
        return Err(Error::NoRemote(remote).into());
    }
    let store = Store { refs: crate::store::Store::new(repo), dir, remote, refname: format!("refs/kv/{namespace}") };
    match cli.command {
        Command::Set { pairs, stdin } => {
            let pairs = set_pairs(pairs, stdin.then(|| std::io::stdin().lock()))?;
            let message = match &pairs[..] {
                [(key, _)] => format!("set {key}"),
                _ => format!(
                    "set {} keys\n\n{}",
                    pairs.len(),
                    pairs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join("\n")
                ),
            };
            store.write(Limits::from_config(&cfg)?, &message, |tree| {
                pairs.iter().try_for_each(|(key, value)| set(tree, key, value.as_bytes()))
            })?;
        }
        Command::Del { key } => {
            validate_key(&key)?;
            store.write(Limits::from_config(&cfg)?, &format!("del {key}"), |tree| del(tree, &key))?;
        }
        Command::Get { key, from_leader } => {
            validate_key(&key)?;
            store.fetch(from_leader)?;
            let value = store.get(&key)?.ok_or(Error::NotFound(key))?;
            println!("{}", value.as_bstr());
        }
        Command::List { prefix, from_leader } => {
            store.fetch(from_leader)?;
            let prefix = prefix.unwrap_or_default();
            for key in store.list()?.into_iter().filter(|k| k.starts_with(&prefix)) {
                println!("{key}");
            }
        }
    }
    Ok(())
}

/// The pairs of one `set`: from the arguments, then from `input` (`KEY VALUE` lines), each
/// key valid and given once.
fn set_pairs(args: Vec<String>, input: Option<impl BufRead>) -> Result<Vec<(String, String)>, Error> {
    if args.len() % 2 == 1 {
        return Err(Error::Usage(format!("'{}' has no value: set takes KEY VALUE pairs", args[args.len() - 1])));
    }
    let mut pairs: Vec<(String, String)> = args.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    if let Some(input) = input {
        for line in input.lines() {
            let line = line.map_err(Error::Stdin)?;
            if line.is_empty() {
                continue;
            }
            let (key, value) = line.split_once(' ').unwrap_or((&line, ""));
            pairs.push((key.to_owned(), value.to_owned()));
        }
    }
    if pairs.is_empty() {
        return Err(Error::Usage("set needs KEY VALUE, several pairs, or --stdin".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for (key, _) in &pairs {
        validate_key(key)?;
        if !seen.insert(key.as_str()) {
            return Err(Error::Usage(format!("'{key}' is given twice")));
        }
    }
    Ok(pairs)
}

/// How long a write keeps trying against other writers (git-kv(1)).
struct Limits {
    attempts: u32,
    timeout: Duration,
}

impl Limits {
    fn from_config(cfg: &Config) -> Result<Limits, crate::config::Error> {
        Ok(Limits { attempts: cfg.kv_push_attempts()?, timeout: cfg.kv_timeout()? })
    }
}

/// The pause after the `n`th lost race (from 1): uniformly random in
/// [0, min(1 s, 20 ms × 2^(n-1))] (full jitter), so writers that collided spread out.
fn backoff(n: u32) -> Duration {
    let ceiling = (20u64 << n.saturating_sub(1).min(6)).min(1000);
    Duration::from_millis(rand::random_range(0..=ceiling))
}

/// 1–1024 bytes; `/`-separated components, none empty or starting with `.`; no
/// whitespace or control characters, no backslash.
pub fn validate_key(key: &str) -> Result<(), Error> {
    let bad = |why| Err(Error::InvalidKey(key.to_owned(), why));
    if key.is_empty() || key.len() > 1024 {
        return bad("must be 1 to 1024 bytes long");
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return bad("no whitespace, control characters or backslashes");
    }
    for component in key.split('/') {
        if component.is_empty() {
            return bad("empty path component (leading, trailing or doubled '/')");
        }
        if component.starts_with('.') {
            return bad("a path component may not start with '.'");
        }
        if component.len() > 255 {
            return bad("a path component may be 255 bytes at most");
        }
    }
    Ok(())
}

/// A namespace is one ref component: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_namespace(ns: &str) -> Result<(), Error> {
    if !crate::config::valid_id(ns) {
        return Err(Error::InvalidNamespace(
            ns.to_owned(),
            "expected 1-64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
        ));
    }
    if ns.ends_with(".lock") {
        return Err(Error::InvalidNamespace(ns.to_owned(), "may not end in '.lock'"));
    }
    Ok(())
}

impl Store {
    /// Bring every namespace of the remote into `refs/kv/*` here (deleted ones pruned).
    fn fetch(&self, from_leader: bool) -> Result<(), Error> {
        let config: &[&str] = if from_leader { &["stargate.readFrom=leader"] } else { &[] };
        let args = ["--quiet", "--prune", "--no-tags", "--no-write-fetch-head", &self.remote, "+refs/kv/*:refs/kv/*"];
        git::fetch(&self.dir, config, &args, &[]).map_err(|source| {
            let text = source.text();
            let why = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("git fetch failed");
            let why = why.trim_start_matches("fatal: ").to_owned();
            Error::Fetch { remote: self.remote.clone(), why, source }
        })
    }

    fn tip(&self) -> Result<Option<ObjectId>, Error> {
        self.refs.find(&self.refname).map_err(repo_err)
    }

    fn tree(&self, tip: Option<ObjectId>) -> Result<gix::Tree<'_>, Error> {
        match tip {
            None => Ok(self.refs.repo().empty_tree()),
            Some(id) => self.refs.repo().find_commit(id).and_then(|c| c.tree()).map_err(repo_err),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let tree = self.tree(self.tip()?)?;
        match tree.lookup_entry_by_path(key).map_err(repo_err)? {
            Some(entry) if entry.mode().is_blob() => Ok(Some(entry.object().map_err(repo_err)?.detach().data)),
            _ => Ok(None),
        }
    }

    fn list(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        walk(&self.tree(self.tip()?)?, "", &mut keys)?;
        Ok(keys)
    }

    /// Apply `edit` to the namespace's tree, commit and push with a lease on the tip it was
    /// built on. The first try builds on this clone's tip, without fetching; a lease that
    /// fails (another writer, or a stale clone), or an edit that fails on a tip not just
    /// fetched, fetches and starts over from the new tip, after a jittered backoff once
    /// writers really collide.
    fn write(
        &self,
        limits: Limits,
        message: &str,
        edit: impl Fn(&mut Edit<'_, '_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut fresh = false;
        let mut races = 0;
        for attempt in 1..=limits.attempts {
            if !fresh && attempt > 1 {
                self.fetch(false)?;
                fresh = true;
            }
            let tip = self.tip()?;
            let base = self.tree(tip)?;
            let mut editor = base.edit().map_err(repo_err)?;
            match edit(&mut Edit { base: &base, editor: &mut editor }) {
                Ok(()) => {}
                // Judged on a tip that may be stale: judged again on the remote's.
                Err(Error::Conflict { .. } | Error::NotFound(_)) if !fresh => continue,
                Err(e) => return Err(e),
            }
            let tree = editor.write().map_err(repo_err)?.detach();
            let commit = self.commit(message, tree, tip)?;
            let lease = tip.map(|t| t.to_string());
            let pushed =
                git::push(&self.dir, &[], &self.remote, &commit.to_string(), &self.refname, Some(lease.as_deref()))
                    .map_err(repo_err)?;
            match pushed {
                PushResult::Ok => return self.set_tip(commit, tip),
                PushResult::Rejected { reason, stderr } => match rejection(&self.remote, reason, &stderr) {
                    Error::Race(why) => {
                        log::info!("push lost a race ({why}, attempt {attempt}); retrying on the new tip");
                        if started.elapsed() >= limits.timeout {
                            break;
                        }
                        // A stale clone is no collision: fetch and go again at once.
                        if fresh {
                            races += 1;
                            let left = limits.timeout.saturating_sub(started.elapsed());
                            std::thread::sleep(backoff(races).min(left));
                        }
                        fresh = false;
                    }
                    e => return Err(e),
                },
            }
        }
        Err(Error::TooManyRaces(limits.attempts.min(races + 1), started.elapsed()))
    }

    fn commit(&self, message: &str, tree: ObjectId, parent: Option<ObjectId>) -> Result<ObjectId, Error> {
        let signature = signature(self.refs.repo());
        let commit = gix::objs::Commit {
            message: format!("{message}\n").into(),
            tree,
            author: signature.clone(),
            committer: signature,
            encoding: None,
            parents: parent.into_iter().collect(),
            extra_headers: Vec::new(),
        };
        self.refs.write_object(&commit).map_err(repo_err)
    }

    fn set_tip(&self, commit: ObjectId, previous: Option<ObjectId>) -> Result<(), Error> {
        use crate::store::{Edit, Expect};
        let expect = previous.map_or(Expect::Any, Expect::Value);
        self.refs.edit(&[Edit { name: self.refname.clone(), expect, new: Some(commit) }]).map_err(repo_err)
    }
}

/// Classify a refused push: `NotLeader` when a Stargate node said so (relaying its words),
/// `Race` when another writer moved or held the ref, else a plain rejection.
fn rejection(remote: &str, reason: String, stderr: &str) -> Error {
    for line in stderr.lines() {
        let line = line.trim_start_matches("remote:").trim();
        if let Some(words) = line.strip_prefix("stargate: ") {
            if words.starts_with("not leader") {
                return Error::NotLeader(words.to_owned());
            }
            eprintln!("{remote}: {words}");
        }
    }
    const RACES: [&str; 6] = [
        "non-fast-forward",
        "fetch first",
        "failed to update ref",
        "cannot lock ref",
        "incorrect old value",
        "stale info",
    ];
    if RACES.iter().any(|r| reason.contains(r)) {
        return Error::Race(reason);
    }
    Error::Rejected { remote: remote.to_owned(), reason }
}

fn signature(repo: &gix::Repository) -> gix::actor::Signature {
    let snapshot = repo.config_snapshot();
    let name = snapshot.string("user.name").unwrap_or_else(|| "git-kv".into());
    let email = snapshot.string("user.email").unwrap_or_else(|| "git-kv@stargate".into());
    gix::actor::Signature { name, email, time: gix::date::Time::now_local_or_utc() }
}

struct Edit<'a, 'repo> {
    base: &'a gix::Tree<'repo>,
    editor: &'a mut gix::object::tree::Editor<'repo>,
}

/// Where `key` would clash with the tree: a prefix of it is a value, or it holds other keys.
fn conflict(base: &gix::Tree<'_>, key: &str) -> Result<Option<String>, Error> {
    let mut prefix = String::new();
    for component in key.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(component);
        match base.lookup_entry_by_path(&prefix).map_err(repo_err)? {
            None => return Ok(None),
            Some(e) if prefix != key && !e.mode().is_tree() => return Ok(Some(prefix)),
            Some(e) if prefix == key && e.mode().is_tree() => return Ok(Some(format!("{key}/…"))),
            Some(_) => {}
        }
    }
    Ok(None)
}

fn set(edit: &mut Edit<'_, '_>, key: &str, value: &[u8]) -> Result<(), Error> {
    if let Some(existing) = conflict(edit.base, key)? {
        return Err(Error::Conflict { key: key.to_owned(), existing });
    }
    let blob = edit.base.repo.write_blob(value).map_err(repo_err)?.detach();
    edit.editor.upsert(key, EntryKind::Blob, blob).map_err(repo_err)?;
    Ok(())
}

fn del(edit: &mut Edit<'_, '_>, key: &str) -> Result<(), Error> {
    match edit.base.lookup_entry_by_path(key).map_err(repo_err)? {
        Some(e) if e.mode().is_blob() => {
            edit.editor.remove(key).map_err(repo_err)?;
            Ok(())
        }
        _ => Err(Error::NotFound(key.to_owned())),
    }
}

fn walk(tree: &gix::Tree<'_>, prefix: &str, keys: &mut Vec<String>) -> Result<(), Error> {
    for entry in tree.iter() {
        let entry = entry.map_err(repo_err)?;
        let path = format!("{prefix}{}", entry.filename());
        if entry.mode().is_tree() {
            let sub = entry.object().map_err(repo_err)?.into_tree();
            walk(&sub, &format!("{path}/"), keys)?;
        } else if entry.mode().is_blob() {
            keys.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["a", "app/db/password", "x-1_y.z", "ünïcode", "a:b@c"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", ".git", "a/../b", "a b", "a\nb", "a\\b", &"k".repeat(1025)] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_pairs_from_arguments_and_input() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none: Option<&[u8]> = None;
        assert_eq!(set_pairs(args(&["a", "1", "b/c", "two words"]), none).unwrap().len(), 2);
        assert!(matches!(set_pairs(args(&["a"]), none), Err(Error::Usage(_))));
        assert!(matches!(set_pairs(args(&[]), none), Err(Error::Usage(_))));
        assert!(matches!(set_pairs(args(&["a", "1", "a", "2"]), none), Err(Error::Usage(_))));
        assert!(matches!(set_pairs(args(&["a b", "1"]), none), Err(Error::InvalidKey(..))));
        let input: &[u8] = b"x 1\n\ny/z the rest of the line\nempty\n";
        let pairs = set_pairs(args(&["a", "0"]), Some(input)).unwrap();
        assert_eq!(pairs[2], ("y/z".to_owned(), "the rest of the line".to_owned()));
        assert_eq!(pairs[3], ("empty".to_owned(), String::new()));
    }

    #[test]
    fn backoff_grows_to_a_second_with_full_jitter() {
        for n in 1..40 {
            let ceiling = Duration::from_millis((20u64 << (n - 1).min(6)).min(1000));
            assert!(backoff(n) <= ceiling, "{n}");
        }
        assert!((0..200).map(|_| backoff(10)).any(|d| d > Duration::from_millis(500)));
    }

    #[test]
    fn namespaces() {
        assert!(validate_namespace("prod-1").is_ok());
        for bad in ["", "a/b", "..", "-x", "x.lock", "a b"] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
    }
}
