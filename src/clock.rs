//! The wall clock, in milliseconds since the Unix epoch: leader records, journal entries,
//! heartbeats and lag samples all carry it. Two nodes' clocks are never assumed equal
//! beyond what docs/ARCHITECTURE.md ("Time and clocks") says each figure tolerates.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since boot (`CLOCK_BOOTTIME`): monotonic, shared by every process of this
/// machine, counting suspend, never stepped by NTP. Deadlines one process publishes for
/// another on the same machine (the etcd lease's validity, for the hooks) use it.
pub fn boot_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}
