//! StatsD export (DogStatsD tags, via `cadence`): the replication lag gauge per namespace
//! and the agent's counters, every `stargate.metrics.interval`.

use std::net::UdpSocket;

use cadence::prelude::*;
use cadence::{StatsdClient, UdpMetricSink};
use serde::{Deserialize, Serialize};

/// Monotonic counts since the agent started; StatsD gets the increase of each interval.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub syncs: u64,
    pub skips: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub failures: u64,
    pub fallbacks: u64,
    pub elections: u64,
    pub signals: u64,
}

impl Counters {
    /// Every counter once: its StatsD name, its Prometheus name, its value.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 8] {
        [
            ("stargate.sync.count", "stargate_sync_syncs_total", self.syncs),
            ("stargate.sync.skipped", "stargate_sync_skips_total", self.skips),
            ("stargate.sync.retries", "stargate_sync_retries_total", self.retries),
            ("stargate.sync.timeouts", "stargate_sync_timeouts_total", self.timeouts),
            ("stargate.sync.failures", "stargate_sync_failures_total", self.failures),
            ("stargate.sync.fallbacks", "stargate_sync_fallbacks_total", self.fallbacks),
            ("stargate.elections", "stargate_elections_total", self.elections),
            ("stargate.sync.signals", "stargate_sync_signals_total", self.signals),
        ]
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
