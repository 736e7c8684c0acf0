//! The wall clock, in milliseconds since the Unix epoch: leader records, journal entries,
//! heartbeats and lag samples all carry it. Two nodes' clocks are never assumed equal
//! beyond what docs/ARCHITECTURE.md ("Time and clocks") says each figure tolerates.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
