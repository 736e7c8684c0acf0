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
    pub fn send(&self, event: &Event, leader: &str) -> Result<(), SendError> {
        let body = self.body(event, leader);
        match self.agent.post(&self.url).send_json(&body) {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(SendError::Declined { url: self.url.clone(), status: resp.status() }),
            Err(source) => Err(SendError::Unsent { url: self.url.clone(), source }),
        }
    }
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The Events API answered, with a status other than success.
    #[error("{url} answered {status}")]
    Declined { url: String, status: ureq::http::StatusCode },
    /// Not sent, or no answer read.
    #[error("{url}: {source}")]
    Unsent { url: String, source: ureq::Error },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    fn resolve() -> Event {
        let window = crate::mirror::lag::Judged {
            start_ms: 0,
            end_ms: 1000,
            count: 1,
            p50_s: Some(0.1),
            p99_s: Some(0.1),
            complete: true,
            breached: false,
        };
        Event::Resolve { window }
    }

    /// An Events API stand-in that reads one request and answers `status`.
    fn answering(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else { return };
            let mut reader = BufReader::new(stream);
            let (mut line, mut length) = (String::new(), 0);
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let _ = reader.read_exact(&mut vec![0; length]);
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = reader.get_mut().write_all(answer.as_bytes());
        });
        url
    }

    #[test]
    fn an_event_not_accepted_says_why() {
        let url = answering("503 Service Unavailable");
        let alerter = Alerter::new(url.clone(), "key".into(), "b".into());
        let e = alerter.send(&resolve(), "a").unwrap_err();
        assert!(matches!(e, SendError::Declined { status, .. } if status == 503), "{e:?}");
        assert_eq!(e.to_string(), format!("{url} answered 503 Service Unavailable"));

        // Nobody listens: not sent, ureq's error kept as the cause.
        let url = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/v2/enqueue", listener.local_addr().unwrap())
        };
        let e = Alerter::new(url.clone(), "key".into(), "b".into()).send(&resolve(), "a").unwrap_err();
        assert!(matches!(e, SendError::Unsent { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("{url}: ")), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        assert!(Alerter::new(answering("202 Accepted"), "key".into(), "b".into()).send(&resolve(), "a").is_ok());
    }
}
