//! The status report of one node: role, epoch, leader, agent health, repositories and
//! replication. `git stargate status` prints it; the health responder serves it as
//! `/status` and `/metrics` and answers `/healthz` and `/readyz` from it.

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::lead::lease::Record;
use crate::lead::node::{self, Authority, Role};
use crate::replication::journal;
use crate::replication::replicator::Published;

#[derive(Debug, Serialize)]
pub struct Status {
    pub node: String,
    pub role: Role,
    pub epoch: u64,
    pub leader: Option<Record>,
    pub accepts_writes: bool,
    /// Why writes are refused, when they are.
    pub refusal: Option<String>,
    pub agent: AgentStatus,
    pub repositories: Vec<Repository>,
    /// Worst lag of the last update each repository exposed (replicas), in seconds.
    pub lag_seconds: Option<f64>,
    /// Most journal entries any repository is behind the leader (replicas).
    pub lag_operations: Option<u64>,
    /// What the agent's replica side published, when it has.
    pub replication: Option<Published>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AgentStatus {
    pub alive: bool,
    pub pid: Option<u32>,
    pub heartbeat_age_ms: Option<u64>,
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Repository {
    pub name: String,
    pub readable: bool,
    /// Journal position: the last sequence number this node has (led or mirrored).
    pub journal_seq: Option<u64>,
}

/// This node's status. `detail` adds what only `/status`, `/metrics` and `git stargate
/// status` show: each repository's journal position (one repository open each) and the
/// replica's published figures; the health probes leave them out.
pub fn status(cfg: &Config, detail: bool) -> Result<Status> {
    let view = node::inspect(cfg)?;
    let mut errors = Vec::new();
    let leader = view.record.clone().unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let (accepts_writes, refusal, epoch) = match view.authority() {
        Authority::Leader { epoch } => (true, None, epoch),
        Authority::Refused { reason, epoch, .. } => (false, Some(reason), epoch),
    };
    let mut repositories = match crate::repos::list(&cfg.root()?) {
        Ok(found) => {
            found.into_iter().map(|r| Repository { name: r.name, readable: r.readable, journal_seq: None }).collect()
        }
        Err(e) => {
            errors.push(format!("cannot list {}: {e}", cfg.root()?.display()));
            Vec::new()
        }
    };
    let mut replication = None;
    if detail {
        for r in &mut repositories {
            let repo = journal::open(&cfg.root()?.join(&r.name)).ok();
            r.journal_seq = repo.and_then(|repo| journal::tip(&repo).ok().flatten()).map(|(_, seq)| seq);
        }
        replication =
            crate::replication::replicator::read_published(&cfg.state_dir()?).filter(|_| view.role() == Role::Passive);
    }
    let repos = replication.as_ref().map(|p| p.repos.values().collect::<Vec<_>>()).unwrap_or_default();
    let lag_seconds = repos.iter().filter_map(|r| r.lag_seconds).reduce(f64::max);
    let lag_operations = repos.iter().map(|r| r.lag_operations).max();
    Ok(Status {
        lag_seconds,
        lag_operations,
        replication,
        node: view.me.clone(),
        role: view.role(),
        epoch,
        leader,
        accepts_writes,
        refusal,
        agent: AgentStatus {
            alive: view.agent_alive(),
            pid: view.state.as_ref().map(|s| s.pid),
            heartbeat_age_ms: view.state.as_ref().map(|s| crate::clock::now_ms().saturating_sub(s.heartbeat_ms)),
            problem: view.agent_problem.clone(),
        },
        repositories,
        errors,
    })
}
