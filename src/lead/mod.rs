//! Who may write: the leader lease with its epochs (the fencing token), the audit trail of
//! every change of leadership, and this node's published state, from which hooks, the
//! health responder and the CLI all decide "may this node accept a write now?".
//!
//! This folder decides and records; it never runs git and never imports replication or
//! the agent, which build on it.

pub mod audit;
pub mod lease;
pub mod node;
