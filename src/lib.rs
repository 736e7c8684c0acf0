//! Stargate: an active/passive high-availability layer for ordinary Git servers, built
//! only from Git's extension points (remote helper, hooks, `git config`, subcommands).
//! All logic lives in this library; the binaries in `bin/` are thin entry points.

pub mod admin;
pub mod agent;
pub mod alert;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod error;
pub mod git;
pub mod health;
pub mod hook;
pub mod journal;
pub mod kv;
pub mod lag;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod proto;
pub mod remote;
pub mod replicate;
pub mod sanitize;
pub mod sync;
