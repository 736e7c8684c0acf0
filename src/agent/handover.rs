//! Promotion (git-stargate(1), promote), both sides of it.
//!
//! Planned, on the node to lead: write the handoff naming the leader and its epoch, hint
//! the leader's agent, wait for the lock; then catch up and lead (`elect`). On the leader:
//! publish "draining" (its hooks refuse from that moment, as "not leader", so clients
//! retry), wait for the writes already in flight, record the final journal positions, and
//! let go of the lock. Other nodes leave the lock to the node the handoff names.
//!
//! Forced: take the lock if it is free; if its holder is frozen or cut off, record the next
//! epoch without it. The deposed leader's hooks refuse at once (stale epoch); its agent,
//! when it runs again, steps down and lets go, and this node takes the lock then.

use std::time::{Duration, Instant};

use super::Agent;
use super::catchup::{Unheard, Unsettled};
use super::control::{HANDOFF_HINT, Reply, Request};
use crate::clock::now_ms;
use crate::lead::audit;
use crate::lead::handoff::Handoff;
use crate::lead::inflight;
use crate::lead::lease::Record;
use crate::lead::node::Role;

/// Why a promotion did not happen, or did not end with this node leading: the final line
/// of the operator's `git stargate promote`.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    #[error("{me} already leads epoch {epoch}")]
    AlreadyLeads { me: String, epoch: u64 },
    #[error("no other node leads: nothing to take over")]
    NoOtherLeader,
    #[error("the leader record changed meanwhile; nothing done")]
    RecordChanged,
    #[error(transparent)]
    Lease(#[from] crate::lead::lease::Error),
    #[error("{node} did not hand over within {} ms (is its agent running?); nothing changed", .waited.as_millis())]
    NoHandover { node: String, waited: Duration },
    #[error("could not take over (see the agent's log); the lease is free again")]
    NotTakenOver,
    /// Forced, in quorum mode: too few nodes answered to know the furthest position.
    #[error("{0}; nothing changed (--accept-loss promotes anyway)")]
    Unheard(#[source] Unheard),
    /// Forced: fenced the old leader, then too few nodes answered to take over from.
    #[error("not leading: {0}")]
    NotLeading(#[source] Unheard),
    /// Forced: fenced the old leader, then some writes left open could not be settled.
    #[error("not leading: {0}")]
    Unsettled(#[source] Unsettled),
    /// Forced: fenced the old leader, then could not say that this node leads.
    #[error("not leading: cannot announce epoch {epoch} as leading: {source}")]
    Unannounced { epoch: u64, source: crate::lead::lease::Error },
}

/// How often a node waiting for the lock tries it, and hints the leader again.
const POLL: Duration = Duration::from_millis(5);
const HINT_AGAIN: Duration = Duration::from_millis(250);

impl Agent {
    pub(super) fn serve(&mut self, request: Request, mut reply: Reply) {
        let Request::Promote { force, user, accept_loss } = request;
        if self.role == Role::Leader {
            return reply.done(Err(Error::AlreadyLeads { me: self.settings.me.clone(), epoch: self.epoch }));
        }
        let record = match self.lock.read_record() {
            Ok(Some(r)) if r.node != self.settings.me => r,
            // A record older than this node has seen (restored): forced, the next epoch is
            // after both (stargate(7), Epoch).
            Err(crate::lead::lease::Error::Behind(_)) if force => match self.lock.read_record_as_is() {
                Ok(Some(r)) => r,
                _ => return reply.done(Err(Error::RecordChanged)),
            },
            Ok(_) => return reply.done(Err(Error::NoOtherLeader)),
            Err(e) => return reply.done(Err(Error::Lease(e))),
        };
        let result = if force {
            self.forced(record, &user, accept_loss, &mut reply)
        } else {
            self.planned(record, &user, &mut reply)
        };
        reply.done(result);
    }

    fn hint(&self, node: &str) {
        if let Some(addr) = self.settings.peers.get(node)
            && let Ok(socket) = std::net::UdpSocket::bind(("0.0.0.0", 0))
        {
            let _ = socket.send_to(HANDOFF_HINT.as_bytes(), addr.as_str());
        }
    }

    fn planned(&mut self, record: Record, user: &str, reply: &mut Reply) -> Result<String, Error> {
        let now = now_ms();
        let mut handoff = Handoff {
            from: record.node.clone(),
            epoch: record.epoch,
            to: self.settings.me.clone(),
            forced: false,
            user: user.to_owned(),
            requested_ms: now,
            heartbeat_ms: now,
        };
        self.lock.write_handoff(&handoff)?;
        self.audit(audit::Event {
            user: user.to_owned(),
            previous_epoch: Some(record.epoch),
            previous_leader: Some(record.node.clone()),
            ..self.event("promote-requested", format!("planned promotion of {} by {user}", self.settings.me))
        });
        reply.say(&format!("asked {} (epoch {}) to drain and hand over", record.node, record.epoch));
        let deadline = Instant::now() + self.settings.promote_timeout;
        let mut hinted: Option<Instant> = None;
        let mut refreshed = Instant::now();
        let acquired = loop {
            if hinted.is_none_or(|t| t.elapsed() >= HINT_AGAIN) {
                self.hint(&record.node);
                hinted = Some(Instant::now());
            }
            match self.lease.try_acquire(&self.claim()) {
                Ok(Some(acquired)) => break acquired,
                Ok(None) => {}
                Err(e) => log::error!("{e}"),
            }
            // Gone (etcd: the drained leader deleted its key) is expected; another leader is not.
            if let Ok(Some(now)) = self.lock.read_record()
                && now != record
            {
                let _ = self.lock.clear_handoff(&self.settings.me);
                return Err(Error::RecordChanged);
            }
            if Instant::now() >= deadline {
                let _ = self.lock.clear_handoff(&self.settings.me);
                return Err(Error::NoHandover { node: record.node.clone(), waited: self.settings.promote_timeout });
            }
            if refreshed.elapsed() >= self.settings.interval {
                handoff.heartbeat_ms = now_ms();
                let _ = self.lock.write_handoff(&handoff);
                self.publish();
                refreshed = Instant::now();
            }
            std::thread::sleep(POLL);
        };
        reply.say(&format!("{} let go of the lease; catching up to its final journal position", record.node));
        // The drained leader is the previous one, whatever the backend remembers.
        let acquired = crate::lead::lease::Acquired { previous: Some(record.clone()), ..acquired };
        let elected = self.elect(acquired, reply, true);
        if let Err(e) = self.lock.clear_handoff(&self.settings.me) {
            log::warn!("cannot end the handoff: {e}");
        }
        if !elected {
            return Err(Error::NotTakenOver);
        }
        self.audit(audit::Event {
            user: user.to_owned(),
            previous_epoch: Some(record.epoch),
            previous_leader: Some(record.node.clone()),
            positions: self.positions(),
            ..self.event("promoted", format!("planned promotion by {user}"))
        });
        Ok(format!(
            "{} leads at epoch {} (was {} at epoch {})",
            self.settings.me, self.epoch, record.node, record.epoch
        ))
    }

    fn forced(&mut self, record: Record, user: &str, accept_loss: bool, reply: &mut Reply) -> Result<String, Error> {
        let reason = format!("forced promotion by {user}; {} was at epoch {}", record.node, record.epoch);
        // Quorum mode: a write a quorum acknowledged may be staged on other nodes only. Know
        // the furthest position before fencing anyone, as an election would.
        if let Some(plan) = self.settings.quorum.clone()
            && !accept_loss
        {
            let must_hear = plan.peers.len() + 2 - plan.needed;
            let mut published = Instant::now();
            for repo in crate::repos::list(&self.settings.root).unwrap_or_default().iter().filter(|r| r.readable) {
                self.take_from_furthest(&plan, &repo.name, must_hear, false, None, reply, &mut published)
                    .map_err(Error::Unheard)?;
            }
            reply.say(&format!("heard enough nodes to take over the furthest position (quorum {})", plan.needed));
        }
        // etcd: revoking the holder's lease deletes the key, and every standby watching it
        // would contend at once; a forced handoff naming this node keeps them off until it
        // has the key. Its epoch is the least the new key's create revision can be.
        let promised = self.lock.is_etcd().then(|| Handoff {
            from: record.node.clone(),
            epoch: record.epoch + 1,
            to: self.settings.me.clone(),
            forced: true,
            user: user.to_owned(),
            requested_ms: now_ms(),
            heartbeat_ms: now_ms(),
        });
        if let Some(handoff) = &promised {
            self.lock.write_handoff(handoff)?;
        }
        let seized = self.lease.seize(&self.claim(), &record);
        if promised.is_some()
            && let Err(e) = self.lock.clear_handoff(&self.settings.me)
        {
            log::warn!("cannot end the handoff: {e}");
        }
        let mine = seized?;
        self.epoch = mine.epoch;
        self.record = Some(mine.clone());
        if self.lease.holds() {
            reply.say(&format!("took the lease (epoch {})", mine.epoch));
        } else {
            reply
                .say(&format!("{} still holds the lease's lock; leading epoch {} without it", record.node, mine.epoch));
            let now = now_ms();
            let handoff = Handoff {
                from: record.node.clone(),
                epoch: mine.epoch,
                to: self.settings.me.clone(),
                forced: true,
                user: user.to_owned(),
                requested_ms: now,
                heartbeat_ms: now,
            };
            if let Err(e) = self.lock.write_handoff(&handoff) {
                log::warn!("cannot record the handoff: {e}");
            }
        }
        // etcd: the deposed leader's hooks trust its last keep-alive until it runs out.
        let wait = self.lease.seize_wait();
        if !wait.is_zero() {
            reply.say(&format!("waiting {} ms for {}'s last keep-alive to run out", wait.as_millis(), record.node));
            let until = Instant::now() + wait;
            while Instant::now() < until {
                std::thread::sleep(self.settings.interval.min(until.saturating_duration_since(Instant::now())));
                let _ = self.lease.renew(&mine);
                self.publish();
            }
        }
        // The deposed leader is fenced now (its epoch is stale): take over what a quorum holds.
        if let Err(why) = self.adopt_staged(Some(&record), &mine, reply, accept_loss) {
            log::error!("not leading: {why}");
            self.audit(self.event("quorum-shortfall", format!("forced promotion, not leading: {why}")));
            let _ = self.lock.clear_handoff(&self.settings.me);
            self.lease.release();
            self.holdoff_until = Some(Instant::now() + std::time::Duration::from_secs(1));
            return Err(Error::NotLeading(why));
        }
        if let Err(why) = self.settle_open_writes(Some(&record)) {
            log::error!("not leading: {why}");
            self.audit(self.event("settle-shortfall", format!("forced promotion, not leading: {why}")));
            let _ = self.lock.clear_handoff(&self.settings.me);
            self.lease.release();
            self.holdoff_until = Some(Instant::now() + std::time::Duration::from_secs(1));
            return Err(Error::Unsettled(why));
        }
        // Before the first write is accepted: the next election catches up from this node.
        if let Err(e) = self.lock.announce(&mine) {
            let _ = self.lock.clear_handoff(&self.settings.me);
            self.lease.release();
            self.holdoff_until = Some(Instant::now() + std::time::Duration::from_secs(1));
            return Err(Error::Unannounced { epoch: mine.epoch, source: e });
        }
        self.role = Role::Leader;
        self.replicator.count_election();
        self.audit(audit::Event {
            user: user.to_owned(),
            previous_epoch: Some(record.epoch),
            previous_leader: Some(record.node.clone()),
            positions: self.positions(),
            ..self.event("forced-promotion", if accept_loss { format!("{reason}; loss accepted") } else { reason })
        });
        self.start_journals();
        self.publish();
        Ok(format!(
            "{} leads at epoch {} (forced; {} was at epoch {})",
            self.settings.me, mine.epoch, record.node, record.epoch
        ))
    }

    /// On the leader: a planned handoff for this epoch drains it and lets go of the lease.
    pub(super) fn hand_over_if_asked(&mut self) {
        let Ok(Some(h)) = self.lock.read_handoff() else { return };
        // A forced handoff, or one for another leader, is not a request to this one.
        if h.forced || h.from != self.settings.me {
            return;
        }
        let refused = if h.epoch != self.epoch {
            Some(format!("it is for epoch {}, and this node leads epoch {}", h.epoch, self.epoch))
        } else if h.expired(now_ms()) {
            Some(format!("nobody refreshed it for {} s", crate::lead::handoff::EXPIRES_AFTER.as_secs()))
        } else if h.to == self.settings.me {
            Some("it names this node as the one to lead".to_owned())
        } else {
            None
        };
        if let Some(why) = refused {
            // Read every interval: say it once per record.
            if self.refused_handoff.as_ref() != Some(&h) {
                log::warn!(
                    "refused the handoff to {} requested by {} at {}: {why}; nothing changed",
                    h.to,
                    h.user,
                    h.requested_ms
                );
                self.replicator.count(|c| c.handoffs_refused += 1);
                self.refused_handoff = Some(h);
            }
            return;
        }
        let started = Instant::now();
        self.draining = Some(format!("handing over to {} (planned promotion by {})", h.to, h.user));
        self.publish();
        self.audit(audit::Event {
            user: h.user.clone(),
            ..self.event("draining", format!("handing over to {}", h.to))
        });
        let left = inflight::wait(&self.settings.state_dir, Instant::now() + self.settings.drain_timeout);
        if !left.is_empty() {
            log::warn!("writes still in flight after the drain timeout (git pids {left:?})");
        }
        // Those whose git died meanwhile get their outcome before the final position is handed over.
        self.sweep_orphans();
        self.audit(audit::Event {
            user: h.user.clone(),
            positions: self.positions(),
            ..self.event("drained", format!("drained in {} ms for {}", started.elapsed().as_millis(), h.to))
        });
        log::info!("drained in {} ms; handing over to {}", started.elapsed().as_millis(), h.to);
        self.step_down("demoted", &format!("handed over to {} (planned promotion by {})", h.to, h.user));
    }
}
