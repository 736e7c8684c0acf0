//! Who may write: the leader lease with its epochs (the fencing token), on a shared
//! volume or on etcd, the highest epoch this node has seen, a handoff of
//! leadership in progress, the audit trail of every change of leadership, this node's
//! published state, from which hooks, the health responder and the CLI all decide "may
//! this node accept a write now?", what a leader in quorum mode last heard from its peers,
//! and the writes in flight that a draining leader waits for.
//!
//! This folder decides and records; it never runs git and never imports replication or
//! the agent, which build on it.

pub mod audit;
pub mod epoch;
pub mod etcd;
pub mod file;
pub mod handoff;
pub mod heard;
pub mod inflight;
pub mod lease;
pub mod node;
pub mod record;
