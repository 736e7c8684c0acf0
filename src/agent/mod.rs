//! `git stargate agent`: one per node. Contends for the lease, bumps the epoch on every
//! acquisition, publishes this node's state for the hooks and the health responder, and
//! steps down at once when it sees a newer epoch or cannot prove it still leads.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lead::audit;
use crate::lead::lease::{self, Lease, Record};
use crate::lead::node::{self, Role, State};
use crate::replication::journal;
use crate::replication::replicator::Replicator;

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

struct Agent {
    me: String,
    /// Where the repositories are.
    root: PathBuf,
    url: Option<String>,
    health: Option<String>,
    lock: PathBuf,
    state_dir: PathBuf,
    stale_after: Duration,
    interval: Duration,
    lease: Lease,
    replicator: Arc<Replicator>,
    peers: Vec<String>,
    role: Role,
    /// Epoch led (leader) or last seen (passive).
    epoch: u64,
    started_ms: u64,
    /// After being fenced, give the node named in the record time to take the lock.
    holdoff_until: Option<Instant>,
    /// When the repositories under the root were last looked for (to mark new ones).
    scanned: Option<Instant>,
}

/// How often the agent looks for repositories created under the root since.
const SCAN_INTERVAL: Duration = Duration::from_secs(5);

pub fn run(cfg: &Config) -> Result<()> {
    cfg.validate()?;
    let me = cfg.node()?;
    let state_dir = cfg.state_dir()?;
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| Error::Fatal(format!("cannot create {}: {e}", state_dir.display())))?;
    let token =
        node::new_sync_token(&state_dir).map_err(|e| Error::Fatal(format!("cannot write the sync token: {e}")))?;
    let replicator = Replicator::new(cfg, token)?;
    // Peers are told about writes on the UDP port of their health address.
    let signal_addr = |id: &str| {
        cfg.node_health(id)
            .ok()
            .flatten()
            .and_then(|h| h.strip_prefix("http://").map(|a| a.trim_end_matches('/').to_owned()))
    };
    let peers = cfg.nodes().iter().filter(|id| **id != me).filter_map(|id| signal_addr(id)).collect();
    replicator.start(signal_addr(&me));
    let lock = cfg.lock()?;
    let mut agent = Agent {
        url: cfg.node_url(&me)?,
        health: cfg.node_health(&me)?,
        lease: Lease::open(&lock)?,
        replicator,
        peers,
        lock,
        state_dir,
        stale_after: cfg.lease_stale_after()?,
        interval: cfg.lease_interval()?,
        role: Role::Passive,
        epoch: 0,
        started_ms: now_ms(),
        holdoff_until: None,
        scanned: None,
        root: cfg.root()?,
        me,
    };
    install_signal_handlers();
    log::info!("agent for node {} started (pid {})", agent.me, std::process::id());
    while !STOP.load(Ordering::SeqCst) {
        agent.tick();
        sleep_unless_stopped(agent.interval);
    }
    agent.shut_down();
    Ok(())
}

fn sleep_unless_stopped(total: Duration) {
    let until = Instant::now() + total;
    while !STOP.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

impl Agent {
    fn tick(&mut self) {
        if self.scanned.is_none_or(|t| t.elapsed() >= SCAN_INTERVAL) {
            self.mark_repositories();
        }
        match self.role {
            Role::Leader => self.check_still_leading(),
            Role::Passive => self.contend(),
        }
        self.publish();
    }

    fn contend(&mut self) {
        let record = match lease::read_record(&self.lock) {
            Ok(r) => r,
            Err(e) => return log::error!("{e}; not contending"),
        };
        self.epoch = record.as_ref().map_or(0, |r| r.epoch);
        if self.holdoff_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.holdoff_until = None;
        match self.lease.try_acquire() {
            Ok(true) => self.elect(record),
            Ok(false) => {}
            Err(e) => log::error!("{e}"),
        }
    }

    fn elect(&mut self, previous: Option<Record>) {
        let epoch = previous.as_ref().map_or(0, |r| r.epoch) + 1;
        let record = Record {
            epoch,
            node: self.me.clone(),
            url: self.url.clone(),
            health: self.health.clone(),
            since_ms: now_ms(),
        };
        if let Err(e) = lease::write_record(&self.lock, &record) {
            log::error!("cannot record epoch {epoch}: {e}; releasing the lease");
            self.release();
            return;
        }
        self.role = Role::Leader;
        self.epoch = epoch;
        self.replicator.count_election();
        let prev_leader = previous.as_ref().map(|r| r.node.as_str());
        log::info!("elected leader at epoch {epoch} (previous: {})", prev_leader.unwrap_or("none"));
        self.audit("elected", previous.as_ref().map(|r| r.epoch), prev_leader, "lease acquired");
        self.start_journals();
    }

    /// Mark every repository under the root as managed, so that its hooks fail closed even
    /// if this node's state directory disappears (see `repos::MARKER`).
    fn mark_repositories(&mut self) {
        self.scanned = Some(Instant::now());
        let Ok(repos) = crate::repos::list(&self.root) else { return };
        let mut marked = 0;
        for repo in repos.iter().filter(|r| r.readable) {
            match crate::repos::mark(&self.root.join(&repo.name)) {
                Ok(true) => marked += 1,
                Ok(false) => {}
                Err(e) => log::error!("{}: cannot mark it as managed: {e}", repo.name),
            }
        }
        if marked > 0 {
            log::info!("marked {marked} repositories as managed");
        }
    }

    /// Give every repository without a journal its first entry (see `journal::genesis`).
    fn start_journals(&self) {
        let repos = match crate::repos::list(&self.root) {
            Ok(repos) => repos,
            Err(e) => return log::error!("cannot list repositories under {}: {e}", self.root.display()),
        };
        for repo in repos.iter().filter(|r| r.readable) {
            let started =
                journal::open(&self.root.join(&repo.name)).and_then(|git| journal::genesis(&git, self.epoch, &self.me));
            match started {
                Ok(true) => {
                    log::info!("{}: journal started", repo.name);
                    crate::replication::signal::send(&self.peers, &repo.name);
                }
                Ok(false) => {}
                Err(e) => log::error!("{}: cannot start its journal: {e}", repo.name),
            }
        }
    }

    fn check_still_leading(&mut self) {
        match lease::read_record(&self.lock) {
            Ok(Some(r)) if r.epoch == self.epoch && r.node == self.me => {}
            Ok(r) => {
                let (node, epoch) = r.map_or(("none".into(), 0), |r| (r.node, r.epoch));
                let why = format!("epoch {epoch} now belongs to {node}");
                log::warn!("fenced: {why}; stepping down");
                self.step_down("fenced", &why);
                self.epoch = epoch;
                self.holdoff_until = Some(Instant::now() + self.interval * 3);
            }
            Err(e) => {
                log::error!("{e}; stepping down");
                self.step_down("step-down", &e.to_string());
            }
        }
    }

    /// Stop accepting writes first (state), then let go of the lock.
    fn step_down(&mut self, event: &str, reason: &str) {
        let led = self.epoch;
        self.role = Role::Passive;
        self.publish();
        self.release();
        self.audit(event, Some(led), Some(&self.me.clone()), reason);
    }

    fn release(&self) {
        if let Err(e) = self.lease.release() {
            log::error!("{e}");
        }
    }

    fn publish(&mut self) {
        self.replicator.set_passive(self.role == Role::Passive);
        let state = State {
            node: self.me.clone(),
            lock: self.lock.clone(),
            stale_after_ms: self.stale_after.as_millis() as u64,
            peers: self.peers.clone(),
            pid: std::process::id(),
            role: self.role,
            epoch: self.epoch,
            heartbeat_ms: now_ms(),
            started_ms: self.started_ms,
        };
        if let Err(e) = node::write_state(&self.state_dir, &state) {
            log::error!("cannot publish node state in {}: {e}", self.state_dir.display());
            // Hooks will see stale state and refuse; do not also block failover by holding the lock.
            if self.role == Role::Leader {
                self.role = Role::Passive;
                self.replicator.set_passive(true);
                self.release();
                self.audit("step-down", Some(self.epoch), None, "cannot publish node state");
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
        log::info!("agent stopped");
    }

    fn audit(&self, event: &str, previous_epoch: Option<u64>, previous_leader: Option<&str>, reason: &str) {
        let event = audit::Event {
            time_ms: now_ms(),
            node: &self.me,
            event,
            epoch: self.epoch,
            previous_epoch,
            previous_leader,
            reason,
        };
        if let Err(e) = audit::append(&self.lock, &event) {
            log::error!("cannot append to the audit log: {e}");
        }
    }
}
