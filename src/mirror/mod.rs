//! The replica's half of replication (docs/ARCHITECTURE.md, `src/mirror/`): mirroring a
//! repository from the node that leads (or, for a node about to lead, from the furthest
//! one), planned from the journal or from a full listing and applied as one transaction;
//! the scheduler that runs those mirrors (signals, summary, sweeps, watchdog, retries);
//! and what they measure (lag, its windows and alerts, StatsD, the counters).
//!
//! It reads the lease (to know whom to mirror and to fence itself) but never changes it.

pub mod alert;
pub mod backoff;
pub mod lag;
pub mod offset;
pub mod replicator;
pub mod stats;
mod sync;

pub use sync::*;
