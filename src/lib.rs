//! Stargate: an active/passive high-availability layer for ordinary Git servers, built
//! only from Git's extension points (remote helper, hooks, `git config`, subcommands).
//! All logic lives in this library; the binaries in `bin/` are thin entry points.
//!
//! The folders are the architecture (docs/ARCHITECTURE.md has the map and the rules):
//! `lead` decides who may write, `journal` records what the leader did, `mirror` copies it
//! to the replicas, `agent` runs them on a node, `hook` enforces the decision inside git,
//! `ops` is what operators and monitoring talk to, `remote` and `kv` are the clients,
//! `store` is the only writer of git's on-disk state and `wire` how any of them speaks to
//! git. The `mod` lines below are grouped by layer, top first: imports run down them,
//! never back up (the code map lists the layers; tests/it/layout.rs checks them).

pub mod cli;

pub mod hook;
pub mod kv;
pub mod ops;
pub mod remote;

pub mod agent;

pub mod mirror;

pub mod journal;

pub mod lead;

pub mod kvtree;

pub mod args;

pub mod error;

pub mod store;

pub mod managed;

pub mod repos;

pub mod arena;
pub mod clock;
pub mod config;
pub mod files;
pub mod format;
pub mod spare;
pub mod version;

pub mod wire;
