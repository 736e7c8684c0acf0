//! `git stargate lost` and `git stargate recover` (git-stargate(1)): the writes a failover
//! left only on some node, kept there under `refs/stargate/local/lost/<epoch>/<ref>`
//! (stargate(7), Lost commits), found on every node this one reaches, judged against the
//! leader's ref now, and re-applied through the leader as new writes: journaled,
//! replicated and audited like any push. Nothing kept is deleted: a recovered write is
//! one the leader's ref now contains.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lead::audit;
use crate::lead::lease::{Lock, Record};
use crate::wire::git::{self, PushResult};

/// Where kept writes are, on the node that kept them.
const KEPT: &str = "refs/stargate/local/lost/";

/// One kept write, as `lost` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeptWrite {
    pub repository: String,
    /// The node that keeps it.
    pub node: String,
    #[serde(rename = "ref")]
    pub refname: String,
    /// The epoch whose leader's journal did not have it.
    pub epoch: u64,
    pub kept_as: String,
    pub kept: String,
    /// The leader's value of the ref now (none: it has no such ref).
    pub leader: Option<String>,
    pub state: State,
}

/// How a kept write stands against the leader's ref now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The leader's ref contains it: nothing to do.
    Recovered,
    /// It contains the leader's ref: recovering it is a fast-forward.
    FastForward,
    /// The leader has no such ref: recovering it creates it.
    Missing,
    /// Each has what the other lacks.
    Diverged,
    /// Could not be judged (objects unreachable): why.
    Unknown(String),
}

impl State {
    fn word(&self) -> String {
        match self {
            State::Recovered => "recovered".into(),
            State::FastForward => "fast-forward".into(),
            State::Missing => "missing on the leader".into(),
            State::Diverged => "diverged".into(),
            State::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

/// What was looked at: the kept writes, and the nodes that could not be asked.
#[derive(Debug, Default, Serialize)]
pub struct Ledger {
    pub leader: Option<String>,
    pub kept: Vec<KeptWrite>,
    pub unreachable: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LostError {
    #[error("no leader elected yet: nothing to judge kept writes against")]
    NoLeader,
    #[error("the leader record names no URL for {0}: set stargate.{0}.url (stargate(7))")]
    NoLeaderUrl(String),
    #[error("cannot list the repositories under stargate.root: {0}")]
    Repos(#[source] std::io::Error),
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Lease(#[from] crate::lead::lease::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl From<LostError> for Error {
    fn from(e: LostError) -> Error {
        match e {
            LostError::NoLeader => Error::Refused(e.to_string()),
            other => Error::fatal(other),
        }
    }
}

/// Split `refs/stargate/local/lost/<epoch>[.<n>]/<ref>` into the epoch and the ref.
fn parse_kept(kept_as: &str) -> Option<(u64, String)> {
    let rest = kept_as.strip_prefix(KEPT)?;
    let (dir, refname) = rest.split_once('/')?;
    let epoch = dir.split('.').next()?.parse().ok()?;
    Some((epoch, refname.to_owned()))
}

struct Ctx {
    root: std::path::PathBuf,
    me: String,
    record: Record,
    leader_url: String,
    /// Every node with a URL, this one included: (id, base URL).
    nodes: Vec<(String, String)>,
}

fn context(cfg: &Config) -> Result<Ctx> {
    cfg.validate()?;
    let record = Lock::from_config(cfg)?.read_record().map_err(LostError::from)?.ok_or(LostError::NoLeader)?;
    let leader_url = record.url.clone().ok_or_else(|| LostError::NoLeaderUrl(record.node.clone()))?;
    let nodes = (cfg.nodes().into_iter()).filter_map(|id| Some((id.clone(), cfg.node_url(&id).ok()??))).collect();
    Ok(Ctx { root: cfg.root()?, me: cfg.node()?, record, leader_url, nodes })
}

fn repositories(ctx: &Ctx, only: Option<&str>) -> Result<Vec<String>> {
    match only {
        Some(name) => super::repo_path(&ctx.root, name).map(|_| vec![name.to_owned()]),
        None => Ok(crate::repos::list(&ctx.root).map_err(LostError::Repos)?.into_iter().map(|r| r.name).collect()),
    }
}

/// Every kept write of `names` on every node reachable, judged against the leader now.
fn gather(ctx: &Ctx, names: &[String]) -> Ledger {
    let mut ledger = Ledger { leader: Some(ctx.record.node.clone()), ..Ledger::default() };
    for name in names {
        let path = ctx.root.join(name);
        let mut found: Vec<(String, String, String)> = Vec::new();
        for (node, base) in &ctx.nodes {
            let url = crate::mirror::repo_url(base, name);
            let kept = if *node == ctx.me {
                git::list_refs(&path, &[KEPT])
            } else {
                git::ls_remote(&path, &url, &[&format!("{KEPT}*")])
            };
            match kept {
                Ok(kept) => found.extend(kept.into_iter().map(|(k, oid)| (node.clone(), k, oid))),
                Err(e) => ledger.unreachable.push(format!("{node} ({name}): {e}")),
            }
        }
        if found.is_empty() {
            continue;
        }
        let leader_url = crate::mirror::repo_url(&ctx.leader_url, name);
        let refnames: Vec<String> = found.iter().filter_map(|(_, k, _)| parse_kept(k).map(|p| p.1)).collect();
        let leader_refs = leader_values(ctx, &path, &leader_url, &refnames);
        for (node, kept_as, oid) in found {
            let Some((epoch, refname)) = parse_kept(&kept_as) else { continue };
            let leader =
                leader_refs.as_ref().ok().and_then(|r| r.iter().find(|(n, _)| *n == refname).map(|x| x.1.clone()));
            let state = match &leader_refs {
                Err(e) => State::Unknown(format!("cannot read the leader's refs: {e}")),
                Ok(_) => judge(ctx, &path, name, &node, &kept_as, &oid, leader.as_deref()),
            };
            ledger.kept.push(KeptWrite {
                repository: name.clone(),
                node,
                refname,
                epoch,
                kept_as,
                kept: oid,
                leader,
                state,
            });
        }
    }
    ledger.kept.sort_by(|a, b| {
        (&a.repository, a.epoch, &a.refname, &a.node).cmp(&(&b.repository, b.epoch, &b.refname, &b.node))
    });
    ledger
}

/// The leader's values of `refnames`, its objects brought here.
fn leader_values(
    ctx: &Ctx,
    path: &Path,
    url: &str,
    refnames: &[String],
) -> std::result::Result<Vec<(String, String)>, git::Error> {
    let names: Vec<&str> = refnames.iter().map(String::as_str).collect();
    if ctx.record.node == ctx.me {
        return git::list_refs(path, &names)
            .map(|refs| refs.into_iter().filter(|(n, _)| refnames.contains(n)).collect());
    }
    let refs: Vec<(String, String)> =
        git::ls_remote(path, url, &names)?.into_iter().filter(|(n, _)| refnames.contains(n)).collect();
    let present: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
    git::fetch_objects(path, url, &present)?;
    Ok(refs)
}

/// How kept value `oid` (kept by `node`) stands against the leader's value `leader`.
fn judge(ctx: &Ctx, path: &Path, name: &str, node: &str, kept_as: &str, oid: &str, leader: Option<&str>) -> State {
    if node != ctx.me {
        let url = ctx.nodes.iter().find(|(n, _)| n == node).map(|(_, b)| crate::mirror::repo_url(b, name));
        if let Some(url) = url
            && let Err(e) = git::fetch_objects(path, &url, &[kept_as])
        {
            return State::Unknown(format!("cannot fetch it from {node}: {e}"));
        }
    }
    let Some(leader) = leader else { return State::Missing };
    match (git::is_ancestor(path, oid, leader), git::is_ancestor(path, leader, oid)) {
        (Ok(true), _) => State::Recovered,
        (Ok(false), Ok(true)) => State::FastForward,
        (Ok(false), Ok(false)) => State::Diverged,
        (Err(e), _) | (_, Err(e)) => State::Unknown(e.to_string()),
    }
}

/// `git stargate lost [repo] [--json]`.
pub fn lost(cfg: &Config, only: Option<&str>, json: bool) -> Result<()> {
    let ctx = context(cfg)?;
    let names = repositories(&ctx, only)?;
    let ledger = gather(&ctx, &names);
    if json {
        println!("{}", serde_json::to_string_pretty(&ledger).map_err(LostError::from)?);
        return Ok(());
    }
    if ledger.kept.is_empty() {
        println!("no kept writes on the nodes reached (leader: {})", ctx.record.node);
    }
    for k in &ledger.kept {
        println!(
            "{} {} lost at epoch {} on {}: kept {} ({}), leader {}: {}",
            k.repository,
            k.refname,
            k.epoch,
            k.node,
            short(&k.kept),
            k.kept_as,
            k.leader.as_deref().map_or("(none)", short),
            k.state.word()
        );
    }
    for u in &ledger.unreachable {
        println!("not reached: {u}");
    }
    Ok(())
}

fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}

/// `git stargate recover <repo> [<ref>] [--epoch N] [--dry-run]`: each matching kept write,
/// oldest epoch first, judged again just before it is applied.
pub fn recover(cfg: &Config, name: &str, refname: Option<&str>, epoch: Option<u64>, dry_run: bool) -> Result<()> {
    let ctx = context(cfg)?;
    let names = repositories(&ctx, Some(name))?;
    let path = ctx.root.join(name);
    let leader_url = crate::mirror::repo_url(&ctx.leader_url, name);
    let wanted = |k: &KeptWrite| refname.is_none_or(|r| k.refname == r) && epoch.is_none_or(|e| k.epoch == e);
    let candidates: Vec<KeptWrite> = gather(&ctx, &names).kept.into_iter().filter(wanted).collect();
    if candidates.is_empty() {
        println!("nothing kept to recover in {name}");
        return Ok(());
    }
    let (mut applied, mut refused) = (Vec::new(), Vec::new());
    for k in candidates {
        // Again, now: an earlier recovery may have moved the leader's ref.
        let fresh = gather(&ctx, &names).kept.into_iter().find(|x| x.kept_as == k.kept_as && x.node == k.node);
        let Some(k) = fresh else { continue };
        let what = format!("{} at epoch {} on {} ({})", k.refname, k.epoch, k.node, short(&k.kept));
        let new = match &k.state {
            State::Recovered => {
                println!("{what}: already on the leader");
                continue;
            }
            State::Unknown(why) => {
                refused.push(format!("{what}: cannot judge it: {why}"));
                continue;
            }
            State::FastForward | State::Missing => k.kept.clone(),
            State::Diverged if k.refname.starts_with("refs/kv/") => {
                let leader = k.leader.clone().unwrap_or_default();
                match git::merge_tree(&path, &leader, &k.kept).map_err(LostError::from)? {
                    Err(conflicts) => {
                        refused.push(format!(
                            "{what}: the leader changed these keys since, differently: {} (set them by hand with \
                             git kv, then run recover again for the rest)",
                            conflicts.join(", ")
                        ));
                        continue;
                    }
                    Ok(tree) if dry_run => tree,
                    Ok(tree) => {
                        let message = format!(
                            "git stargate recover: keys of {} kept at epoch {} on {}\n\nMerges {} into the leader's {}.",
                            k.refname, k.epoch, k.node, k.kept, leader
                        );
                        git::commit_tree(&path, &tree, &[&leader, &k.kept], &message).map_err(LostError::from)?
                    }
                }
            }
            State::Diverged => {
                refused.push(format!(
                    "{what}: diverged from the leader's {}; merge it by hand:\n  git fetch {} {}\n  git merge FETCH_HEAD   \
                     # in a clone of {leader_url} with {} checked out\n  git push {leader_url} HEAD:{}",
                    k.leader.as_deref().map_or("(none)", short),
                    ctx.nodes.iter().find(|(n, _)| *n == k.node).map_or(String::new(), |(_, b)| crate::mirror::repo_url(b, name)),
                    k.kept_as,
                    k.refname,
                    k.refname
                ));
                continue;
            }
        };
        let how = match k.state {
            State::FastForward => "fast-forward",
            State::Missing => "create",
            _ => "merge of the keys",
        };
        if dry_run {
            println!("{what}: would recover it on the leader ({how})");
            continue;
        }
        let lease = Some(k.leader.as_deref());
        match git::push(&path, &[], &leader_url, &new, &k.refname, lease).map_err(LostError::from)? {
            PushResult::Ok => {
                println!("{what}: recovered ({how}), {} is {} on the leader", k.refname, short(&new));
                applied.push(format!("{what} ({how})"));
            }
            PushResult::Rejected { reason, stderr } => {
                refused.push(format!("{what}: the leader refused it: {reason} {}", stderr.trim()));
            }
        }
    }
    if !applied.is_empty() {
        let mut event =
            audit::Event::new(&ctx.me, "recovered", ctx.record.epoch, format!("{name}: {}", applied.join("; ")));
        event.user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
        let lock = Lock::from_config(cfg)?;
        if let Err(e) = audit::append(&lock, cfg.state_dir().ok().as_deref(), &event) {
            eprintln!("warning: cannot append to the audit log: {e}");
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!("not recovered:\n{}", refused.join("\n"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_names_give_epoch_and_ref() {
        assert_eq!(parse_kept("refs/stargate/local/lost/3/refs/kv/default"), Some((3, "refs/kv/default".into())));
        assert_eq!(parse_kept("refs/stargate/local/lost/12.2/refs/heads/a/b"), Some((12, "refs/heads/a/b".into())));
        assert_eq!(parse_kept("refs/stargate/local/lost/x/refs/heads/a"), None);
        assert_eq!(parse_kept("refs/heads/main"), None);
    }
}
