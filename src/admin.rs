//! `git stargate`: the operator CLI (agent, status), and the status report that the
//! health responder serves as `/status`.

use std::path::Path;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lease::{self, Record};
use crate::node::{self, Authority, Role};

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
    /// Show this node's role, epoch, leader and repositories.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn main(args: &[String]) -> Result<()> {
    let cli: Cli = crate::cli::parse("git stargate", args)?;
    let cfg = Config::load(None)?;
    match cli.command {
        Command::Agent => crate::agent::run(&cfg),
        Command::Status { json } => {
            cfg.validate()?;
            let status = status(&cfg)?;
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
}

pub fn status(cfg: &Config) -> Result<Status> {
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
    let repositories = match repositories(&cfg.root()?) {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("cannot list {}: {e}", cfg.root()?.display()));
            Vec::new()
        }
    };
    Ok(Status {
        node: view.me.clone(),
        role: view.role(),
        epoch,
        leader,
        accepts_writes,
        refusal,
        agent: AgentStatus {
            alive: view.agent_alive(),
            pid: view.state.as_ref().map(|s| s.pid),
            heartbeat_age_ms: view.state.as_ref().map(|s| lease::now_ms().saturating_sub(s.heartbeat_ms)),
            problem: view.agent_problem.clone(),
        },
        repositories,
        errors,
    })
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
            lease::now_ms().saturating_sub(r.since_ms) / 1000
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
    for e in &s.errors {
        println!("error:    {e}");
    }
}

/// Bare repositories under `root`, as `name.git` or `owner/name.git` (two levels at most).
pub fn repositories(root: &Path) -> std::io::Result<Vec<Repository>> {
    let mut found = Vec::new();
    scan(root, root, 2, &mut found)?;
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn scan(root: &Path, dir: &Path, depth: u32, found: &mut Vec<Repository>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) || !path.is_dir() {
            continue;
        }
        if path.join("HEAD").is_file() && path.join("objects").is_dir() {
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            let readable = std::fs::read(path.join("HEAD")).is_ok() && std::fs::read_dir(path.join("objects")).is_ok();
            found.push(Repository { name, readable });
        } else if depth > 1 {
            scan(root, &path, depth - 1, found)?;
        }
    }
    Ok(())
}
