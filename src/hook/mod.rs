//! Git's hooks, installed for every repository through `core.hooksPath` (stargate-hook(1),
//! stargate(7) HOOKS). Every hook git runs by name comes here.
//!
//! In a repository Stargate manages, a write must first pass Stargate's own decision: this
//! node leads the current epoch (`pre-receive`, and again at `reference-transaction
//! prepared`). Stargate's refusal comes first and alone. Once Stargate allows the write, and
//! in every other repository at once, the repository's own hook of the same name runs
//! (`chain`): installing Stargate never disables a site's hooks, and a repository Stargate
//! does not manage behaves as if Stargate were not installed.
//!
//! Hooks read no git config: they find the node's state by walking up to
//! `<stargate.root>/.stargate` (see `lead::node`).

mod chain;
mod pre_receive;
mod proc_receive;
mod push;
mod reference_transaction;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::lead::node::{self, Authority, View};

/// Every hook git finds by name (`managed::HOOK_NAMES`).
pub use crate::managed::HOOK_NAMES as NAMES;

/// What a hook fails with when it cannot go on (fatal, 128), its cause kept; a refusal,
/// "not leader" or a chained hook's exit status is one of `error::Error`'s classes instead.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot read the ref updates: {0}")]
    Input(#[source] std::io::Error),
    /// The `proc-receive` conversation with git (githooks(5)) broke off or was malformed.
    #[error("proc-receive: {0}")]
    Protocol(#[source] std::io::Error),
    #[error("cannot run the repository's own hook {}: {source}", .path.display())]
    OwnHook { path: PathBuf, source: std::io::Error },
    #[error("no node state to mark this write in")]
    NoState,
    #[error("cannot mark this write as in flight: {0}")]
    Mark(#[source] std::io::Error),
    /// The repository cannot be opened for the journal.
    #[error(transparent)]
    Open(crate::journal::Error),
    #[error("cannot journal this update, refusing it: {0}")]
    Journal(#[source] crate::journal::Error),
    /// The agent journals for the hooks (`journal::service`) and did not.
    #[error("the agent did not journal this push, refusing it: {0}")]
    Agent(String),
    #[error("cannot note this write as in flight: {0}")]
    Note(#[source] std::io::Error),
    #[error("cannot anchor this update for the quorum: {0}")]
    Anchor(#[source] std::io::Error),
}

impl From<HookError> for Error {
    fn from(e: HookError) -> Error {
        Error::fatal(e)
    }
}

/// Run hook `name`, started as `me` (git's `$0` for it), with git's arguments.
pub fn run(name: &str, me: &Path, args: &[String]) -> Result<()> {
    let repo = Repo::here();
    if chain::is_nested_copy(name, &repo) {
        return Ok(());
    }
    match name {
        // Only these two decide; every other hook only chains, in any repository.
        "pre-receive" | "reference-transaction" => {
            let state_dir = node::find_state_dir(&repo.git_dir);
            match (name, managed(&repo, state_dir.is_some())?) {
                (_, false) => chain::exec(name, args, &repo),
                ("pre-receive", true) => pre_receive::run(&repo, state_dir.as_deref(), me, args),
                _ => reference_transaction::run(&repo, state_dir.as_deref(), args),
            }
        }
        "post-receive" => {
            let Some(state_dir) = node::find_state_dir(&repo.git_dir) else { return chain::exec(name, args, &repo) };
            let Some(pushed) = push::open(&state_dir) else {
                say_position(&repo, &state_dir);
                return chain::exec(name, args, &repo);
            };
            let input = read_input()?;
            match push::end(&state_dir, &pushed, &input) {
                Some(position) => eprintln!("stargate: position {position}"),
                None => say_position(&repo, &state_dir),
            }
            chain::run(name, args, &repo, &input)
        }
        "push-to-checkout" => chain::push_to_checkout(&repo, args),
        "proc-receive" => {
            let state_dir = node::find_state_dir(&repo.git_dir);
            match managed(&repo, state_dir.is_some())? {
                true => proc_receive::run(&repo, state_dir.as_deref(), args),
                false => chain::proc_receive(&repo, args),
            }
        }
        _ => chain::exec(name, args, &repo),
    }
}

/// Whether Stargate manages the repository: marked, or a bare repository below a node's
/// state (one the agent has not marked yet). A repository with a work tree is never
/// managed: below `stargate.root` but unmarked it is passed through as git would run its
/// hooks; marked (by hand: `git stargate manage` refuses it), every write to it is
/// refused, before a push could update its work tree (stargate(7), MANAGED REPOSITORIES).
fn managed(repo: &Repo, below_state: bool) -> Result<bool> {
    let marked = crate::repos::is_marked(&repo.git_dir);
    if !(marked || below_state) || !crate::repos::has_work_tree(&repo.git_dir) {
        return Ok(marked || below_state);
    }
    if !marked {
        return Ok(false);
    }
    Err(Error::Refused(
        "this repository has a work tree, and Stargate manages bare repositories only: writes are \
         refused (stargate(7), MANAGED REPOSITORIES); remove stargate/managed from its git directory \
         to release it"
            .to_owned(),
    ))
}

/// After a push to the leader, tell the client where its writes are in the journal:
/// `stargate: position <epoch>:<seq>:<entry id>` (git shows it as `remote: …`), for
/// `git stargate wait` and `/applied` on a replica (stargate-hook(1), POSITION). The journal
/// tip, read once every update of the push is committed: at or after each of them. While
/// the tip is still the outcome of this git process's last committed transaction, as its
/// hook noted it in the in-flight mark, that is said without opening the repository.
fn say_position(repo: &Repo, state_dir: &Path) {
    let noted = crate::lead::inflight::last_position(state_dir).and_then(|p| p.parse().ok());
    if let Some(p) = noted.filter(|p| crate::journal::position::is_loose_tip(repo.git_dir(), p)) {
        return eprintln!("stargate: position {p}");
    }
    match crate::journal::position::current(repo.git_dir()) {
        Ok(Some(p)) => eprintln!("stargate: position {p}"),
        Ok(None) => {}
        Err(e) => log::debug!("no position to say: {e}"),
    }
}

/// The repository a hook runs for.
pub struct Repo {
    /// `$GIT_DIR`; else `./.git` (a worktree's root, where git runs local hooks), else `.`.
    git_dir: PathBuf,
    /// Where the repository's own hooks are: `hooks/` of its common directory (the main
    /// repository's, for a linked worktree).
    hooks: PathBuf,
}

impl Repo {
    fn here() -> Repo {
        let git_dir = match std::env::var_os("GIT_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => dot_git().unwrap_or_else(|| PathBuf::from(".")),
        };
        let common = match std::env::var_os("GIT_COMMON_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => match std::fs::read_to_string(git_dir.join("commondir")) {
                Ok(rel) => git_dir.join(rel.trim()),
                Err(_) => git_dir.clone(),
            },
        };
        // `hooks/<name>`, not `./hooks/<name>`, when git runs hooks in the git directory:
        // the `$0` git gives a hook (githooks(5)).
        let hooks = if common == Path::new(".") { PathBuf::from("hooks") } else { common.join("hooks") };
        Repo { hooks, git_dir }
    }

    fn git_dir(&self) -> &Path {
        &self.git_dir
    }
}

/// `./.git` as git resolves it: a directory, or a file saying `gitdir: <path>`.
fn dot_git() -> Option<PathBuf> {
    let dot = Path::new(".git");
    if dot.is_dir() {
        return Some(dot.to_owned());
    }
    let text = std::fs::read_to_string(dot).ok()?;
    let target = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    Some(if target.is_absolute() { target } else { dot.parent().unwrap_or(Path::new(".")).join(target) })
}

/// Drain the hook's stdin: git writes every ref update there.
fn read_input() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(HookError::Input)?;
    Ok(input)
}

/// Ok when the node serving this repository leads the current epoch; otherwise say why on
/// stderr (git relays it to the pushing client) and fail with `NotLeader` (exit 9).
/// Repository `git_dir` for journaling, its new files taken from the spares of the node
/// whose state directory is `state_dir` (`spare`).
fn journal_store(git_dir: &Path, state_dir: &Path) -> std::result::Result<crate::store::Store, crate::journal::Error> {
    Ok(crate::journal::open(git_dir)?.with_spares(state_dir.join(crate::spare::DIR)))
}

fn require_leader(view: &View) -> Result<u64> {
    match view.authority() {
        Authority::Leader { epoch } => Ok(epoch),
        Authority::Refused { leader, epoch, reason } => {
            eprintln!("stargate: {reason}");
            Err(Error::not_leader(&leader, epoch))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook's fatal error reaches `error::Error` whole: the words it printed before, exit
    /// 128, and its cause still there for whoever looks.
    #[test]
    fn a_fatal_error_keeps_its_cause() {
        let path = PathBuf::from("/srv/git/kv.git/hooks/pre-receive");
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied");
        let exit = Error::from(HookError::OwnHook { path, source: io });
        assert_eq!(exit.exit_code(), crate::error::FATAL);
        assert_eq!(
            exit.to_string(),
            "cannot run the repository's own hook /srv/git/kv.git/hooks/pre-receive: Permission denied"
        );
        let Error::Failed(inner) = &exit else { panic!("{exit:?}") };
        let Some(HookError::OwnHook { source, .. }) = inner.downcast_ref::<HookError>() else { panic!("{inner:?}") };
        assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        let e = Error::from(HookError::Input(std::io::Error::other("broken pipe")));
        assert_eq!(e.to_string(), "cannot read the ref updates: broken pipe");
    }
}
