//! The agent's replica side: while this node is passive, mirror from the leader every
//! repository it wrote, as soon as the leader signals the write, and every repository
//! the leader's change summary names (read every `stargate.sync.interval`; see `changes`).
//! The idle cost is that one request per interval, whatever the number of repositories;
//! every repository is also synced once per `stargate.sync.sweepInterval`, and, when the
//! leader keeps no summary, once per interval as before. Repositories the summary names
//! that this node lacks are created. One sync per repository at a time (signals coalesce; a
//! sync finding the repository's lock taken is skipped, not queued), at most
//! `MAX_RUNNING` at once, each under the watchdog, failures retried with backoff.
//!
//! It publishes what it knows in `<root>/.stargate/replication.json` for the health
//! responder and `git stargate status|lag`, sends StatsD metrics and lag alerts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::offset::{self, Offset};
use super::reach::{self, Reach, Reachability, Step};
use crate::clock::now_ms;
use crate::config::{self, Config};
use crate::journal::changes;
use crate::lead::audit;
use crate::lead::lease::Lock;
use crate::mirror::alert::Alerter;
use crate::mirror::backoff::Policy;
use crate::mirror::lag::{self, Event, Judged, Windows};
use crate::mirror::stats::{Counters, LagHistogram, Statsd};
use crate::mirror::upstream::{self, Standing, Upstream};
use crate::mirror::{self, Mode, Target};
use crate::wire::git::ErrorClass;

/// How often a replica estimates the leader's clock offset; and how soon it tries again
/// while the current leader's is not known yet (lag samples wait for it).
const CLOCK_INTERVAL: Duration = Duration::from_secs(5);
const CLOCK_RETRY: Duration = Duration::from_millis(500);

/// Lag samples held while the leader's clock offset is unknown: at most this many, for at
/// most `HOLD`; the others are not counted.
const MAX_HELD: usize = 100_000;
const HOLD: Duration = Duration::from_secs(60);

/// Signalled syncs of one repository start at most this often: signals coalesce into one
/// flag, so a flood of forged or repeated datagrams costs at most one sync per gap.
const SIGNAL_GAP: Duration = Duration::from_millis(50);

/// Syncs running at once: a sweep of 10,000 repositories must not start 10,000 threads.
const MAX_RUNNING: usize = 8;

/// `replication.json` lists every repository, so it is written at most once per this much
/// time per repository (at most a second apart): at once on a node with a few, once a
/// second during a sweep of thousands, never the whole file after each of their syncs.
const PUBLISH_GAP_PER_REPO: Duration = Duration::from_millis(1);

/// How soon a sync looks again at a new leader still catching up.
const NOT_LEADING_YET: Duration = Duration::from_millis(100);

/// How often the repositories under the root are looked for (one `readdir` each time).
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// The least time between two reads of the leader's change summary, however many hints
/// name repositories this node lacks.
const MIN_LOOK_GAP: Duration = Duration::from_millis(100);

/// What `replication.json` holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Published {
    pub updated_ms: u64,
    pub counters: Counters,
    pub repos: HashMap<String, RepoStatus>,
    pub windows: Vec<Judged>,
    pub aggregate: Aggregate,
    pub alerting: bool,
    pub lost: Vec<LostRef>,
    /// Per namespace: every update's lag since the agent started (`/metrics`).
    #[serde(default)]
    pub lag_histograms: HashMap<String, LagHistogram>,
    /// The leader's clock against this replica's, by which every lag is corrected.
    #[serde(default)]
    pub clock_offset: Option<Offset>,
    /// Whether the leader's health responder answers this replica (`reach`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Reachability>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Aggregate {
    pub count: usize,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RepoStatus {
    pub leader_seq: u64,
    pub replica_seq: u64,
    pub lag_operations: u64,
    /// Lag of the last update this replica exposed.
    pub lag_seconds: Option<f64>,
    pub last_sync_ms: Option<u64>,
    pub last_result: Option<String>,
    pub last_mode: Option<Mode>,
    pub errors: u64,
    /// Full mirrors of this repository since the agent started.
    #[serde(default)]
    pub fallbacks: u64,
    /// When the last successful sync began: every update the leader accepted before it is
    /// exposed here (wall clock, ms).
    #[serde(default)]
    pub good_since_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostRef {
    pub repo: String,
    pub refname: String,
    pub oid: String,
    pub kept_as: String,
    pub at_ms: u64,
}

pub fn published_path(state_dir: &Path) -> PathBuf {
    state_dir.join("replication.json")
}

/// The most `replication.json` may hold: a few hundred bytes per repository.
const MAX_PUBLISHED: u64 = 256 << 20;

/// Why `replication.json` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
    #[error("replication figures unreadable: {0}")]
    Unreadable(#[from] crate::files::ReadError),
    #[error("replication figures {} are corrupt: {source}", .path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    /// Written by a newer agent (docs/ARCHITECTURE.md, Formats and versions).
    #[error("{0}")]
    Format(crate::format::Unknown),
}

/// What the agent last published, `None` before it first did; read as a regular file only,
/// and bounded (`files::read_regular`).
pub fn read_published(state_dir: &Path) -> Result<Option<Published>, PublishedError> {
    let path = published_path(state_dir);
    match crate::files::read_regular(&path, MAX_PUBLISHED) {
        Ok(bytes) => match crate::format::REPLICATION.from_json(path.display(), &bytes) {
            Ok(published) => Ok(Some(published)),
            Err(crate::format::JsonError::Unknown(e)) => Err(PublishedError::Format(e)),
            Err(crate::format::JsonError::Json(source)) => Err(PublishedError::Corrupt { path, source }),
        },
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The published figures when they can be read; `None` also when they cannot.
pub fn published(state_dir: &Path) -> Option<Published> {
    read_published(state_dir).ok().flatten()
}

#[derive(Default)]
struct Repo {
    due: Option<Instant>,
    /// A signal came since the last sync started: sync again (at most every `SIGNAL_GAP`).
    signalled: bool,
    last_start: Option<Instant>,
    running: bool,
    attempt: u32,
    retry_at: Option<Instant>,
    /// Start of the last successful sync: every update accepted before it is exposed.
    good_since_ms: u64,
    status: RepoStatus,
    /// Quorum mode: a stage of it runs; another was asked for meanwhile.
    staging: bool,
    stage_again: bool,
}

struct Shared {
    repos: HashMap<String, Repo>,
    counters: Counters,
    passive: bool,
    windows: Windows,
    /// Per namespace, for the StatsD gauge: the worst lag exposed this interval, and the last.
    interval_lag: HashMap<String, f64>,
    last_lag: HashMap<String, f64>,
    lost: Vec<LostRef>,
    lag_histograms: HashMap<String, LagHistogram>,
    clock_offset: Option<Offset>,
    /// The leader whose clock cannot be measured (no health address): its lag is counted on
    /// the two clocks as they are.
    unmeasurable: Option<String>,
    /// Lag samples of updates exposed before their leader's clock offset was measured:
    /// counted once it is (`measure_clock`), never on the two clocks as they are.
    held: Vec<Held>,
    /// The leader's reachability, while passive (`watch_leader`).
    reach: Option<Reach>,
    /// The syncs of every repository after the leader became reachable again.
    catch_up: Option<CatchUp>,
    /// Each repository's journal position when the leader became unreachable.
    outage_from: HashMap<String, u64>,
    /// Syncs running now.
    running: usize,
    /// The leader's change summary could be read at the last look: repositories then wait
    /// for it, or for the sweep, instead of polling every interval.
    summary: bool,
    /// A sync ended since `replication.json` was last written.
    dirty: bool,
    /// Something may have become due since the scheduler last looked (`poke`).
    poked: bool,
    /// A hint named a repository this node lacks: read the leader's summary now.
    look_now: bool,
    /// Something came from the leader (a signal, a sync) while it counted as unreachable:
    /// probe it now rather than at the end of the backoff.
    probe_now: bool,
    published: Option<Instant>,
    scan: crate::repos::Scan,
    /// Whether this node mirrors from its upstream now (`watch_upstream`).
    upstream: Standing,
}

/// The leader reachable again: every repository synced once, then said how many entries
/// came since it became unreachable (`from`: each repository's position then) and how long
/// after its return.
struct CatchUp {
    leader: String,
    started: Instant,
    pending: HashSet<String>,
    from: HashMap<String, u64>,
}

/// An update exposed before its leader's clock offset was known.
struct Held {
    repo: String,
    leader: String,
    applied: mirror::Applied,
}

pub struct Replicator {
    me: String,
    root: PathBuf,
    state_dir: PathBuf,
    lock: Lock,
    interval: Duration,
    sweep: Duration,
    metrics_interval: Duration,
    policy: Policy,
    settings: mirror::Settings,
    statsd: Option<String>,
    alert: Option<(String, String)>,
    /// The alert limits, added to the lag histogram's bucket bounds.
    limit_bounds: [f64; 2],
    /// `stargate.<me>.upstream`: the node mirrored from instead of the leader, while usable.
    upstream: Option<Upstream>,
    /// The agents of the replicas whose upstream this node is, told after each sync.
    children: Vec<String>,
    shared: Mutex<Shared>,
    wake: Condvar,
}

impl Replicator {
    pub fn new(cfg: &Config, token: String, lock: Lock) -> Result<Arc<Replicator>, config::Error> {
        let limits = lag::Limits {
            window_ms: cfg.alert_window()?.as_millis() as u64,
            p50_s: cfg.alert_p50()?.as_secs_f64(),
            p99_s: cfg.alert_p99()?.as_secs_f64(),
        };
        let alert = match (cfg.alert_url()?, cfg.alert_routing_key()) {
            (Some(url), Some(key)) => Some((url, key.to_owned())),
            (Some(_), None) => return Err(config::Error::Missing("stargate.alert.routingKey")),
            _ => None,
        };
        Ok(Arc::new(Replicator {
            me: cfg.node()?,
            root: cfg.root()?,
            state_dir: cfg.state_dir()?,
            lock,
            interval: cfg.sync_interval()?,
            sweep: cfg.sync_sweep_interval()?,
            metrics_interval: cfg.metrics_interval()?,
            policy: Policy::from_config(cfg)?,
            settings: mirror::Settings::from_config(cfg, token)?,
            statsd: cfg.statsd()?,
            alert,
            limit_bounds: [limits.p50_s, limits.p99_s],
            upstream: Upstream::from_config(cfg, &cfg.node()?)?,
            children: upstream::children(cfg, &cfg.node()?),
            shared: Mutex::new(Shared {
                repos: HashMap::new(),
                counters: Counters::default(),
                passive: false,
                windows: Windows::new(limits, now_ms()),
                interval_lag: HashMap::new(),
                last_lag: HashMap::new(),
                lost: Vec::new(),
                lag_histograms: HashMap::new(),
                clock_offset: None,
                unmeasurable: None,
                held: Vec::new(),
                reach: None,
                catch_up: None,
                outage_from: HashMap::new(),
                running: 0,
                summary: false,
                dirty: false,
                poked: true,
                look_now: false,
                probe_now: false,
                published: None,
                scan: Default::default(),
                upstream: Standing::default(),
            }),
            wake: Condvar::new(),
        }))
    }

    /// Start the scheduler and the reporter.
    pub fn start(self: &Arc<Self>) {
        let me = Arc::clone(self);
        std::thread::spawn(move || me.schedule());
        let me = Arc::clone(self);
        std::thread::spawn(move || me.report());
        let me = Arc::clone(self);
        std::thread::spawn(move || me.measure_clock());
        let me = Arc::clone(self);
        std::thread::spawn(move || me.follow_changes());
        let me = Arc::clone(self);
        std::thread::spawn(move || me.watch_leader());
        if self.upstream.is_some() {
            let me = Arc::clone(self);
            std::thread::spawn(move || me.watch_upstream());
        }
    }

    /// A cascading replica: ask the upstream's `/healthz` every `upstream::PROBE_INTERVAL`;
    /// mirror from it while it answers, from the leader otherwise (said when it changes).
    fn watch_upstream(self: Arc<Self>) {
        let Some(up) = self.upstream.clone() else { return };
        loop {
            let answer = up.probe();
            let mut shared = self.lock_shared();
            let was = shared.upstream.answering;
            shared.upstream.answering = answer.is_ok();
            match (&answer, was) {
                (Err(why), true) => {
                    log::warn!("upstream {} does not answer ({why}): mirroring from the leader", up.node)
                }
                (Ok(()), false) => log::info!("upstream {} answers: mirroring from it", up.node),
                _ => {}
            }
            drop(shared);
            std::thread::sleep(upstream::PROBE_INTERVAL);
        }
    }

    /// While passive, probe the leader's health responder (`reach`): an unreachable leader
    /// is said at once, each retry with its backoff, and its return, after which every
    /// repository is synced and the catch-up's length said.
    fn watch_leader(self: Arc<Self>) {
        loop {
            let passive = self.lock_shared().passive;
            let record = self.lock.read_record().ok().flatten().filter(|r| passive && r.node != self.me);
            let addr = record.as_ref().and_then(|r| r.health.as_deref()).and_then(|h| h.strip_prefix("http://"));
            let (Some(record), Some(addr)) = (&record, addr) else {
                let mut shared = self.lock_shared();
                shared.reach = None;
                shared.catch_up = None;
                drop(shared);
                std::thread::sleep(reach::PROBE_INTERVAL);
                continue;
            };
            let addr = addr.split('/').next().unwrap_or(addr);
            self.lock_shared().probe_now = false;
            let answer =
                crate::wire::http::get(addr, "/healthz", Instant::now() + reach::PROBE_TIMEOUT, reach::PROBE_TIMEOUT);
            let leader = &record.node;
            let mut shared = self.lock_shared();
            if shared.reach.as_ref().is_none_or(|r| r.state.leader != *leader) {
                shared.reach = Some(Reach::new(leader));
                shared.dirty = true;
            }
            let Some(known) = shared.reach.as_mut() else { continue };
            let step = match answer {
                Ok(_) => known.answered(now_ms()),
                Err(e) => known.missed(e.to_string(), now_ms(), &self.policy, self.interval),
            };
            let wait = match step {
                Step::Wait(next) => next,
                Step::Lost { reason, next } => {
                    log::warn!(
                        "leader {leader} unreachable: {reason}; retry 1 of {} in {}",
                        self.policy.attempts,
                        secs(next)
                    );
                    shared.counters.leader_unreachable += 1;
                    shared.catch_up = None;
                    shared.outage_from = shared.repos.iter().map(|(n, r)| (n.clone(), r.status.replica_seq)).collect();
                    shared.dirty = true;
                    next
                }
                Step::Retry { attempt, of, next, reason } => {
                    let since = shared.reach.as_ref().and_then(|r| r.state.unreachable_since_ms).unwrap_or(now_ms());
                    log::warn!(
                        "leader {leader} unreachable for {} ({reason}): retry {attempt} of {of} in {}",
                        secs(Duration::from_millis(now_ms().saturating_sub(since))),
                        secs(next)
                    );
                    shared.counters.leader_retries += 1;
                    shared.dirty = true;
                    next
                }
                Step::GaveUp { next } => {
                    log::warn!("leader {leader} still unreachable: out of retries; probing every {}", secs(next));
                    shared.counters.leader_retries += 1;
                    shared.dirty = true;
                    next
                }
                Step::Back { down_ms } => {
                    log::info!("leader {leader} reachable again after {}", secs(Duration::from_millis(down_ms)));
                    let pending: HashSet<String> = shared.repos.keys().cloned().collect();
                    for repo in shared.repos.values_mut() {
                        repo.signalled = true;
                    }
                    let from = std::mem::take(&mut shared.outage_from);
                    shared.catch_up = Some(CatchUp { leader: leader.clone(), started: Instant::now(), pending, from });
                    shared.poked = true;
                    shared.dirty = true;
                    self.wake.notify_all();
                    reach::PROBE_INTERVAL
                }
            };
            // Until the next probe, or sooner when the leader was heard from meanwhile.
            drop(self.wait_until(shared, Instant::now() + wait, |s| s.probe_now));
        }
    }

    /// Wait on the shared state until `woken` says so or `until` passes; the guard back.
    fn wait_until<'a>(
        &self,
        mut shared: std::sync::MutexGuard<'a, Shared>,
        until: Instant,
        woken: fn(&Shared) -> bool,
    ) -> std::sync::MutexGuard<'a, Shared> {
        while !woken(&shared) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            shared = self.wake.wait_timeout(shared, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        shared
    }

    /// While passive, estimate the leader's clock offset every `CLOCK_INTERVAL` (every
    /// `CLOCK_RETRY` until the current leader's is known), and count the lag samples that
    /// waited for it.
    fn measure_clock(self: Arc<Self>) {
        loop {
            let passive = self.lock_shared().passive;
            let record = self.lock.read_record().ok().flatten().filter(|r| passive && r.node != self.me);
            let addr = record.as_ref().and_then(|r| r.health.as_deref()).and_then(|h| h.strip_prefix("http://"));
            if let (Some(record), None) = (&record, addr) {
                let mut shared = self.lock_shared();
                shared.unmeasurable = Some(record.node.clone());
                self.count_held(&mut shared);
            }
            if let (Some(record), Some(addr)) = (&record, addr) {
                let addr = addr.split('/').next().unwrap_or(addr);
                match offset::measure(&record.node, addr, 5, Duration::from_millis(500)) {
                    Ok(o) => {
                        let mut shared = self.lock_shared();
                        let moved = shared.clock_offset.as_ref().is_none_or(|old| {
                            old.leader != o.leader || old.offset_ms.abs_diff(o.offset_ms) > o.uncertainty_ms.max(5)
                        });
                        if moved {
                            log::info!(
                                "{}'s clock is {:+} ms from this node's (± {} ms)",
                                o.leader,
                                o.offset_ms,
                                o.uncertainty_ms
                            );
                        }
                        shared.clock_offset = Some(o);
                        shared.unmeasurable = None;
                        self.count_held(&mut shared);
                    }
                    Err(e) => log::debug!("cannot measure {}'s clock: {e}", record.node),
                }
            }
            let known = {
                let mut shared = self.lock_shared();
                self.count_held(&mut shared);
                record.is_some_and(|r| shared.clock_offset.as_ref().is_some_and(|o| o.leader == r.node))
            };
            std::thread::sleep(if known { CLOCK_INTERVAL } else { CLOCK_RETRY });
        }
    }

    /// The held lag samples whose leader's clock is now measured (or cannot be), counted;
    /// those held longer than `HOLD` (a leader never measured) dropped.
    fn count_held(&self, shared: &mut Shared) {
        if shared.held.is_empty() {
            return;
        }
        let (offset, unmeasurable) = (shared.clock_offset.clone(), shared.unmeasurable.clone());
        let oldest = now_ms().saturating_sub(HOLD.as_millis() as u64);
        let mut dropped = 0;
        for h in std::mem::take(&mut shared.held) {
            let offset = offset.as_ref().filter(|o| o.leader == h.leader);
            if offset.is_some() || unmeasurable.as_ref() == Some(&h.leader) {
                let lag_s = self.observe(shared, &h.repo, &h.applied, offset);
                if let Some(repo) = shared.repos.get_mut(&h.repo) {
                    repo.status.lag_seconds = Some(lag_s);
                }
                shared.dirty = true;
            } else if h.applied.exposed_ms >= oldest {
                shared.held.push(h);
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            log::warn!("{dropped} lag samples not counted: their leader's clock could not be measured");
        }
    }

    /// One update's lag, both times on this node's clock (the accept time is the leader's,
    /// moved by `offset`), into the windows, the histograms and the gauges.
    fn observe(&self, shared: &mut Shared, name: &str, a: &mirror::Applied, offset: Option<&Offset>) -> f64 {
        let accept_ms = offset.map_or(a.accept_ms, |o| o.local(a.accept_ms));
        let lag_s = a.exposed_ms.saturating_sub(accept_ms) as f64 / 1000.0;
        shared.windows.add(accept_ms, lag_s);
        let ns = namespace(name, &a.refname);
        (shared.lag_histograms.entry(ns.clone()))
            .or_insert_with(|| LagHistogram::new(&self.limit_bounds))
            .observe(lag_s);
        let worst = shared.interval_lag.entry(ns.clone()).or_insert(0.0);
        *worst = worst.max(lag_s);
        shared.last_lag.insert(ns, lag_s);
        lag_s
    }

    /// The leader signalled a write to repository `name` (see `signal`): sync it soon.
    /// Returns false when `name` is no repository of this node. Only the first signal
    /// since the last sync wakes the scheduler: a flood costs a flag, not a scan per datagram.
    pub fn signal(&self, name: &str) -> bool {
        let mut shared = self.lock_shared();
        let Some(repo) = shared.repos.get_mut(name) else { return false };
        let first = !repo.signalled;
        repo.signalled = true;
        shared.counters.signals += 1;
        let unreachable = shared.reach.as_ref().is_some_and(|r| !r.state.reachable);
        if unreachable {
            shared.probe_now = true;
        }
        drop(shared);
        if first || unreachable {
            self.poke();
        }
        true
    }

    /// Quorum mode: the leader waits for repository `name`'s newest entry to be staged
    /// here. Stages run one at a time per repository; one asked for meanwhile runs after.
    pub fn stage(self: &Arc<Self>, name: &str) -> bool {
        let mut shared = self.lock_shared();
        let passive = shared.passive;
        let Some(repo) = shared.repos.get_mut(name) else { return false };
        if !passive {
            return true;
        }
        if repo.staging {
            repo.stage_again = true;
            return true;
        }
        repo.staging = true;
        drop(shared);
        let (me, name) = (Arc::clone(self), name.to_owned());
        std::thread::spawn(move || me.run_stages(&name));
        true
    }

    /// Quorum mode: a stage is a sync at once (`mirror::sync` stages what it walks past with
    /// its outcome still to come), retried while another sync of the repository runs,
    /// since that one may have looked before the leader's entry was there.
    fn run_stages(&self, name: &str) {
        loop {
            let started = now_ms();
            let deadline = Instant::now() + self.settings.timeout;
            let result = loop {
                let attempt = self.target().and_then(|t| {
                    mirror::sync(&self.root.join(name), name, &t, &self.settings).map(|r| (t, r)).map_err(Failure::Sync)
                });
                match attempt {
                    Err(Failure::Sync(mirror::Error::Locked)) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    other => break other,
                }
            };
            match result {
                Ok((target, report)) => {
                    let mut guard = self.lock_shared();
                    let event = self.account(&mut guard, name, &target, report);
                    if let Some(repo) = guard.repos.get_mut(name) {
                        repo.good_since_ms = repo.good_since_ms.max(started);
                        repo.status.good_since_ms = repo.good_since_ms;
                    }
                    guard.dirty = true;
                    drop(guard);
                    if let Some(event) = event
                        && let Err(e) = audit::append(&self.lock, Some(&self.state_dir), &event)
                    {
                        log::error!("cannot append to the audit log: {e}");
                    }
                }
                Err(Failure::Sync(mirror::Error::Locked)) => {}
                Err(why) => log::warn!("{name}: cannot stage: {why}"),
            }
            let mut shared = self.lock_shared();
            let Some(repo) = shared.repos.get_mut(name) else { return };
            if !repo.stage_again {
                repo.staging = false;
                return;
            }
            repo.stage_again = false;
        }
    }

    /// Count an event of the agent's control side (`agent::control`, the handoff checks).
    pub fn count(&self, what: fn(&mut Counters)) {
        what(&mut self.lock_shared().counters);
    }

    pub fn set_passive(&self, passive: bool) {
        self.lock_shared().passive = passive;
        self.poke();
    }

    pub fn count_election(&self) {
        self.lock_shared().counters.elections += 1;
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Start the syncs that are due. The repositories are looked at only when something may
    /// have become due: a poke (a signal, the summary, a sync's end, a new repository) or the
    /// earliest due time seen at the last look; an idle node with 10,000 repositories does not
    /// walk them five times a second.
    fn schedule(self: Arc<Self>) {
        let mut rescanned: Option<Instant> = None;
        let mut next_due: Option<Instant> = None;
        loop {
            if rescanned.is_none_or(|t| t.elapsed() > RESCAN_INTERVAL) {
                self.rescan();
                rescanned = Some(Instant::now());
            }
            if self.lock_shared().dirty {
                self.publish_soon();
            }
            let mut shared = self.lock_shared();
            let now = Instant::now();
            let look = shared.poked || next_due.is_none_or(|t| t <= now);
            if shared.passive && look {
                let shared = &mut *shared;
                shared.poked = false;
                let mut earliest = now + Duration::from_secs(3600);
                for (name, repo) in shared.repos.iter_mut() {
                    if shared.running >= MAX_RUNNING {
                        // A sync's end pokes the scheduler.
                        earliest = now + Duration::from_millis(200);
                        break;
                    }
                    if repo.running {
                        continue;
                    }
                    // A signal is never dropped, only deferred: a sync that started before a
                    // write was journaled must be followed by another.
                    let gap_left = repo.last_start.map_or(Duration::ZERO, |t| SIGNAL_GAP.saturating_sub(now - t));
                    // A pending retry runs when its backoff ends; otherwise a signal or the poll.
                    let at = match repo.retry_at {
                        Some(at) => at,
                        None if repo.signalled => now + gap_left,
                        None => repo.due.unwrap_or(now),
                    };
                    if at > now {
                        earliest = earliest.min(at);
                        continue;
                    }
                    repo.running = true;
                    shared.running += 1;
                    repo.signalled = false;
                    repo.last_start = Some(now);
                    let (me, name) = (Arc::clone(&self), name.clone());
                    std::thread::spawn(move || me.run_one(&name));
                }
                next_due = Some(earliest);
            } else if !shared.passive {
                // A leader syncs nothing: what poked it is looked at once it is passive
                // (`set_passive` pokes), not spun on meanwhile.
                shared.poked = false;
                next_due = None;
            }
            // At most a second: the rescan and the publication are looked after here too.
            let wait = next_due.map_or(Duration::from_millis(200), |t| t.saturating_duration_since(now));
            let wait = wait.clamp(Duration::from_millis(1), Duration::from_secs(1));
            if !shared.poked {
                let _ = self.wake.wait_timeout(shared, wait);
            }
        }
    }

    /// Something may have become due: the scheduler looks at the repositories again.
    fn poke(&self) {
        self.lock_shared().poked = true;
        self.wake.notify_all();
    }

    fn rescan(&self) {
        let mut scan = std::mem::take(&mut self.lock_shared().scan);
        let found = scan.update(&self.root);
        let mut shared = self.lock_shared();
        shared.scan = scan;
        let Ok(found) = found else { return };
        for r in found {
            shared.repos.entry(r.name).or_default();
            shared.poked = true;
        }
    }

    /// While passive, read the leader's change summary every interval and sync what it
    /// names; a reset (first look, another leader, a generation this node cannot follow)
    /// syncs every repository once. Without a summary, every repository polls at the interval.
    fn follow_changes(self: Arc<Self>) {
        let mut cursor: Option<(String, u64, changes::Cursor)> = None;
        loop {
            let passive = self.lock_shared().passive;
            let record = self.lock.read_record().ok().flatten().filter(|r| passive && r.node != self.me);
            let Some(record) = record else {
                cursor = None;
                std::thread::sleep(self.interval.min(Duration::from_secs(1)));
                continue;
            };
            let following = cursor.as_ref().filter(|(l, e, _)| *l == record.node && *e == record.epoch).map(|c| c.2);
            let addr = record.health.as_deref().and_then(|h| h.strip_prefix("http://"));
            let answer = match addr {
                Some(addr) => {
                    let addr = addr.split('/').next().unwrap_or(addr);
                    let timeout = Duration::from_secs(2);
                    crate::wire::http::get(addr, &changes::Cursor::query(following), Instant::now() + timeout, timeout)
                        .map_err(Unfollowed::from)
                        .and_then(|(code, body)| match code {
                            200 => Ok(changes::parse(&body)?),
                            _ => Err(Unfollowed::Status { code, body: body.trim().to_owned() }),
                        })
                }
                None => Err(Unfollowed::NoHealth(record.node.clone())),
            };
            match answer {
                Ok(found) => {
                    if found.reset {
                        log::info!(
                            "{}'s change summary: {} repositories; syncing every repository once",
                            record.node,
                            found.names.len()
                        );
                    }
                    self.changed(&found, &record);
                    cursor = Some((record.node.clone(), record.epoch, found.cursor));
                }
                Err(e) => {
                    let mut shared = self.lock_shared();
                    if shared.summary || cursor.is_some() {
                        log::warn!("cannot read {}'s change summary ({e}): polling every repository", record.node);
                    }
                    shared.summary = false;
                    let poll = Instant::now() + self.interval;
                    for repo in shared.repos.values_mut() {
                        repo.due = Some(repo.due.map_or(poll, |d| d.min(poll)));
                    }
                    shared.poked = true;
                    cursor = None;
                }
            }
            self.wait_for_next_look();
        }
    }

    /// Until the next read of the summary: the interval, or less when a hint named a
    /// repository this node lacks (`look_for`), but never sooner than `MIN_LOOK_GAP`.
    fn wait_for_next_look(&self) {
        std::thread::sleep(MIN_LOOK_GAP);
        let until = Instant::now() + self.interval.saturating_sub(MIN_LOOK_GAP);
        let mut shared = self.lock_shared();
        shared.look_now = false;
        let mut shared = self.wait_until(shared, until, |s| s.look_now);
        shared.look_now = false;
    }

    /// A hint named repository `name`, which this node lacks: it may be new on the leader
    /// (`git stargate create`), so read the leader's summary now rather than at the
    /// interval. What the summary names is checked against the leader's Git server.
    pub fn look_for(&self, name: &str) {
        let mut shared = self.lock_shared();
        if shared.passive && !shared.repos.contains_key(name) {
            shared.look_now = true;
            self.wake.notify_all();
        }
    }

    /// What one answer of the summary asks of this node: sync the repositories it names
    /// (every one on a reset), creating those this node lacks.
    fn changed(&self, found: &changes::Changes, record: &crate::lead::lease::Record) {
        let unknown: Vec<&String> = {
            let mut shared = self.lock_shared();
            shared.summary = true;
            if found.reset {
                // Those never synced yet are due anyway.
                for repo in shared.repos.values_mut().filter(|r| r.due.is_some() || r.running) {
                    repo.signalled = true;
                }
            }
            let mut unknown = Vec::new();
            for name in &found.names {
                match shared.repos.get_mut(name) {
                    Some(repo) => repo.signalled = true,
                    None => unknown.push(name),
                }
            }
            unknown
        };
        for name in unknown {
            if let Err(e) = self.create(name, record) {
                log::warn!("{name}: the leader {} has it, this node cannot create it: {e}", record.node);
            }
        }
        self.poke();
    }

    /// A repository the leader has and this node lacks: make an empty one, managed
    /// (`managed::manage`), and sync it. Only when the leader does
    /// serve it (asked directly, not taken from the summary's word).
    fn create(&self, name: &str, record: &crate::lead::lease::Record) -> Result<(), Uncreated> {
        let path = self.root.join(name);
        if path.join("HEAD").exists() {
            self.lock_shared().repos.entry(name.to_owned()).or_default().signalled = true;
            return Ok(());
        }
        let base = record.url.as_deref().ok_or(Uncreated::NoUrl)?;
        let format = mirror::served_format(&self.root, name, base, &self.settings).map_err(Uncreated::Unserved)?;
        crate::managed::create_empty(&self.root, name, format.as_deref())?;
        log::info!("{name}: created, as on the leader {}", record.node);
        self.lock_shared().repos.entry(name.to_owned()).or_default().signalled = true;
        Ok(())
    }

    /// One scheduled sync of repository `name`, and what it tells: the next due time,
    /// retries with backoff, the figures. The audit trail is written once the shared state
    /// is let go.
    fn run_one(&self, name: &str) {
        let started = now_ms();
        let target = self.target();
        let via = target.as_ref().ok().and_then(|t| t.via.clone());
        let result = target.and_then(|target| {
            mirror::sync(&self.root.join(name), name, &target, &self.settings)
                .map(|r| (target, r))
                .map_err(Failure::Sync)
        });
        let mut guard = self.lock_shared();
        let shared = &mut *guard;
        shared.running = shared.running.saturating_sub(1);
        shared.dirty = true;
        let next_poll = if shared.summary { self.sweep } else { self.interval };
        let Some(repo) = shared.repos.get_mut(name) else { return };
        repo.running = false;
        repo.status.last_sync_ms = Some(now_ms());
        let now = Instant::now();
        let mut audit = None;
        match result {
            Ok((target, report)) => {
                if repo.attempt > 0 {
                    log::info!("{name}: recovered after {} retries", repo.attempt);
                }
                if report.mode != Mode::Idle && !self.children.is_empty() {
                    crate::journal::signal::send(&self.children, name);
                }
                audit = self.account(shared, name, &target, report);
                let Some(repo) = shared.repos.get_mut(name) else { return };
                repo.good_since_ms = started;
                repo.status.good_since_ms = started;
                repo.attempt = 0;
                repo.retry_at = None;
                repo.due = Some(now + jitter(next_poll));
                if shared.reach.as_ref().is_some_and(|r| !r.state.reachable) {
                    shared.probe_now = true;
                }
            }
            Err(Failure::Sync(mirror::Error::Locked)) => {
                shared.counters.skips += 1;
                log::info!("{name}: sync skipped: another sync of it is running");
                repo.due = Some(now + self.interval);
            }
            // The new leader is catching up: soon, with no retry counted.
            Err(Failure::NotLeading(leader)) => {
                log::debug!("{name}: {leader} has not caught up yet");
                repo.due = Some(now + NOT_LEADING_YET);
            }
            // From the upstream: the leader serves it at once, and the next syncs for a while.
            Err(failure) if via.is_some() => {
                log::warn!(
                    "{name}: sync from upstream {} failed ({failure}): mirroring from the leader for {}",
                    via.as_deref().unwrap_or_default(),
                    secs(upstream::HOLD)
                );
                shared.upstream.held_until = Some(now + upstream::HOLD);
                repo.signalled = true;
            }
            Err(failure) => self.failed(shared, name, &failure, now),
        }
        drop(guard);
        if let Some(event) = audit
            && let Err(e) = audit::append(&self.lock, Some(&self.state_dir), &event)
        {
            log::error!("cannot append to the audit log: {e}");
        }
        self.poke();
        self.publish_soon();
    }

    /// A sync of `name` failed: retried after a backoff when its error is transient and
    /// attempts are left, else due again at the next interval.
    fn failed(&self, shared: &mut Shared, name: &str, failure: &Failure, now: Instant) {
        let (text, retryable, class) = match failure {
            Failure::Sync(mirror::Error::Git(e)) => (e.to_string(), self.policy.is_retryable(e), e.class()),
            // Another writer's lock, or one a killed writer left (removed once stale): again.
            Failure::Sync(mirror::Error::Prepare(_) | mirror::Error::Overtaken) => {
                (failure.to_string(), true, ErrorClass::Transport)
            }
            other => (other.to_string(), false, ErrorClass::Permanent),
        };
        if class == ErrorClass::Timeout {
            shared.counters.timeouts += 1;
            log::warn!("{name}: sync killed by the watchdog after {:?}", self.settings.timeout);
        }
        let Some(repo) = shared.repos.get_mut(name) else { return };
        repo.status.errors += 1;
        repo.status.last_result = Some(text.clone());
        let class = class.name();
        if retryable && repo.attempt < self.policy.attempts {
            let delay = self.policy.delay(repo.attempt);
            shared.counters.retries += 1;
            repo.attempt += 1;
            log::warn!(
                "{name}: sync failed ({class}): {text}; retry {} of {} in {} ms",
                repo.attempt,
                self.policy.attempts,
                delay.as_millis()
            );
            repo.retry_at = Some(now + delay);
        } else {
            shared.counters.failures += 1;
            log::error!(
                "{name}: sync failed ({class}, {}): {text}",
                if retryable { "out of retries" } else { "not retried" }
            );
            repo.attempt = 0;
            repo.retry_at = None;
            repo.due = Some(now + self.interval);
        }
    }

    /// What one successful sync of repository `name` tells: counters, lag of every update
    /// it exposed, kept lost commits, the repository's status. Returns the audit event of
    /// the kept commits, for the caller to write once it let go of the shared state.
    fn account(
        &self,
        shared: &mut Shared,
        name: &str,
        target: &Target,
        report: mirror::Report,
    ) -> Option<audit::Event> {
        shared.counters.syncs += 1;
        if report.mode == Mode::Full {
            shared.counters.fallbacks += 1;
        }
        if report.mode != Mode::Idle {
            log::info!(
                "{name}: {:?} sync from {}: {} refs, seq {}{}",
                report.mode,
                target.source(),
                report.refs_changed,
                report.leader_seq,
                report.fallback.as_ref().map(|f| format!(" ({f})")).unwrap_or_default()
            );
        }
        // Both times on this node's clock: the accept time is the leader's. Until the
        // leader's clock is measured, the samples wait (a skew of seconds is no lag).
        let offset = shared.clock_offset.clone().filter(|o| o.leader == target.leader);
        let measured = offset.is_some() || shared.unmeasurable.as_ref() == Some(&target.leader);
        let mut last_lag = None;
        for a in report.applied {
            if measured {
                last_lag = Some(self.observe(shared, name, &a, offset.as_ref()));
            } else if shared.held.len() < MAX_HELD {
                shared.held.push(Held { repo: name.to_owned(), leader: target.leader.clone(), applied: a });
            }
        }
        let event = (!report.lost.is_empty()).then(|| {
            let kept: Vec<String> =
                report.lost.iter().map(|l| format!("{} at {} as {}", l.refname, l.oid, l.kept_as)).collect();
            let mut event = audit::Event::new(
                &self.me,
                "lost-commits",
                target.epoch,
                format!("{name}: not on the leader {}, kept: {}", target.leader, kept.join(", ")),
            );
            event.previous_leader = Some(target.leader.clone());
            event.positions.insert(name.to_owned(), report.replica_seq);
            event
        });
        for l in &report.lost {
            log::warn!("{name}: {} at {} was not on the leader; kept as {}", l.refname, l.oid, l.kept_as);
            shared.lost.push(LostRef {
                repo: name.to_owned(),
                refname: l.refname.clone(),
                oid: l.oid.clone(),
                kept_as: l.kept_as.clone(),
                at_ms: now_ms(),
            });
        }
        let Some(repo) = shared.repos.get_mut(name) else { return event };
        if report.mode == Mode::Full {
            repo.status.fallbacks += 1;
        }
        if let Some(lag_s) = last_lag {
            repo.status.lag_seconds = Some(lag_s);
        }
        repo.status.leader_seq = report.leader_seq;
        repo.status.replica_seq = report.replica_seq;
        repo.status.lag_operations = report.leader_seq.saturating_sub(report.replica_seq);
        repo.status.last_result = Some("ok".into());
        repo.status.last_mode = Some(report.mode);
        if let Some(c) = shared.catch_up.as_mut().filter(|c| c.leader == target.leader)
            && c.pending.remove(name)
            && c.pending.is_empty()
        {
            let entries: u64 = (shared.repos.iter())
                .map(|(n, r)| {
                    r.status.replica_seq.saturating_sub(c.from.get(n).copied().unwrap_or(r.status.replica_seq))
                })
                .sum();
            log::info!(
                "caught up {entries} entries from {} (written while it was unreachable) {:.1} s after it answered again",
                c.leader,
                c.started.elapsed().as_secs_f64()
            );
            shared.catch_up = None;
        }
        event
    }

    /// Write `replication.json` now, or, within `PUBLISH_GAP_PER_REPO` per repository of the
    /// last time, once the gap has passed (the scheduler looks every 200 ms): a sweep of
    /// many repositories must not write a file listing all of them after each one.
    fn publish_soon(&self) {
        let shared = self.lock_shared();
        let gap = (PUBLISH_GAP_PER_REPO * shared.repos.len() as u32).min(Duration::from_secs(1));
        let due = shared.published.is_none_or(|t| t.elapsed() >= gap);
        drop(shared);
        if due {
            self.publish();
        }
    }

    /// Write `replication.json` from the current figures.
    fn publish(&self) {
        let published = {
            let mut shared = self.lock_shared();
            shared.dirty = false;
            shared.published = Some(Instant::now());
            let (count, p50_s, p99_s) = shared.windows.aggregate();
            Published {
                updated_ms: now_ms(),
                counters: shared.counters,
                repos: shared.repos.iter().map(|(n, r)| (n.clone(), r.status.clone())).collect(),
                windows: shared.windows.judged().to_vec(),
                aggregate: Aggregate { count, p50_s, p99_s },
                alerting: shared.windows.alerting,
                lost: shared.lost.clone(),
                lag_histograms: shared.lag_histograms.clone(),
                clock_offset: shared.clock_offset.clone(),
                leader: shared.reach.as_ref().map(|r| r.state.clone()),
            }
        };
        if let Ok(bytes) = crate::format::REPLICATION.to_json(&published)
            && let Err(e) = crate::files::write_atomic(&published_path(&self.state_dir), &bytes, 0o644, false)
        {
            log::warn!("cannot publish replication status: {e}");
        }
    }

    /// The leader to mirror from, read from the lease record at every sync.
    fn target(&self) -> Result<Target, Failure> {
        let record = self
            .lock
            .read_record()
            .map_err(|e| Failure::Other(e.to_string()))?
            .ok_or_else(|| Failure::Other("no leader elected yet".into()))?;
        if record.node == self.me {
            return Err(Failure::Other("this node leads".into()));
        }
        // Still catching up from the nodes (this one among them): what this node holds beyond
        // it must stay for it to take over.
        if !self.lock.is_leading(&record).map_err(|e| Failure::Other(e.to_string()))? {
            return Err(Failure::NotLeading(record.node));
        }
        let via = (self.upstream.as_ref())
            .filter(|up| up.node != record.node && self.lock_shared().upstream.usable())
            .map(|up| (up.node.clone(), up.base_url.clone()));
        let base_url = match &via {
            Some((_, url)) => url.clone(),
            None => record.url.clone().ok_or_else(|| {
                Failure::Other(format!("leader {0} has no stargate.{0}.url (stargate(7))", record.node))
            })?,
        };
        Ok(Target { leader: record.node, epoch: record.epoch, base_url, peer: false, via: via.map(|v| v.0) })
    }

    /// Every metrics interval: judge lag windows (alerts), publish, send StatsD.
    fn report(self: Arc<Self>) {
        let alerter = self.alert.clone().map(|(url, key)| Alerter::new(url, key, self.me.clone()));
        let mut statsd = self
            .statsd
            .as_ref()
            .and_then(|addr| Statsd::new(addr, &self.me).map_err(|e| log::warn!("statsd {addr}: {e}")).ok());
        let mut unsent: Vec<Event> = Vec::new();
        loop {
            let (lag, counters, events) = {
                let mut shared = self.lock_shared();
                let shared = &mut *shared;
                // While leading, nothing lags behind this node: its windows complete at once.
                let complete_ms = if shared.passive {
                    shared.repos.values().map(|r| r.good_since_ms).min().unwrap_or(0)
                } else {
                    now_ms()
                };
                let events = shared.windows.evaluate(now_ms(), complete_ms);
                let caught_up = shared.repos.values().all(|r| r.status.lag_operations == 0);
                let lag: Vec<(String, f64)> = (shared.last_lag.iter())
                    .map(|(ns, last)| {
                        (
                            ns.clone(),
                            shared.interval_lag.get(ns).copied().unwrap_or(if caught_up { 0.0 } else { *last }),
                        )
                    })
                    .collect();
                shared.interval_lag.clear();
                (lag, shared.counters, events)
            };
            self.publish();
            if let Some(s) = statsd.as_mut() {
                s.report(&lag, counters);
            }
            for e in &events {
                match e {
                    Event::Trigger { percentile, observed_s, .. } => {
                        log::error!("replication lag alert: {percentile} {observed_s:.1} s for two consecutive windows")
                    }
                    Event::Resolve { .. } => log::info!("replication lag recovered"),
                }
            }
            unsent.extend(events);
            if let Some(a) = &alerter {
                let leader = self.lock.read_record().ok().flatten().map(|r| r.node).unwrap_or_default();
                while let Some(event) = unsent.first() {
                    match a.send(event, &leader) {
                        Ok(()) => {
                            unsent.remove(0);
                        }
                        Err(e) => {
                            log::warn!("alert not delivered, will retry: {e}");
                            break;
                        }
                    }
                }
            } else {
                unsent.clear();
            }
            std::thread::sleep(self.metrics_interval);
        }
    }
}

/// Why the leader's change summary was not read (the replica then polls every repository).
#[derive(Debug, thiserror::Error)]
enum Unfollowed {
    #[error("{0} has no health address")]
    NoHealth(String),
    #[error(transparent)]
    Http(#[from] crate::wire::http::Error),
    /// Its health responder answered another status: the code and the body.
    #[error("HTTP {code}: {body}")]
    Status { code: u16, body: String },
    #[error(transparent)]
    Parse(#[from] changes::ParseError),
}

/// Why a repository the leader's summary names was not created here.
#[derive(Debug, thiserror::Error)]
enum Uncreated {
    #[error("the leader has no stargate.<id>.url")]
    NoUrl,
    /// The leader's Git server was not asked, or does not serve it.
    #[error(transparent)]
    Unserved(mirror::Error),
    #[error(transparent)]
    Create(#[from] crate::managed::CreateError),
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Sync(mirror::Error),
    #[error("{0}")]
    Other(String),
    #[error("{0} has not caught up yet")]
    NotLeading(String),
}

/// `base` less up to a tenth, at random: repositories synced together (a sweep) do not all
/// come due together again.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(1.0 - rand::random::<f64>() / 10.0)
}

/// The StatsD `namespace` tag of an update: the kv namespace, or the repository.
fn namespace(repo: &str, refname: &str) -> String {
    refname.strip_prefix("refs/kv/").map_or_else(|| repo.trim_end_matches(".git").to_owned(), str::to_owned)
}

/// A duration as the log says it: "4.2 s".
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
