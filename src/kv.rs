//! `git kv`: a key/value store kept in git (git-kv(1)). A namespace is the ref
//! `refs/kv/<namespace>`; its tree holds one blob per key (a `/` in a key makes a subtree;
//! `kvtree` has the data model). Every `set`/`del`/`cas` is one commit (several pairs of
//! one `set` too), written with gix on the clone's own tip and pushed to
//! `refs/for/kv/<namespace>`: the leader applies the keys it names to the namespace's tip
//! then, one writer at a time, and answers with the commit it wrote (git-kv(1), WRITES).
//! A remote that does not apply changes (no `receive.procReceiveRefs`) gets the older way:
//! the commit pushed to `refs/kv/<namespace>` with a lease on the tip it was built on,
//! fetched, rebuilt and retried after a jittered backoff on a lost race, until `kv.timeout`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gix::ObjectId;
use gix::bstr::ByteSlice;

use crate::config::Config;
use crate::kvtree::{self, Change};
use crate::wire::git::{self, PushResult};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tree(#[from] kvtree::Error),
    /// `cas` refused: the key holds `current` (`None`: no value), not the value expected.
    #[error("'{key}' {}", match .current { Some(_) => "holds another value (printed on standard output)", None => "has no value" })]
    Mismatch { key: String, current: Option<Vec<u8>> },
    /// The leader refused the change, in its words.
    #[error("{remote} refused: {reason}")]
    Refused { remote: String, reason: String },
    /// The remote's own "not leader (…)" words.
    #[error("{0}")]
    NotLeader(String),
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
/// that is not there or conflicts, a `cas` that found another value, or a change the leader
/// refused; 129 for a malformed key or namespace.
impl From<Error> for crate::error::Error {
    fn from(e: Error) -> Self {
        use crate::error::Error as Exit;
        match e {
            Error::NotLeader(words) => Exit::NotLeader(words),
            Error::Tree(kvtree::Error::NotFound(_) | kvtree::Error::Conflict { .. })
            | Error::Mismatch { .. }
            | Error::Refused { .. } => Exit::Refused(e.to_string()),
            Error::Tree(kvtree::Error::InvalidKey(..) | kvtree::Error::InvalidNamespace(..))
            | Error::Usage(_)
            | Error::Stdin(_) => Exit::Usage(e.to_string()),
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
    /// Set KEY to NEW only if it holds EXPECTED now; else print its value and exit 1.
    Cas {
        /// The key to write.
        key: String,
        /// The value KEY must hold.
        expected: String,
        /// The value to give it.
        new: String,
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
    kvtree::validate_namespace(&namespace).map_err(Error::Tree)?;
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
            let change = Change::Set(pairs.iter().map(|(k, _)| k.clone()).collect());
            store.write(Limits::from_config(&cfg)?, &change, |tree| {
                pairs.iter().try_for_each(|(key, value)| set(tree, key, value.as_bytes()))
            })?;
        }
        Command::Del { key } => {
            kvtree::validate_key(&key).map_err(Error::Tree)?;
            store.write(Limits::from_config(&cfg)?, &Change::Del(key.clone()), |tree| Ok(tree.del(&key)?))?;
        }
        Command::Cas { key, expected, new } => {
            kvtree::validate_key(&key).map_err(Error::Tree)?;
            let expect = store.refs.repo().write_blob(expected.as_bytes()).map_err(repo_err)?.detach();
            let change = Change::Cas { key: key.clone(), expect };
            match store.write(Limits::from_config(&cfg)?, &change, |tree| set(tree, &key, new.as_bytes())) {
                Err(Error::Mismatch { key, current: Some(value) }) => {
                    println!("{}", value.as_bstr());
                    return Err(Error::Mismatch { key, current: Some(value) }.into());
                }
                other => other?,
            }
        }
        Command::Get { key, from_leader } => {
            kvtree::validate_key(&key).map_err(Error::Tree)?;
            store.fetch(from_leader)?;
            let value = store.get(&key)?.ok_or(Error::Tree(kvtree::Error::NotFound(key)))?;
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
        kvtree::validate_key(key)?;
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

    /// `change` pushed to `refs/for/kv/<namespace>` as a commit of its own: no parent, its
    /// tree only the values it sets, its message naming the keys. The leader applies it to
    /// the namespace's tip, waiting for the writers before it (git-kv(1), WRITES): one push
    /// of a few objects, however stale this clone, no fetch and no retry, whatever other
    /// writers do. `edit` is first judged on this clone's tip, and judged again after a fetch
    /// when it fails there. A remote that does not apply changes gets `write_with_lease`.
    fn write(
        &self,
        limits: Limits,
        change: &Change,
        edit: impl Fn(&mut Edit<'_, '_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let namespace = self.refname.strip_prefix(kvtree::PREFIX).unwrap_or(&self.refname);
        let dst = format!("{}{namespace}", kvtree::FOR_PREFIX);
        let mut fresh = false;
        loop {
            let base = self.tree(self.tip()?)?;
            let mut editor = base.edit().map_err(repo_err)?;
            match edit(&mut Edit { base: &base, editor: &mut editor }) {
                Ok(()) => break,
                Err(Error::Tree(kvtree::Error::Conflict { .. } | kvtree::Error::NotFound(_))) if !fresh => {
                    self.fetch(false)?;
                    fresh = true;
                }
                Err(e) => return Err(e),
            }
        }
        // Only the values: a deletion's tree is empty.
        let empty = self.refs.repo().empty_tree();
        let mut editor = empty.edit().map_err(repo_err)?;
        if !matches!(change, Change::Del(_)) {
            edit(&mut Edit { base: &empty, editor: &mut editor })?;
        }
        let tree = editor.write().map_err(repo_err)?.detach();
        let hex = self.commit(&change.message(), tree, None)?.to_string();
        let (pushed, to) = match git::push_for(&self.dir, &self.remote, &hex, &dst) {
            Ok(pushed) => pushed,
            // Refused at `prepared` by a Stargate node whose git (here, the one a push by path
            // runs) does not hand the change over: nothing moved.
            Err(e) if e.text().contains("receive.procReceiveRefs") => {
                log::info!("{} does not apply git kv changes; pushing with a lease", self.remote);
                return self.write_with_lease(limits, change, edit);
            }
            Err(e) => return Err(repo_err(e)),
        };
        match pushed {
            PushResult::Ok if to == self.refname => Ok(()),
            // A remote that stored the change as a ref of its own: taken back, the old way.
            PushResult::Ok => {
                log::info!("{} does not apply git kv changes; pushing with a lease", self.remote);
                git::push(&self.dir, &[], &self.remote, "", &dst, Some(Some(&hex))).map_err(repo_err)?;
                self.write_with_lease(limits, change, edit)
            }
            PushResult::Rejected { reason, stderr } if stderr.contains("receive.procReceiveRefs") => {
                log::info!("{} does not apply git kv changes ({reason}); pushing with a lease", self.remote);
                self.write_with_lease(limits, change, edit)
            }
            PushResult::Rejected { reason, stderr } => Err(self.refused(change, reason, &stderr)?),
        }
    }

    /// Why the leader refused a change: a `cas` that found another value (read from the
    /// leader), a key missing or in conflict there, or as `rejection` says.
    fn refused(&self, change: &Change, reason: String, stderr: &str) -> Result<Error, Error> {
        let reason = reason.trim_start_matches("[remote rejected]").trim().trim_matches(['(', ')']).to_owned();
        if let (Some(current), Change::Cas { key, .. }) = (reason.strip_prefix("cas mismatch "), change) {
            let current = match ObjectId::from_hex(current.trim().as_bytes()) {
                Ok(id) => {
                    self.fetch(true)?;
                    Some(self.refs.repo().find_object(id).map_err(repo_err)?.detach().data)
                }
                Err(_) => None,
            };
            return Ok(Error::Mismatch { key: key.clone(), current });
        }
        if reason.ends_with(": not found") || reason.contains("conflicts with existing key") {
            return Ok(Error::Refused { remote: self.remote.clone(), reason });
        }
        Ok(rejection(&self.remote, reason, stderr))
    }

    /// `change`'s commit: `edit` applied to the tree of `tip`, on `tip`.
    fn build(
        &self,
        change: &Change,
        tip: Option<ObjectId>,
        edit: &impl Fn(&mut Edit<'_, '_>) -> Result<(), Error>,
    ) -> Result<ObjectId, Error> {
        let base = self.tree(tip)?;
        let mut editor = base.edit().map_err(repo_err)?;
        edit(&mut Edit { base: &base, editor: &mut editor })?;
        let tree = editor.write().map_err(repo_err)?.detach();
        self.commit(&change.message(), tree, tip)
    }

    /// The older way, for a remote that does not apply changes: the commit pushed to the
    /// namespace with a lease on the tip it was built on. The first try builds on this
    /// clone's tip, without fetching; a lease that fails (another writer, or a stale
    /// clone), or an edit that fails on a tip not just fetched, fetches and starts over from
    /// the new tip, after a jittered backoff once writers really collide.
    fn write_with_lease(
        &self,
        limits: Limits,
        change: &Change,
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
            let built = self.expected(change, tip).and_then(|()| self.build(change, tip, &edit));
            let commit = match built {
                Ok(commit) => commit,
                // Judged on a tip that may be stale: judged again on the remote's.
                Err(
                    Error::Tree(kvtree::Error::Conflict { .. } | kvtree::Error::NotFound(_)) | Error::Mismatch { .. },
                ) if !fresh => {
                    continue;
                }
                Err(e) => return Err(e),
            };
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

    /// A `cas` judged on `tip`, as the leader judges it on its own.
    fn expected(&self, change: &Change, tip: Option<ObjectId>) -> Result<(), Error> {
        let Change::Cas { key, expect } = change else { return Ok(()) };
        let base = self.tree(tip)?;
        match kvtree::blob_at(&base, key)? {
            Some(current) if current == *expect => Ok(()),
            Some(current) => {
                let value = self.refs.repo().find_object(current).map_err(repo_err)?.detach().data;
                Err(Error::Mismatch { key: key.clone(), current: Some(value) })
            }
            None => Err(Error::Mismatch { key: key.clone(), current: None }),
        }
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

use kvtree::Edit;

fn set(edit: &mut Edit<'_, '_>, key: &str, value: &[u8]) -> Result<(), Error> {
    let blob = edit.base.repo.write_blob(value).map_err(repo_err)?.detach();
    Ok(edit.set(key, blob)?)
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
    fn set_pairs_from_arguments_and_input() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none: Option<&[u8]> = None;
        assert_eq!(set_pairs(args(&["a", "1", "b/c", "two words"]), none).unwrap().len(), 2);
        assert!(matches!(set_pairs(args(&["a"]), none), Err(Error::Usage(_))));
        assert!(matches!(set_pairs(args(&[]), none), Err(Error::Usage(_))));
        assert!(matches!(set_pairs(args(&["a", "1", "a", "2"]), none), Err(Error::Usage(_))));
        assert!(matches!(set_pairs(args(&["a b", "1"]), none), Err(Error::Tree(kvtree::Error::InvalidKey(..)))));
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
}
