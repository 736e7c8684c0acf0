//! How Stargate speaks to git: the only module that runs the `git` binary, the protocol v2
//! client that mirroring uses, where a node's repository is (endpoints and shell quoting),
//! and the stripping of terminal escapes from anything a remote says.
//!
//! Nothing here knows about leaders, epochs or config keys: it never imports anything of
//! Stargate outside this folder.

pub mod endpoint;
pub mod git;
pub mod http;
pub mod proto;
pub mod sanitize;
pub mod ssh;
