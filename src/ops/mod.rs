//! What operators and monitoring talk to: `git stargate` (this file: the subcommands),
//! the node's status report, and the health responder that serves it over HTTP.
//!
//! Nothing here is on a write's path: these read what `lead`, `journal` and `mirror` publish,
//! and change state only through them.

mod catalog;
pub mod health;
mod listen;
mod lost;
pub mod metrics;
mod promote;
mod pushlog;
pub mod status;
mod verify;

use clap::{Parser, Subcommand};

use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::journal;
use crate::lead::lease::Lock;
use crate::lead::node;

/// What a `git stargate` command fails with when it cannot go on (fatal, 128), its causes
/// kept; a refusal or a usage error is one of `error::Error`'s classes instead.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The repositories under `stargate.root` cannot be listed (sync, verify, promote).
    #[error("{0}")]
    Repos(#[source] std::io::Error),
    /// As `Repos`, for `git stargate list`, which names the root.
    #[error("cannot list {}: {source}", .root.display())]
    ListRoot { root: PathBuf, source: std::io::Error },
    #[error("cannot create {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("{name}: {source}")]
    Manage { name: String, source: crate::managed::ManageError },
    #[error(
        "{name} is created, but fetching {url} into it failed (it is empty; fetch again, or remove it on every node): {source}"
    )]
    Import { name: String, url: String, source: crate::wire::git::Error },
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error(transparent)]
    Refs(#[from] crate::store::ReadError),
    #[error("{name} has no journal after its creation")]
    NoJournal { name: String },
    #[error("the leader record names no URL for {0}: set stargate.{0}.url on {0} (stargate(7))")]
    NoLeaderUrl(String),
    #[error("cannot read the agent's sync token (is the agent running?): {0}")]
    SyncToken(#[source] std::io::Error),
    #[error("{0} repositories failed to sync")]
    SyncFailed(usize),
    /// The operator's answer to a confirmation could not be read.
    #[error("{0}")]
    Terminal(#[source] std::io::Error),
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        Error::fatal(e)
    }
}

/// Operate a Stargate node.
#[derive(Parser)]
#[command(name = "git stargate", version = crate::version::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run this node's agent: contend for the lease, publish state (runs until SIGTERM).
    Agent,
    /// Show this node's role, epoch, leader, repositories, replication and peers.
    Status {
        /// Print JSON instead of text (fields: git-stargate(1)).
        #[arg(long)]
        json: bool,
    },
    /// Make this node the leader: the leader drains, this node catches up, then leads.
    Promote {
        /// Emergency: take leadership now, even from a frozen or unreachable leader,
        /// without the preflight checks; prints what may be lost first.
        #[arg(long)]
        force: bool,
        /// Quorum mode, with --force: lead even when too few nodes answer to know the
        /// furthest position (writes a quorum acknowledged may be lost; printed first).
        #[arg(long, requires = "force")]
        accept_loss: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Promote this node back: it must be the leader the last promotion took over from.
    Failback {
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Compare every repository's refs on every node with the leader's.
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// How long to wait for lagging replicas to catch up before judging them.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
        wait: std::time::Duration,
    },
    /// Create a repository for the whole group (on the leader; replicas follow).
    Create {
        /// `name` or `owner/name`; `.git` is added when missing.
        name: String,
    },
    /// Create a repository for the whole group from an existing one (on the leader): every
    /// ref of the source but refs/stargate/, journaled and replicated like a push.
    Import {
        /// The source repository: any URL or path `git fetch` takes.
        url: String,
        /// `name` or `owner/name`; `.git` is added when missing.
        name: String,
    },
    /// Make an existing bare repository under stargate.root Stargate's on this node: its
    /// hooks directory, core.hooksPath and receive.procReceiveRefs in its config, the marker.
    Manage {
        /// The repository's path (a bare repository under stargate.root).
        path: PathBuf,
    },
    /// List this node's repositories with their journal positions.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mirror repositories from the leader now (all of them without arguments).
    Sync {
        /// Mirror everything, as if the journal could not be followed: repairs what
        /// `verify` reports as diverged.
        #[arg(long)]
        full: bool,
        /// Repositories by name relative to stargate.root, e.g. `kv.git`.
        repos: Vec<String>,
    },
    /// List the writes a failover left only on some node (kept under
    /// refs/stargate/local/lost/), on every node reached, against the leader's refs now.
    Lost {
        /// Only this repository (name relative to stargate.root).
        repo: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-apply kept writes through the leader: fast-forwards, new refs, and git kv keys the
    /// leader has not changed since; anything else is refused with how to merge it by hand.
    Recover {
        /// The repository, by name relative to stargate.root.
        repo: String,
        /// Only this ref (e.g. refs/kv/default).
        #[arg(value_name = "REF")]
        refname: Option<String>,
        /// Only the writes lost at this epoch.
        #[arg(long)]
        epoch: Option<u64>,
        /// Say what would be done, and do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The push log: every ref update the leader accepted, from this node's journal.
    Log {
        /// Only this repository (name relative to stargate.root).
        repo: Option<String>,
        /// Only this ref (e.g. refs/heads/main).
        #[arg(long = "ref", value_name = "REF")]
        refname: Option<String>,
        /// Only updates at or after this date (as git reads dates: "2 hours ago", "2026-12-01 10:00").
        #[arg(long)]
        since: Option<String>,
        /// Only updates at or before this date.
        #[arg(long)]
        until: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a repository's refs back to their values at a point of its journal, as one new
    /// write through the leader.
    Restore {
        /// The repository, by name relative to stargate.root.
        repo: String,
        /// A sequence number (as `log` shows it) or a date.
        #[arg(long, value_name = "SEQ|DATE")]
        to: String,
        /// Only this ref.
        #[arg(long = "ref", value_name = "REF")]
        refname: Option<String>,
        /// Say what would move, and move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Wait until this node has applied a position a push printed (`stargate: position …`).
    Wait {
        /// The repository, by name relative to stargate.root, e.g. `kv.git`.
        repo: String,
        /// `<epoch>:<seq>:<entry id>`, as the push printed it.
        position: String,
        /// Give up after this long (exit 124).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
        timeout: std::time::Duration,
    },
    /// Show replication lag: rolling windows with p50/p99, the aggregate, breaches.
    Lag {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A `--wait` that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("'{0}': expected a duration like 5s or 500ms")]
struct NotADuration(String);

fn duration(s: &str) -> std::result::Result<std::time::Duration, NotADuration> {
    crate::config::parse_duration(s).ok_or_else(|| NotADuration(s.to_owned()))
}

/// Print `value` as pretty JSON on stdout (`--json`).
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value).map_err(CommandError::Json)?);
    Ok(())
}

pub fn main(args: &[String]) -> Result<()> {
    let cli: Cli = crate::args::parse("git stargate", args)?;
    let cfg = Config::load(None)?;
    match cli.command {
        Command::Agent => Ok(crate::agent::run(&cfg)?),
        Command::Promote { force, accept_loss, yes } => promote::promote(&cfg, force, accept_loss, yes),
        Command::Failback { yes } => promote::failback(&cfg, yes),
        Command::Verify { json, wait } => verify::verify(&cfg, json, wait),
        Command::Create { name } => catalog::create(&cfg, &name),
        Command::Manage { path } => catalog::manage(&cfg, &path),
        Command::Import { url, name } => catalog::import(&cfg, &url, &name),
        Command::List { json } => catalog::list(&cfg, json),
        Command::Sync { full, repos } => sync(&cfg, repos, full),
        Command::Lag { json } => lag(&cfg, json),
        Command::Wait { repo, position, timeout } => wait(&cfg, &repo, &position, timeout),
        Command::Log { repo, refname, since, until, json } => {
            pushlog::log(&cfg, repo.as_deref(), refname.as_deref(), since.as_deref(), until.as_deref(), json)
        }
        Command::Restore { repo, to, refname, dry_run } => {
            pushlog::restore(&cfg, &repo, &to, refname.as_deref(), dry_run)
        }
        Command::Lost { repo, json } => lost::lost(&cfg, repo.as_deref(), json),
        Command::Recover { repo, refname, epoch, dry_run } => {
            lost::recover(&cfg, &repo, refname.as_deref(), epoch, dry_run)
        }
        Command::Status { json } => {
            cfg.validate()?;
            let mut status = status::status(&cfg, true)?;
            status::add_peers(&mut status, &cfg);
            status::add_divergence(&mut status, &cfg);
            if json {
                print_json(&status)?;
            } else {
                status::print(&status);
            }
            Ok(())
        }
    }
}

/// The repository `name` under `root`, as an operator named it; a name that is not one is a
/// usage error (`wait`, `lost`, `recover`, `log`, `restore`).
fn repo_path(root: &std::path::Path, name: &str) -> Result<PathBuf> {
    let path = root.join(name);
    if crate::repos::valid_name(name) && path.join("HEAD").is_file() {
        Ok(path)
    } else {
        Err(Error::Usage(format!("{}: not a repository under stargate.root", crate::wire::sanitize::text(name))))
    }
}

/// `git stargate wait`: poll this node's journal until it holds `position` (exit 0), went
/// on at a later epoch without it (refused: it never will), or `timeout` passes (exit 124).
fn wait(cfg: &Config, name: &str, position: &str, timeout: std::time::Duration) -> Result<()> {
    use crate::journal::position::{Applied, Position, applied};
    let want: Position = position.parse().map_err(|e| Error::Usage(format!("{e}")))?;
    let path = repo_path(&cfg.root()?, name)?;
    let state_dir = cfg.state_dir()?;
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        let led =
            (node::read_state(&state_dir).ok().flatten()).filter(|s| s.role == node::Role::Leader).map(|s| s.epoch);
        match applied(&path, &want, led).map_err(CommandError::Journal)? {
            Applied::Yes => return Ok(()),
            Applied::Superseded { at } => {
                return Err(Error::Refused(format!(
                    "{name} will never apply {want} here: its journal went on at epoch {} without it (at {at}): lost \
                     in a failover, or older than the journal this node keeps",
                    at.epoch
                )));
            }
            Applied::Behind { at } => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    let at = at.map_or_else(|| "no journal yet".to_owned(), |p| format!("at {p}"));
                    return Err(Error::TimedOut(format!("{name} has not applied {want} within {timeout:?} ({at})")));
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// `git stargate sync`: mirror now, by hand, with git's progress on a terminal.
fn sync(cfg: &Config, names: Vec<String>, full: bool) -> Result<()> {
    cfg.validate()?;
    let root = cfg.root()?;
    let me = cfg.node()?;
    let record =
        Lock::from_config(cfg)?.read_record()?.ok_or_else(|| Error::Refused("no leader elected yet".into()))?;
    if record.node == me {
        return Err(Error::Refused(format!("this node ({me}) is the leader; nothing to mirror")));
    }
    let base_url = record.url.clone().ok_or_else(|| CommandError::NoLeaderUrl(record.node.clone()))?;
    let token = std::fs::read_to_string(node::token_path(&cfg.state_dir()?)).map_err(CommandError::SyncToken)?;
    let names = if names.is_empty() {
        crate::repos::list(&root).map_err(CommandError::Repos)?.into_iter().map(|r| r.name).collect()
    } else {
        names
    };
    let settings = crate::mirror::Settings {
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        full,
        ..crate::mirror::Settings::from_config(cfg, token.trim().to_owned())?
    };
    let target = crate::mirror::Target::leader(&record, base_url);
    let mut failed = 0;
    for name in names {
        let path = root.join(&name);
        if !crate::repos::valid_name(&name) || !path.join("HEAD").is_file() {
            eprintln!("{name}: not a repository under {}", root.display());
            failed += 1;
            continue;
        }
        match crate::mirror::sync(&path, &name, &target, &settings) {
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
            Err(crate::mirror::Error::Locked) => {
                eprintln!("{name}: skipped: a sync of it is already running")
            }
            Err(e) => {
                eprintln!("{name}: sync failed: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 { Err(CommandError::SyncFailed(failed).into()) } else { Ok(()) }
}

/// `git stargate lag`: the windows the agent judged, the aggregate and the breaches.
fn lag(cfg: &Config, json: bool) -> Result<()> {
    let published = crate::mirror::replicator::read_published(&cfg.state_dir()?)
        .map_err(|e| Error::Refused(e.to_string()))?
        .ok_or_else(|| Error::Refused("no replication figures yet (is the agent running?)".into()))?;
    if json {
        return print_json(&published);
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
    if let Some(o) = &published.clock_offset {
        println!(
            "clock:     {}'s clock is {:+} ms from this node's (± {} ms); every lag above is corrected by it",
            o.leader, o.offset_ms, o.uncertainty_ms
        );
        let uncertain = a.p50_s.is_some_and(|p50| p50 * 1000.0 < o.uncertainty_ms as f64);
        if uncertain {
            println!(
                "           the median lag is below that uncertainty: read it as \"less than {} ms\"",
                o.uncertainty_ms
            );
        }
    }
    Ok(())
}

fn span(start_ms: u64, end_ms: u64) -> String {
    let hms = |ms: u64| {
        let s = (ms / 1000) % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    format!("{}-{}", hms(start_ms), hms(end_ms))
}
