//! The status report of one node: role, epoch, leader, agent health, repositories and
//! replication. `git stargate status` prints it; the health responder serves it as
//! `/status` and `/metrics` and answers `/healthz` and `/readyz` from it.

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::journal;
use crate::lead::audit;
use crate::lead::heard;
use crate::lead::lease::Lock;
use crate::lead::lease::Record;
use crate::lead::node::{self, Authority, Role};
use crate::mirror::replicator::Published;

#[derive(Debug, Serialize)]
pub struct Status {
    pub node: String,
    /// The build this node runs: package version and commit (`stargate::VERSION`).
    pub version: String,
    /// The build of the running agent, from its node state, when it says (0.1.0 agents do
    /// not): another than `version` means binaries replaced under a running agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    pub role: Role,
    pub epoch: u64,
    pub leader: Option<Record>,
    /// The highest epoch this node's agent has seen, and who led it (stargate(7), Epoch).
    pub seen: Option<Seen>,
    pub accepts_writes: bool,
    /// Why writes are refused, when they are.
    pub refusal: Option<String>,
    /// A leader in quorum mode: why a write sent now would not find a quorum, when it
    /// would not (`/readyz` then answers 503; stargate(7), Readiness).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_shortfall: Option<String>,
    pub agent: AgentStatus,
    /// Why the agent cannot reach the lease (an etcd without an answering member), if so.
    pub lease_problem: Option<String>,
    pub repositories: Vec<Repository>,
    /// Worst lag of the last update each repository exposed (replicas), in seconds.
    pub lag_seconds: Option<f64>,
    /// Most journal entries any repository is behind the leader (replicas).
    pub lag_operations: Option<u64>,
    /// What the agent's replica side published, when it has.
    pub replication: Option<Published>,
    /// Lost commits kept in this node's repositories (`refs/stargate/local/lost/*`).
    pub kept: Vec<Kept>,
    /// The last promotion in the audit trail.
    pub last_promotion: Option<audit::Event>,
    /// The other nodes as seen from here (`git stargate status` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Peer>>,
    /// Quorum mode (`git stargate status` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumView>,
    /// Repositories this passive node is at the leader's journal position in, whose refs
    /// still differ from the leader's (`git stargate status` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diverged: Vec<Diverged>,
    pub errors: Vec<String>,
}

/// An epoch and the node that led it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub epoch: u64,
    pub node: String,
}

impl Status {
    /// The newest epoch this node knows of, and its leader: the record's, or the one its
    /// agent has seen when that is newer (the record is refused, or not read yet).
    pub fn current(&self) -> Option<Seen> {
        let record = self.leader.as_ref().map(|r| Seen { epoch: r.epoch, node: r.node.clone() });
        match (record, self.seen.clone()) {
            (Some(r), Some(s)) if s.epoch > r.epoch => Some(s),
            (None, s) => s,
            (r, _) => r,
        }
    }
}

/// A value a replica kept instead of destroying it (stargate(7), Lost commits).
#[derive(Debug, Serialize)]
pub struct Kept {
    pub repository: String,
    /// `refs/stargate/local/lost/<epoch>/<ref>`.
    pub kept_as: String,
    pub oid: String,
}

/// A repository whose refs differ from the leader's at the same journal position.
#[derive(Debug, Serialize)]
pub struct Diverged {
    pub repository: String,
    /// The refs that differ (at most 20).
    pub refs: Vec<String>,
}

/// Another node, from its health responder's `/status`.
#[derive(Debug, Serialize)]
pub struct Peer {
    pub node: String,
    pub health: Option<String>,
    pub reachable: bool,
    /// The build it runs, from its `/status` (none from a node older than the field).
    pub version: Option<String>,
    pub role: Option<String>,
    pub epoch: Option<u64>,
    pub accepts_writes: Option<bool>,
    pub lag_seconds: Option<f64>,
    pub lag_operations: Option<u64>,
    /// Why it could not be asked, or why it refuses writes.
    pub note: Option<String>,
    /// Quorum mode: whether its word counts toward a quorum now (`quorum` says why not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
    #[serde(skip)]
    agent_alive: Option<bool>,
}

/// Quorum mode, as `git stargate status` sees it: how many nodes a write needs, and which
/// count now.
#[derive(Debug, Serialize)]
pub struct QuorumView {
    pub needed: usize,
    pub nodes: usize,
    pub counting: Vec<String>,
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
    /// Why Stargate does not serve it (a repository format it cannot replicate yet).
    pub unsupported: Option<String>,
}

/// This node's status. `detail` adds what only `/status`, `/metrics` and `git stargate
/// status` show: each repository's journal position and kept lost commits (one repository
/// open each), the replica's published figures and the last promotion; the health probes
/// leave them out.
pub fn status(cfg: &Config, detail: bool) -> Result<Status> {
    let view = node::inspect(cfg)?;
    let mut errors = Vec::new();
    let leader = match &view.record {
        Ok(record) => record.clone(),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let (accepts_writes, refusal, epoch) = match view.authority() {
        Authority::Leader { epoch } => (true, None, epoch),
        Authority::Refused { reason, epoch, .. } => (false, Some(reason), epoch),
    };
    let quorum_shortfall = (view.state.as_ref())
        .filter(|_| accepts_writes)
        .and_then(|state| heard::shortfall(state, heard::read(&cfg.state_dir().ok()?).as_ref()));
    let mut repositories = match crate::repos::list(&cfg.root()?) {
        Ok(found) => {
            let root = cfg.root()?;
            let quorum = cfg.replication_quorum_mode().unwrap_or(false);
            (found.into_iter())
                .map(|r| Repository {
                    unsupported: crate::repos::unsupported_in(&root.join(&r.name), quorum)
                        .map(crate::repos::unsupported_refusal),
                    name: r.name,
                    readable: r.readable,
                    journal_seq: None,
                })
                .collect()
        }
        Err(e) => {
            errors.push(format!("cannot list {}: {e}", cfg.root()?.display()));
            Vec::new()
        }
    };
    let (mut replication, mut kept, mut last_promotion) = (None, Vec::new(), None);
    if detail {
        for r in &mut repositories {
            let Ok(repo) = journal::open(&cfg.root()?.join(&r.name)) else { continue };
            r.journal_seq = journal::tip(&repo).ok().flatten().map(|(_, seq)| seq);
            kept.extend(kept_refs(&repo, &r.name));
        }
        last_promotion = audit::last_promotion(&audit::read(&Lock::from_config(cfg)?)).cloned();
        replication = match crate::mirror::replicator::read_published(&cfg.state_dir()?) {
            Ok(published) => published.filter(|_| view.role() == Role::Passive),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
    }
    let repos = replication.as_ref().map(|p| p.repos.values().collect::<Vec<_>>()).unwrap_or_default();
    let lag_seconds = repos.iter().filter_map(|r| r.lag_seconds).reduce(f64::max);
    let lag_operations = repos.iter().map(|r| r.lag_operations).max();
    Ok(Status {
        lag_seconds,
        lag_operations,
        replication,
        node: view.me.clone(),
        version: crate::version::VERSION.to_owned(),
        agent_version: view.state.as_ref().and_then(|s| s.version.clone()),
        role: view.role(),
        epoch,
        seen: view.seen.as_ref().map(|r| Seen { epoch: r.epoch, node: r.node.clone() }),
        leader,
        accepts_writes,
        refusal,
        quorum_shortfall,
        agent: AgentStatus {
            alive: view.agent_alive(),
            pid: view.state.as_ref().map(|s| s.pid),
            heartbeat_age_ms: view.state.as_ref().map(node::heartbeat_age_ms),
            problem: view.agent_problem.clone(),
        },
        lease_problem: view.state.as_ref().and_then(|s| s.lease_problem.clone()),
        repositories,
        kept,
        last_promotion,
        peers: None,
        quorum: None,
        diverged: Vec::new(),
        errors,
    })
}

fn kept_refs(repo: &crate::store::Store, name: &str) -> Vec<Kept> {
    let Ok(kept) = repo.prefixed("refs/stargate/local/lost/") else { return Vec::new() };
    (kept.into_iter())
        .map(|(kept_as, oid)| Kept { repository: name.to_owned(), kept_as, oid: oid.to_string() })
        .collect()
}

/// Repositories compared with the leader by `add_divergence` (`git stargate verify` compares
/// them all).
const DIVERGENCE_CHECKS: usize = 200;

/// A passive node is "0 operations behind" in a repository only if its refs are the
/// leader's: for each repository at the leader's position, compare them (the checksum
/// `git stargate verify` uses) and list those that differ, so that status never says "0
/// behind" of refs that are not the leader's. A ref written meanwhile may differ for a
/// moment: a difference is confirmed by a second look.
pub fn add_divergence(status: &mut Status, cfg: &Config) {
    use crate::mirror;
    let (Some(replication), Some(leader)) = (&status.replication, &status.leader) else { return };
    let (Some(base_url), Ok(root), Ok(state_dir)) = (leader.url.clone(), cfg.root(), cfg.state_dir()) else { return };
    let token = std::fs::read_to_string(node::token_path(&state_dir)).unwrap_or_default();
    let Ok(settings) = mirror::Settings::from_config(cfg, token.trim().to_owned()) else { return };
    let mut names: Vec<&String> =
        replication.repos.iter().filter(|(_, r)| r.lag_operations == 0).map(|(n, _)| n).collect();
    names.sort();
    let compare = |name: &str| -> Option<Vec<String>> {
        let path = root.join(name);
        let theirs = mirror::remote_refs(&path, name, &base_url, &settings).ok()?;
        let ours = journal::open(&path).ok()?.prefixed("refs/").ok()?;
        let (theirs_pos, ours_pos) =
            (theirs.get(journal::REF).copied(), ours.iter().find(|(r, _)| r == journal::REF).map(|(_, o)| *o));
        // Only at the same position: behind is what the lag already says.
        (theirs_pos == ours_pos).then(|| crate::store::differing(theirs, ours))
    };
    for name in names.into_iter().take(DIVERGENCE_CHECKS) {
        if compare(name).is_some_and(|d| !d.is_empty()) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if let Some(refs) = compare(name).filter(|d| !d.is_empty()) {
                status.diverged.push(Diverged { repository: name.clone(), refs: refs.into_iter().take(20).collect() });
            }
        }
    }
}

/// Ask every other configured node's health responder for its `/status`, in parallel,
/// each within `stargate.probeTimeout`.
pub fn add_peers(status: &mut Status, cfg: &Config) {
    let timeout = cfg.probe_timeout().unwrap_or(std::time::Duration::from_millis(500));
    let deadline = std::time::Instant::now() + timeout;
    let others: Vec<(String, Option<String>)> = (cfg.nodes().into_iter())
        .filter(|id| *id != status.node)
        .map(|id| {
            let health = cfg.node_health(&id).ok().flatten();
            (id, health)
        })
        .collect();
    let asks: Vec<_> = others
        .into_iter()
        .map(|(node, health)| {
            std::thread::spawn(move || {
                let addr = health
                    .as_deref()
                    .and_then(|h| h.strip_prefix("http://"))
                    .map(|a| a.split('/').next().unwrap_or(a).to_owned());
                let answer = match &addr {
                    None => Err(Unasked::NoHealth(node.clone())),
                    Some(addr) => crate::wire::http::get(addr, "/status", deadline, timeout).map_err(Unasked::from),
                };
                peer(node, health, answer)
            })
        })
        .collect();
    let mut peers: Vec<Peer> = asks.into_iter().filter_map(|t| t.join().ok()).collect();
    if cfg.replication_quorum_mode().unwrap_or(false) {
        let epoch = status.leader.as_ref().map(|r| r.epoch);
        let mut counting: Vec<String> = Vec::new();
        if let Some(r) = &status.leader {
            counting.push(r.node.clone());
        }
        for p in &mut peers {
            let why_not = quorum_exclusion(p, epoch);
            p.counts = Some(why_not.is_none());
            p.quorum = why_not;
            if p.counts == Some(true) && !counting.contains(&p.node) {
                counting.push(p.node.clone());
            }
        }
        // This node, when it is a passive one, counts by the same rules.
        if status.role == Role::Passive
            && status.leader.as_ref().is_some_and(|r| r.epoch == status.epoch)
            && status.agent.alive
            && !counting.contains(&status.node)
        {
            counting.push(status.node.clone());
        }
        let nodes = cfg.nodes().len();
        status.quorum = cfg.replication_quorum().ok().map(|needed| QuorumView { needed, nodes, counting });
    }
    status.peers = Some(peers);
}

/// Why a peer's word does not count toward a quorum now, if it does not: a write needs it
/// reachable, alive and following the leader's epoch. A peer behind counts: to stage the
/// leader's newest entry it fetches every entry from its own position on, so it catches up
/// from the journal in the same step.
fn quorum_exclusion(p: &Peer, epoch: Option<u64>) -> Option<String> {
    if !p.reachable {
        return Some("unreachable".into());
    }
    if p.accepts_writes == Some(true) {
        return (p.epoch != epoch).then(|| format!("leads at epoch {}", p.epoch.unwrap_or(0)));
    }
    if p.agent_alive != Some(true) {
        return Some("its agent is not running".into());
    }
    if p.epoch != epoch {
        return Some(format!("follows epoch {}, not {}", p.epoch.unwrap_or(0), epoch.unwrap_or(0)));
    }
    None
}

/// Why a peer's `/status` was not read.
#[derive(Debug, thiserror::Error)]
enum Unasked {
    #[error("stargate.{0}.health is not set (stargate(7))")]
    NoHealth(String),
    #[error(transparent)]
    Http(#[from] crate::wire::http::Error),
}

fn peer(node: String, health: Option<String>, answer: std::result::Result<(u16, String), Unasked>) -> Peer {
    let unreachable = |note: String| Peer {
        node: node.clone(),
        health: health.clone(),
        reachable: false,
        version: None,
        role: None,
        epoch: None,
        accepts_writes: None,
        lag_seconds: None,
        lag_operations: None,
        note: Some(note),
        counts: None,
        quorum: None,
        agent_alive: None,
    };
    let (code, body) = match answer {
        Ok(a) => a,
        Err(why) => return unreachable(why.to_string()),
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return unreachable(format!("HTTP {code}: not a /status answer"));
    };
    let text = |v: &serde_json::Value| v.as_str().map(crate::wire::sanitize::text);
    Peer {
        node: node.clone(),
        health: health.clone(),
        reachable: true,
        version: text(&v["version"]),
        role: text(&v["role"]),
        epoch: v["epoch"].as_u64(),
        accepts_writes: v["accepts_writes"].as_bool(),
        lag_seconds: v["lag_seconds"].as_f64(),
        lag_operations: v["lag_operations"].as_u64(),
        note: text(&v["refusal"]),
        counts: None,
        quorum: None,
        agent_alive: v["agent"]["alive"].as_bool(),
    }
}

/// The `version:` line: these binaries' build, and the agent's when it runs another (the
/// binaries replaced under it; RUNBOOK.md, Upgrading the group).
fn version_line(version: &str, agent: Option<&str>) -> String {
    match agent.filter(|a| *a != version) {
        Some(agent) => format!("{version} (the agent runs {agent}: restart it)"),
        None => version.to_owned(),
    }
}

/// `git stargate status` as text.
pub fn print(s: &Status) {
    let role = match s.role {
        Role::Leader => "leader",
        Role::Passive => "passive",
    };
    println!("node:     {}", s.node);
    println!("version:  {}", version_line(&s.version, s.agent_version.as_deref()));
    println!("role:     {role} (epoch {})", s.epoch);
    match &s.leader {
        Some(r) => println!(
            "leader:   {} (epoch {}, for {} s)",
            r.node,
            r.epoch,
            crate::clock::now_ms().saturating_sub(r.since_ms) / 1000
        ),
        None => println!("leader:   none elected yet"),
    }
    if let Some(seen) = s.seen.as_ref().filter(|seen| s.leader.as_ref().is_none_or(|r| r.epoch < seen.epoch)) {
        println!("seen:     epoch {} ({}), newer than the leader record", seen.epoch, seen.node);
    }
    match (&s.agent.problem, s.agent.pid) {
        (None, Some(pid)) => println!("agent:    running (pid {pid})"),
        (problem, _) => println!("agent:    {}", problem.as_deref().unwrap_or("unknown")),
    }
    if let Some(problem) = &s.lease_problem {
        println!("lease:    {problem}");
    }
    match (&s.refusal, &s.quorum_shortfall) {
        (None, None) => println!("writes:   accepted"),
        (None, Some(why)) => println!("writes:   not ready: {why}"),
        (Some(why), _) => println!("writes:   refused: {why}"),
    }
    let unreadable = s.repositories.iter().filter(|r| !r.readable).count();
    println!("repos:    {} ({unreadable} unreadable)", s.repositories.len());
    match (s.lag_seconds, s.lag_operations) {
        _ if !s.diverged.is_empty() => println!(
            "lag:      refs differ from the leader's in {} repositories at its journal position \
             (git stargate verify; git stargate sync --full repairs)",
            s.diverged.len()
        ),
        (Some(secs), Some(ops)) => println!("lag:      {secs:.3} s, {ops} operations behind"),
        (None, Some(ops)) => println!("lag:      {ops} operations behind"),
        _ => {}
    }
    if let Some(r) = s.replication.as_ref().and_then(|p| p.leader.as_ref()) {
        match r.unreachable_since_ms {
            Some(since) => println!(
                "reach:    leader {} unreachable for {} s: {}",
                r.leader,
                crate::clock::now_ms().saturating_sub(since) / 1000,
                r.reason.as_deref().unwrap_or("no answer")
            ),
            None => println!("reach:    leader {} reachable", r.leader),
        }
    }
    for r in &s.repositories {
        let seq = r.journal_seq.map_or("-".into(), |n| n.to_string());
        let last = s.replication.as_ref().and_then(|p| p.repos.get(&r.name)).map(|st| {
            let age = st
                .last_sync_ms
                .map_or("never".into(), |t| format!("{} s ago", crate::clock::now_ms().saturating_sub(t) / 1000));
            format!(", last sync {age}: {}", st.last_result.as_deref().unwrap_or("-"))
        });
        match &r.unsupported {
            Some(why) => println!("  {}: not served: {why}", r.name),
            None => println!("  {} seq {seq}{}", r.name, last.unwrap_or_default()),
        }
    }
    for d in &s.diverged {
        println!("diverged: {}: {}", d.repository, d.refs.join(", "));
    }
    for k in &s.kept {
        println!("kept:     {} {} at {}", k.repository, k.kept_as, k.oid);
    }
    if let Some(p) = &s.last_promotion {
        let age = crate::clock::now_ms().saturating_sub(p.time_ms) / 1000;
        let from = p.previous_leader.as_deref().unwrap_or("?");
        println!("promoted: {} from {from} at epoch {}, {age} s ago, by {} ({})", p.node, p.epoch, p.user, p.event);
    }
    for p in s.peers.iter().flatten() {
        // Nodes may run different builds during an upgrade: each peer says which it runs.
        let version = format!(", version {}", p.version.as_deref().unwrap_or("unknown"));
        match (p.reachable, p.accepts_writes) {
            (false, _) => println!("peer:     {} unreachable: {}", p.node, p.note.as_deref().unwrap_or("?")),
            (true, Some(true)) => println!("peer:     {} leader (epoch {}){version}", p.node, p.epoch.unwrap_or(0)),
            (true, _) => {
                let lag = match (p.lag_seconds, p.lag_operations) {
                    (Some(s), Some(o)) => format!(", lag {s:.3} s, {o} operations behind"),
                    (None, Some(o)) => format!(", {o} operations behind"),
                    _ => String::new(),
                };
                println!("peer:     {} passive (epoch {}){lag}{version}", p.node, p.epoch.unwrap_or(0));
            }
        }
    }
    if let Some(q) = &s.quorum {
        println!("quorum:   {} of {} nodes; counting now: {}", q.needed, q.nodes, q.counting.join(", "));
        for p in s.peers.iter().flatten().filter(|p| p.counts == Some(false)) {
            println!("  {} does not count: {}", p.node, p.quorum.as_deref().unwrap_or("?"));
        }
    }
    for e in &s.errors {
        println!("error:    {e}");
    }
}

#[cfg(test)]
mod tests {
    /// An agent of another build than the binaries is named; the same build, or an agent
    /// that does not say (0.1.0), is not.
    #[test]
    fn the_version_line_names_an_agent_of_another_build() {
        let line = super::version_line;
        assert_eq!(line("0.2.0 (b)", Some("0.1.0 (a)")), "0.2.0 (b) (the agent runs 0.1.0 (a): restart it)");
        assert_eq!(line("0.2.0 (b)", Some("0.2.0 (b)")), "0.2.0 (b)");
        assert_eq!(line("0.2.0 (b)", None), "0.2.0 (b)");
    }
}
