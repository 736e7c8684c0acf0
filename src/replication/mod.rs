//! Copying what the leader accepted to the replicas: the journal kept in git, one sync of
//! one repository, the replica's scheduler, retries with backoff, lag windows, alerts and
//! metrics, and the push signal the leader's hook sends.
//!
//! It reads the lease (to know whom to mirror and to fence itself) but never changes it.

pub mod alert;
pub mod backoff;
pub mod changes;
pub mod journal;
pub mod lag;
pub mod metrics;
pub mod offset;
pub mod replicator;
pub mod signal;
pub mod stage;
pub mod sync;
