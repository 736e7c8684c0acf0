//! `git stargate create`, `import`, `manage` and `list`: the repositories of the group. A
//! repository is created on the leader, marked managed and given its journal; replicas
//! learn of it from the leader's change summary (`/changes`) and create it before
//! mirroring it (stargate(7), Repositories).

use serde::Serialize;

use super::CommandError;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::journal::{self, stage};
use crate::lead::audit;
use crate::lead::lease::Lock;
use crate::lead::node::{self, Authority};

pub fn create(cfg: &Config, typed: &str) -> Result<()> {
    let made = create_here(cfg, typed, "created")?;
    if made.view.state.as_ref().and_then(|s| s.quorum.as_ref()).is_none() {
        println!(
            "created {} on {}; the replicas create and mirror it as soon as they hear of it",
            made.name, made.view.me
        );
    }
    on_a_quorum(&made)
}

/// `git stargate import <url> <name>`: `create`, then every ref of the repository at `url`
/// but its `refs/stargate/` fetched into it in one atomic transaction, which runs the
/// hooks: journaled on the leader and replicated like a push (stargate(7), Repositories).
pub fn import(cfg: &Config, url: &str, typed: &str) -> Result<()> {
    let made = create_here(cfg, typed, "imported")?;
    let fetched = crate::wire::git::fetch(
        &made.path,
        &[],
        &["--atomic", "--no-tags", "--quiet", "--", url, "+refs/*:refs/*", "^refs/stargate/*"],
        &[],
    );
    if let Err(e) = fetched {
        return Err(CommandError::Import { name: made.name, url: crate::wire::sanitize::text(url), source: e }.into());
    }
    // The source's default branch, where it names one (HEAD is not replicated: stargate(7)).
    if let Ok(Some(head)) = crate::wire::git::remote_head(&made.path, url) {
        let _ = crate::wire::git::set_head(&made.path, &head);
    }
    let refs = crate::wire::git::list_refs(&made.path, &[]).unwrap_or_default();
    let refs = refs.iter().filter(|(name, _)| !name.starts_with("refs/stargate/")).count();
    if made.view.state.as_ref().and_then(|s| s.quorum.as_ref()).is_none() {
        println!(
            "imported {} on {} with {refs} refs from {}; the replicas create and mirror it as soon as they hear of it",
            made.name,
            made.view.me,
            crate::wire::sanitize::text(url)
        );
    }
    on_a_quorum(&made)
}

/// A repository `create` or `import` made on the leader.
struct Made {
    name: String,
    path: std::path::PathBuf,
    view: node::View,
}

/// The repository created on this node, which must lead: managed, with its journal
/// started, the replicas told, and the audit event `what` written.
fn create_here(cfg: &Config, typed: &str, what: &str) -> Result<Made> {
    cfg.validate()?;
    let name = crate::repos::canonical(typed).map_err(|e| Error::Usage(e.to_string()))?;
    let view = node::inspect(cfg)?;
    let epoch = match view.authority() {
        Authority::Leader { epoch } => epoch,
        Authority::Refused { leader, .. } => {
            return Err(Error::Refused(format!(
                "create repositories on the leader ({leader}); this node does not lead"
            )));
        }
    };
    let root = cfg.root()?;
    let path = root.join(&name);
    if path.exists() {
        return Err(Error::Refused(format!("{name} exists already under {}", root.display())));
    }
    if let Some(parent) = path.parent()
        && let Err(source) = std::fs::create_dir_all(parent)
    {
        return Err(CommandError::CreateDir { path: parent.to_owned(), source }.into());
    }
    crate::wire::git::init_bare(&path)?;
    crate::managed::manage(&path).map_err(|source| CommandError::Manage { name: name.clone(), source })?;
    let git = journal::open(&path).map_err(CommandError::Journal)?;
    journal::genesis(&git, epoch, &view.me).map_err(CommandError::Journal)?;
    // The replicas' cue: a hint, and a line in the change summary should it be lost.
    let state_dir = cfg.state_dir()?;
    crate::journal::signal::peers(&state_dir, &path);
    let mut event = audit::Event::new(&view.me, "created", epoch, format!("{name} {what} by {}", audit::user()));
    event.user = audit::user();
    if let Err(e) = audit::append(&Lock::from_config(cfg)?, Some(&cfg.state_dir()?), &event) {
        log::warn!("cannot append to the audit log: {e}");
    }
    Ok(Made { name, path, view })
}

/// Quorum mode: done once a quorum of nodes holds the repository, with its journal's tip.
fn on_a_quorum(made: &Made) -> Result<()> {
    let Made { name, view, path } = made;
    let Some(plan) = view.state.as_ref().and_then(|s| s.quorum.clone()) else { return Ok(()) };
    let git = journal::open(path).map_err(CommandError::Journal)?;
    let Some((entry, seq)) = journal::tip(&git).map_err(CommandError::Journal)? else {
        return Err(CommandError::NoJournal { name: name.clone() }.into());
    };
    match stage::wait_for_quorum(&git, name, entry, seq, &plan) {
        Ok(count) => {
            println!("created {name} on {count} of {} nodes (a quorum: {})", plan.peers.len() + 1, plan.needed);
            Ok(())
        }
        Err(why) => Err(Error::Refused(format!(
            "{name} is created on {} but not yet on a quorum: {why}; the others create it when they hear of it",
            view.me
        ))),
    }
}

/// `git stargate manage <path>`: an existing bare repository under `stargate.root` made
/// Stargate's on this node (`managed::manage`). The agent manages every repository it finds
/// under the root within seconds; this does it now, and says why it cannot.
pub fn manage(cfg: &Config, typed: &std::path::Path) -> Result<()> {
    let root = cfg.root()?;
    let shown = || crate::wire::sanitize::text(&typed.to_string_lossy());
    let path = match typed.canonicalize() {
        Ok(path) => path,
        Err(e) => return Err(Error::Refused(format!("{}: {e}", shown()))),
    };
    let root = root.canonicalize().unwrap_or(root);
    let Some(name) = path.strip_prefix(&root).ok().map(|n| n.to_string_lossy().into_owned()) else {
        return Err(Error::Refused(format!(
            "{} is not under stargate.root ({}): Stargate serves the repositories there only",
            shown(),
            root.display()
        )));
    };
    let not_bare = |dir: &std::path::Path| dir.join(".git").exists() || crate::repos::has_work_tree(dir);
    if not_bare(&path) || path.file_name().is_some_and(|n| n == ".git") {
        return Err(Error::Refused(crate::managed::ManageError::NotBare(path).to_string()));
    }
    if !crate::repos::valid_name(&name) {
        return Err(Error::Refused(format!(
            "{}: not a repository name under stargate.root (name.git or owner/name.git, each part of \
             A-Z a-z 0-9 . _ -)",
            crate::wire::sanitize::text(&name)
        )));
    }
    match crate::managed::manage(&path) {
        Ok(true) => println!("{name}: managed on this node"),
        Ok(false) => println!("{name}: already managed on this node"),
        Err(e @ crate::managed::ManageError::NotRepository(_)) => return Err(Error::Refused(e.to_string())),
        Err(source) => return Err(CommandError::Manage { name, source }.into()),
    }
    Ok(())
}

#[derive(Serialize)]
struct Listed {
    name: String,
    journal_seq: Option<u64>,
    /// Why Stargate does not serve it, if it does not.
    unsupported: Option<String>,
}

pub fn list(cfg: &Config, json: bool) -> Result<()> {
    let root = cfg.root()?;
    let quorum = cfg.replication_quorum_mode()?;
    let repos = match crate::repos::list(&root) {
        Ok(repos) => repos,
        Err(source) => return Err(CommandError::ListRoot { root, source }.into()),
    };
    let listed: Vec<Listed> = repos
        .into_iter()
        .map(|r| {
            let path = root.join(&r.name);
            let unsupported = crate::repos::unsupported_in(&path, quorum).map(str::to_owned);
            let journal_seq = unsupported
                .is_none()
                .then(|| journal::open(&path).ok().and_then(|g| journal::tip(&g).ok().flatten()).map(|(_, s)| s))
                .flatten();
            Listed { name: r.name, journal_seq, unsupported }
        })
        .collect();
    if json {
        return super::print_json(&listed);
    }
    for l in &listed {
        match (&l.unsupported, l.journal_seq) {
            (Some(why), _) => println!("{}\tnot served: {why}", l.name),
            (None, Some(seq)) => println!("{}\tseq {seq}", l.name),
            (None, None) => println!("{}\tno journal yet", l.name),
        }
    }
    Ok(())
}
