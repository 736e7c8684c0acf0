//! `git stargate agent`: one per node. Contends for the lease, bumps the epoch on every
//! acquisition, catches up to the previous leader before it accepts writes, hands over or
//! takes over leadership when an operator promotes a node, publishes this node's state for
//! the hooks and the health responder, and steps down at once when it sees a newer epoch or
//! cannot prove it still leads. It also runs the node's replica side (`mirror`).

mod catchup;
pub mod control;
mod election;
mod handover;
mod quorum;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::config::Config;
use crate::journal;
use crate::lead::audit;
use crate::lead::epoch::Highest;
use crate::lead::inflight;
use crate::lead::lease::{Claim, Lease, Lock, Record};
use crate::lead::node::{self, Role, State};
use crate::mirror;
use crate::mirror::replicator::Replicator;
use control::Control;

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Lease(#[from] crate::lead::lease::Error),
    #[error("cannot create {}: {source}", .path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write the sync token: {0}")]
    SyncToken(#[source] std::io::Error),
    /// A directory every user of the host may write (docs/ARCHITECTURE.md, Threat model).
    #[error(
        "{} is writable by every user of this host, who could then change leadership or this \
         node's state: chmod o-w it (docs/ARCHITECTURE.md, Threat model)",
        .0.display()
    )]
    Untrusted(PathBuf),
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Config(e) => e.into(),
            e => crate::error::Error::fatal(e),
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Run as `git stargate agent`, the agent's parent is git's wrapper process. git passes
/// SIGTERM on to it, but not its own death by SIGKILL: ask the kernel for a SIGTERM when
/// that parent ends, so that the agent never leads on as an orphan.
fn end_with_parent() {
    // SAFETY: getppid and prctl(PR_SET_PDEATHSIG) have no memory-safety preconditions.
    let parent = unsafe { libc::getppid() };
    let comm = crate::files::read_proc(parent.unsigned_abs(), "comm").unwrap_or_default();
    if comm.trim() != "git" {
        return;
    }
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    if unsafe { libc::getppid() } != parent {
        STOP.store(true, Ordering::SeqCst);
    }
}

/// The agent: what it was configured with, the handles it works through, and the state
/// that changes as it contends, leads and steps down.
struct Agent {
    settings: Settings,
    lock: Lock,
    lease: Lease,
    /// The highest epoch this node has seen, shared with `lock` and `lease`.
    highest: Arc<Highest>,
    replicator: Arc<Replicator>,
    control: Arc<Control>,
    role: Role,
    /// Epoch led (leader) or last seen (passive).
    epoch: u64,
    /// The record this node leads under (leader), or the last it read (passive).
    record: Option<Record>,
    /// Why the lease cannot be reached now, if it cannot (published for status and health).
    lease_problem: Option<String>,
    /// After being fenced, give the node named in the record time to take the lock.
    holdoff_until: Option<Instant>,
    /// A leader handing over: why it refuses writes meanwhile.
    draining: Option<String>,
    /// When the repositories under the root were last looked for (to mark new ones).
    scanned: Option<Instant>,
    /// The repositories found under the root so far (each looked at once).
    repos: crate::repos::Scan,
    /// Repositories found and not yet managed: at most `MANAGE_BUDGET` of work per tick.
    to_manage: std::collections::VecDeque<String>,
    /// Repositories already reported as in a format Stargate cannot serve.
    unsupported: std::collections::HashSet<String>,
    /// The last handoff record this leader refused (logged and counted once).
    refused_handoff: Option<crate::lead::handoff::Handoff>,
    /// Quorum mode: asks the peers, while this node leads, whether they follow it.
    quorum_watch: Option<quorum::Watch>,
    /// etcd: the watch of the leader key that wakes this loop when it changes.
    leader_watch: Option<Arc<watch::Watch>>,
    /// When a passive node last read the leader key and contended.
    contended: Option<Instant>,
}

/// What stays the same for the agent's life: its configuration, read once in `run`
/// (stargate(7) has every key), and when it started.
struct Settings {
    me: String,
    /// Where the repositories are.
    root: PathBuf,
    /// `<root>/.stargate`: the node state, the agent's socket, the change summary.
    state_dir: PathBuf,
    url: Option<String>,
    health: Option<String>,
    stale_after: Duration,
    interval: Duration,
    /// How catch-up syncs run (the agent's token, this node's settings).
    sync: mirror::Settings,
    catchup_timeout: Duration,
    catchup_connect_timeout: Duration,
    drain_timeout: Duration,
    promote_timeout: Duration,
    /// UDP addresses of the other nodes' agents, by node id.
    peers: HashMap<String, String>,
    /// Every node's base URL (`stargate.<id>.url`), by node id.
    node_urls: HashMap<String, String>,
    /// `stargate.journal.keep`, published for the hooks.
    journal_keep: u64,
    /// Whether git hands `git kv` changes to `proc-receive`, published for the hooks.
    kv_changes: bool,
    /// Quorum mode: who must stage a write, published for the hooks.
    quorum: Option<node::Quorum>,
    /// When this agent started (published with its state).
    started_ms: u64,
}

/// How often the agent looks for repositories created under the root since.
const SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// The time one tick of the loop spends managing repositories found (`manage_some`).
const MANAGE_BUDGET: Duration = Duration::from_millis(100);

pub fn run(cfg: &Config) -> Result<(), Error> {
    cfg.validate()?;
    end_with_parent();
    let me = cfg.node()?;
    let state_dir = cfg.state_dir()?;
    if let Err(source) = std::fs::create_dir_all(&state_dir) {
        return Err(Error::StateDir { path: state_dir, source });
    }
    trust_root(cfg, &state_dir)?;
    let token = node::new_sync_token(&state_dir).map_err(Error::SyncToken)?;
    // Everything this agent and its replica side read from the lease goes through it.
    let highest = Arc::new(Highest::open(&state_dir)?);
    let lock = Lock::from_config(cfg)?.with_highest(Arc::clone(&highest));
    let replicator = Replicator::new(cfg, token.clone(), lock.clone())?;
    // Agents hear each other on the UDP port of their health address.
    let signal_addr = |id: &str| {
        cfg.node_health(id)
            .ok()
            .flatten()
            .and_then(|h| h.strip_prefix("http://").map(|a| a.split('/').next().unwrap_or(a).to_owned()))
    };
    let peers = cfg.nodes().into_iter().filter(|id| *id != me).filter_map(|id| Some((id.clone(), signal_addr(&id)?)));
    let control = Control::start(&state_dir, signal_addr(&me).as_deref(), Arc::clone(&replicator));
    replicator.start();
    let settings = Settings {
        url: cfg.node_url(&me)?,
        health: cfg.node_health(&me)?,
        stale_after: cfg.lease_stale_after()?,
        interval: cfg.lease_interval()?,
        sync: mirror::Settings { catch_up: true, lock: lock.clone(), ..mirror::Settings::from_config(cfg, token)? },
        catchup_timeout: cfg.catchup_timeout()?,
        catchup_connect_timeout: cfg.catchup_connect_timeout()?,
        drain_timeout: cfg.promote_drain_timeout()?,
        promote_timeout: cfg.promote_timeout()?,
        peers: peers.collect(),
        node_urls: (cfg.nodes().into_iter())
            .filter_map(|id| Some((id.clone(), cfg.node_url(&id).ok().flatten()?)))
            .collect(),
        journal_keep: cfg.journal_keep()?,
        kv_changes: cfg.kv_changes_applied(),
        quorum: quorum_plan(cfg, &me)?,
        started_ms: now_ms(),
        root: cfg.root()?,
        state_dir,
        me,
    };
    let quorum_watch = (settings.quorum.clone()).map(|q| {
        let state_dir = settings.state_dir.clone();
        quorum::Watch::start(settings.me.clone(), q, state_dir, settings.interval, settings.stale_after)
    });
    let ttl = cfg.lease_ttl()?;
    let leader_watch = watch::Watch::start(lock.clone(), Arc::clone(&control), ttl, ttl);
    let mut agent = Agent {
        lease: lock.open_lease(ttl)?,
        lock,
        epoch: highest.seen().map_or(0, |r| r.epoch),
        highest,
        replicator,
        control,
        settings,
        role: Role::Passive,
        record: None,
        lease_problem: None,
        holdoff_until: None,
        draining: None,
        scanned: None,
        repos: Default::default(),
        to_manage: Default::default(),
        unsupported: Default::default(),
        refused_handoff: None,
        quorum_watch,
        leader_watch,
        contended: None,
    };
    install_signal_handlers();
    log::info!("agent for node {} started (pid {})", agent.settings.me, std::process::id());
    while !STOP.load(Ordering::SeqCst) {
        agent.tick();
        agent.control.wait(agent.settings.interval, &STOP);
    }
    agent.shut_down();
    Ok(())
}

/// Whoever can write the lease backend can lead or hand leadership over, and whoever can
/// write the state directory speaks for this agent to the hooks (docs/ARCHITECTURE.md,
/// Threat model). Refuse directories every user of the host may write; say when the lease
/// is etcd without TLS, which anyone who reaches etcd may write.
fn trust_root(cfg: &Config, state_dir: &std::path::Path) -> Result<(), Error> {
    let mut dirs = vec![state_dir.to_owned()];
    match cfg.lock()? {
        crate::config::LockSpec::File(path) => dirs.extend(path.parent().map(std::path::Path::to_owned)),
        crate::config::LockSpec::Etcd { tls: false, .. } => log::warn!(
            "stargate.lock is etcd:// without TLS: anyone who can reach etcd can change leadership; \
             use etcds:// with client certificates outside a lab (docs/ARCHITECTURE.md, Threat model)"
        ),
        crate::config::LockSpec::Etcd { tls: true, .. } => {}
    }
    for dir in dirs {
        if crate::files::writable_by_everyone(&dir).unwrap_or(false) {
            return Err(Error::Untrusted(dir));
        }
    }
    Ok(())
}

/// Quorum mode's plan for the hooks: how many must stage a write, and where to ask.
fn quorum_plan(cfg: &Config, me: &str) -> Result<Option<node::Quorum>, crate::config::Error> {
    if !cfg.replication_quorum_mode()? {
        return Ok(None);
    }
    let mut peers = Vec::new();
    for id in cfg.nodes().into_iter().filter(|id| id != me) {
        let health = cfg.node_health(&id)?.ok_or(crate::config::Error::Missing("stargate.<id>.health"))?;
        let addr = health.strip_prefix("http://").unwrap_or(&health);
        peers.push(node::QuorumPeer { node: id, health: addr.split('/').next().unwrap_or(addr).to_owned() });
    }
    let needed = cfg.replication_quorum()?;
    Ok(Some(node::Quorum { needed, timeout_ms: cfg.quorum_timeout()?.as_millis() as u64, peers }))
}

/// The most spare files one tick makes (`spare`): a tick's work stays short where creating
/// a file is slow (90 ms at 0.7 ms a file), and a drained pool of 256 is full again within two.
const SPARES_PER_TICK: usize = 128;

impl Agent {
    fn tick(&mut self) {
        if self.scanned.is_none_or(|t| t.elapsed() >= SCAN_INTERVAL) {
            self.mark_repositories();
        }
        self.manage_some();
        for (request, reply) in self.control.take_requests() {
            self.serve(request, reply);
        }
        match self.role {
            Role::Leader => {
                crate::journal::changes::maintain(&self.settings.state_dir);
                // The files the hooks take instead of creating them, made off the writes' path.
                let spares = self.settings.state_dir.join(crate::spare::DIR);
                if let Err(e) = crate::spare::refill(&spares, SPARES_PER_TICK) {
                    log::debug!("cannot make spare files in {}: {e}", spares.display());
                }
                self.sweep_orphans();
                self.check_still_leading();
                if self.role == Role::Leader {
                    self.hand_over_if_asked();
                }
                if self.role == Role::Leader && !self.lease.holds() {
                    self.take_the_lock_late();
                }
            }
            // On etcd, the key is read when its watch says it changed (or is not running),
            // and once a TTL otherwise; while nobody leads, every interval.
            Role::Passive => {
                let due = self.record.is_none()
                    || self.holdoff_until.is_some()
                    || self.lease_problem.is_some()
                    || self.leader_watch.as_ref().is_none_or(|w| w.due(self.contended));
                if due {
                    self.contended = Some(Instant::now());
                    self.contend();
                }
            }
        }
        self.report_refusals();
        self.publish();
    }

    /// Find the repositories under the root to manage (`managed::manage`: its hooks, its
    /// config, the marker that makes them fail closed even if this node's state directory
    /// disappears), queued for `manage_some`. Only repositories not seen before are looked
    /// at: the cost per scan is one `readdir`, not one per repository; at the agent's start
    /// every one is, which points the hooks of each at this binary again. A leader names
    /// each new one in its change summary, so that the replicas create it
    /// (`journal::changes`).
    fn mark_repositories(&mut self) {
        self.scanned = Some(Instant::now());
        let Ok(new) = self.repos.update(&self.settings.root) else { return };
        for repo in new.iter().filter(|r| r.readable) {
            if self.role == Role::Leader {
                crate::journal::changes::note(&self.settings.state_dir, &repo.name);
            }
            if let Some(why) =
                crate::repos::unsupported_in(&self.settings.root.join(&repo.name), self.settings.quorum.is_some())
                && self.unsupported.insert(repo.name.clone())
            {
                log::error!("{}: {}", repo.name, crate::repos::unsupported_refusal(why));
            }
            self.to_manage.push_back(repo.name.clone());
        }
        self.manage_some();
    }

    /// Manage the repositories found, as many as `MANAGE_BUDGET` allows this tick: one
    /// already managed costs a config read and a few `readlink`s, a new one runs `git
    /// config` twice, so that a node upgraded with 10,000 repositories does not hold its
    /// loop (its heartbeat, its lease) for minutes at its first start.
    fn manage_some(&mut self) {
        let started = Instant::now();
        let mut marked = 0;
        while started.elapsed() < MANAGE_BUDGET
            && let Some(name) = self.to_manage.pop_front()
        {
            match crate::managed::manage(&self.settings.root.join(&name)) {
                Ok(true) => marked += 1,
                Ok(false) => {}
                Err(e) => log::error!("{name}: not managed: {e}"),
            }
        }
        if marked > 0 {
            log::info!(
                "{marked} repositories newly managed (their hooks, config and marker set), {} to go",
                self.to_manage.len()
            );
        }
    }

    /// Transactions whose git process died between `prepared` and the outcome: journal
    /// their outcome as ended (the transaction is over, and the refs hold what it did), so
    /// that replicas read those refs again and no prepare stays open (`lead::inflight`). A
    /// prepare no longer open in its journal (an earlier leadership's, settled since) is
    /// only forgotten; the replicas are signalled as after any write. One `readdir` per
    /// interval.
    fn sweep_orphans(&self) {
        for note in inflight::orphans(&self.settings.state_dir) {
            let Some((prepare, first, last)) = note.prepare else {
                inflight::forget(&self.settings.state_dir, &note);
                continue;
            };
            let ended = journal::open(&note.git_dir).and_then(|git| {
                let Some(head) = journal::head(&git)? else { return Ok(false) };
                if !journal::open_prepares(&git, head)?.iter().any(|(id, _)| *id == prepare) {
                    return Ok(false);
                }
                journal::append_outcome(
                    &git,
                    self.epoch,
                    &self.settings.me,
                    prepare,
                    journal::Outcome::Ended,
                    self.settings.journal_keep,
                )?;
                if git.is_reftable() {
                    journal::publish(&git)?;
                }
                Ok(true)
            });
            match ended {
                Ok(ended) => {
                    if ended {
                        log::warn!(
                            "{}: git (pid {}) died with its write at seq {first}..{last} prepared; journaled as ended",
                            note.git_dir.display(),
                            note.pid
                        );
                        crate::journal::stage::unanchor(&note.git_dir, first..=last);
                        // The replicas read those refs again now, not at their next poll.
                        crate::journal::signal::peers(&self.settings.state_dir, &note.git_dir);
                    }
                    inflight::forget(&self.settings.state_dir, &note);
                }
                Err(e) => log::error!("{}: cannot journal an ended write's outcome: {e}", note.git_dir.display()),
            }
        }
    }

    /// Every readable repository's journal position (last sequence number), for the audit.
    fn positions(&self) -> std::collections::BTreeMap<String, u64> {
        let repos = crate::repos::list(&self.settings.root).unwrap_or_default();
        (repos.into_iter().filter(|r| r.readable))
            .filter_map(|r| {
                let git = journal::open(&self.settings.root.join(&r.name)).ok()?;
                Some((r.name, journal::tip(&git).ok().flatten().map_or(0, |(_, seq)| seq)))
            })
            .collect()
    }

    /// What this node puts in the record when it leads.
    fn claim(&self) -> Claim {
        Claim { node: self.settings.me.clone(), url: self.settings.url.clone(), health: self.settings.health.clone() }
    }

    fn publish(&mut self) {
        self.replicator.set_passive(self.role == Role::Passive);
        if let Some(watch) = &self.quorum_watch {
            watch.lead((self.role == Role::Leader).then_some(self.epoch));
        }
        // The hooks compare this with their own clock since boot: no wall clock involved.
        let valid_until_boot_ms =
            self.lease.valid_until().filter(|_| self.role == Role::Leader).map(|until| {
                crate::clock::boot_ms() + until.saturating_duration_since(Instant::now()).as_millis() as u64
            });
        let state = State {
            node: self.settings.me.clone(),
            lock: self.lock.describe(),
            stale_after_ms: self.settings.stale_after.as_millis() as u64,
            peers: self.settings.peers.values().cloned().collect(),
            pid: std::process::id(),
            role: self.role,
            epoch: self.epoch,
            heartbeat_ms: now_ms(),
            heartbeat_boot_ms: Some(crate::clock::boot_ms()),
            started_ms: self.settings.started_ms,
            draining: self.draining.clone(),
            record: self.record.clone(),
            valid_until_boot_ms,
            lease_problem: self.lease_problem.clone(),
            journal_keep: Some(self.settings.journal_keep),
            kv_changes: Some(self.settings.kv_changes),
            quorum: self.settings.quorum.clone(),
            version: Some(crate::version::VERSION.to_owned()),
        };
        if let Err(e) = node::write_state(&self.settings.state_dir, &state) {
            log::error!("cannot publish node state in {}: {e}", self.settings.state_dir.display());
            // Hooks will see stale state and refuse; do not also block failover by holding the lock.
            if self.role == Role::Leader {
                self.role = Role::Passive;
                self.draining = None;
                self.replicator.set_passive(true);
                self.lease.release();
                self.audit(audit::Event {
                    previous_epoch: Some(self.epoch),
                    ..self.event("step-down", "cannot publish node state")
                });
            }
        }
    }

    fn shut_down(&mut self) {
        if self.role == Role::Leader {
            log::info!("stopping: releasing the lease at epoch {}", self.epoch);
            self.step_down("released", "agent stopped");
        }
        // The state stays (passive, pid gone): hooks still find the lease and name the leader.
        self.publish();
        let _ = std::fs::remove_file(control::socket_path(&self.settings.state_dir));
        log::info!("agent stopped");
    }

    /// An audit event of this node at its current epoch.
    fn event(&self, event: &str, reason: impl Into<String>) -> audit::Event {
        audit::Event::new(&self.settings.me, event, self.epoch, reason)
    }

    fn audit(&self, event: audit::Event) {
        if let Err(e) = audit::append(&self.lock, Some(&self.settings.state_dir), &event) {
            log::error!("cannot append to the audit log: {e}");
        }
    }
}
