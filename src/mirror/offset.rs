//! How far the leader's wall clock is from this replica's, estimated as NTP does from one
//! request and its answer: the leader's time `t1` (the health responder's time header) was
//! read between this node's `t0` (sent) and `t2` (answered), so the offset is
//! `t1 - (t0 + t2) / 2`, give or take half the round trip. The best of a few tries (the
//! shortest round trip) is kept.
//!
//! Lag compares the leader's accept time of an update with this replica's exposure time;
//! with the offset, both are on this replica's clock (docs/ARCHITECTURE.md, "Time and
//! clocks").

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::wire::http;

/// The leader's clock minus this node's, as last measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub leader: String,
    /// Leader's clock minus this replica's, in milliseconds.
    pub offset_ms: i64,
    /// Half the shortest round trip, plus the clocks' resolution.
    pub uncertainty_ms: u64,
    pub measured_ms: u64,
}

impl Offset {
    /// The leader's time `leader_ms` on this replica's clock.
    pub fn local(&self, leader_ms: u64) -> u64 {
        leader_ms.saturating_add_signed(-self.offset_ms)
    }
}

/// Why no estimate was made: the last try's failure.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Not even one try.
    #[error("no answer")]
    NoAnswer,
    #[error(transparent)]
    Http(#[from] http::Error),
    #[error("no {} header in the answer", http::TIME_HEADER)]
    NoTime,
}

/// Ask the health responder at `addr` (`host:port`) `tries` times; the estimate from the
/// shortest round trip.
pub fn measure(leader: &str, addr: &str, tries: usize, timeout: Duration) -> Result<Offset, MeasureError> {
    let mut best: Option<(u64, i64)> = None;
    let mut last_error = MeasureError::NoAnswer;
    for _ in 0..tries {
        let t0 = now_ms();
        let answer = http::get_with_head(addr, "/healthz", Instant::now() + timeout, timeout);
        let t2 = now_ms();
        let head = match answer {
            Ok((_, head, _)) => head,
            Err(e) => {
                last_error = e.into();
                continue;
            }
        };
        let prefix = format!("{}:", http::TIME_HEADER.to_ascii_lowercase());
        let Some(t1) = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix(&prefix).and_then(|v| v.trim().parse::<u64>().ok()))
        else {
            last_error = MeasureError::NoTime;
            continue;
        };
        let round_trip = t2.saturating_sub(t0);
        let offset = t1 as i64 - ((t0 + t2) / 2) as i64;
        if best.is_none_or(|(rt, _)| round_trip < rt) {
            best = Some((round_trip, offset));
        }
    }
    let (round_trip, offset_ms) = best.ok_or(last_error)?;
    // Each clock reads whole milliseconds: one more either way.
    Ok(Offset { leader: leader.to_owned(), offset_ms, uncertainty_ms: round_trip / 2 + 1, measured_ms: now_ms() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A health responder stand-in that gives every request `answer`.
    fn responder(answer: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let _ = s.read(&mut [0u8; 1024]);
                let _ = s.write_all(answer.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn an_estimate_or_why_none() {
        let timeout = Duration::from_millis(500);
        let leader = now_ms() + 60_000;
        let addr = responder(format!("HTTP/1.0 200 OK\r\n{}: {leader}\r\n\r\nok\n", http::TIME_HEADER));
        let o = measure("a", &addr, 2, timeout).unwrap();
        assert!((50_000..=60_000).contains(&o.offset_ms), "{o:?}");
        let e = measure("a", &addr, 0, timeout).unwrap_err();
        assert!(matches!(e, MeasureError::NoAnswer), "{e:?}");
        assert_eq!(e.to_string(), "no answer");

        let e = measure("a", &responder("HTTP/1.0 200 OK\r\n\r\nok\n".into()), 2, timeout).unwrap_err();
        assert!(matches!(e, MeasureError::NoTime), "{e:?}");
        assert_eq!(e.to_string(), "no Stargate-Time-Ms header in the answer");

        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let e = measure("a", &closed, 1, timeout).unwrap_err();
        assert!(matches!(e, MeasureError::Http(http::Error::Refused(_))), "{e:?}");
        assert_eq!(e.to_string(), "connection refused");
    }
}
