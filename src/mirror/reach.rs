//! Whether this replica reaches its leader (stargate(7), Leader reachability): a probe of
//! the leader's health responder every `PROBE_INTERVAL`, whatever `stargate.sync.interval`
//! is, so that a cut is noticed in seconds, not at the next poll. Two probes in a row that
//! get no answer make the leader unreachable: said once, with the reason; then each probe
//! again is a retry after a backoff with full jitter (`stargate.retry.*`, never further
//! apart than `stargate.sync.interval`), said with its number; the first answer ends it,
//! said with how long it lasted (a signal or a successful sync from the leader brings the
//! next probe forward). Syncs are not held back meanwhile: a leader's health
//! responder may be down while its Git server serves.
//!
//! This is the state and its transitions, without a clock or a socket of its own, so that
//! it can be tested alone; the replicator runs the probes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backoff::Policy;

/// How often a reachable leader is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes in a row without an answer before the leader counts as unreachable.
const MISSES: u32 = 2;

/// What `replication.json`, `/status`, `/metrics` and `git stargate status` show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reachability {
    pub leader: String,
    pub reachable: bool,
    /// When the leader became unreachable (wall clock, ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable_since_ms: Option<u64>,
    /// The last probe's failure while unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Times the leader became unreachable, and retries while it was, since the agent started.
    pub outages: u64,
    pub retries: u64,
}

/// What a probe's result asks the caller to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Probe again in this long; nothing to say.
    Wait(Duration),
    /// The leader just became unreachable: say so; retry 1 comes in `next`.
    Lost { reason: String, next: Duration },
    /// Still unreachable: retry `attempt` (from 2) of `of` comes in `next`.
    Retry { attempt: u32, of: u32, next: Duration, reason: String },
    /// Out of retries: say it once, then probe every `next`, silently.
    GaveUp { next: Duration },
    /// Reachable again after `down_ms`: say so, sync every repository.
    Back { down_ms: u64 },
}

/// One leader's reachability as the probes found it.
#[derive(Debug, Clone)]
pub struct Reach {
    pub state: Reachability,
    misses: u32,
    /// When the first of the misses in a row was found.
    first_miss_ms: u64,
    /// Retries made since the leader became unreachable.
    attempt: u32,
}

impl Reach {
    pub fn new(leader: &str) -> Reach {
        Reach {
            state: Reachability { leader: leader.to_owned(), reachable: true, ..Reachability::default() },
            misses: 0,
            first_miss_ms: 0,
            attempt: 0,
        }
    }

    /// A probe answered (any HTTP answer: the path to the leader works), or a sync from the
    /// leader succeeded.
    pub fn answered(&mut self, now_ms: u64) -> Step {
        self.misses = 0;
        self.attempt = 0;
        if self.state.reachable {
            return Step::Wait(PROBE_INTERVAL);
        }
        let since = self.state.unreachable_since_ms.take().unwrap_or(now_ms);
        self.state.reachable = true;
        self.state.reason = None;
        Step::Back { down_ms: now_ms.saturating_sub(since) }
    }

    /// A probe got no answer, for `reason`. `interval`: `stargate.sync.interval`, the
    /// longest wait between two retries.
    pub fn missed(&mut self, reason: String, now_ms: u64, policy: &Policy, interval: Duration) -> Step {
        let delay = |n: u32| policy.delay(n).min(interval).max(Duration::from_millis(100));
        if self.state.reachable {
            self.misses += 1;
            if self.misses == 1 {
                self.first_miss_ms = now_ms;
            }
            if self.misses < MISSES {
                return Step::Wait(PROBE_INTERVAL.min(interval));
            }
            self.state.reachable = false;
            self.state.unreachable_since_ms = Some(self.first_miss_ms);
            self.state.reason = Some(reason.clone());
            self.state.outages += 1;
            self.attempt = 0;
            return Step::Lost { reason, next: delay(0) };
        }
        self.state.reason = Some(reason.clone());
        self.attempt += 1;
        if self.attempt <= policy.attempts {
            self.state.retries += 1;
        }
        let next = policy.max.min(interval);
        match self.attempt.cmp(&policy.attempts) {
            std::cmp::Ordering::Less => {
                Step::Retry { attempt: self.attempt + 1, of: policy.attempts, next: delay(self.attempt), reason }
            }
            std::cmp::Ordering::Equal => Step::GaveUp { next },
            std::cmp::Ordering::Greater => Step::Wait(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            attempts: 3,
            base: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(60),
            retryable: Vec::new(),
        }
    }

    /// One miss is nothing; two make the leader unreachable (since the first); each probe
    /// after is a numbered retry whose backoff stays under its ceiling and the interval;
    /// out of retries is said once; the first answer ends it, with how long it lasted.
    #[test]
    fn a_cut_is_noticed_retried_with_backoff_and_ended() {
        let (p, interval) = (policy(), Duration::from_secs(30));
        let mut r = Reach::new("a");
        assert_eq!(r.answered(1_000), Step::Wait(PROBE_INTERVAL));
        assert_eq!(r.missed("no answer".into(), 10_000, &p, interval), Step::Wait(PROBE_INTERVAL));
        assert!(r.state.reachable);
        let Step::Lost { reason, next } = r.missed("no answer".into(), 12_000, &p, interval) else { panic!() };
        assert_eq!(reason, "no answer");
        assert!(next <= Duration::from_secs(1));
        assert_eq!((r.state.reachable, r.state.unreachable_since_ms, r.state.outages), (false, Some(10_000), 1));
        for made in 1..3 {
            match r.missed("refused".into(), 13_000, &p, interval) {
                Step::Retry { attempt, of: 3, next, reason } => {
                    assert_eq!((attempt, reason.as_str()), (made + 1, "refused"));
                    assert!(next <= p.ceiling(made).max(Duration::from_millis(100)), "{next:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.missed("refused".into(), 14_000, &p, interval), Step::GaveUp { next: interval });
        assert_eq!(r.missed("refused".into(), 15_000, &p, interval), Step::Wait(interval));
        assert_eq!(r.state.retries, 3);
        assert_eq!(r.answered(71_000), Step::Back { down_ms: 61_000 });
        assert!(r.state.reachable && r.state.unreachable_since_ms.is_none() && r.state.reason.is_none());
        // A second cut counts from one miss again.
        assert_eq!(r.missed("no answer".into(), 80_000, &p, interval), Step::Wait(PROBE_INTERVAL));
        assert!(matches!(r.missed("no answer".into(), 82_000, &p, interval), Step::Lost { .. }));
        assert_eq!(r.state.outages, 2);
    }

    /// A short sync interval bounds the waits: never longer between two probes.
    #[test]
    fn no_wait_is_longer_than_the_sync_interval() {
        let (p, interval) = (policy(), Duration::from_millis(300));
        let mut r = Reach::new("a");
        r.missed("x".into(), 0, &p, interval);
        r.missed("x".into(), 0, &p, interval);
        for _ in 0..10 {
            let next = match r.missed("x".into(), 0, &p, interval) {
                Step::Retry { next, .. } | Step::GaveUp { next } | Step::Wait(next) => next,
                other => panic!("{other:?}"),
            };
            assert!(next <= interval, "{next:?}");
        }
    }
}
