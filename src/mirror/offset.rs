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

/// Ask the health responder at `addr` (`host:port`) `tries` times; the estimate from the
/// shortest round trip.
pub fn measure(leader: &str, addr: &str, tries: usize, timeout: Duration) -> Result<Offset, String> {
    let mut best: Option<(u64, i64)> = None;
    let mut last_error = String::from("no answer");
    for _ in 0..tries {
        let t0 = now_ms();
        let answer = http::get_with_head(addr, "/healthz", Instant::now() + timeout, timeout);
        let t2 = now_ms();
        let head = match answer {
            Ok((_, head, _)) => head,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        let prefix = format!("{}:", http::TIME_HEADER.to_ascii_lowercase());
        let Some(t1) = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix(&prefix).and_then(|v| v.trim().parse::<u64>().ok()))
        else {
            last_error = format!("no {} header in the answer", http::TIME_HEADER);
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
