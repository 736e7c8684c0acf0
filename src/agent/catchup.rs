//! Catch-up on election: a node that has just taken the lock mirrors every repository once
//! more from the previous leader, while that leader's repositories can still be read and
//! before this node accepts a write, so that a crash of the leader's agent alone, or a
//! planned handover, loses nothing the previous leader acknowledged. Bounded by
//! `stargate.catchup.timeout`; what it could not fetch is returned.

use std::time::{Duration, Instant};

use super::Agent;
use super::control::Reply;
use crate::lead::lease::Record;
use crate::replication::sync::{self, Target};

/// How often a catch-up that waits for a running sync of the same repository looks again.
const LOCKED_RETRY: Duration = Duration::from_millis(5);

impl Agent {
    /// Mirror every repository from `previous`, keeping the lease to lead under (`mine`)
    /// alive meanwhile; the repositories it could not, with why.
    pub(super) fn catch_up(&mut self, previous: &Record, mine: &Record, reply: &mut Reply) -> Vec<(String, String)> {
        let started = Instant::now();
        let deadline = started + self.catchup_timeout;
        let repos = crate::repos::list(&self.root).unwrap_or_default();
        let served =
            |r: &crate::repos::Repo| r.readable && crate::repos::unsupported(&self.root.join(&r.name)).is_none();
        let names: Vec<String> = repos.into_iter().filter(served).map(|r| r.name).collect();
        let Some(base_url) = previous.url.clone() else {
            let why = format!("the leader record names no URL for {}", previous.node);
            return names.into_iter().map(|n| (n, why.clone())).collect();
        };
        let target = Target { leader: previous.node.clone(), epoch: previous.epoch, base_url };
        let (mut shortfall, mut changed) = (Vec::new(), 0usize);
        let mut published = Instant::now();
        for name in &names {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    shortfall.push((name.clone(), "catch-up timed out".to_owned()));
                    break;
                }
                let settings = sync::Settings { timeout: left.min(self.sync.timeout), ..self.sync.clone() };
                match sync::sync(&self.root.join(name), name, &target, &settings) {
                    Ok(report) => {
                        if report.refs_changed > 0 {
                            changed += 1;
                            reply.say(&format!(
                                "{name}: caught up to {}'s seq {} ({} refs)",
                                target.leader, report.leader_seq, report.refs_changed
                            ));
                        }
                        break;
                    }
                    // The replica side is syncing it right now: wait, then sync once more.
                    Err(sync::Error::Locked) => std::thread::sleep(LOCKED_RETRY),
                    Err(e) => {
                        shortfall.push((name.clone(), e.to_string()));
                        break;
                    }
                }
            }
            // Keep the heartbeat and the lease fresh through a long catch-up.
            if published.elapsed() >= self.interval {
                self.publish();
                if let Err(e) = self.lease.renew(mine) {
                    log::warn!("cannot renew the lease while catching up: {e}");
                }
                published = Instant::now();
            }
        }
        let took = started.elapsed().as_millis();
        if shortfall.is_empty() {
            reply.say(&format!(
                "caught up with {} (epoch {}): {} repositories, {changed} changed, in {took} ms",
                previous.node,
                previous.epoch,
                names.len()
            ));
        } else {
            for (name, why) in &shortfall {
                reply.say(&format!("{name}: could not catch up with {}: {why}", previous.node));
            }
        }
        shortfall
    }
}
