//! `git stargate log` and `git stargate restore` (git-stargate(1)): the journal read as a
//! push log (every ref update the leader accepted, both generations of the bounded
//! journal: when, sequence, epoch, node, ref, old and new value, forced or not, who pushed
//! when the server said), and a repository's refs put back to their values at a point of
//! it, as one new atomic write through the leader: journaled and replicated, and the
//! values it replaces stay named in the journal.

use std::collections::BTreeMap;
use std::path::Path;

use gix::ObjectId;
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::journal::{self, Kind};
use crate::lead::audit;
use crate::lead::lease::Lock;
use crate::wire::git::{self, PushResult};

/// One ref update the leader accepted.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub repository: String,
    /// When its transaction committed (the leader's clock), ms since the epoch.
    pub time_ms: u64,
    pub seq: u64,
    pub epoch: u64,
    pub node: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub old: String,
    pub new: String,
    /// The old value is not in the new one's history (none when either is absent).
    pub forced: bool,
    /// Who pushed, when the server told the hooks (`STARGATE_PUSHER`, `GL_USER`,
    /// `REMOTE_USER`).
    pub pusher: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot list the repositories under stargate.root: {0}")]
    Repos(#[source] std::io::Error),
    #[error("{0} has no journal")]
    NoJournal(String),
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Lease(#[from] crate::lead::lease::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl From<LogError> for Error {
    fn from(e: LogError) -> Error {
        match e {
            LogError::NoJournal(_) => Error::Refused(e.to_string()),
            other => Error::fatal(other),
        }
    }
}

/// Every update the journal of the repository at `path` names as applied, oldest first:
/// the current generation and the previous one while it is kept.
pub fn read(path: &Path, name: &str) -> std::result::Result<Vec<Pushed>, LogError> {
    read_all(path, name).map(|(found, _)| found)
}

/// As `read`, and whether the walk reached the journal's first entry (else an earlier
/// generation is no longer kept here).
fn read_all(path: &Path, name: &str) -> std::result::Result<(Vec<Pushed>, bool), LogError> {
    let store = journal::open(path)?;
    let Some((tip, _)) = journal::tip(&store)? else { return Err(LogError::NoJournal(name.to_owned())) };
    let mut pushers: BTreeMap<ObjectId, Option<String>> = BTreeMap::new();
    let mut found = Vec::new();
    let mut at = Some(tip);
    let mut complete = false;
    for _ in 0..2 * journal::MAX_WALK {
        let Some(id) = at else {
            complete = true;
            break;
        };
        // A generation no longer kept ends the log.
        let Ok((entry, parent)) = journal::read(&store, id) else { break };
        let prepare = match entry.kind {
            Kind::Outcome { of, .. } => Some(of),
            _ => None,
        };
        for (seq, u) in entry.applied().iter().rev() {
            let pusher = prepare.and_then(|p| pushers.entry(p).or_insert_with(|| journal::pusher(&store, p)).clone());
            let forced = !u.old.is_null() && !u.new.is_null() && !store.is_ancestor(u.old, u.new);
            found.push(Pushed {
                repository: name.to_owned(),
                time_ms: entry.time_ms,
                seq: *seq,
                epoch: entry.epoch,
                node: entry.node.clone(),
                refname: u.refname.clone(),
                old: u.old.to_string(),
                new: u.new.to_string(),
                forced,
                pusher,
            });
        }
        at = parent.or(entry.previous);
    }
    found.reverse();
    Ok((found, complete))
}

/// `git stargate log [repo] [--ref R] [--since T] [--until T] [--json]`.
pub fn log(
    cfg: &Config,
    only: Option<&str>,
    refname: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> Result<()> {
    let root = cfg.root()?;
    let names: Vec<String> = match only {
        Some(name) => {
            super::repo_path(&cfg.root()?, name)?;
            vec![name.to_owned()]
        }
        None => crate::repos::list(&root).map_err(LogError::Repos)?.into_iter().map(|r| r.name).collect(),
    };
    // git reads the dates, in a repository (any will do).
    let Some(first) = names.first() else { return Ok(()) };
    let bound = |d: Option<&str>| -> Result<Option<u64>> {
        Ok(match d {
            Some(d) => Some(git::parse_date(&root.join(first), d).map_err(LogError::from)? * 1000),
            None => None,
        })
    };
    let (since, until) = (bound(since)?, bound(until)?);
    let mut all = Vec::new();
    for name in &names {
        match read(&root.join(name), name) {
            Ok(entries) => all.extend(entries),
            Err(LogError::NoJournal(_)) if only.is_none() => {}
            Err(e) => return Err(e.into()),
        }
    }
    all.retain(|p| {
        refname.is_none_or(|r| p.refname == r)
            && since.is_none_or(|s| p.time_ms >= s)
            && until.is_none_or(|u| p.time_ms <= u)
    });
    all.sort_by_key(|p| (p.time_ms, p.seq));
    if json {
        println!("{}", serde_json::to_string_pretty(&all).map_err(LogError::from)?);
        return Ok(());
    }
    for p in &all {
        println!(
            "{} {} seq {} epoch {} on {} {} {} -> {}{}{}",
            crate::clock::utc(p.time_ms),
            p.repository,
            p.seq,
            p.epoch,
            p.node,
            p.refname,
            short(&p.old),
            short(&p.new),
            if p.forced { " (forced)" } else { "" },
            p.pusher.as_deref().map(|u| format!(" by {u}")).unwrap_or_default()
        );
    }
    Ok(())
}

fn short(oid: &str) -> &str {
    if oid.bytes().all(|b| b == b'0') { "(none)" } else { oid.get(..12).unwrap_or(oid) }
}

/// `git stargate restore <repo> --to <seq>|<date> [--ref R] [--dry-run]`: every ref (or
/// `R`) that moved after that point goes back to the value it had there, in one atomic
/// push to the leader with a lease on each ref's value now.
pub fn restore(cfg: &Config, name: &str, to: &str, only: Option<&str>, dry_run: bool) -> Result<()> {
    let path = super::repo_path(&cfg.root()?, name)?;
    let record = Lock::from_config(cfg)?
        .read_record()
        .map_err(LogError::from)?
        .ok_or_else(|| Error::Refused("no leader elected yet".into()))?;
    let base = record.url.clone().ok_or_else(|| Error::Refused(format!("the leader {} has no URL", record.node)))?;
    let leader_url = crate::mirror::repo_url(&base, name);
    let after: Box<dyn Fn(&Pushed) -> bool> = if !to.is_empty() && to.bytes().all(|b| b.is_ascii_digit()) {
        let seq: u64 = to.parse().map_err(|_| Error::Usage(format!("'{to}': not a sequence number")))?;
        Box::new(move |p: &Pushed| p.seq > seq)
    } else {
        let ms = git::parse_date(&path, to).map_err(LogError::from)? * 1000;
        Box::new(move |p: &Pushed| p.time_ms > ms)
    };
    let (log, complete) = read_all(&path, name)?;
    if !complete && log.first().is_none_or(&after) {
        return Err(Error::Refused(format!(
            "cannot restore {name} to {to}: the journal kept here begins after it (at seq {}); the values then are \
             no longer known (stargate.journal.keep)",
            log.first().map_or(0, |p| p.seq)
        )));
    }
    // Each ref's value before its first update after the point.
    let mut back: BTreeMap<String, String> = BTreeMap::new();
    for p in log.iter().filter(|p| after(p) && only.is_none_or(|r| p.refname == r)) {
        back.entry(p.refname.clone()).or_insert_with(|| p.old.clone());
    }
    let now: BTreeMap<String, String> = {
        let names: Vec<&str> = back.keys().map(String::as_str).collect();
        if names.is_empty() {
            BTreeMap::new()
        } else {
            git::ls_remote(&path, &leader_url, &names).map_err(LogError::from)?.into_iter().collect()
        }
    };
    let changes: Vec<(String, String, Option<String>)> = back
        .into_iter()
        .filter(|(r, v)| now.get(r).map_or(!is_null(v), |n| n != v))
        .map(|(r, v)| (if is_null(&v) { String::new() } else { v }, r.clone(), now.get(&r).cloned()))
        .collect();
    if changes.is_empty() {
        println!("{name}: every ref is already at its value at {to}");
        return Ok(());
    }
    let values: Vec<String> = changes.iter().map(|(v, _, _)| v.clone()).filter(|v| !v.is_empty()).collect();
    let gone = git::incomplete(&path, &values);
    if !gone.is_empty() {
        return Err(Error::Refused(format!(
            "cannot restore {name} to {to}: the objects of {} are gone from this node (pruned by git gc); try on another node",
            gone.join(", ")
        )));
    }
    for (v, r, n) in &changes {
        let from = n.as_deref().map_or("(none)", short);
        println!("{r}: {from} -> {}", if v.is_empty() { "(deleted)" } else { short(v) });
    }
    if dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    let updates: Vec<(String, String, Option<String>)> = changes.clone();
    match git::push_atomic(&path, &leader_url, &updates).map_err(LogError::from)? {
        PushResult::Ok => {
            println!("{name}: {} refs restored to their values at {to} on the leader {}", changes.len(), record.node);
            let mut event = audit::Event::new(
                &cfg.node()?,
                "restored",
                record.epoch,
                format!("{name} to {to}: {}", changes.iter().map(|c| c.1.as_str()).collect::<Vec<_>>().join(", ")),
            );
            event.user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            if let Err(e) = audit::append(&Lock::from_config(cfg)?, cfg.state_dir().ok().as_deref(), &event) {
                eprintln!("warning: cannot append to the audit log: {e}");
            }
            Ok(())
        }
        PushResult::Rejected { reason, stderr } => {
            Err(Error::Refused(format!("the leader refused the restore (nothing moved): {reason} {}", stderr.trim())))
        }
    }
}

fn is_null(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}
