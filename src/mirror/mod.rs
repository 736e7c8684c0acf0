//! The replica's half of replication (docs/ARCHITECTURE.md, `src/mirror/`): one mirroring
//! of a repository from the node that leads (or, for a node about to lead, from the
//! furthest one), the scheduler that runs them (signals, summary, sweeps, watchdog,
//! retries), and what they measure (lag, its windows and alerts, StatsD, the counters).
//!
//! A mirroring (stargate(7), Mirroring) copies every ref `+refs/*:refs/*`, deletions
//! pruned, the replica's own `refs/stargate/local/*` untouched. The journal makes it cheap:
//! an idle one asks for one ref (the journal) and stops; after k entries it walks them, asks
//! for the refs their applying outcomes name and fetches those values: O(k), not O(refs)
//! (`source`: one protocol v2 session over `git://`, ssh and local paths, git's own
//! commands over http). Without a usable journal (new replica, gap, rewritten journal after a
//! failover) it mirrors everything, and says so. Either way it reads the journal tip
//! before every other ref, computes a `plan` (what moves, what is kept under
//! `refs/stargate/local/lost/<epoch>/<ref>` first: mirroring never silently destroys
//! history, the quorum anchors) without writing, and `apply`s it as one store transaction
//! once the leader record still names the node it read.
//!
//! It reads the lease (to know whom to mirror and to fence itself) but never changes it.

pub mod alert;
mod apply;
pub mod backoff;
pub mod lag;
mod mirroring;
pub mod offset;
mod plan;
pub mod reach;
pub mod replicator;
mod settle;
mod source;
pub mod stats;
pub mod upstream;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::journal;
use crate::lead::lease::Lock;
use crate::store;
use crate::wire::git;
use mirroring::Mirroring;
use source::Source;

pub use settle::{Settled, has_open_writes, settle};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error(transparent)]
    Open(#[from] store::OpenError),
    #[error(transparent)]
    Read(#[from] store::ReadError),
    #[error(transparent)]
    Prepare(#[from] store::PrepareError),
    #[error(transparent)]
    Commit(#[from] store::CommitError),
    #[error(transparent)]
    Edit(#[from] store::EditError),
    #[error("another sync of this repository is running")]
    Locked,
    /// Quorum mode: the values of a prepared write went with its transaction's end before
    /// they could be staged; its outcome is in the leader's journal now.
    #[error("{0}")]
    Gone(String),
    #[error("the leader changed during this sync; nothing applied")]
    Overtaken,
    /// A cascading replica's sync that would mirror everything: only the leader serves it.
    #[error("upstream {via} cannot serve this sync ({why}): a full mirror comes from the leader")]
    NotFromUpstream { via: String, why: String },
    #[error("the leader's refs moved during the full mirror; retrying")]
    Moved,
    #[error(
        "{url} names objects with {theirs} and this node's copy with {ours}: a repository must use one object \
         format on every node (stargate(7), Repository formats)"
    )]
    Format { url: String, theirs: String, ours: String },
    #[error("the leader's pack lacks {0}")]
    Incomplete(ObjectId),
    #[error("too many kept values of {refname} under epoch {epoch}")]
    TooManyKept { refname: String, epoch: u64 },
    #[error("not an object id: {0}")]
    Malformed(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Where to mirror from: resolved from the leader record at every sync.
#[derive(Debug, Clone)]
pub struct Target {
    pub leader: String,
    pub epoch: u64,
    /// The leader's base URL (`stargate.<id>.url`); the repository name is appended.
    pub base_url: String,
    /// Quorum mode: a node that holds staged values as a peer does
    /// (`refs/stargate/local/staged/`), not as the leader does (`refs/stargate/staging/`).
    pub peer: bool,
    /// A cascading replica: the node fetched from instead of the leader (`base_url` is
    /// then its URL); the leader and epoch still fence what is applied (`upstream`).
    pub via: Option<String>,
}

impl Target {
    /// The leader `record` names.
    pub fn leader(record: &crate::lead::lease::Record, base_url: String) -> Target {
        Target { leader: record.node.clone(), epoch: record.epoch, base_url, peer: false, via: None }
    }

    /// Where the values come from, for people: `a`, or `a via b`.
    pub fn source(&self) -> String {
        match &self.via {
            Some(via) => format!("{} via {via}", self.leader),
            None => self.leader.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    /// How long the other node's Git server has to accept a session and say what it
    /// speaks (`stargate.sync.connectTimeout`).
    pub connect_timeout: Duration,
    pub upload_pack: Option<String>,
    /// Where syncs over ssh keep the sockets of their shared connections
    /// (`stargate.sync.sshMultiplex`; `wire::ssh`); none: a connection per sync.
    pub ssh_control: Option<std::path::PathBuf>,
    /// The agent's secret, so that the replica's hooks let the mirroring write.
    pub token: String,
    /// Show git's progress on stderr (a person at a terminal).
    pub progress: bool,
    /// A full mirror measures lag only for updates accepted after this (the agent's start):
    /// a new replica must not report years of history as lag.
    pub measure_since_ms: u64,
    /// The lease: its record is read again just before refs move, so that a sync overtaken
    /// by an election (of this node or another) does not apply what it fetched.
    pub lock: Lock,
    /// This node's id.
    pub me: String,
    /// A newly elected node catching up to the previous leader (`agent`): the record then
    /// names this node, not the target, and it may still apply.
    pub catch_up: bool,
    /// Mirror everything even when the journal could be followed (`git stargate sync --full`).
    pub full: bool,
    /// Quorum mode: stage the values of every prepared write the sync walks past.
    pub quorum: bool,
    /// `stargate.journal.keep`: how long the values forced moves replace stay anchored
    /// (`journal::retain`).
    pub journal_keep: u64,
}

impl Settings {
    /// The settings of this node's mirroring, from its config and the agent's `token`.
    pub fn from_config(cfg: &crate::config::Config, token: String) -> Result<Settings, crate::config::Error> {
        Ok(Settings {
            timeout: cfg.sync_timeout()?,
            connect_timeout: cfg.sync_connect_timeout()?,
            upload_pack: cfg.sync_upload_pack().map(str::to_owned),
            ssh_control: if cfg.sync_ssh_multiplex()? { Some(cfg.state_dir()?.join("ssh")) } else { None },
            token,
            progress: false,
            measure_since_ms: crate::clock::now_ms(),
            lock: Lock::from_config(cfg)?,
            me: cfg.node()?,
            catch_up: false,
            full: false,
            quorum: cfg.replication_quorum_mode()?,
            journal_keep: cfg.journal_keep()?,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Idle,
    Incremental,
    Full,
}

/// What one sync did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// Why the journal could not be used, for a full sync.
    pub fallback: Option<String>,
    pub refs_changed: usize,
    pub leader_seq: u64,
    pub replica_seq: u64,
    pub applied: Vec<Applied>,
    pub lost: Vec<Lost>,
}

/// One journaled update now exposed by the replica.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub seq: u64,
    pub refname: String,
    pub accept_ms: u64,
    pub exposed_ms: u64,
}

/// A ref value the leader did not contain, kept instead of destroyed.
#[derive(Debug, Clone, Serialize)]
pub struct Lost {
    pub refname: String,
    pub oid: String,
    pub kept_as: String,
}

/// A ref lock older than this on a node whose refs only its agent writes (a passive node,
/// or one about to lead) was left by a writer killed mid-transaction: twice the longest a
/// sync may run (`stargate.sync.timeout` at its default), after which its watchdog kills it.
pub const STALE_LOCK: Duration = Duration::from_secs(50);

/// Locks last written before this are stale for an agent started at `started_ms`: those of
/// an earlier agent of this node, and any older than `STALE_LOCK`.
pub fn stale_before(started_ms: u64) -> std::time::SystemTime {
    let started = std::time::UNIX_EPOCH + Duration::from_millis(started_ms);
    started.max(std::time::SystemTime::now() - STALE_LOCK)
}

/// The leader's URL for repository `name` under `base`.
pub fn repo_url(base: &str, name: &str) -> String {
    if base.ends_with('/') { format!("{base}{name}") } else { format!("{base}/{name}") }
}

/// Mirror `name` (at `path`) from `target`. Fails with `Locked` when another sync of this
/// repository holds its lock: the caller skips, it does not queue. In quorum mode this is
/// also how a peer stages the leader's prepared writes.
pub fn sync(path: &Path, name: &str, target: &Target, settings: &Settings) -> Result<Report, Error> {
    let _lock = lock(path)?;
    let mut tries = 0;
    loop {
        match Mirroring::new(path, name, target, settings).sync() {
            // The transaction ended meanwhile: its outcome is in the journal at the next look.
            Err(Error::Gone(why)) if tries < 3 => {
                log::debug!("{}: {why}; looking again", path.display());
                tries += 1;
            }
            // A lock a killed writer left (an earlier agent of this node): gone, then again.
            Err(e @ Error::Prepare(store::PrepareError::Files(_) | store::PrepareError::Locked(_))) => {
                let removed = store::Store::open(path)
                    .map(|main| main.clear_stale_locks(stale_before(settings.measure_since_ms)))
                    .unwrap_or_default();
                for lock in &removed {
                    log::warn!(
                        "{}: removed {}, left by a writer killed mid-transaction",
                        path.display(),
                        lock.display()
                    );
                }
                if removed.is_empty() || tries >= 3 {
                    return Err(e);
                }
                tries += 1;
            }
            other => return other,
        }
    }
}

/// How far this replica's copy of `name` is behind `target`'s, measured now: the journal
/// entries it lacks. Fetches the leader's new journal entries (objects only: no ref
/// moves), so it costs one `ls-refs`, plus one small fetch when behind. Waits up to `wait`
/// for a sync of the repository that runs, then fails with `Locked`.
pub fn behind(path: &Path, name: &str, target: &Target, settings: &Settings, wait: Duration) -> Result<Behind, Error> {
    let _lock = lock_within(path, wait)?;
    Mirroring::new(path, name, target, settings).behind()
}

/// `lock`, waiting up to `wait` for the sync that holds it. Queued in the kernel (a
/// blocking flock), not polled: under a continuous writer the agent's syncs follow one
/// another within microseconds, and a poll would find the lock held every time (seen over
/// ssh, whose syncs last hundreds of milliseconds). A wait that outlives `wait` takes the
/// lock later in its own thread and drops it at once.
fn lock_within(path: &Path, wait: Duration) -> Result<File, Error> {
    match lock(path) {
        Err(Error::Locked) => {}
        other => return other,
    }
    let file = File::options()
        .write(true)
        .open(path.join("stargate/sync.lock"))
        .map_err(|source| Error::Io { what: format!("cannot open {}/stargate/sync.lock", path.display()), source })?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let locked = file.lock().map(|()| file);
        let _ = tx.send(locked);
    });
    match rx.recv_timeout(wait) {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(source)) => Err(Error::Io { what: "cannot lock the repository for a sync".into(), source }),
        Err(_) => Err(Error::Locked),
    }
}

/// Whether the node whose base URL is `base_url` serves repository `name`, and in which
/// object format when the transport tells (`None` over ssh and http): for creating this
/// node's copy alike. `path`: where git may run on this node.
pub fn served_format(path: &Path, name: &str, base_url: &str, settings: &Settings) -> Result<Option<String>, Error> {
    let mut source = Source::open(path, name, base_url, settings, Instant::now() + settings.timeout)?;
    // A session opens only on a repository its upload-pack serves; git is asked otherwise.
    match source.object_format() {
        Some(format) => Ok(Some(format.to_owned())),
        None => source.ls(&[]).map(|_| None),
    }
}

/// Every ref of repository `name` at the node whose base URL is `base_url`: one protocol v2
/// `ls-refs` where the transport allows, else `git ls-remote` (run in `path`, this node's
/// copy). For `git stargate verify`.
pub fn remote_refs(
    path: &Path,
    name: &str,
    base_url: &str,
    settings: &Settings,
) -> Result<HashMap<String, ObjectId>, Error> {
    Source::open(path, name, base_url, settings, Instant::now() + settings.timeout)?.ls(&[])
}

/// The journal tip of repository `name` at the node whose base URL is `base_url`, asked
/// within `settings.timeout`: whether that node's Git server answers at all, before a
/// longer mirror of it.
/// Whether the Git server at `base_url` answers for repository `name` (this node's copy at
/// `path`) within `within`: accepts the connection and advertises what it speaks, on every
/// transport (ssh's own connect timeout set to it). `Err` with the reason when it does not.
pub fn answers(path: &Path, name: &str, base_url: &str, settings: &Settings, within: Duration) -> Result<(), Error> {
    let settings = Settings { connect_timeout: within, ..settings.clone() };
    Source::open(path, name, base_url, &settings, Instant::now() + within).map(drop)
}

pub fn journal_at(path: &Path, name: &str, base_url: &str, settings: &Settings) -> Result<Option<ObjectId>, Error> {
    let mut source = Source::open(path, name, base_url, settings, Instant::now() + settings.timeout)?;
    Ok(source.ls(&[journal::REF])?.remove(journal::REF))
}

/// What `behind` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Behind {
    pub leader_seq: u64,
    pub replica_seq: u64,
    /// Updates the replica lacks.
    pub updates: u64,
    /// When the leader accepted the oldest of them.
    pub oldest_ms: Option<u64>,
    /// The replica's position is not in the leader's journal: a full mirror is due.
    pub unknown_position: bool,
}

/// Take the repository's sync lock (flock) without waiting.
fn lock(path: &Path) -> Result<File, Error> {
    let dir = path.join("stargate");
    std::fs::create_dir_all(&dir)
        .map_err(|source| Error::Io { what: format!("cannot create {}", dir.display()), source })?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("sync.lock"))
        .map_err(|source| Error::Io { what: format!("cannot open {}/sync.lock", dir.display()), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked),
        Err(std::fs::TryLockError::Error(source)) => {
            Err(Error::Io { what: "cannot lock the repository for a sync".into(), source })
        }
    }
}
