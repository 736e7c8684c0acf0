//! `/metrics`: one node's status in the Prometheus text format, version 0.0.4
//! (stargate-hook(1), Metrics). Every family is written whole, HELP and TYPE first, so the
//! output passes `promtool check metrics`; names carry their unit and counters end in `_total`.
//!
//! What the node's files say is exported on every node: up, role, epoch, leader, journal
//! positions, the lost commits its repositories keep. What the agent publishes (counters, the lag histogram, the leader's clock and
//! reachability) is exported
//! whatever the role, since its counts only grow while the agent runs; the per-repository
//! figures of the replica side only while the node is passive.

use std::fmt::Write;

use super::status::Status;
use crate::lead::node::{Role, State};
use crate::mirror::replicator::Published;

/// Labels of a sample after `node`, in order.
type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples, written after its HELP and TYPE lines.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// (name suffix, labels after `node`, value)
    samples: Vec<(&'static str, Labels, String)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family { name, kind, help, samples: Vec::new() }
    }

    fn add(&mut self, labels: Labels, value: impl ToString) {
        self.samples.push(("", labels, value.to_string()));
    }

    fn one(mut self, value: impl ToString) -> Family {
        self.add(Vec::new(), value);
        self
    }
}

/// The exposition of `s`; `state` is the agent's published node state and `agent` what its
/// replication side published, when they can be read.
pub fn render(s: &Status, state: Option<&State>, agent: Option<&Published>) -> String {
    let mut families = vec![
        Family::new("stargate_up", "gauge", "1 when the node's agent is alive").one(s.agent.alive as u8),
        Family::new("stargate_leader", "gauge", "1 when this node accepts writes as leader of the current epoch")
            .one(s.accepts_writes as u8),
        Family::new(
            "stargate_ready",
            "gauge",
            "1 when /readyz answers 200: this node leads and, in quorum mode, heard a quorum of peers follow it",
        )
        .one((s.accepts_writes && s.quorum_shortfall.is_none()) as u8),
    ];
    // The role the agent claims (a dead agent claims nothing: passive); `stargate_leader` says
    // whether the claim holds.
    let claimed = state.filter(|_| s.agent.alive).map_or(Role::Passive, |st| st.role);
    let mut role = Family::new("stargate_role", "gauge", "1 for the role this node's agent claims, leader or passive");
    for (name, r) in [("leader", Role::Leader), ("passive", Role::Passive)] {
        role.add(vec![("role", name.to_owned())], (claimed == r) as u8);
    }
    families.push(role);
    families.push(
        Family::new("stargate_epoch", "gauge", "Current epoch of the leader lease, as this node reads it").one(s.epoch),
    );
    if let Some(record) = &s.leader {
        let mut info =
            Family::new("stargate_leader_info", "gauge", "1, labelled with the node the leader record names");
        info.add(vec![("leader", record.node.clone())], 1);
        families.push(info);
        families.push(
            Family::new("stargate_epoch_start_time_seconds", "gauge", "When the current epoch began, in Unix time")
                .one(seconds(record.since_ms)),
        );
    }
    if let Some(st) = state {
        families.push(
            Family::new("stargate_agent_start_time_seconds", "gauge", "When this node's agent started, in Unix time")
                .one(seconds(st.started_ms)),
        );
    }
    let unreadable = s.repositories.iter().filter(|r| !r.readable).count();
    families.push(
        Family::new("stargate_repositories", "gauge", "Bare repositories served by this node")
            .one(s.repositories.len()),
    );
    families.push(
        Family::new("stargate_repositories_unreadable", "gauge", "Repositories that cannot be read").one(unreadable),
    );
    let mut journal = Family::new(
        "stargate_journal_sequence",
        "gauge",
        "Sequence number of the last journal entry this node holds, per repository",
    );
    for r in &s.repositories {
        if let Some(seq) = r.journal_seq {
            journal.add(vec![("repository", r.name.clone())], seq);
        }
    }
    families.push(journal);
    families.push(
        Family::new(
            "stargate_replication_lost_refs",
            "gauge",
            "Ref values kept under refs/stargate/local/lost/ in this node's repositories, as read from them (git stargate status lists them)",
        )
        .one(s.kept.len()),
    );
    if let Some(p) = &s.replication {
        families.extend(replica(p));
    }
    if let Some(p) = agent {
        families.extend(agent_figures(p));
    }
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}.", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (suffix, labels, value) in &f.samples {
            let _ = write!(out, "{}{suffix}{{node=\"{}\"", f.name, escape(&s.node));
            for (k, v) in labels {
                let _ = write!(out, ",{k}=\"{}\"", escape(v));
            }
            let _ = writeln!(out, "}} {value}");
        }
    }
    out
}

/// The replica side's per-repository figures (passive nodes).
fn replica(p: &Published) -> Vec<Family> {
    let mut leader_seq = Family::new(
        "stargate_replication_leader_sequence",
        "gauge",
        "The leader's journal sequence at this replica's last sync, per repository",
    );
    let mut lag_ops = Family::new(
        "stargate_replication_lag_operations",
        "gauge",
        "Journal entries a repository is behind the leader",
    );
    let mut last_lag = Family::new(
        "stargate_replication_last_lag_seconds",
        "gauge",
        "Lag of the last update a repository exposed, per repository",
    );
    let mut last_sync = Family::new(
        "stargate_replication_last_sync_time_seconds",
        "gauge",
        "When the last sync of a repository ended, in Unix time",
    );
    let mut last_ok = Family::new(
        "stargate_replication_last_sync_success",
        "gauge",
        "1 when the last sync of a repository succeeded",
    );
    let mut repos: Vec<_> = p.repos.iter().collect();
    repos.sort_by(|a, b| a.0.cmp(b.0));
    for (repo, st) in repos {
        let labels = || vec![("repository", repo.clone())];
        leader_seq.add(labels(), st.leader_seq);
        lag_ops.add(labels(), st.lag_operations);
        if let Some(lag) = st.lag_seconds {
            last_lag.add(labels(), lag);
        }
        if let Some(ms) = st.last_sync_ms {
            last_sync.add(labels(), seconds(ms));
        }
        if let Some(result) = &st.last_result {
            last_ok.add(labels(), (result == "ok") as u8);
        }
    }
    vec![leader_seq, lag_ops, last_lag, last_sync, last_ok]
}

/// What the agent publishes whatever its role: counters, the lag histogram, the leader's
/// clock and reachability.
fn agent_figures(p: &Published) -> Vec<Family> {
    let helps = [
        "Syncs that succeeded, idle ones included",
        "Syncs skipped because another sync of the repository was running",
        "Failed syncs retried after a backoff",
        "Syncs killed by the watchdog (stargate.sync.timeout)",
        "Syncs that failed for good (out of retries, or not retryable)",
        "Syncs that mirrored everything because the journal could not be used",
        "Elections this node's agent won",
        "Write signals received from the leader",
        "Datagrams on the agent's UDP port refused: malformed, or naming no repository of this node",
        "Times the agent stopped reading its UDP port for a while: more datagrams than any leader sends",
        "Handoff records refused by the leader: a stale epoch, expired, or naming the leader itself",
        "Leader records, handoffs or leader keys refused: older than the highest epoch this node has seen",
        "Times the leader's health responder stopped answering this replica (two probes in a row)",
        "Probes of an unreachable leader retried after a backoff",
        "Journal entries the leader's agent wrote for its hooks: a push's prepare and outcome",
    ];
    let mut families = Vec::new();
    for ((_, name, value), help) in p.counters.named().into_iter().zip(helps) {
        families.push(Family::new(name, "counter", help).one(value));
    }
    let mut fallbacks = Family::new(
        "stargate_sync_repository_fallbacks_total",
        "counter",
        "Full mirrors of a repository because its journal could not be used",
    );
    let mut repos: Vec<_> = p.repos.iter().collect();
    repos.sort_by(|a, b| a.0.cmp(b.0));
    for (repo, st) in repos {
        fallbacks.add(vec![("repository", repo.clone())], st.fallbacks);
    }
    families.push(fallbacks);
    let mut lag = Family::new(
        "stargate_replication_lag_seconds",
        "histogram",
        "Lag of each update this replica exposed: its exposure time minus the leader's accept time",
    );
    let mut namespaces: Vec<_> = p.lag_histograms.iter().collect();
    namespaces.sort_by(|a, b| a.0.cmp(b.0));
    for (ns, h) in namespaces {
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            lag.samples.push((
                "_bucket",
                vec![("namespace", ns.clone()), ("le", bound.to_string())],
                count.to_string(),
            ));
        }
        lag.samples.push(("_bucket", vec![("namespace", ns.clone()), ("le", "+Inf".into())], h.count.to_string()));
        lag.samples.push(("_sum", vec![("namespace", ns.clone())], h.sum_s.to_string()));
        lag.samples.push(("_count", vec![("namespace", ns.clone())], h.count.to_string()));
    }
    families.push(lag);
    families.push(
        Family::new(
            "stargate_replication_alerting",
            "gauge",
            "1 while the agent's own replication lag alert is triggered",
        )
        .one(p.alerting as u8),
    );
    if let Some(r) = &p.leader {
        let leader = || vec![("leader", r.leader.clone())];
        let mut reachable = Family::new(
            "stargate_leader_reachable",
            "gauge",
            "1 while the leader's health responder answers this replica's probes (every second)",
        );
        reachable.add(leader(), r.reachable as u8);
        families.push(reachable);
        let mut since = Family::new(
            "stargate_leader_unreachable_since_seconds",
            "gauge",
            "When the leader became unreachable (Unix time); absent while it is reachable",
        );
        if let Some(ms) = r.unreachable_since_ms {
            since.add(leader(), seconds(ms));
        }
        families.push(since);
    }
    if let Some(o) = &p.clock_offset {
        families.push(
            Family::new(
                "stargate_leader_clock_offset_seconds",
                "gauge",
                "The leader's wall clock minus this replica's, as estimated (every lag is corrected by it)",
            )
            .one(o.offset_ms as f64 / 1000.0),
        );
        families.push(
            Family::new(
                "stargate_leader_clock_offset_uncertainty_seconds",
                "gauge",
                "Half the round trip of the offset's estimate: the offset is known only to within this",
            )
            .one(seconds(o.uncertainty_ms)),
        );
    }
    families
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::replicator::RepoStatus;
    use crate::mirror::stats::LagHistogram;
    use crate::ops::status::AgentStatus;

    fn status(replication: Option<Published>) -> Status {
        Status {
            node: "b".into(),
            version: crate::version::VERSION.into(),
            agent_version: None,
            role: Role::Passive,
            epoch: 3,
            leader: None,
            seen: None,
            accepts_writes: false,
            refusal: Some("this node is passive".into()),
            quorum_shortfall: None,
            agent: AgentStatus { alive: true, pid: Some(1), heartbeat_age_ms: Some(1), problem: None },
            repositories: Vec::new(),
            lag_seconds: None,
            lag_operations: None,
            replication,
            lease_problem: None,
            kept: Vec::new(),
            last_promotion: None,
            peers: None,
            quorum: None,
            diverged: Vec::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn every_family_stands_together_with_help_and_type_first() {
        let mut p = Published::default();
        p.repos.insert("we\"ird\\.git".into(), RepoStatus { last_result: Some("ok".into()), ..Default::default() });
        p.repos.insert("kv.git".into(), RepoStatus { lag_seconds: Some(0.25), ..Default::default() });
        let mut h = LagHistogram::new(&[]);
        h.observe(0.25);
        p.lag_histograms.insert("default".into(), h);
        let text = render(&status(Some(p.clone())), None, Some(&p));
        let mut seen: Vec<String> = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap().to_owned();
                assert!(!seen.contains(&current), "{current} appears twice:\n{text}");
                seen.push(current.clone());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(rest.starts_with(&format!("{current} ")), "TYPE after its HELP: {line}");
            } else {
                assert!(line.starts_with(&current), "{line} outside its family {current}:\n{text}");
            }
        }
        assert!(text.contains("stargate_replication_last_sync_success{node=\"b\",repository=\"we\\\"ird\\\\.git\"} 1"));
        assert!(
            text.contains("stargate_replication_lag_seconds_bucket{node=\"b\",namespace=\"default\",le=\"0.25\"} 1")
        );
        assert!(
            text.contains("stargate_replication_lag_seconds_bucket{node=\"b\",namespace=\"default\",le=\"0.1\"} 0")
        );
        assert!(text.contains("stargate_replication_lag_seconds_count{node=\"b\",namespace=\"default\"} 1"));
        assert!(text.contains("stargate_role{node=\"b\",role=\"passive\"} 1"), "no state: passive");
        assert!(text.contains("# TYPE stargate_sync_syncs_total counter"));
    }
}
