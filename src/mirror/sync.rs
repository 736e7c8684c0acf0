//! One mirror of one repository from the leader (stargate(7), Mirroring): every ref `+refs/*:refs/*`,
//! deletions pruned, the replica's own `refs/stargate/local/*` untouched.
//!
//! The journal makes it cheap. An idle sync asks for one ref (the journal) and stops. After
//! k updates it fetches the new journal entries, asks the leader for the k refs they name
//! and fetches those values: the cost is O(k), not O(refs). Over `git://` and local paths
//! this is one protocol v2 session (`proto`), objects by id with our own values as haves.
//! Elsewhere (ssh, http) it is `git ls-remote` and `git fetch` in a private side repository
//! (`<repo>/stargate/sync.git`) that shares the replica's object store but holds only the
//! refs of this sync, so git neither negotiates with nor connectivity-checks against the
//! replica's other refs. The refs then move in the replica with one atomic transaction
//! (`refs::Store`: gix on the files backend, `git update-ref --stdin` on reftable),
//! journal ref last.
//!
//! Without a usable journal (new replica, gap, rewritten journal after a failover) the sync
//! mirrors everything with `git fetch --prune`, and says so. Whichever way, a ref whose old
//! value the leader does not contain is first kept under
//! `refs/stargate/local/lost/<epoch>/<ref>`: mirroring never silently destroys history.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::journal;
use crate::lead::lease::Lock;
use crate::store::{Edit, Store};
use crate::wire::endpoint::Endpoint;
use crate::wire::git::{self, Bounded};
use crate::wire::proto;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error("{0}")]
    Repo(String),
    #[error("another sync of this repository is running")]
    Locked,
    /// Quorum mode: the values of a prepared write went with its transaction's end before
    /// they could be staged; its outcome is in the leader's journal now.
    #[error("{0}")]
    Gone(String),
}

fn repo_err(e: impl std::fmt::Display) -> Error {
    Error::Repo(e.to_string())
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
}

impl Target {
    /// The leader `record` names.
    pub fn leader(record: &crate::lead::lease::Record, base_url: String) -> Target {
        Target { leader: record.node.clone(), epoch: record.epoch, base_url, peer: false }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub upload_pack: Option<String>,
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
}

impl Settings {
    /// The settings of this node's mirroring, from its config and the agent's `token`.
    pub fn from_config(cfg: &crate::config::Config, token: String) -> Result<Settings, crate::config::Error> {
        Ok(Settings {
            timeout: cfg.sync_timeout()?,
            upload_pack: cfg.sync_upload_pack().map(str::to_owned),
            token,
            progress: false,
            measure_since_ms: crate::clock::now_ms(),
            lock: Lock::from_config(cfg)?,
            me: cfg.node()?,
            catch_up: false,
            full: false,
            quorum: cfg.replication_quorum_mode()?,
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

/// A full mirror that changes more refs than this packs them afterwards.
const PACK_AFTER: usize = 1000;

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
        match Run::new(path, name, target, settings).sync() {
            // The transaction ended meanwhile: its outcome is in the journal at the next look.
            Err(Error::Gone(why)) if tries < 3 => {
                log::debug!("{}: {why}; looking again", path.display());
                tries += 1;
            }
            other => return other,
        }
    }
}

/// How far this replica's copy of `name` is behind `target`'s, measured now: the journal
/// entries it lacks. Fetches the leader's new journal entries (objects only: no ref
/// moves), so it costs one `ls-refs`, plus one small fetch when behind. Fails with
/// `Locked` while a sync of the repository runs.
pub fn behind(path: &Path, name: &str, target: &Target, settings: &Settings) -> Result<Behind, Error> {
    let _lock = lock(path)?;
    let run = Run::new(path, name, target, settings);
    run.behind()
}

/// Whether the node whose base URL is `base_url` serves repository `name`, and in which
/// object format when the transport tells (`None` over ssh and http): for creating this
/// node's copy alike. `path`: where git may run on this node.
pub fn served_format(path: &Path, name: &str, base_url: &str, settings: &Settings) -> Result<Option<String>, Error> {
    let target = Target { leader: String::new(), epoch: 0, base_url: base_url.to_owned(), peer: false };
    let run = Run::new(path, name, &target, settings);
    // A session opens only on a repository its upload-pack serves.
    match run.connect()? {
        Leader::Session(s) => Ok(Some(s.object_format().to_owned())),
        Leader::Commands => run.ls_remote(&[]).map(|_| None),
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
    let target = Target { leader: String::new(), epoch: 0, base_url: base_url.to_owned(), peer: false };
    let run = Run::new(path, name, &target, settings);
    let mut leader = run.connect()?;
    run.ls(&mut leader, &[])
}

/// The journal tip of repository `name` at the node whose base URL is `base_url`, asked
/// within `settings.timeout`: whether that node's Git server answers at all, before a
/// longer mirror of it.
pub fn journal_at(path: &Path, name: &str, base_url: &str, settings: &Settings) -> Result<Option<ObjectId>, Error> {
    let target = Target { leader: String::new(), epoch: 0, base_url: base_url.to_owned(), peer: true };
    let run = Run::new(path, name, &target, settings);
    let mut node = run.connect()?;
    Ok(run.ls(&mut node, &[journal::REF])?.remove(journal::REF))
}

/// What a node about to lead decided about the prepared writes its journal leaves open.
#[derive(Debug, Default)]
pub struct Settled {
    /// Applied and journaled as taken over: (first sequence number, refs).
    pub taken_over: Vec<(u64, Vec<String>)>,
    /// Journaled as dropped: (first sequence number, refs, why).
    pub dropped: Vec<(u64, Vec<String>, String)>,
}

/// A node about to lead settles every prepared write its journal leaves open (stargate(7),
/// Journal), so that no entry before its leadership waits for an outcome any more. With
/// `staged` (quorum mode) a write whose new values this node holds, and whose refs still
/// hold its old values (or its new ones), is applied and journaled as taken over: a quorum
/// may have acknowledged it. Every other one is journaled as dropped: its values are not
/// here (async mode), a later write to its refs superseded it, or its refs moved on. The
/// refs move first, so that a crash between the two leaves a write applied and still open,
/// which the next settlement finds applied and journals as taken over.
pub fn settle(path: &Path, epoch: u64, node: &str, keep: u64, staged: bool) -> Result<Settled, Error> {
    // Almost always nothing is open: then no need to wait for a sync of the repository.
    if !has_open_writes(path)? {
        return Ok(Settled::default());
    }
    let _lock = lock(path)?;
    let main = journal::open(path)?;
    if main.is_reftable() {
        journal::publish(&main)?;
    }
    let Some((tip, _)) = journal::tip(&main)? else { return Ok(Settled::default()) };
    let open = journal::open_prepares(&main, tip)?;
    if open.is_empty() {
        return Ok(Settled::default());
    }
    let names: Vec<String> = (open.iter())
        .flat_map(|(_, e)| e.updates.iter().map(|(_, u)| u.refname.clone()))
        .filter(|r| journal::journaled(r))
        .collect();
    let mut current = current_refs(&main, names.iter())?;
    let mut settled = Settled::default();
    let mut decisions = Vec::new();
    let mut edits = Vec::new();
    // A later open write to the same ref could only prepare once the earlier one had ended.
    let last_prepare: HashMap<&str, ObjectId> =
        (open.iter()).flat_map(|(id, e)| e.updates.iter().map(move |(_, u)| (u.refname.as_str(), *id))).collect();
    for (id, entry) in &open {
        let updates: Vec<&journal::Update> =
            entry.updates.iter().map(|(_, u)| u).filter(|u| journal::journaled(&u.refname)).collect();
        let refs: Vec<String> = updates.iter().map(|u| u.refname.clone()).collect();
        let first = entry.updates.first().map_or(entry.seq, |(seq, _)| *seq);
        let value = |oid: ObjectId| (!oid.is_null()).then_some(oid);
        let superseded = || {
            let u = updates.iter().find(|u| last_prepare.get(u.refname.as_str()) != Some(id))?;
            Some(format!("a later write to {} superseded it", u.refname))
        };
        let missing = || {
            let u = updates.iter().find(|u| !u.new.is_null() && !main.repo().has_object(u.new))?;
            Some(format!("the new value of {} is not here", u.refname))
        };
        let moved = || {
            let u = updates.iter().find(|u| {
                let now = current.get(&u.refname).copied();
                now != value(u.old) && now != value(u.new)
            })?;
            Some(format!("{} moved on since", u.refname))
        };
        let why = if staged {
            superseded().or_else(missing).or_else(moved)
        } else {
            Some("its values are only on the node that prepared it".to_owned())
        };
        match why {
            Some(why) => {
                decisions.push((*id, journal::Outcome::Dropped));
                settled.dropped.push((first, refs, why));
            }
            None => {
                for u in updates {
                    let now = current.get(&u.refname).copied();
                    if now != value(u.new) {
                        edits.push(Edit::update(&u.refname, now, value(u.new)));
                        match value(u.new) {
                            Some(new) => current.insert(u.refname.clone(), new),
                            None => current.remove(&u.refname),
                        };
                    }
                }
                decisions.push((*id, journal::Outcome::TakenOver));
                settled.taken_over.push((first, refs));
            }
        }
    }
    let anchored: HashSet<String> =
        main.prefixed(crate::journal::stage::STAGED).map_err(repo_err)?.into_iter().map(|(r, _)| r).collect();
    for (_, entry) in &open {
        for (seq, _) in &entry.updates {
            let anchor = format!("{}{seq}", crate::journal::stage::STAGED);
            if anchored.contains(&anchor) {
                edits.push(Edit::delete(&anchor));
            }
        }
    }
    main.edit(&edits).map_err(repo_err)?;
    for (id, outcome) in decisions {
        journal::append_outcome(&main, epoch, node, id, outcome, keep)?;
    }
    if main.is_reftable() {
        journal::publish(&main)?;
    }
    Ok(settled)
}

/// Whether the journal of `path` leaves any prepared write without its outcome.
pub fn has_open_writes(path: &Path) -> Result<bool, Error> {
    let main = journal::open(path)?;
    Ok(match journal::head(&main)? {
        Some(head) => !journal::open_prepares(&main, head)?.is_empty(),
        None => false,
    })
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
    std::fs::create_dir_all(&dir).map_err(repo_err)?;
    let file =
        File::options().create(true).truncate(false).write(true).open(dir.join("sync.lock")).map_err(repo_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked),
        Err(std::fs::TryLockError::Error(e)) => Err(repo_err(e)),
    }
}

/// How this sync talks to the leader.
enum Leader {
    /// One protocol v2 session (`git://`, local paths).
    Session(proto::Session),
    /// `git ls-remote` and `git fetch` (ssh, http, a server without protocol v2).
    Commands,
}

/// The leader's refs as this sync saw them: name to object id.
type Refs = HashMap<String, ObjectId>;

struct Run<'a> {
    path: &'a Path,
    name: &'a str,
    url: String,
    target: &'a Target,
    settings: &'a Settings,
    deadline: Instant,
    started: Instant,
    /// `.keep` files of packs fetched by this sync, removed when it ends (refs point at
    /// their objects by then, or the objects are garbage).
    keeps: std::cell::RefCell<Vec<PathBuf>>,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        for keep in self.keeps.borrow().iter() {
            let _ = std::fs::remove_file(keep);
        }
    }
}

impl<'a> Run<'a> {
    /// One sync's run against `target`, due by `settings.timeout` from now.
    fn new(path: &'a Path, name: &'a str, target: &'a Target, settings: &'a Settings) -> Run<'a> {
        Run {
            path,
            name,
            url: repo_url(&target.base_url, name),
            target,
            settings,
            deadline: Instant::now() + settings.timeout,
            started: Instant::now(),
            keeps: Default::default(),
        }
    }

    fn sync(&self) -> Result<Report, Error> {
        let main = journal::open(self.path)?;
        let local = journal::tip(&main)?;
        let mut leader = self.connect_same_format()?;
        // The journal tip first, every other ref after: whatever an entry up to this tip
        // says the leader committed, the values read next already hold (or newer ones).
        let tips = self.ls(&mut leader, &[journal::REF])?;
        log::debug!("{}: journal tip asked after {:?}", self.path.display(), self.started.elapsed());
        let idle = |seq| Report { leader_seq: seq, replica_seq: seq, ..Report::default() };
        if let (Some(tip), Some((id, seq)), false) = (tips.get(journal::REF), local, self.settings.full)
            && *tip == id
        {
            return Ok(idle(seq));
        }
        let ours: Refs = local.map(|(id, _)| (journal::REF.to_owned(), id)).into_iter().collect();
        let fetched = if tips.is_empty() { None } else { self.fetch(&mut leader, &main, &tips, &ours)? };
        log::debug!("{}: journal fetched after {:?}", self.path.display(), self.started.elapsed());
        let Some(&leader_tip) = fetched.as_ref().and_then(|f| f.get(journal::REF)) else {
            return self.full(&main, &mut leader, "the leader has no journal yet", None);
        };
        if self.settings.full {
            return self.full(&main, &mut leader, "asked for (git stargate sync --full)", Some(leader_tip));
        }
        if let Some((_, seq)) = local.filter(|(id, _)| *id == leader_tip) {
            return Ok(idle(seq));
        }
        match self.walk(&mut leader, &main, leader_tip, local.map(|(id, _)| id))? {
            Some(entries) => self.incremental(&main, &mut leader, leader_tip, local.map(|(id, _)| id), &entries),
            None if local.is_none() => {
                self.full(&main, &mut leader, "this replica has no journal yet", Some(leader_tip))
            }
            None => self.full(
                &main,
                &mut leader,
                "this replica's journal position is not in the leader's journal (or older than it keeps)",
                Some(leader_tip),
            ),
        }
    }

    /// The journal entries after `since` up to `tip` (fetched already), oldest first,
    /// fetching the leader's previous generation when the walk crosses a checkpoint;
    /// `None` when `since` is not there.
    fn walk(
        &self,
        leader: &mut Leader,
        main: &Store,
        tip: ObjectId,
        since: Option<ObjectId>,
    ) -> Result<Option<journal::Entries>, Error> {
        let (newer, previous) = match journal::range(main, tip, since)? {
            journal::Range::Found(entries) => return Ok(Some(entries)),
            journal::Range::NotFound => return Ok(None),
            journal::Range::Checkpoint { entries, previous } => (entries, previous),
        };
        let listed = self.ls(leader, &[journal::PREVIOUS])?;
        if listed.get(journal::PREVIOUS) != Some(&previous) {
            return Ok(None);
        }
        let ours: Refs = since.map(|id| (journal::PREVIOUS.to_owned(), id)).into_iter().collect();
        if self.fetch(leader, main, &listed, &ours)?.is_none() {
            return Ok(None);
        }
        match journal::range(main, previous, since)? {
            journal::Range::Found(mut older) => {
                older.extend(newer);
                Ok(Some(older))
            }
            _ => Ok(None),
        }
    }

    fn behind(&self) -> Result<Behind, Error> {
        let main = journal::open(self.path)?;
        let local = journal::tip(&main)?;
        let mut leader = self.connect_same_format()?;
        let tips = self.ls(&mut leader, &[journal::REF])?;
        let replica_seq = local.map_or(0, |(_, seq)| seq);
        let Some(&tip) = tips.get(journal::REF) else {
            return Ok(Behind { replica_seq, unknown_position: true, ..Behind::default() });
        };
        if local.is_some_and(|(id, _)| id == tip) {
            return Ok(Behind { leader_seq: replica_seq, replica_seq, ..Behind::default() });
        }
        let ours: Refs = local.map(|(id, _)| (journal::REF.to_owned(), id)).into_iter().collect();
        let fetched = self.fetch(&mut leader, &main, &tips, &ours)?;
        let Some(&tip) = fetched.as_ref().and_then(|f| f.get(journal::REF)) else {
            return Ok(Behind { replica_seq, unknown_position: true, ..Behind::default() });
        };
        let leader_seq = journal::read(&main, tip)?.0.seq;
        match self.walk(&mut leader, &main, tip, local.map(|(id, _)| id))? {
            Some(entries) => Ok(Behind {
                leader_seq,
                replica_seq,
                updates: entries.iter().map(|(_, e)| e.applied().len() as u64).sum(),
                oldest_ms: entries.iter().filter(|(_, e)| !e.applied().is_empty()).map(|(_, e)| e.time_ms).min(),
                unknown_position: false,
            }),
            None => Ok(Behind { leader_seq, replica_seq, unknown_position: true, ..Behind::default() }),
        }
    }

    /// A protocol v2 session where the transport allows one, else git's commands.
    fn connect(&self) -> Result<Leader, Error> {
        let Ok(endpoint) = Endpoint::join(&self.target.base_url, self.name) else { return Ok(Leader::Commands) };
        let session = proto::Session::open(&endpoint, self.settings.upload_pack.as_deref(), self.deadline)?;
        Ok(session.map_or(Leader::Commands, Leader::Session))
    }

    /// `connect`, for a sync into this node's copy: objects are named alike on every node
    /// or not at all, so a leader whose copy uses another object format is refused (over
    /// ssh and http, git's own fetch refuses it).
    fn connect_same_format(&self) -> Result<Leader, Error> {
        let leader = self.connect()?;
        let ours = crate::repos::object_format(self.path);
        match &leader {
            Leader::Session(s) if s.object_format() != ours => Err(Error::Repo(format!(
                "{} names objects with {} and this node's copy with {ours}: a repository must use one object \
                 format on every node (stargate(7), Repository formats)",
                self.url,
                s.object_format()
            ))),
            _ => Ok(leader),
        }
    }

    /// The leader's values of the refs `names` (every ref when empty); absent: no such ref.
    fn ls(&self, leader: &mut Leader, names: &[&str]) -> Result<Refs, Error> {
        match leader {
            Leader::Session(session) => Ok(session.ls_refs(names)?),
            Leader::Commands => self.ls_remote(names),
        }
    }

    /// Make the objects of `refs` (as listed by `ls`) present in the replica, with `ours`
    /// (the replica's values of those refs) as what it has. Returns the values fetched:
    /// `refs` itself in a session; by name with git, so newer if a ref moved meanwhile.
    /// `None` when a ref disappeared from the leader in between.
    fn fetch(&self, leader: &mut Leader, main: &Store, refs: &Refs, ours: &Refs) -> Result<Option<Refs>, Error> {
        let Leader::Session(session) = leader else { return self.fetch_side(refs, ours) };
        // Each value once: 100k refs often point at far fewer objects.
        let values: HashSet<ObjectId> = refs.values().copied().collect();
        let (mut wants, present): (Vec<ObjectId>, Vec<ObjectId>) =
            values.into_iter().partition(|oid| !main.repo().has_object(oid));
        // Present is not enough: a fetch killed mid-way (watchdog, leader gone) leaves the
        // loose objects it had written, a commit without all of its tree.
        let mut present: Vec<String> = present.iter().map(ObjectId::to_string).collect();
        present.sort();
        wants.extend(git::incomplete(self.path, &present).iter().filter_map(|o| ObjectId::from_hex(o.as_bytes()).ok()));
        wants.sort();
        wants.dedup();
        if wants.is_empty() {
            return Ok(Some(refs.clone()));
        }
        let mut haves: Vec<ObjectId> = ours.values().copied().filter(|oid| main.repo().has_object(oid)).collect();
        haves.sort();
        haves.dedup();
        let mut store = git::PackStore::new(self.path, self.settings.progress);
        session.fetch(&wants, &haves, self.settings.progress, &mut |data| store.write(data))?;
        if let Some(keep) = store.finish(self.deadline)? {
            self.keeps.borrow_mut().push(keep);
        }
        if let Some(missing) = wants.iter().find(|oid| !main.repo().has_object(*oid)) {
            return Err(Error::Repo(format!("the leader's pack lacks {missing}")));
        }
        Ok(Some(refs.clone()))
    }

    /// `<repo>/stargate/sync.git`, emptied of refs: a scratch repository over the
    /// replica's objects, owned by whoever holds the sync lock.
    fn side_repo(&self) -> Result<PathBuf, Error> {
        let side = self.path.join("stargate/sync.git");
        let format = crate::repos::object_format(self.path);
        if side.join("HEAD").is_file() && crate::repos::object_format(&side) != format {
            std::fs::remove_dir_all(&side).map_err(repo_err)?;
        }
        if !side.join("HEAD").is_file() {
            git::init_bare_files(&side, format)?;
        }
        let _ = std::fs::remove_file(side.join("packed-refs"));
        let refs = side.join("refs");
        let _ = std::fs::remove_dir_all(&refs);
        std::fs::create_dir_all(refs.join("heads")).map_err(repo_err)?;
        std::fs::create_dir_all(refs.join("tags")).map_err(repo_err)?;
        Ok(side)
    }

    fn fetch_args(&self, mut args: Vec<String>) -> Vec<String> {
        let mut all: Vec<String> = [
            "fetch",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-gc",
            "--no-auto-maintenance",
            "--no-show-forced-updates",
        ]
        .map(String::from)
        .to_vec();
        all.push(if self.settings.progress { "--progress" } else { "--quiet" }.into());
        if let Some(prog) = &self.settings.upload_pack {
            all.push(format!("--upload-pack={prog}"));
        }
        all.append(&mut args);
        all
    }

    fn bounded(&self, dir: &Path, args: &[String]) -> Bounded {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Bounded::new(dir, &args)
            .env(crate::lead::node::SYNC_TOKEN_ENV, &self.settings.token)
            .show_progress(self.settings.progress)
    }

    /// `fetch` with git: the refs by name into the side repository, seeded with our values
    /// as haves; the objects land in the replica's store.
    fn fetch_side(&self, refs: &Refs, ours: &Refs) -> Result<Option<Refs>, Error> {
        if refs.is_empty() {
            return Ok(Some(Refs::new()));
        }
        let side = self.side_repo()?;
        for (name, oid) in ours.iter().filter(|(name, _)| refs.contains_key(*name)) {
            write_loose_ref(&side, name, *oid)?;
        }
        let refspecs: Vec<String> = refs.keys().map(|r| format!("+{r}:{r}")).collect();
        let args = self.fetch_args(vec!["--stdin".into(), self.url.clone()]);
        let result = self
            .bounded(&side, &args)
            .env("GIT_OBJECT_DIRECTORY", self.path.join("objects"))
            .stdin(refspecs.join("\n").into_bytes())
            .run(self.deadline);
        match result {
            Ok(_) => {}
            Err(e) if e.text().contains("couldn't find remote ref") => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut fetched = Refs::new();
        for name in refs.keys() {
            if let Some(oid) = read_loose_ref(&side, name)? {
                fetched.insert(name.clone(), oid);
            }
        }
        Ok(Some(fetched))
    }

    fn incremental(
        &self,
        main: &Store,
        leader: &mut Leader,
        leader_tip: ObjectId,
        local_tip: Option<ObjectId>,
        entries: &journal::Entries,
    ) -> Result<Report, Error> {
        // The journal says which refs a committed write changed; the leader says what they
        // hold now (that write's value or a later one's).
        let walked = journal::walk(entries);
        let current = current_refs(main, walked.refs.keys())?;
        let names: Vec<&str> = walked.refs.keys().map(String::as_str).collect();
        let present = if names.is_empty() { Refs::new() } else { self.ls(leader, &names)? };
        let Some(values) = self.fetch(leader, main, &present, &current)? else {
            return self.full(main, leader, "a journaled ref was deleted on the leader since", Some(leader_tip));
        };
        let mut plan: Vec<_> =
            walked.refs.keys().map(|r| (r.clone(), current.get(r).copied(), values.get(r).copied())).collect();
        let known = |r: &str, oid: ObjectId| walked.refs.get(r).is_some_and(|k| k.contains(&oid));
        let lost = self.losses(main, &plan, known)?;
        let staging = self.staging(main, leader, &walked.opened, &walked.closed)?;
        // Crossing a checkpoint moves the previous generation's ref as the leader moved it
        // (never a loss: the generations are the journal's own).
        if let Some(previous) = entries.iter().rev().find_map(|(_, e)| e.previous) {
            let here = current_refs(main, std::iter::once(&journal::PREVIOUS.to_owned()))?;
            plan.push((journal::PREVIOUS.to_owned(), here.get(journal::PREVIOUS).copied(), Some(previous)));
        }
        log::debug!("{}: {} refs fetched after {:?}", self.path.display(), values.len(), self.started.elapsed());
        let exposed_ms = self.apply(main, &plan, &lost, staging, Some((local_tip, leader_tip)))?;
        log::debug!("{}: applied after {:?}", self.path.display(), self.started.elapsed());
        let leader_seq = entries.last().map_or(0, |(_, e)| e.seq);
        let applied = (walked.applied.into_iter())
            .map(|(seq, refname, accept_ms)| Applied { seq, refname, accept_ms, exposed_ms })
            .collect();
        let refs_changed = plan.iter().filter(|(_, old, new)| old != new).count();
        Ok(Report {
            mode: Mode::Incremental,
            fallback: None,
            refs_changed,
            leader_seq,
            replica_seq: leader_seq,
            applied,
            lost,
        })
    }

    /// Quorum mode: the anchors this sync adds and drops (`refs/stargate/local/staged/<seq>`):
    /// the new values of the prepared writes it walks past with their outcome still to
    /// come, fetched from where the target keeps them staged, so that this node holds every
    /// write at or before its journal position, applied or staged; and the anchors of writes
    /// whose outcome came. Only the lease's epoch is staged from the leader: a deposed
    /// leader gathers no quorum.
    fn staging(
        &self,
        main: &Store,
        leader: &mut Leader,
        opened: &journal::Entries,
        closed: &[u64],
    ) -> Result<Vec<Edit>, Error> {
        use crate::journal::stage::{STAGED, STAGING};
        if !self.settings.quorum {
            return Ok(Vec::new());
        }
        let anchored: HashSet<String> = main.prefixed(STAGED).map_err(repo_err)?.into_iter().map(|(r, _)| r).collect();
        let mut edits: Vec<Edit> = (closed.iter())
            .map(|seq| format!("{STAGED}{seq}"))
            .filter(|anchor| anchored.contains(anchor))
            .map(|anchor| Edit::delete(&anchor))
            .collect();
        if opened.is_empty() {
            return Ok(edits);
        }
        if !self.settings.catch_up
            && let Some((_, stale)) = opened.iter().find(|(_, e)| e.epoch != self.target.epoch)
        {
            return Err(Error::Repo(format!(
                "refused to stage: a write of epoch {} from {}, the lease is at epoch {}",
                stale.epoch, stale.node, self.target.epoch
            )));
        }
        let prefix = if self.target.peer { STAGED } else { STAGING };
        let values: Vec<(u64, ObjectId)> = (opened.iter())
            .flat_map(|(_, e)| e.updates.iter())
            .filter(|(_, u)| journal::journaled(&u.refname) && !u.new.is_null())
            .map(|(seq, u)| (*seq, u.new))
            .collect();
        let wanted: Refs = (values.iter())
            .filter(|(_, oid)| !main.repo().has_object(oid))
            .map(|(seq, oid)| (format!("{prefix}{seq}"), *oid))
            .collect();
        if !wanted.is_empty() {
            let gone = |why: String| Error::Gone(format!("cannot stage the prepared writes' values: {why}"));
            match self.fetch(leader, main, &wanted, &Refs::new()) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(gone("their anchors are gone".into())),
                Err(e) => return Err(gone(e.to_string())),
            }
        }
        edits.extend(values.iter().map(|(seq, oid)| Edit::set(&format!("{STAGED}{seq}"), *oid)));
        Ok(edits)
    }

    /// Values of the plan's old refs the leader does not contain, with where they will be kept.
    fn losses(
        &self,
        main: &Store,
        plan: &[(String, Option<ObjectId>, Option<ObjectId>)],
        known: impl Fn(&str, ObjectId) -> bool,
    ) -> Result<Vec<Lost>, Error> {
        let mut lost = Vec::new();
        for (r, old, new) in plan {
            let Some(old) = old else { continue };
            if Some(*old) == *new || known(r, *old) {
                continue;
            }
            if let Some(new) = new
                && is_ancestor(main, *old, *new)
            {
                continue;
            }
            lost.push(self.keep(main, r, *old)?);
        }
        Ok(lost)
    }

    /// Where `oid`, the value of `refname` the leader lacks, is kept:
    /// `refs/stargate/local/lost/<epoch>/<ref>`, or `lost/<epoch>.<n>/<ref>` when that name
    /// already keeps another value (the same ref lost twice under one epoch).
    fn keep(&self, main: &Store, refname: &str, oid: ObjectId) -> Result<Lost, Error> {
        let epoch = self.target.epoch;
        for n in 1..1000 {
            let dir = if n == 1 { epoch.to_string() } else { format!("{epoch}.{n}") };
            let kept_as = format!("refs/stargate/local/lost/{dir}/{refname}");
            match main.find(&kept_as).map_err(repo_err)? {
                Some(kept) if kept != oid => continue,
                _ => return Ok(Lost { refname: refname.to_owned(), oid: oid.to_string(), kept_as }),
            }
        }
        Err(Error::Repo(format!("too many kept values of {refname} under epoch {epoch}")))
    }

    /// One atomic transaction: kept values, ref moves, `edits` (quorum anchors), and
    /// (incremental) the journal ref.
    /// Returns when the new values became visible.
    fn apply(
        &self,
        main: &Store,
        plan: &[(String, Option<ObjectId>, Option<ObjectId>)],
        lost: &[Lost],
        mut edits: Vec<Edit>,
        journal_move: Option<(Option<ObjectId>, ObjectId)>,
    ) -> Result<u64, Error> {
        // Reported by the caller once it is sure: a full mirror keeps suspects first and
        // drops those the leader turns out to contain.
        for l in lost {
            let oid = ObjectId::from_hex(l.oid.as_bytes()).map_err(repo_err)?;
            if main.find(&l.kept_as).map_err(repo_err)?.is_none() {
                edits.push(Edit::update(&l.kept_as, None, Some(oid)));
            }
        }
        for (r, old, new) in plan {
            if old != new {
                edits.push(Edit::update(r, *old, *new));
            }
        }
        if let Some((old, new)) = journal_move {
            edits.push(Edit::update(journal::REF, old, Some(new)));
        }
        if !edits.is_empty() {
            self.still_following()?;
            main.edit(&edits).map_err(repo_err)?;
        }
        Ok(crate::clock::now_ms())
    }

    /// Re-read the leader record just before refs move: a sync overtaken by an election
    /// applies nothing.
    fn still_following(&self) -> Result<(), Error> {
        match self.settings.lock.read_record() {
            Ok(Some(r)) if r.epoch == self.target.epoch && r.node == self.target.leader => Ok(()),
            Ok(Some(r)) if self.settings.catch_up && r.node == self.settings.me => Ok(()),
            _ => Err(Error::Repo("the leader changed during this sync; nothing applied".into())),
        }
    }

    fn ls_remote(&self, refs: &[&str]) -> Result<Refs, Error> {
        let mut args: Vec<String> = vec!["ls-remote".into()];
        if let Some(prog) = &self.settings.upload_pack {
            args.push(format!("--upload-pack={prog}"));
        }
        args.push(self.url.clone());
        args.extend(refs.iter().map(|r| r.to_string()));
        let out = self.bounded(self.path, &args).show_progress(false).run(self.deadline)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (oid, name) = l.split_once('\t')?;
                Some((name.to_owned(), ObjectId::from_hex(oid.as_bytes()).ok()?))
            })
            // Patterns match name tails: keep exact names only.
            .filter(|(name, _)| name.starts_with("refs/") && !name.ends_with("^{}"))
            .filter(|(name, _)| refs.is_empty() || refs.contains(&name.as_str()))
            .collect())
    }

    /// Mirror everything: keep whatever may be lost first, fetch with prune, then drop the
    /// kept values that turned out to be on the leader after all.
    /// `journal_tip`: the leader's journal as read before anything else, which becomes this
    /// replica's position (the listing of every ref comes after it; see `sync`).
    fn full(
        &self,
        main: &Store,
        leader_conn: &mut Leader,
        why: &str,
        journal_tip: Option<ObjectId>,
    ) -> Result<Report, Error> {
        log::info!("{}: full mirror: {why}", self.path.display());
        // Measure what is new since this replica's own journal position, or since the agent began.
        let local_time = match journal::tip(main)? {
            Some((id, _)) => journal::read(main, id)?.0.time_ms,
            None => 0,
        };
        let since_ms = local_time.max(self.settings.measure_since_ms);
        let listed = self.ls(leader_conn, &[])?;
        let leader = (listed.iter())
            .filter(|(r, _)| journal::journaled(r) || *r == journal::REF)
            .map(|(r, oid)| (r.clone(), *oid))
            .collect::<HashMap<_, _>>();
        let local = all_refs(main)?;
        let leader_values: HashSet<ObjectId> = leader.values().copied().collect();
        let changed: Vec<(&String, ObjectId, Option<ObjectId>)> = (local.iter())
            .filter(|(r, old)| *r != journal::REF && !leader_values.contains(*old))
            .map(|(r, old)| (r, *old, leader.get(r).copied()))
            .collect();
        // A ref the leader only advanced is no suspect: fetch the new values of the refs it
        // moved first, so that ancestry can be judged, not guessed.
        let missing: Refs = (changed.iter())
            .filter_map(|(r, _, new)| new.filter(|n| !main.repo().has_object(n)).map(|n| ((*r).clone(), n)))
            .collect();
        if !missing.is_empty() {
            let ours: Refs = changed.iter().map(|(r, old, _)| ((*r).clone(), *old)).collect();
            self.fetch(leader_conn, main, &missing, &ours)?;
        }
        let mut suspects = Vec::new();
        for (r, old, new) in changed {
            if new.is_some_and(|n| main.repo().has_object(n) && is_ancestor(main, old, n)) {
                continue;
            }
            suspects.push(self.keep(main, r, old)?);
        }
        if !suspects.is_empty() {
            self.apply(main, &[], &suspects, Vec::new(), None)?;
        }
        if let Some(tip) = journal_tip {
            // Quorum mode: the values of the writes open at that position, staged first.
            let open = journal::open_prepares(main, tip)?;
            let open_seqs: HashSet<u64> = open.iter().flat_map(|(_, e)| e.updates.iter().map(|(s, _)| *s)).collect();
            let anchored: Vec<u64> = (main.prefixed(crate::journal::stage::STAGED).map_err(repo_err)?.into_iter())
                .filter_map(|(r, _)| r.strip_prefix(crate::journal::stage::STAGED)?.parse().ok())
                .filter(|seq| !open_seqs.contains(seq))
                .collect();
            let staging = self.staging(main, leader_conn, &open, &anchored)?;
            self.apply(main, &[], &[], staging, None)?;
        }
        let refs_changed = leader.iter().filter(|(r, oid)| local.get(*r) != Some(oid)).count()
            + local.keys().filter(|r| !leader.contains_key(*r)).count();
        if refs_changed > PACK_AFTER && matches!(leader_conn, Leader::Session(_)) {
            // As `git clone` does: objects first, then every ref in one `packed-refs`.
            let mut everything: Refs = (listed.into_iter())
                .filter(|(r, _)| !r.starts_with(journal::LOCAL) && !r.starts_with(crate::journal::stage::STAGING))
                .collect();
            match journal_tip {
                Some(tip) => everything.insert(journal::REF.to_owned(), tip),
                None => everything.remove(journal::REF),
            };
            let ours: Refs = local.iter().map(|(r, oid)| (r.clone(), *oid)).collect();
            log::debug!("{}: {} refs listed after {:?}", self.path.display(), everything.len(), self.started.elapsed());
            if self.fetch(leader_conn, main, &everything, &ours)?.is_none() {
                return Err(Error::Repo("the leader's refs moved during the full mirror; retrying".into()));
            }
            log::debug!("{}: objects fetched after {:?}", self.path.display(), self.started.elapsed());
            if main.is_reftable() {
                self.write_all(main, &everything, &local)?;
            } else {
                self.write_packed(&everything)?;
            }
            log::debug!("{}: refs written after {:?}", self.path.display(), self.started.elapsed());
        } else {
            let args = self.fetch_args(vec![
                "--prune".into(),
                "--atomic".into(),
                self.url.clone(),
                "+refs/*:refs/*".into(),
                "^refs/stargate/local/*".into(),
                "^refs/stargate/staging/*".into(),
                format!("^{}", journal::REF),
            ]);
            self.bounded(self.path, &args).run(self.deadline)?;
            // The position read before the listing (its objects came with `sync`'s fetch).
            let edit = match journal_tip {
                Some(tip) => Edit::set(journal::REF, tip),
                None => Edit::delete(journal::REF),
            };
            if journal_tip.is_some() || main.find(journal::REF).map_err(repo_err)?.is_some() {
                self.still_following()?;
                main.edit(&[edit]).map_err(repo_err)?;
            }
            if refs_changed > PACK_AFTER && !main.is_reftable() {
                // The fetch left that many loose refs; a later `git gc` would prune them one
                // transaction, and two hook runs, each. Packing only moves storage: no hooks.
                self.pack_refs()?;
            }
        }
        let mut lost = Vec::new();
        if !suspects.is_empty() {
            let oids: Vec<String> = suspects.iter().map(|s| s.oid.clone()).collect();
            let unreachable = git::unreachable(self.path, &oids, "refs/stargate/local/*")?;
            let mut drop = Vec::new();
            for s in suspects {
                if unreachable.contains(&s.oid) {
                    lost.push(s);
                } else {
                    drop.push(Edit::delete(&s.kept_as));
                }
            }
            main.edit(&drop).map_err(repo_err)?;
        }

        let tip = journal::tip(main)?;
        let applied = match tip {
            Some((id, _)) => self.newly_exposed(main, id, since_ms)?,
            None => Vec::new(),
        };
        let seq = tip.map_or(0, |(_, s)| s);
        Ok(Report {
            mode: Mode::Full,
            fallback: Some(why.to_owned()),
            refs_changed,
            leader_seq: seq,
            replica_seq: seq,
            applied,
            lost,
        })
    }

    fn pack_refs(&self) -> Result<(), Error> {
        let args = ["-c", "core.hooksPath=/dev/null", "pack-refs", "--all"].map(String::from);
        self.bounded(self.path, &args).show_progress(false).run(self.deadline)?;
        Ok(())
    }

    /// Make the replica's refs `refs` (every ref of the leader but `refs/stargate/local/*`,
    /// objects present) by writing `packed-refs` whole, as `git clone` does: one file and one
    /// rename however many refs there are, so the change is atomic and no hook runs per
    /// ref. The replica's own `refs/stargate/local/*` are kept as they are. Loose refs would
    /// hide packed values, so any are first folded into `packed-refs` (values unchanged).
    fn write_packed(&self, refs: &Refs) -> Result<(), Error> {
        if has_loose_refs(&self.path.join("refs"))? {
            self.pack_refs()?;
        }
        let path = self.path.join("packed-refs");
        let lock_path = self.path.join("packed-refs.lock");
        let mut lock = match File::options().write(true).create_new(true).open(&lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Repo(format!("{} exists: another git is writing refs", lock_path.display())));
            }
            Err(e) => return Err(repo_err(e)),
        };
        let unlock = Unlock(&lock_path);
        let mut entries: BTreeMap<String, ObjectId> = BTreeMap::new();
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(repo_err(e)),
        };
        for line in current.lines().filter(|l| !l.starts_with('#') && !l.starts_with('^')) {
            if let Some((hex, name)) = line.split_once(' ')
                && (name.starts_with(journal::LOCAL) || name.starts_with(crate::journal::stage::STAGING))
            {
                entries.insert(name.to_owned(), ObjectId::from_hex(hex.as_bytes()).map_err(repo_err)?);
            }
        }
        for (name, oid) in refs {
            gix::refs::FullName::try_from(name.as_str()).map_err(repo_err)?;
            entries.insert(name.clone(), *oid);
        }
        // Without `peeled`, git peels tags itself when asked; `sorted`: byte order of names.
        let mut text = String::with_capacity(entries.len() * 64 + 32);
        text.push_str("# pack-refs with: sorted \n");
        for (name, oid) in &entries {
            text.push_str(&format!("{oid} {name}\n"));
        }
        std::io::Write::write_all(&mut lock, text.as_bytes()).map_err(repo_err)?;
        lock.sync_all().map_err(repo_err)?;
        self.still_following()?;
        std::fs::rename(&lock_path, &path).map_err(repo_err)?;
        std::mem::forget(unlock);
        Ok(())
    }

    /// Reftable's `write_packed`: the replica's refs become `refs` (its own
    /// `refs/stargate/local/*` aside) in one `update-ref` transaction, which git writes as
    /// one table however many refs it moves.
    fn write_all(&self, main: &Store, refs: &Refs, local: &HashMap<String, ObjectId>) -> Result<(), Error> {
        // Each from the value listed at the start of this mirror (git's cheaper `create` for
        // most): a ref that moved meanwhile fails the whole transaction.
        let mut edits: Vec<Edit> = (refs.iter())
            .filter(|(r, oid)| local.get(*r) != Some(*oid))
            .map(|(r, oid)| Edit::update(r, local.get(r).copied(), Some(*oid)))
            .collect();
        edits.extend(
            local.iter().filter(|(r, _)| !refs.contains_key(*r)).map(|(r, oid)| Edit::update(r, Some(*oid), None)),
        );
        self.still_following()?;
        main.edit(&edits).map_err(repo_err)
    }

    /// Updates a full mirror just exposed: the journal entries accepted after `since_ms`,
    /// newest back, at most `journal::MAX_WALK`.
    fn newly_exposed(&self, main: &Store, tip: ObjectId, since_ms: u64) -> Result<Vec<Applied>, Error> {
        let exposed_ms = crate::clock::now_ms();
        let mut applied = Vec::new();
        let mut at = Some(tip);
        while let Some(id) = at {
            let (entry, parent) = journal::read(main, id)?;
            if entry.time_ms <= since_ms || applied.len() >= journal::MAX_WALK {
                break;
            }
            for (seq, u) in entry.applied().iter().rev().filter(|(_, u)| journal::journaled(&u.refname)) {
                applied.push(Applied { seq: *seq, refname: u.refname.clone(), accept_ms: entry.time_ms, exposed_ms });
            }
            at = parent;
        }
        applied.reverse();
        Ok(applied)
    }
}

/// Removes a lock file it was not told to keep.
struct Unlock<'a>(&'a Path);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Whether any loose ref exists under `dir` (`<repo>/refs`), the replica's own
/// `refs/stargate/local/*` aside.
fn has_loose_refs(dir: &Path) -> Result<bool, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(repo_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(repo_err)?;
        let path = entry.path();
        if path.ends_with("stargate/local") {
            continue;
        }
        let kind = entry.file_type().map_err(repo_err)?;
        if kind.is_file() && path.extension().is_none_or(|e| e != "lock") {
            return Ok(true);
        }
        if kind.is_dir() && has_loose_refs(&path)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn current_refs<'a>(main: &Store, names: impl Iterator<Item = &'a String>) -> Result<HashMap<String, ObjectId>, Error> {
    main.find_many(names.map(String::as_str)).map_err(repo_err)
}

/// Every ref a mirror manages (all but `refs/stargate/local/*`), with its object id.
fn all_refs(main: &Store) -> Result<HashMap<String, ObjectId>, Error> {
    Ok((main.prefixed("refs/").map_err(repo_err)?.into_iter())
        .filter(|(name, _)| journal::journaled(name) || name == journal::REF)
        .collect())
}

/// Is `old` reachable from `new`? A bounded walk: very long histories count as "no",
/// which only means a value is kept that need not have been.
fn is_ancestor(main: &Store, old: ObjectId, new: ObjectId) -> bool {
    if old == new {
        return true;
    }
    let Ok(walk) = main.repo().rev_walk([new]).all() else { return false };
    walk.take(1_000_000).filter_map(Result::ok).any(|info| info.id == old)
}

fn loose_ref_path(repo: &Path, name: &str) -> Result<PathBuf, Error> {
    crate::store::check_name(name).map_err(repo_err)?;
    Ok(repo.join(name))
}

fn write_loose_ref(repo: &Path, name: &str, oid: ObjectId) -> Result<(), Error> {
    let path = loose_ref_path(repo, name)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(repo_err)?;
    }
    std::fs::write(path, format!("{oid}\n")).map_err(repo_err)
}

fn read_loose_ref(repo: &Path, name: &str) -> Result<Option<ObjectId>, Error> {
    match std::fs::read_to_string(loose_ref_path(repo, name)?) {
        Ok(text) => ObjectId::from_hex(text.trim().as_bytes()).map(Some).map_err(repo_err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(repo_err(e)),
    }
}
