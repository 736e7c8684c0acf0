//! StatsD export (DogStatsD tags, via `cadence`): the replication lag gauge per namespace
//! and the agent's counters, every `stargate.metrics.interval`; and the cumulative lag
//! histogram that `/metrics` exports (stargate-hook(1), Metrics).

use std::net::UdpSocket;

use cadence::prelude::*;
use cadence::{StatsdClient, UdpMetricSink};
use serde::{Deserialize, Serialize};

/// Monotonic counts since the agent started; StatsD gets the increase of each interval.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counters {
    pub syncs: u64,
    pub skips: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub failures: u64,
    pub fallbacks: u64,
    pub elections: u64,
    pub signals: u64,
    /// Datagrams on the agent's UDP port that were neither a signal naming one of this
    /// node's repositories nor a handoff hint.
    pub hints_refused: u64,
    /// Times the agent stopped reading its UDP port for the rest of a window because more
    /// datagrams came than any leader sends (agent::control).
    pub hints_throttled: u64,
    /// Handoff records a leader refused: for an epoch it does not lead, expired, or naming
    /// itself as the node to lead.
    pub handoffs_refused: u64,
    /// Leader records, handoffs and leader keys refused as older than the highest epoch
    /// this node has seen (lead::epoch), each once.
    pub epochs_refused: u64,
    /// Times the leader became unreachable (`mirror::reach`), and probes of it retried
    /// while it was.
    #[serde(default)]
    pub leader_unreachable: u64,
    #[serde(default)]
    pub leader_retries: u64,
    /// Journal entries the leader's agent wrote for its hooks (`journal::service`).
    #[serde(default)]
    pub journaled: u64,
}

impl Counters {
    /// Every counter once: its StatsD name, its Prometheus name, its value.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 15] {
        [
            ("stargate.sync.count", "stargate_sync_syncs_total", self.syncs),
            ("stargate.sync.skipped", "stargate_sync_skips_total", self.skips),
            ("stargate.sync.retries", "stargate_sync_retries_total", self.retries),
            ("stargate.sync.timeouts", "stargate_sync_timeouts_total", self.timeouts),
            ("stargate.sync.failures", "stargate_sync_failures_total", self.failures),
            ("stargate.sync.fallbacks", "stargate_sync_fallbacks_total", self.fallbacks),
            ("stargate.elections", "stargate_elections_total", self.elections),
            ("stargate.sync.signals", "stargate_sync_signals_total", self.signals),
            ("stargate.hints.refused", "stargate_hints_refused_total", self.hints_refused),
            ("stargate.hints.throttled", "stargate_hints_throttled_total", self.hints_throttled),
            ("stargate.handoffs.refused", "stargate_handoffs_refused_total", self.handoffs_refused),
            ("stargate.epochs.refused", "stargate_epochs_refused_total", self.epochs_refused),
            ("stargate.leader.unreachable", "stargate_leader_unreachable_total", self.leader_unreachable),
            ("stargate.leader.retries", "stargate_leader_retries_total", self.leader_retries),
            ("stargate.journal.served", "stargate_journal_served_total", self.journaled),
        ]
    }
}

/// Upper bounds, in seconds, of the lag histogram's buckets (stargate-hook(1), Metrics). The
/// agent adds `stargate.alert.p50` and `stargate.alert.p99`, so that a quantile PromQL
/// computes from the buckets is above a limit exactly when the agent's own is.
pub const LAG_BUCKETS: [f64; 18] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// Cumulative counts of per-update lags since the agent started, Prometheus style: `counts[i]`
/// is the number of updates whose lag was at most `bounds[i]`; `count` includes those above
/// the last bound (`+Inf`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LagHistogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum_s: f64,
}

impl LagHistogram {
    /// Empty, with `LAG_BUCKETS` and `extra` (finite, positive) as bounds, sorted, no duplicates.
    pub fn new(extra: &[f64]) -> LagHistogram {
        let mut bounds: Vec<f64> =
            LAG_BUCKETS.iter().chain(extra).copied().filter(|b| b.is_finite() && *b > 0.0).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        LagHistogram { counts: vec![0; bounds.len()], bounds, count: 0, sum_s: 0.0 }
    }

    pub fn observe(&mut self, lag_s: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if lag_s <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_s += lag_s;
    }
}

pub struct Statsd {
    client: StatsdClient,
    replica: String,
    sent: Counters,
}

impl Statsd {
    pub fn new(addr: &str, replica: &str) -> std::io::Result<Statsd> {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.set_nonblocking(true)?;
        let sink = UdpMetricSink::from(addr, socket).map_err(std::io::Error::other)?;
        Ok(Statsd { client: StatsdClient::from_sink("", sink), replica: replica.to_owned(), sent: Counters::default() })
    }

    /// One report: `lag` is (namespace, seconds) per namespace.
    pub fn report(&mut self, lag: &[(String, f64)], counters: Counters) {
        for (namespace, seconds) in lag {
            let sent = self
                .client
                .gauge_with_tags("stargate.replication.lag_seconds", *seconds)
                .with_tag("replica", &self.replica)
                .with_tag("namespace", namespace)
                .try_send();
            if let Err(e) = sent {
                log::warn!("statsd: {e}");
            }
        }
        for ((name, _, now), (_, _, before)) in counters.named().into_iter().zip(self.sent.named()) {
            let _ = self
                .client
                .count_with_tags(name, now.saturating_sub(before) as i64)
                .with_tag("replica", &self.replica)
                .try_send();
        }
        self.sent = counters;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_holds_the_alert_limits_as_bounds() {
        let mut h = LagHistogram::new(&[15.0, 7.5, f64::NAN]);
        assert!(h.bounds.windows(2).all(|w| w[0] < w[1]), "{:?}", h.bounds);
        assert!(h.bounds.contains(&7.5) && h.bounds.iter().filter(|b| **b == 15.0).count() == 1);
        for lag in [0.005, 0.3, 15.0, 16.0, 5000.0] {
            h.observe(lag);
        }
        let at = |bound: f64| h.counts[h.bounds.iter().position(|b| *b == bound).unwrap()];
        assert_eq!((at(0.01), at(0.5), at(15.0), at(30.0), at(3600.0)), (1, 2, 3, 4, 4));
        assert_eq!(h.count, 5);
        assert!((h.sum_s - 5031.305).abs() < 1e-9);
    }
}
