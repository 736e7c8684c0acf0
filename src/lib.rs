//! Stargate: an active/passive high-availability layer for ordinary Git servers, built
//! only from Git's extension points (remote helper, hooks, `git config`, subcommands).
//! All logic lives in this library; the binaries in `bin/` are thin entry points.

pub mod admin;
pub mod agent;
pub mod cli;
pub mod config;
pub mod error;
pub mod git;
pub mod health;
pub mod hook;
pub mod kv;
pub mod lease;
pub mod node;
pub mod sanitize;
