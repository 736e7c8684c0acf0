//! Replication lag (stargate(7), Lag): per-update lag samples in rolling windows, their p50 and
//! p99, and the alert rule: two consecutive breaching windows trigger, a good one resolves.
//!
//! A sample belongs to the window in which the leader *accepted* the update, so a replica
//! that stalls and then catches up still shows the stall in the windows it spanned. A
//! window is judged once it is complete (a sync that started after its end succeeded), or,
//! if the replica cannot complete it within the p99 limit, judged breached: a replica that
//! cannot prove its lag is within bounds is not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Samples kept per window; beyond it new samples replace random old ones (reservoir).
const MAX_SAMPLES: usize = 20_000;
/// Windows kept for `git stargate lag`.
const KEEP: usize = 24;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub window_ms: u64,
    pub p50_s: f64,
    pub p99_s: f64,
}

/// One judged window, as `git stargate lag` and `/status` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Judged {
    pub start_ms: u64,
    pub end_ms: u64,
    pub count: usize,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    /// False when judged on a timeout: the replica never caught up past its end.
    pub complete: bool,
    pub breached: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Trigger { percentile: &'static str, observed_s: f64, threshold_s: f64, windows: Vec<Judged> },
    Resolve { window: Judged },
}

#[derive(Debug)]
pub struct Windows {
    limits: Limits,
    samples: BTreeMap<u64, Vec<f64>>,
    seen: BTreeMap<u64, usize>,
    judged: Vec<Judged>,
    next: u64,
    breach_run: u32,
    pub alerting: bool,
}

impl Windows {
    pub fn new(limits: Limits, now_ms: u64) -> Windows {
        Windows {
            limits,
            samples: BTreeMap::new(),
            seen: BTreeMap::new(),
            judged: Vec::new(),
            next: now_ms / limits.window_ms,
            breach_run: 0,
            alerting: false,
        }
    }

    pub fn add(&mut self, accept_ms: u64, lag_s: f64) {
        let index = accept_ms / self.limits.window_ms;
        let seen = self.seen.entry(index).or_insert(0);
        *seen += 1;
        let samples = self.samples.entry(index).or_default();
        if samples.len() < MAX_SAMPLES {
            samples.push(lag_s);
        } else {
            let slot = rand::random_range(0..*seen);
            if slot < MAX_SAMPLES {
                samples[slot] = lag_s;
            }
        }
    }

    /// Judge every window that can be judged now. `complete_ms`: every update accepted
    /// before it is exposed by this replica (start of its last good sync of every repo).
    pub fn evaluate(&mut self, now_ms: u64, complete_ms: u64) -> Vec<Event> {
        let Limits { window_ms, p50_s, p99_s } = self.limits;
        let mut events = Vec::new();
        loop {
            let (start, end) = (self.next * window_ms, (self.next + 1) * window_ms);
            let complete = end <= complete_ms;
            if !complete && now_ms < end + (p99_s * 1000.0) as u64 {
                break;
            }
            let mut values = self.samples.get(&self.next).cloned().unwrap_or_default();
            values.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&values, 0.50), percentile(&values, 0.99));
            let breached =
                if complete { p50.is_some_and(|v| v > p50_s) || p99.is_some_and(|v| v > p99_s) } else { true };
            let window = Judged {
                start_ms: start,
                end_ms: end,
                count: *self.seen.get(&self.next).unwrap_or(&0),
                p50_s: p50,
                p99_s: p99,
                complete,
                breached,
            };
            self.judged.push(window.clone());
            self.next += 1;
            if breached {
                self.breach_run += 1;
                if self.breach_run >= 2 && !self.alerting {
                    self.alerting = true;
                    let (percentile, observed_s, threshold_s) = match (p50, p99) {
                        (Some(p50), _) if p50 > p50_s => ("p50", p50, p50_s),
                        (_, Some(p99)) => ("p99", p99, p99_s),
                        _ => ("p99", now_ms.saturating_sub(end) as f64 / 1000.0, p99_s),
                    };
                    let windows = self.judged[self.judged.len() - 2..].to_vec();
                    events.push(Event::Trigger { percentile, observed_s, threshold_s, windows });
                }
            } else {
                self.breach_run = 0;
                if self.alerting {
                    self.alerting = false;
                    events.push(Event::Resolve { window });
                }
            }
        }
        let first_kept = self.next.saturating_sub(KEEP as u64);
        self.samples.retain(|i, _| *i >= first_kept);
        self.seen.retain(|i, _| *i >= first_kept);
        if self.judged.len() > KEEP {
            self.judged.drain(..self.judged.len() - KEEP);
        }
        events
    }

    pub fn judged(&self) -> &[Judged] {
        &self.judged
    }

    /// p50 and p99 over every sample kept.
    pub fn aggregate(&self) -> (usize, Option<f64>, Option<f64>) {
        let mut all: Vec<f64> = self.samples.values().flatten().copied().collect();
        all.sort_by(f64::total_cmp);
        (self.seen.values().sum(), percentile(&all, 0.50), percentile(&all, 0.99))
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { window_ms: 1000, p50_s: 1.0, p99_s: 5.0 };

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn two_breaching_windows_trigger_and_a_good_one_resolves() {
        let mut w = Windows::new(L, 10_000);
        for ms in [10_100, 10_500, 11_200, 11_900] {
            w.add(ms, 3.0);
        }
        w.add(12_300, 0.1);
        assert!(w.evaluate(11_500, 11_000).is_empty(), "one breaching window is not enough");
        let events = w.evaluate(12_500, 12_000);
        assert!(
            matches!(&events[..], [Event::Trigger { percentile: "p50", observed_s, .. }] if *observed_s == 3.0),
            "{events:?}"
        );
        assert!(w.evaluate(12_600, 12_000).is_empty(), "no repeat while alerting");
        let events = w.evaluate(13_100, 13_000);
        assert!(matches!(&events[..], [Event::Resolve { .. }]), "{events:?}");
    }

    #[test]
    fn a_replica_that_cannot_catch_up_breaches() {
        let mut w = Windows::new(L, 10_000);
        // No successful sync since 10_000: after the p99 limit the windows count as breached.
        assert!(w.evaluate(15_500, 10_000).is_empty());
        let events = w.evaluate(17_100, 10_000);
        assert!(matches!(&events[..], [Event::Trigger { .. }]), "{events:?}");
        assert!(w.judged().iter().all(|j| !j.complete && j.breached));
    }
}
