//! What operators and monitoring talk to: `git stargate` (this file: the subcommands),
//! the node's status report, and the health responder that serves it over HTTP.
//!
//! Nothing here is on a write's path: these read what `lead` and `replication` publish,
//! and change state only through them.

pub mod health;
pub mod metrics;
pub mod status;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lead::lease;
use crate::lead::node::{self, Role};
use status::Status;

/// Operate a Stargate node.
#[derive(Parser)]
#[command(name = "git stargate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run this node's agent: contend for the lease, publish state (runs until SIGTERM).
    Agent,
    /// Show this node's role, epoch, leader, repositories and replication.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mirror repositories from the leader now (all of them without arguments).
    Sync {
        /// Repositories by name relative to stargate.root, e.g. `kv.git`.
        repos: Vec<String>,
    },
    /// Show replication lag: rolling windows with p50/p99, the aggregate, breaches.
    Lag {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn main(args: &[String]) -> Result<()> {
    let cli: Cli = crate::args::parse("git stargate", args)?;
    let cfg = Config::load(None)?;
    match cli.command {
        Command::Agent => crate::agent::run(&cfg),
        Command::Sync { repos } => sync(&cfg, repos),
        Command::Lag { json } => lag(&cfg, json),
        Command::Status { json } => {
            cfg.validate()?;
            let status = status::status(&cfg, true)?;
            if json {
                let text = serde_json::to_string_pretty(&status).map_err(|e| Error::Fatal(e.to_string()))?;
                println!("{text}");
            } else {
                print_status(&status);
            }
            Ok(())
        }
    }
}

fn print_status(s: &Status) {
    let role = match s.role {
        Role::Leader => "leader",
        Role::Passive => "passive",
    };
    println!("node:     {}", s.node);
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
    match (&s.agent.problem, s.agent.pid) {
        (None, Some(pid)) => println!("agent:    running (pid {pid})"),
        (problem, _) => println!("agent:    {}", problem.as_deref().unwrap_or("unknown")),
    }
    match &s.refusal {
        None => println!("writes:   accepted"),
        Some(why) => println!("writes:   refused: {why}"),
    }
    let unreadable = s.repositories.iter().filter(|r| !r.readable).count();
    println!("repos:    {} ({unreadable} unreadable)", s.repositories.len());
    match (s.lag_seconds, s.lag_operations) {
        (Some(secs), Some(ops)) => println!("lag:      {secs:.3} s, {ops} operations behind"),
        (None, Some(ops)) => println!("lag:      {ops} operations behind"),
        _ => {}
    }
    for r in &s.repositories {
        let seq = r.journal_seq.map_or("-".into(), |n| n.to_string());
        let last = s.replication.as_ref().and_then(|p| p.repos.get(&r.name)).map(|st| {
            let age = st
                .last_sync_ms
                .map_or("never".into(), |t| format!("{} s ago", crate::clock::now_ms().saturating_sub(t) / 1000));
            format!(", last sync {age}: {}", st.last_result.as_deref().unwrap_or("-"))
        });
        println!("  {} seq {seq}{}", r.name, last.unwrap_or_default());
    }
    if let Some(p) = &s.replication {
        for l in &p.lost {
            println!("lost:     {} {} at {} kept as {}", l.repo, l.refname, l.oid, l.kept_as);
        }
    }
    for e in &s.errors {
        println!("error:    {e}");
    }
}

/// `git stargate sync`: mirror now, by hand, with git's progress on a terminal.
fn sync(cfg: &Config, names: Vec<String>) -> Result<()> {
    cfg.validate()?;
    let root = cfg.root()?;
    let me = cfg.node()?;
    let record = lease::read_record(&cfg.lock()?)?.ok_or_else(|| Error::Refused("no leader elected yet".into()))?;
    if record.node == me {
        return Err(Error::Refused(format!("this node ({me}) is the leader; nothing to mirror")));
    }
    let base_url = record.url.clone().ok_or_else(|| {
        Error::Fatal(format!(
            "the leader record names no URL for {0}: set stargate.{0}.url on {0} (stargate(7))",
            record.node
        ))
    })?;
    let token = std::fs::read_to_string(node::token_path(&cfg.state_dir()?))
        .map_err(|e| Error::Fatal(format!("cannot read the agent's sync token (is the agent running?): {e}")))?;
    let names = if names.is_empty() {
        crate::repos::list(&root).map_err(|e| Error::Fatal(e.to_string()))?.into_iter().map(|r| r.name).collect()
    } else {
        names
    };
    let settings = crate::replication::sync::Settings {
        timeout: cfg.sync_timeout()?,
        upload_pack: cfg.sync_upload_pack().map(str::to_owned),
        token: token.trim().to_owned(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        measure_since_ms: crate::clock::now_ms(),
        lock: cfg.lock()?,
    };
    let target = crate::replication::sync::Target { leader: record.node.clone(), epoch: record.epoch, base_url };
    let mut failed = 0;
    for name in names {
        let path = root.join(&name);
        if !crate::repos::valid_name(&name) || !path.join("HEAD").is_file() {
            eprintln!("{name}: not a repository under {}", root.display());
            failed += 1;
            continue;
        }
        match crate::replication::sync::sync(&path, &name, &target, &settings) {
            Ok(r) => {
                let how = r.fallback.map(|f| format!(" (full: {f})")).unwrap_or_default();
                println!(
                    "{name}: {:?} from {}: {} refs changed, seq {}{how}",
                    r.mode, target.leader, r.refs_changed, r.replica_seq
                );
                for l in r.lost {
                    println!("{name}: {} at {} was not on the leader; kept as {}", l.refname, l.oid, l.kept_as);
                }
            }
            Err(crate::replication::sync::Error::Locked) => {
                eprintln!("{name}: skipped: a sync of it is already running")
            }
            Err(e) => {
                eprintln!("{name}: sync failed: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 { Err(Error::Fatal(format!("{failed} repositories failed to sync"))) } else { Ok(()) }
}

/// `git stargate lag`: the windows the agent judged, the aggregate and the breaches.
fn lag(cfg: &Config, json: bool) -> Result<()> {
    let published = crate::replication::replicator::read_published(&cfg.state_dir()?)
        .ok_or_else(|| Error::Refused("no replication figures yet (is the agent running?)".into()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&published).map_err(|e| Error::Fatal(e.to_string()))?);
        return Ok(());
    }
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3} s"));
    println!("{:<21} {:>8} {:>10} {:>10}  judged", "window (UTC)", "updates", "p50", "p99");
    for w in &published.windows {
        let judged = match (w.complete, w.breached) {
            (false, _) => "breached (incomplete)",
            (true, true) => "breached",
            (true, false) => "ok",
        };
        println!(
            "{:<21} {:>8} {:>10} {:>10}  {judged}",
            span(w.start_ms, w.end_ms),
            w.count,
            secs(w.p50_s),
            secs(w.p99_s)
        );
    }
    let a = &published.aggregate;
    println!("aggregate: {} updates, p50 {}, p99 {}", a.count, secs(a.p50_s), secs(a.p99_s));
    let breached: Vec<String> =
        published.windows.iter().filter(|w| w.breached).map(|w| span(w.start_ms, w.end_ms)).collect();
    println!("breached:  {}", if breached.is_empty() { "none".to_owned() } else { breached.join(", ") });
    println!("alert:     {}", if published.alerting { "open" } else { "none" });
    Ok(())
}

fn span(start_ms: u64, end_ms: u64) -> String {
    let hms = |ms: u64| {
        let s = (ms / 1000) % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    format!("{}-{}", hms(start_ms), hms(end_ms))
}
