//! `git stargate verify`: every repository's refs on every node, against the leader's.
//!
//! Each node's refs (all but `refs/stargate/*`) are summed up as one checksum, the XOR of
//! SHA-1 over `<oid> <refname>` for each ref (as Gitaly does): equal sets give equal sums,
//! whatever the order, and one differing ref changes it. A node whose journal ref equals
//! the leader's must hold the same refs; when it does not, the refs have diverged behind
//! Stargate's back (written with hooks disabled, edited on disk) and `git stargate sync
//! --full` repairs them. A node whose journal differs is still catching up: it is looked
//! at again until `--wait` has passed, and then reported as behind, not judged.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use gix::ObjectId;
use serde::Serialize;

use super::CommandError;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::journal;
use crate::lead::lease::Lock;
use crate::mirror as sync;
use crate::store::checksum;

#[derive(Debug, Serialize)]
struct Report {
    leader: String,
    epoch: u64,
    repositories: Vec<RepoReport>,
}

#[derive(Debug, Serialize)]
struct RepoReport {
    name: String,
    nodes: Vec<NodeReport>,
}

#[derive(Debug, Serialize)]
struct NodeReport {
    node: String,
    /// `in-sync`, `diverged`, `behind`, `unreachable`.
    state: String,
    refs: Option<usize>,
    checksum: Option<String>,
    journal: Option<String>,
    /// Refs whose value differs from the leader's (diverged only; at most 50).
    differing: Vec<String>,
    error: Option<String>,
}

/// The refs a mirror copies, for comparison: everything but Stargate's own.
type Refs = BTreeMap<String, ObjectId>;

struct Listing {
    refs: Refs,
    journal: Option<ObjectId>,
}

fn list(
    path: &std::path::Path,
    name: &str,
    base_url: &str,
    settings: &sync::Settings,
) -> std::result::Result<Listing, sync::Error> {
    let all: HashMap<String, ObjectId> = sync::remote_refs(path, name, base_url, settings)?;
    let journal = all.get(journal::REF).copied();
    let refs = crate::store::mirrored(all);
    Ok(Listing { refs, journal })
}

pub fn verify(cfg: &Config, json: bool, wait: Duration) -> Result<()> {
    cfg.validate()?;
    let record =
        Lock::from_config(cfg)?.read_record()?.ok_or_else(|| Error::Refused("no leader elected yet".into()))?;
    let root = cfg.root()?;
    let token = std::fs::read_to_string(crate::lead::node::token_path(&cfg.state_dir()?)).unwrap_or_default();
    let settings = sync::Settings::from_config(cfg, token.trim().to_owned())?;
    let mut nodes: Vec<(String, String)> = Vec::new();
    for id in cfg.nodes() {
        if let Some(url) = cfg.node_url(&id)? {
            nodes.push((id, url));
        }
    }
    let leader_url = match nodes.iter().find(|(id, _)| *id == record.node) {
        Some((_, url)) => url.clone(),
        None => record.url.clone().ok_or_else(|| Error::Refused(format!("no URL for the leader {}", record.node)))?,
    };
    let mut report = Report { leader: record.node.clone(), epoch: record.epoch, repositories: Vec::new() };
    let repos = crate::repos::list(&root).map_err(CommandError::Repos)?;
    for repo in repos {
        let path = root.join(&repo.name);
        let mut nodes_report = Vec::new();
        for (id, url) in nodes.iter().filter(|(id, _)| *id != record.node) {
            nodes_report.push(judge(&path, &repo.name, (&record.node, &leader_url), (id, url), &settings, wait));
        }
        let leader = list(&path, &repo.name, &leader_url, &settings);
        nodes_report.insert(
            0,
            match leader {
                Ok(l) => NodeReport {
                    node: record.node.clone(),
                    state: "leader".into(),
                    refs: Some(l.refs.len()),
                    checksum: Some(checksum(&l.refs)),
                    journal: l.journal.map(|j| j.to_string()),
                    differing: Vec::new(),
                    error: None,
                },
                Err(e) => unreachable(&record.node, e.to_string()),
            },
        );
        report.repositories.push(RepoReport { name: repo.name, nodes: nodes_report });
    }
    let bad: Vec<String> = (report.repositories.iter())
        .flat_map(|r| {
            r.nodes
                .iter()
                .filter(|n| n.state != "in-sync" && n.state != "leader")
                .map(move |n| format!("{} on {}", r.name, n.node))
        })
        .collect();
    if json {
        super::print_json(&report)?;
    } else {
        print(&report);
    }
    if bad.is_empty() { Ok(()) } else { Err(Error::Refused(format!("not verified: {}", bad.join(", ")))) }
}

fn unreachable(node: &str, error: String) -> NodeReport {
    NodeReport {
        node: node.to_owned(),
        state: "unreachable".into(),
        refs: None,
        checksum: None,
        journal: None,
        differing: Vec::new(),
        error: Some(error),
    }
}

/// One replica against the leader, listing both again while the replica's journal differs,
/// until `wait` has passed.
fn judge(
    path: &std::path::Path,
    name: &str,
    (leader, leader_url): (&str, &str),
    (node, url): (&str, &str),
    settings: &sync::Settings,
    wait: Duration,
) -> NodeReport {
    let until = Instant::now() + wait;
    loop {
        let (l, r) = match (list(path, name, leader_url, settings), list(path, name, url, settings)) {
            (Err(e), _) => return unreachable(node, format!("cannot list the leader {leader}: {e}")),
            (_, Err(e)) => return unreachable(node, e.to_string()),
            (Ok(l), Ok(r)) => (l, r),
        };
        let in_step = l.journal == r.journal;
        if in_step || Instant::now() >= until {
            let differing: Vec<String> = (l.refs.keys().chain(r.refs.keys()))
                .filter(|k| l.refs.get(*k) != r.refs.get(*k))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .take(50)
                .cloned()
                .collect();
            let state = match (in_step, differing.is_empty()) {
                (true, true) => "in-sync",
                (true, false) => "diverged",
                (false, _) => "behind",
            };
            return NodeReport {
                node: node.to_owned(),
                state: state.into(),
                refs: Some(r.refs.len()),
                checksum: Some(checksum(&r.refs)),
                journal: r.journal.map(|j| j.to_string()),
                differing: if in_step { differing } else { Vec::new() },
                error: None,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print(report: &Report) {
    println!("leader {} at epoch {}", report.leader, report.epoch);
    for repo in &report.repositories {
        for n in &repo.nodes {
            let sum = n.checksum.as_deref().map_or("-".to_owned(), |c| c[..12].to_owned());
            let refs = n.refs.map_or("-".to_owned(), |r| r.to_string());
            match n.state.as_str() {
                "unreachable" => {
                    println!("{} {}: unreachable: {}", repo.name, n.node, n.error.as_deref().unwrap_or(""))
                }
                state => println!("{} {}: {state} ({refs} refs, checksum {sum})", repo.name, n.node),
            }
            for r in &n.differing {
                println!("{} {}:   differs: {r}", repo.name, n.node);
            }
        }
    }
}
