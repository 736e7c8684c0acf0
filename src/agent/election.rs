//! The lease loop: contend while passive, elect with a new epoch (after catching up to the
//! previous leader), check every interval while leading, step down on a newer epoch.

use std::time::Instant;

use super::Agent;
use super::control::Reply;
use crate::clock::now_ms;
use crate::lead::handoff;
use crate::lead::lease::{self, Record};
use crate::lead::node::Role;
use crate::replication::journal;

impl Agent {
    pub(super) fn contend(&mut self) {
        let record = match lease::read_record(&self.lock) {
            Ok(r) => r,
            Err(e) => return log::error!("{e}; not contending"),
        };
        self.epoch = record.as_ref().map_or(0, |r| r.epoch);
        if self.holdoff_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.holdoff_until = None;
        // Leadership promised to another node (a promotion in progress) is left to it.
        if let Ok(Some(h)) = handoff::read(&self.lock)
            && h.to != self.me
            && !h.expired(now_ms())
        {
            return;
        }
        match self.lease.try_acquire() {
            Ok(true) => {
                self.elect(record, &mut Reply::none());
            }
            Ok(false) => {}
            Err(e) => log::error!("{e}"),
        }
    }

    /// The lock is ours: catch up to the previous leader, then record the next epoch and
    /// lead. Returns whether this node now leads.
    pub(super) fn elect(&mut self, previous: Option<Record>, reply: &mut Reply) -> bool {
        self.locked = true;
        let started = Instant::now();
        if let Some(prev) = previous.as_ref().filter(|p| p.node != self.me && !self.catchup_timeout.is_zero()) {
            let shortfall = self.catch_up(prev, reply);
            // An election elsewhere (a forced promotion) may have happened meanwhile.
            let now = lease::read_record(&self.lock).ok().flatten();
            if now.as_ref() != previous.as_ref() {
                log::warn!("the leader record changed while catching up; not taking over");
                self.release();
                return false;
            }
            if !shortfall.is_empty() {
                let mut event = self.event(
                    "catch-up-shortfall",
                    format!(
                        "leading without: {}",
                        shortfall.iter().map(|(r, why)| format!("{r} ({why})")).collect::<Vec<_>>().join("; ")
                    ),
                );
                event.previous_epoch = Some(prev.epoch);
                event.previous_leader = Some(prev.node.clone());
                event.positions = self.positions();
                self.audit(event);
            }
        }
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
            return false;
        }
        self.role = Role::Leader;
        self.epoch = epoch;
        self.replicator.count_election();
        let prev_leader = previous.as_ref().map(|r| r.node.clone());
        log::info!(
            "elected leader at epoch {epoch} (previous: {}) after {} ms",
            prev_leader.as_deref().unwrap_or("none"),
            started.elapsed().as_millis()
        );
        self.audit(crate::lead::audit::Event {
            previous_epoch: previous.as_ref().map(|r| r.epoch),
            previous_leader: prev_leader,
            ..self.event("elected", "lease acquired")
        });
        self.start_journals();
        self.publish();
        true
    }

    /// Give every repository without a journal its first entry (see `journal::genesis`).
    pub(super) fn start_journals(&self) {
        let repos = match crate::repos::list(&self.root) {
            Ok(repos) => repos,
            Err(e) => return log::error!("cannot list repositories under {}: {e}", self.root.display()),
        };
        let peers: Vec<String> = self.peers.values().cloned().collect();
        for repo in repos.iter().filter(|r| r.readable) {
            let started =
                journal::open(&self.root.join(&repo.name)).and_then(|git| journal::genesis(&git, self.epoch, &self.me));
            match started {
                Ok(true) => {
                    log::info!("{}: journal started", repo.name);
                    crate::replication::signal::send(&peers, &repo.name);
                }
                Ok(false) => {}
                Err(e) => log::error!("{}: cannot start its journal: {e}", repo.name),
            }
        }
    }

    pub(super) fn check_still_leading(&mut self) {
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

    /// A leader without the lock (forced promotion) takes it as soon as the deposed holder
    /// lets go, and ends the handoff; until then it keeps the handoff fresh, so that no
    /// other node takes the lock first.
    pub(super) fn take_the_lock_late(&mut self) {
        match self.lease.try_acquire() {
            Ok(true) => {
                self.locked = true;
                log::info!("holding the lease's lock now (epoch {})", self.epoch);
                if let Err(e) = handoff::clear(&self.lock, &self.me) {
                    log::warn!("cannot end the handoff: {e}");
                }
            }
            Ok(false) => match handoff::read(&self.lock) {
                Ok(Some(mut h)) if h.to == self.me => {
                    h.heartbeat_ms = now_ms();
                    if let Err(e) = handoff::write(&self.lock, &h) {
                        log::warn!("cannot refresh the handoff: {e}");
                    }
                }
                _ => {}
            },
            Err(e) => log::error!("{e}"),
        }
    }

    /// Stop accepting writes first (state), then let go of the lock.
    pub(super) fn step_down(&mut self, event: &str, reason: &str) {
        let led = self.epoch;
        self.role = Role::Passive;
        self.draining = None;
        self.publish();
        self.release();
        self.audit(crate::lead::audit::Event {
            previous_epoch: Some(led),
            previous_leader: Some(self.me.clone()),
            ..self.event(event, reason)
        });
    }

    pub(super) fn release(&mut self) {
        if self.locked
            && let Err(e) = self.lease.release()
        {
            log::error!("{e}");
        }
        self.locked = false;
    }
}
