//! `git stargate promote [--force]` and `git stargate failback`: the checks and the
//! confirmation here, the promotion itself by this node's agent (`agent::control`), whose
//! progress is printed as it comes.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use super::CommandError;
use crate::agent::control::{self, Request};
use crate::clock::now_ms;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lead::audit;
use crate::lead::lease::Lock;
use crate::lead::lease::Record;
use crate::lead::node::{self, Role};
use crate::mirror;

pub fn promote(cfg: &Config, force: bool, accept_loss: bool, yes: bool) -> Result<()> {
    cfg.validate()?;
    let me = cfg.node()?;
    let view = node::inspect(cfg)?;
    if let Some(problem) = &view.agent_problem {
        return Err(Error::Refused(format!("this node's agent is not usable: {problem}")));
    }
    if view.role() == Role::Leader {
        return Err(Error::Refused(format!("{me} already leads")));
    }
    let record =
        Lock::from_config(cfg)?.read_record()?.ok_or_else(|| Error::Refused("no leader elected yet".into()))?;
    if record.node == me {
        return Err(Error::Refused(format!("the leader record names {me} already; wait for its agent")));
    }
    if force {
        println!(
            "emergency promotion of {me}: {} (epoch {}) is not asked, and not waited for",
            record.node, record.epoch
        );
        may_lose(cfg, accept_loss)?;
    } else {
        preflight(cfg, &record)?;
        println!(
            "planned promotion of {me}: {} (epoch {}) drains, {me} catches up, then leads a new epoch",
            record.node, record.epoch
        );
    }
    confirm(yes, &format!("Promote {me}?"))?;
    let request = Request::Promote { force, user: audit::user(), accept_loss };
    let outcome = control::ask(&cfg.state_dir()?, &request, |line| println!("{line}")).map_err(Error::fatal)?;
    if outcome.ok {
        println!("{}", outcome.message);
        Ok(())
    } else {
        Err(Error::Refused(outcome.message))
    }
}

/// A planned promotion back to the node the last promotion took over from.
pub fn failback(cfg: &Config, yes: bool) -> Result<()> {
    let me = cfg.node()?;
    let events = audit::read(&Lock::from_config(cfg)?);
    let last = audit::last_promotion(&events)
        .ok_or_else(|| Error::Refused("no promotion in the audit trail: nothing to fail back from".into()))?;
    match last.previous_leader.as_deref() {
        Some(previous) if previous == me => promote(cfg, false, false, yes),
        previous => Err(Error::Refused(format!(
            "the last promotion made {} leader, taking over from {}; failback runs on {}",
            last.node,
            previous.unwrap_or("nobody"),
            previous.unwrap_or("that node")
        ))),
    }
}

/// Refuse unless the leader is healthy, this node is close enough behind, and the last
/// promotion is not too recent. Prints what it checked.
fn preflight(cfg: &Config, record: &Record) -> Result<()> {
    let cooldown = cfg.promote_cooldown()?;
    if let Some(last) = audit::last_promotion(&audit::read(&Lock::from_config(cfg)?)) {
        let age = Duration::from_millis(now_ms().saturating_sub(last.time_ms));
        if age < cooldown {
            return Err(Error::Refused(format!(
                "the last promotion ({} at epoch {}) was {} s ago; stargate.promote.cooldown is {} s (--force overrides)",
                last.node,
                last.epoch,
                age.as_secs(),
                cooldown.as_secs()
            )));
        }
    }
    leader_healthy(cfg, record)?;
    println!("check: {} is healthy and leads epoch {}", record.node, record.epoch);
    let max_lag = cfg.promote_max_lag()?;
    let worst = lag(cfg, record)?;
    match worst {
        Some((name, lag, updates)) if lag > max_lag => {
            return Err(Error::Refused(format!(
                "{name} lacks {updates} update{}, the oldest accepted {:.1} s ago; stargate.promote.maxLag is {} s \
                 (wait for replication, or --force)",
                if updates == 1 { "" } else { "s" },
                lag.as_secs_f64(),
                max_lag.as_secs_f64()
            )));
        }
        Some((name, lag, updates)) => {
            println!("check: at most {:.3} s behind ({name}: {updates} updates to catch up)", lag.as_secs_f64())
        }
        None => println!("check: every repository is at the leader's journal position, with the leader's refs"),
    }
    Ok(())
}

fn leader_healthy(cfg: &Config, record: &Record) -> Result<()> {
    let health = match &record.health {
        Some(h) => Some(h.clone()),
        None => cfg.node_health(&record.node)?,
    }
    .ok_or_else(|| {
        Error::Refused(format!("cannot ask {0}: stargate.{0}.health is not set (stargate(7))", record.node))
    })?;
    let addr = health.strip_prefix("http://").unwrap_or(&health);
    let addr = addr.split('/').next().unwrap_or(addr);
    let timeout = cfg.probe_timeout()?.max(Duration::from_secs(2));
    for path in ["/healthz", "/readyz"] {
        match crate::wire::http::get(addr, path, Instant::now() + timeout, timeout) {
            Ok((200, _)) => {}
            Ok((code, body)) => {
                return Err(Error::Refused(format!(
                    "{} is not healthy: {path} answered {code} {} (--force promotes anyway)",
                    record.node,
                    crate::wire::sanitize::text(body.lines().next().unwrap_or("").trim())
                )));
            }
            Err(why) => {
                return Err(Error::Refused(format!(
                    "cannot ask {} {path}: {why} (--force promotes anyway)",
                    record.node
                )));
            }
        }
    }
    Ok(())
}

/// The worst lag over this node's repositories, measured against the leader now: the
/// repository, how long ago the leader accepted the oldest update this node lacks, and
/// how many it lacks. `None` when nothing is missing.
fn lag(cfg: &Config, record: &Record) -> Result<Option<(String, Duration, u64)>> {
    let base_url = record
        .url
        .clone()
        .ok_or_else(|| Error::Refused(format!("the leader record names no URL for {}", record.node)))?;
    let target = mirror::Target::leader(record, base_url);
    // The token lets a fetch through git's commands (ssh, http) write its scratch refs.
    let token = std::fs::read_to_string(node::token_path(&cfg.state_dir()?)).unwrap_or_default();
    let settings = mirror::Settings::from_config(cfg, token.trim().to_owned())?;
    let mut worst: Option<(String, Duration, u64)> = None;
    let root = cfg.root()?;
    for repo in crate::repos::list(&root).map_err(CommandError::Repos)?.into_iter().filter(|r| r.readable) {
        let path = root.join(&repo.name);
        // A sync that runs holds the repository for at most its watchdog.
        let behind = mirror::behind(&path, &repo.name, &target, &settings, settings.timeout);
        let behind =
            behind.map_err(|e| Error::Refused(format!("{}: cannot compare with {}: {e}", repo.name, record.node)))?;
        if behind.unknown_position {
            return Err(Error::Refused(format!(
                "{}: this node's journal position is not in {}'s journal (a full mirror is due; --force promotes anyway)",
                repo.name, record.node
            )));
        }
        if behind.updates == 0 {
            diverged(&path, &repo.name, record, &target, &settings)?;
        }
        let Some(oldest) = behind.oldest_ms else { continue };
        let lag = Duration::from_millis(now_ms().saturating_sub(oldest));
        if worst.as_ref().is_none_or(|(_, w, _)| lag > *w) {
            worst = Some((repo.name.clone(), lag, behind.updates));
        }
    }
    Ok(worst)
}

/// At the leader's journal position, this node's refs must be the leader's: refused when
/// they differ at the same position three looks in a row, 200 ms apart (a write committed
/// and not yet journaled differs for a moment; a ref moved behind the journal's back, or a
/// write a sync missed, stays). When the positions differ, `behind` has said how far.
fn diverged(
    path: &std::path::Path,
    name: &str,
    record: &Record,
    target: &mirror::Target,
    settings: &mirror::Settings,
) -> Result<()> {
    let mut differing = Vec::new();
    for look in 0..3 {
        if look > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let theirs = mirror::remote_refs(path, name, &target.base_url, settings)
            .map_err(|e| Error::Refused(format!("{name}: cannot list {}'s refs: {e}", record.node)))?;
        let ours =
            crate::journal::open(path).map_err(CommandError::Journal)?.prefixed("refs/").map_err(CommandError::Refs)?;
        let journal =
            |refs: &[(String, gix::ObjectId)]| refs.iter().find(|(r, _)| r == crate::journal::REF).map(|(_, o)| *o);
        let theirs_journal = theirs.get(crate::journal::REF).copied();
        if theirs_journal != journal(&ours) {
            return Ok(());
        }
        differing = crate::store::differing(theirs, ours);
        if differing.is_empty() {
            return Ok(());
        }
    }
    Err(Error::Refused(format!(
        "{name}: at {}'s journal position, but refs differ: {} (git stargate verify; git stargate sync --full repairs)",
        record.node,
        differing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    )))
}

/// What an emergency promotion may lose, said before it is confirmed (git-stargate(1),
/// promote): in quorum mode, nothing a quorum acknowledged unless the loss is accepted;
/// in async mode, per repository, this node's journal position against the last one it saw
/// from the leader, and the writes the leader had prepared whose outcome this node never
/// saw (dropped when it leads; the old leader keeps any it acknowledged).
fn may_lose(cfg: &Config, accept_loss: bool) -> Result<()> {
    if cfg.replication_quorum_mode()? {
        let nodes = cfg.nodes().len();
        let quorum = cfg.replication_quorum()?;
        let must_hear = nodes + 1 - quorum;
        if accept_loss {
            println!(
                "may lose: writes a quorum acknowledged, when none of the nodes that answer holds them \
                 (--accept-loss: this node leads with whatever it hears, even fewer than {must_hear} of {nodes} nodes)"
            );
        } else {
            println!(
                "may lose: nothing a quorum acknowledged: this node hears at least {must_hear} of the {nodes} nodes \
                 and takes over the furthest position first, or refuses and changes nothing"
            );
        }
        println!("may lose: writes no quorum staged: their pushes were refused (no quorum) or got no answer");
        return Ok(());
    }
    let root = cfg.root()?;
    for repo in crate::repos::list(&root).unwrap_or_default().into_iter().filter(|r| r.readable) {
        let open = crate::journal::open(&root.join(&repo.name)).and_then(|git| match crate::journal::tip(&git)? {
            Some((tip, _)) => crate::journal::open_prepares(&git, tip),
            None => Ok(Vec::new()),
        });
        if let Ok(open) = open
            && !open.is_empty()
        {
            let seqs: Vec<String> = open.iter().map(|(_, e)| e.seq.to_string()).collect();
            println!(
                "may lose: {}: {} write{} the leader had prepared, without an outcome here (seq {}): dropped",
                repo.name,
                open.len(),
                if open.len() == 1 { "" } else { "s" },
                seqs.join(", ")
            );
        }
    }
    let Some(published) = cfg.state_dir().ok().and_then(|d| crate::mirror::replicator::published(&d)) else {
        println!("may lose: unknown (this node has published no replication figures)");
        return Ok(());
    };
    let mut repos: Vec<_> = published.repos.iter().collect();
    repos.sort_by(|a, b| a.0.cmp(b.0));
    let mut any = false;
    for (name, r) in repos {
        if r.leader_seq > r.replica_seq {
            any = true;
            println!(
                "may lose: {name}: this node is at seq {}, the leader was last seen at seq {} ({} updates)",
                r.replica_seq,
                r.leader_seq,
                r.leader_seq - r.replica_seq
            );
        }
    }
    if !any {
        println!("may lose: nothing this node saw: every repository was at the leader's last seen position");
    }
    println!("may lose: and any write the leader accepted since this node last synced; the old leader keeps it");
    Ok(())
}

/// Ask on the terminal unless `yes`; without a terminal, refuse.
fn confirm(yes: bool, question: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Refused("not confirmed: standard input is not a terminal; pass --yes".into()));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(CommandError::Terminal)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::Refused("not confirmed; nothing changed".into())),
    }
}
