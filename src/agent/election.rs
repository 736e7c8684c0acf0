//! The lease loop: contend while passive, elect with a new epoch and catch up to the
//! previous leader before accepting writes, renew every interval while leading, step down
//! on a newer epoch or a lease that cannot be kept.

use std::time::Instant;

use super::Agent;
use super::control::Reply;
use crate::clock::now_ms;
use crate::journal;
use crate::lead::audit;
use crate::lead::lease::{Acquired, Error, Record};
use crate::lead::node::Role;

/// Quorum mode: how long a node that could not hear from enough peers to lead waits
/// before it contends again.
const QUORUM_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl Agent {
    pub(super) fn contend(&mut self) {
        let record = match self.lock.read_record() {
            Ok(r) => {
                self.lease_problem = None;
                r
            }
            // Older than this node has seen (restored from a backup): not followed, and
            // reported once (`report_refusals`). Contend on: taking the lease writes an epoch
            // after both, which every node accepts (docs/ARCHITECTURE.md, Fencing).
            Err(e @ Error::Behind(_)) => {
                self.lease_problem = Some(e.to_string());
                None
            }
            Err(e) => {
                self.lease_problem = Some(e.to_string());
                return log::error!("{e}; not contending");
            }
        };
        self.epoch = record.as_ref().map_or(self.epoch, |r| r.epoch);
        if record.is_some() {
            self.record = record;
        }
        if self.holdoff_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.holdoff_until = None;
        // Leadership promised to another node (a promotion in progress) is left to it, unless
        // the handoff names an epoch older than this node has seen (restored from a backup).
        if let Ok(Some(h)) = self.lock.read_handoff()
            && h.to != self.settings.me
            && !h.expired(now_ms())
            && self.highest.check_handoff(&h).is_ok()
        {
            return;
        }
        match self.lease.try_acquire(&self.claim()) {
            Ok(Some(acquired)) => {
                self.elect(acquired, &mut Reply::none(), false);
            }
            Ok(None) => {}
            Err(e @ Error::Behind(_)) => self.lease_problem = Some(e.to_string()),
            Err(e) => {
                self.lease_problem = Some(e.to_string());
                log::error!("{e}");
            }
        }
    }

    /// The lease is ours at a new epoch: catch up to the previous leader, still passive,
    /// then lead. Returns whether this node now leads.
    /// `verify`: a planned promotion, whose refs must then equal the drained leader's.
    pub(super) fn elect(&mut self, acquired: Acquired, reply: &mut Reply, verify: bool) -> bool {
        let Acquired { record, previous } = acquired;
        let started = Instant::now();
        self.epoch = record.epoch;
        self.record = Some(record.clone());
        self.lease_problem = None;
        if let Err(live) = self.wait_for_writes_in_flight() {
            let why = format!(
                "writes in flight on this node since its last leadership still run after {} ms (git pids {live:?})",
                self.settings.catchup_timeout.as_millis()
            );
            return self.not_leading(reply, &why, Some("settle-shortfall"), true);
        }
        // Quorum mode catches up from the furthest node instead (`adopt_staged`).
        let from_previous = self.settings.quorum.is_none() && !self.settings.catchup_timeout.is_zero();
        let last_leader = self.last_leader(previous.as_ref());
        if let Some(prev) = last_leader.as_ref().filter(|p| p.node != self.settings.me && from_previous) {
            let shortfall = self.catch_up(prev, &record, reply);
            if !shortfall.is_empty() {
                let listed: Vec<String> = shortfall.iter().map(|(r, why)| format!("{r} ({why})")).collect();
                self.audit(audit::Event {
                    previous_epoch: Some(prev.epoch),
                    previous_leader: Some(prev.node.clone()),
                    positions: self.positions(),
                    ..self.event("catch-up-shortfall", format!("leading without: {}", listed.join("; ")))
                });
            }
        }
        if let Err(why) = self.adopt_staged(previous.as_ref(), &record, reply, false) {
            return self.not_leading(reply, &why.to_string(), Some("quorum-shortfall"), true);
        }
        if let Some(prev) = previous.as_ref().filter(|_| verify)
            && let Err(why) = self.verify_against(prev)
        {
            return self.not_leading(reply, &why.to_string(), Some("promotion-refused"), false);
        }
        if let Err(why) = self.settle_open_writes(previous.as_ref()) {
            return self.not_leading(reply, &why.to_string(), Some("settle-shortfall"), true);
        }
        // An election elsewhere (a forced promotion) may have happened meanwhile.
        match self.lease.renew(&record) {
            Ok(Some(_)) => {}
            other => {
                log::warn!("lost the lease while catching up ({other:?}); not taking over");
                self.lease.release();
                return false;
            }
        }
        // Before the first write is accepted: the next election catches up from this node.
        if let Err(e) = self.lock.announce(&record) {
            let why = format!("cannot announce epoch {} as leading: {e}", record.epoch);
            return self.not_leading(reply, &why, None, true);
        }
        self.role = Role::Leader;
        self.replicator.count_election();
        let prev_leader = previous.as_ref().map(|r| r.node.clone());
        log::info!(
            "elected leader at epoch {} (previous: {}) after {} ms",
            record.epoch,
            prev_leader.as_deref().unwrap_or("none"),
            started.elapsed().as_millis()
        );
        self.audit(audit::Event {
            previous_epoch: previous.as_ref().map(|r| r.epoch),
            previous_leader: prev_leader,
            ..self.event("elected", "lease acquired")
        });
        self.start_journals();
        self.publish();
        true
    }

    /// Give every repository without a journal its first entry (see `journal::genesis`), and
    /// start a new generation of the change summary: replicas following another leader's
    /// summary, or an older one of ours, sync every repository once (`journal::changes`).
    pub(super) fn start_journals(&self) {
        if let Err(e) = crate::journal::changes::start(&self.settings.state_dir) {
            log::warn!("cannot start a change summary: {e}; replicas poll every repository");
        }
        let repos = match crate::repos::list(&self.settings.root) {
            Ok(repos) => repos,
            Err(e) => return log::error!("cannot list repositories under {}: {e}", self.settings.root.display()),
        };
        let peers: Vec<String> = self.settings.peers.values().cloned().collect();
        for repo in repos.iter().filter(|r| r.readable) {
            let started = journal::open(&self.settings.root.join(&repo.name))
                .and_then(|git| journal::genesis(&git, self.epoch, &self.settings.me));
            match started {
                Ok(true) => {
                    log::info!("{}: journal started", repo.name);
                    crate::journal::signal::send(&peers, &repo.name);
                }
                Ok(false) => {}
                Err(e) => log::error!("{}: cannot start its journal: {e}", repo.name),
            }
        }
    }

    /// An elected node that will not lead after all: say why (log, the promoting operator,
    /// the audit trail as `event`), let go of the lease, and with `hold_off` leave it to the
    /// others for a while before contending again. Returns false: not leading.
    fn not_leading(&mut self, reply: &mut Reply, why: &str, event: Option<&str>, hold_off: bool) -> bool {
        log::error!("not leading: {why}");
        reply.say(&format!("not leading: {why}"));
        if let Some(event) = event {
            self.audit(self.event(event, format!("not leading: {why}")));
        }
        self.lease.release();
        if hold_off {
            self.holdoff_until = Some(Instant::now() + QUORUM_RETRY);
        }
        false
    }

    /// The node to catch up from: the last one that led (announced it), which is not the
    /// record this election replaced when a node took the lease in between and lost it
    /// before it had caught up itself; that record when no leader ever announced.
    fn last_leader(&self, previous: Option<&Record>) -> Option<Record> {
        let leading = match self.lock.last_leading() {
            Ok(leading) => leading,
            Err(e) => {
                log::warn!("cannot read which node led last ({e}); catching up from the record's previous leader");
                None
            }
        };
        let Some(leading) = leading else { return previous.cloned() };
        if previous.is_some_and(|p| p.node == leading.node && p.epoch == leading.epoch) {
            return previous.cloned();
        }
        let url = self.settings.node_urls.get(&leading.node).cloned();
        log::info!("catching up from {} (led epoch {}), the last node that led", leading.node, leading.epoch);
        Some(Record { epoch: leading.epoch, node: leading.node, url, health: None, since_ms: 0 })
    }

    pub(super) fn check_still_leading(&mut self) {
        let Some(mine) = self.record.clone() else {
            return self.step_down("step-down", "no record to lead under");
        };
        match self.lease.renew(&mine) {
            Ok(Some(_)) => self.lease_problem = None,
            Ok(None) => {
                let now = self.lock.read_record().ok().flatten();
                let why = match &now {
                    Some(r) => format!("epoch {} now belongs to {}", r.epoch, r.node),
                    None => "nobody holds the lease now".to_owned(),
                };
                log::warn!("fenced: {why}; stepping down");
                self.step_down("fenced", &why);
                // Epochs never go backwards here: without a record, the last one stays.
                self.epoch = now.as_ref().map_or(self.epoch, |r| r.epoch);
                self.record = now;
                self.holdoff_until = Some(Instant::now() + self.settings.interval * 3);
            }
            // The record went back to an older epoch (restored from a backup): this node
            // cannot lead under it; it contends at once for an epoch after both, and
            // `report_refusals` says why.
            Err(e @ Error::Behind(_)) => {
                self.lease_problem = Some(e.to_string());
                self.step_down("step-down", &e.to_string());
            }
            Err(e) => {
                self.lease_problem = Some(e.to_string());
                // An etcd lease stays ours until its deadline; the hooks stop at it on their own.
                if self.lease.valid_until().is_some_and(|until| Instant::now() < until) {
                    return log::warn!("cannot renew the lease ({e}); still valid, trying again");
                }
                log::error!("{e}; stepping down");
                self.step_down("step-down", &e.to_string());
            }
        }
    }

    /// A leader without the lock (forced promotion) takes it as soon as the deposed holder
    /// lets go, and ends the handoff; until then it keeps the handoff fresh, so that no
    /// other node takes the lock first.
    pub(super) fn take_the_lock_late(&mut self) {
        match self.lease.take_late() {
            Ok(true) => {
                log::info!("holding the lease's lock now (epoch {})", self.epoch);
                if let Err(e) = self.lock.clear_handoff(&self.settings.me) {
                    log::warn!("cannot end the handoff: {e}");
                }
            }
            Ok(false) => match self.lock.read_handoff() {
                Ok(Some(mut h)) if h.to == self.settings.me => {
                    h.heartbeat_ms = now_ms();
                    if let Err(e) = self.lock.write_handoff(&h) {
                        log::warn!("cannot refresh the handoff: {e}");
                    }
                }
                _ => {}
            },
            Err(e) => log::error!("{e}"),
        }
    }

    /// Log, count and audit each record, handoff or leader key refused as older than what
    /// this node has seen, once however often it is read again.
    pub(super) fn report_refusals(&mut self) {
        for refusal in self.highest.take_refusals() {
            log::error!("{refusal}");
            self.replicator.count(|c| c.epochs_refused += 1);
            self.audit(audit::Event {
                previous_epoch: Some(refusal.epoch),
                previous_leader: refusal.node.clone(),
                ..self.event("epoch-refused", refusal.to_string())
            });
        }
    }

    /// Stop accepting writes first (state), then let go of the lease.
    pub(super) fn step_down(&mut self, event: &str, reason: &str) {
        let led = self.epoch;
        self.role = Role::Passive;
        self.draining = None;
        self.publish();
        self.lease.release();
        self.audit(audit::Event {
            previous_epoch: Some(led),
            previous_leader: Some(self.settings.me.clone()),
            ..self.event(event, reason)
        });
    }
}
