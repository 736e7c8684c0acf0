//! One integration-test binary: real binaries, real git, real processes and sockets.

mod support;

mod acceptance;
mod cascade;
mod clocks;
mod config;
mod docs;
mod etcd;
mod failover;
mod formats;
mod health;
mod hooks;
mod install;
mod jepsen;
mod kv;
mod layout;
mod lease;
mod lost;
mod managed;
mod monitoring;
mod package;
mod props;
mod pushlog;
mod quorum;
mod reads;
mod remote;
mod replication;
mod repos;
mod scale;
mod security;
mod servers;
mod transport;
mod upgrade;
