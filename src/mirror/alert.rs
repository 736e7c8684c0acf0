//! Lag alerts as PagerDuty Events API v2 (`POST …/v2/enqueue`): `trigger` when lag breaches
//! for two consecutive windows, `resolve` when it recovers. One dedup key per replica, so
//! PagerDuty keeps one incident open per replica however often it is re-sent.

use std::time::Duration;

use serde_json::json;

use crate::mirror::lag::Event;

pub struct Alerter {
    pub url: String,
    pub routing_key: String,
    pub replica: String,
    agent: ureq::Agent,
}

impl Alerter {
    pub fn new(url: String, routing_key: String, replica: String) -> Alerter {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build();
        Alerter { url, routing_key, replica, agent: config.into() }
    }

    pub fn dedup_key(&self) -> String {
        format!("stargate-replication-lag-{}", self.replica)
    }

    /// The Events v2 body for `event`.
    pub fn body(&self, event: &Event, leader: &str) -> serde_json::Value {
        match event {
            Event::Trigger { percentile, observed_s, threshold_s, windows } => json!({
                "routing_key": self.routing_key,
                "event_action": "trigger",
                "dedup_key": self.dedup_key(),
                "payload": {
                    "summary": format!("Stargate replication lag on {}: {percentile} {observed_s:.1} s > {threshold_s:.0} s for two consecutive windows", self.replica),
                    "source": self.replica,
                    "severity": if *percentile == "p99" { "critical" } else { "error" },
                    "component": "stargate",
                    "custom_details": {
                        "percentile": percentile,
                        "observed_seconds": observed_s,
                        "threshold_seconds": threshold_s,
                        "replica": self.replica,
                        "leader": leader,
                        "windows": windows,
                    }
                }
            }),
            Event::Resolve { window } => json!({
                "routing_key": self.routing_key,
                "event_action": "resolve",
                "dedup_key": self.dedup_key(),
                "payload": {
                    "summary": format!("Stargate replication lag on {} recovered", self.replica),
                    "source": self.replica,
                    "severity": "info",
                    "custom_details": { "replica": self.replica, "leader": leader, "window": window }
                }
            }),
        }
    }

    /// Send one event; Err with a reason when it was not accepted (the caller retries).
    pub fn send(&self, event: &Event, leader: &str) -> Result<(), String> {
        let body = self.body(event, leader);
        match self.agent.post(&self.url).send_json(&body) {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("{} answered {}", self.url, resp.status())),
            Err(e) => Err(format!("{}: {e}", self.url)),
        }
    }
}
