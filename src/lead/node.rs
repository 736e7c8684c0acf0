//! This node's view of leadership: the state the agent publishes locally, checked against
//! the shared leader record (file lease), or against the deadline of the agent's last etcd
//! keep-alive (etcd lease). Hooks, the health responder and `git stargate status` all
//! decide "may this node accept a write?" here, and they fail closed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, STATE_DIR};
use crate::lead::lease::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Passive,
}

/// What the agent publishes every lease interval in `<root>/.stargate/node.json`. It carries
/// everything the hooks need, so a hook reads no git config and agrees with the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub node: String,
    /// `stargate.lock` as the agent uses it: a path, or an `etcd[s]://` URL.
    pub lock: String,
    /// `stargate.lease.staleAfter` in milliseconds.
    pub stale_after_ms: u64,
    /// UDP addresses of the other nodes' agents, told to sync after each write here.
    #[serde(default)]
    pub peers: Vec<String>,
    pub pid: u32,
    pub role: Role,
    /// The epoch this node leads under (leader), or the last epoch it saw (passive).
    pub epoch: u64,
    /// Wall-clock time of the heartbeat, for people.
    pub heartbeat_ms: u64,
    /// The same heartbeat on the clock since boot (`clock::boot_ms`): what staleness is
    /// judged by, so that a step of the wall clock neither revives a frozen agent nor kills
    /// a live one.
    #[serde(default)]
    pub heartbeat_boot_ms: Option<u64>,
    pub started_ms: u64,
    /// A leader handing over (planned promotion): why it refuses writes meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<String>,
    /// etcd lease: the record as the agent last read it (the hooks cannot ask etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// etcd lease: until when (`clock::boot_ms`) this leader may accept writes without a
    /// newer keep-alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_boot_ms: Option<u64>,
    /// Quorum mode (`stargate.replication.mode = quorum`): who must stage a write first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<Quorum>,
    /// `stargate.journal.keep`, for the hooks that append to the journal.
    #[serde(default)]
    pub journal_keep: Option<u64>,
    /// Whether git on this node hands `refs/for/kv/` to `proc-receive`
    /// (`receive.procReceiveRefs`), for `pre-receive`: without it a `git kv` change pushed
    /// there is refused, so that the client writes the older way (unknown: not refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_changes: Option<bool>,
    /// Why the agent cannot reach the lease, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_problem: Option<String>,
    /// The build of the agent that wrote this (`version::VERSION`); absent from what 0.1.0
    /// wrote. `git stargate status` compares it with its own, to tell binaries replaced
    /// under a running agent (RUNBOOK.md, Upgrading the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What the leader's hook needs in quorum mode: the nodes counted, the leader included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quorum {
    pub needed: usize,
    pub timeout_ms: u64,
    /// The other nodes: id, health responder (`host:port`) and UDP address.
    pub peers: Vec<QuorumPeer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuorumPeer {
    pub node: String,
    pub health: String,
}

/// Whether `stargate.lock` names an etcd cluster (the hooks then judge by `State`).
pub fn is_etcd(lock: &str) -> bool {
    lock.starts_with("etcd://") || lock.starts_with("etcds://")
}

pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("node.json")
}

pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("sync.token")
}

pub fn write_state(state_dir: &Path, state: &State) -> std::io::Result<()> {
    let bytes = crate::format::NODE_STATE.to_json(state).map_err(std::io::Error::other)?;
    crate::files::write_atomic(&state_path(state_dir), &bytes, 0o644, false)
}

/// Environment variable through which the agent's own mirroring proves itself to the
/// hooks. Its value is a secret the agent makes at start (mode 0600); a pushing client
/// cannot learn it, and `pre-receive` never honours it.
pub const SYNC_TOKEN_ENV: &str = "STARGATE_SYNC_TOKEN";

pub fn new_sync_token(state_dir: &Path) -> std::io::Result<String> {
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    crate::files::write_atomic(&token_path(state_dir), token.as_bytes(), 0o600, false)?;
    Ok(token)
}

/// Whether this process presents itself as the agent's mirroring.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncClaim {
    /// No token: an ordinary writer.
    None,
    /// The agent's token, on a passive node: the mirror may write.
    Valid,
    /// A token that is wrong, or a mirror still running after its node was elected.
    Refused(String),
}

pub fn sync_claim(state_dir: &Path) -> SyncClaim {
    let Ok(claimed) = std::env::var(SYNC_TOKEN_ENV) else { return SyncClaim::None };
    let actual = std::fs::read_to_string(token_path(state_dir)).unwrap_or_default();
    if actual.trim().is_empty() || !constant_time_eq(claimed.as_bytes(), actual.trim().as_bytes()) {
        return SyncClaim::Refused("mirroring refused: wrong sync token".into());
    }
    match read_state(state_dir) {
        Ok(Some(s)) if s.role == Role::Passive => SyncClaim::Valid,
        Err(e) => SyncClaim::Refused(format!("mirroring refused: {e}")),
        _ => SyncClaim::Refused("mirroring refused: this node is no longer passive".into()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Everything needed to judge this node, read once.
#[derive(Debug)]
pub struct View {
    pub me: String,
    /// The leader record; `Err` when it cannot be read, or is older than `seen`.
    pub record: Result<Option<Record>, RecordError>,
    /// The newest record this node's agent has seen (`lead::epoch`).
    pub seen: Option<Record>,
    pub state: Option<State>,
    /// Why the agent counts as dead, if it does.
    pub agent_problem: Option<String>,
}

/// Why the leader record cannot be followed here (the hooks then refuse, fail closed).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Lease(#[from] crate::lead::lease::Error),
    /// What this node has seen cannot be read.
    #[error(transparent)]
    Seen(#[from] crate::lead::epoch::ReadError),
    /// Older than what this node has seen (docs/ARCHITECTURE.md, Fencing).
    #[error("{}", .0.detail())]
    Refused(crate::lead::epoch::Refusal),
}

/// Why a passive node with a live agent refuses writes (`/readyz`: `not leader: <this>`).
pub const PASSIVE: &str = "this node is passive";

/// The answer to "may this node accept a write now?".
#[derive(Debug, PartialEq, Eq)]
pub enum Authority {
    Leader { epoch: u64 },
    Refused { leader: String, epoch: u64, reason: String },
}

/// This node as configured (`git stargate status`, the health responder).
pub fn inspect(cfg: &Config) -> Result<View, crate::config::Error> {
    let lock = match cfg.lock()? {
        crate::config::LockSpec::File(path) => path.display().to_string(),
        crate::config::LockSpec::Etcd { .. } => "etcd://".to_owned(),
    };
    let (me, stale_after) = (cfg.node()?, cfg.lease_stale_after()?);
    let state_dir = cfg.state_dir()?;
    Ok(view(me, &lock, stale_after, read_state(&state_dir), &state_dir))
}

/// The node whose node-state directory (`<stargate.root>/.stargate`) is `state_dir`,
/// judged by what its agent published (hooks). `None` is a managed repository with no such
/// directory above it: refused like a node whose agent is gone.
pub fn inspect_state(state_dir: Option<&Path>) -> View {
    let unknown = |why: String| View {
        me: "unknown".into(),
        record: Ok(None),
        seen: None,
        state: None,
        agent_problem: Some(why),
    };
    let Some(state_dir) = state_dir else {
        return unknown(format!("managed repository, but no {STATE_DIR} directory above it (node state missing)"));
    };
    match read_state(state_dir) {
        Ok(Some(state)) => {
            let (me, lock) = (state.node.clone(), state.lock.clone());
            view(me, &lock, Duration::from_millis(state.stale_after_ms), Ok(Some(state)), state_dir)
        }
        Ok(None) => unknown("agent not running (no state)".into()),
        Err(e) => unknown(e.to_string()),
    }
}

/// The nearest `<dir>/.stargate` at or above `repo`.
pub fn find_state_dir(repo: &Path) -> Option<PathBuf> {
    let repo = repo.canonicalize().ok()?;
    repo.ancestors().map(|dir| dir.join(STATE_DIR)).find(|dir| dir.is_dir())
}

/// The most a node state file may hold; it is a few hundred bytes.
const MAX_STATE: u64 = 1 << 20;

/// Why `node.json` cannot be used: the hooks then refuse, and the status says so, naming
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("node state unreadable: {0}")]
    Unreadable(#[from] crate::files::ReadError),
    #[error("node state {} is corrupt: {source}", .path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    /// Written by a newer agent than these binaries (docs/ARCHITECTURE.md, Formats and
    /// versions): refused like a corrupt one.
    #[error("{0}")]
    Format(crate::format::Unknown),
}

/// What the agent last published, `None` before it first did. Read as a regular file only,
/// and bounded (`files::read_regular`).
pub fn read_state(state_dir: &Path) -> Result<Option<State>, StateError> {
    let path = state_path(state_dir);
    match crate::files::read_regular(&path, MAX_STATE) {
        Ok(bytes) => match crate::format::NODE_STATE.from_json(path.display(), &bytes) {
            Ok(state) => Ok(Some(state)),
            Err(crate::format::JsonError::Unknown(e)) => Err(StateError::Format(e)),
            Err(crate::format::JsonError::Json(source)) => Err(StateError::Corrupt { path, source }),
        },
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The published state when it can be read; `None` also when it cannot.
pub fn state(state_dir: &Path) -> Option<State> {
    read_state(state_dir).ok().flatten()
}

fn view(
    me: String,
    lock: &str,
    stale_after: Duration,
    state: Result<Option<State>, StateError>,
    state_dir: &Path,
) -> View {
    let (state, unreadable) = match state {
        Ok(state) => (state, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let record = if is_etcd(lock) {
        Ok(state.as_ref().and_then(|s| s.record.clone()))
    } else {
        crate::lead::file::read_record(Path::new(lock)).map_err(RecordError::Lease)
    };
    // A record older than this node has seen is refused like a damaged one (fail closed).
    let (record, seen) = match crate::lead::epoch::read(state_dir) {
        Err(e) => (Err(RecordError::Seen(e)), None),
        Ok(seen) => {
            let current = record.as_ref().ok().and_then(Option::as_ref);
            match current.and_then(|r| crate::lead::epoch::judge(seen.as_ref(), r).err()) {
                Some(refusal) => (Err(RecordError::Refused(refusal)), seen),
                None => (record, seen),
            }
        }
    };
    let agent_problem = unreadable.or_else(|| agent_problem(&me, state.as_ref(), stale_after));
    View { me, record, seen, state, agent_problem }
}

/// How old the agent's last heartbeat is, by the clock since boot when it published one
/// (states of older agents carry only the wall clock).
pub fn heartbeat_age_ms(state: &State) -> u64 {
    match state.heartbeat_boot_ms {
        Some(beat) => crate::clock::boot_ms().saturating_sub(beat),
        None => crate::clock::now_ms().saturating_sub(state.heartbeat_ms),
    }
}

fn agent_problem(me: &str, state: Option<&State>, stale_after: Duration) -> Option<String> {
    let Some(state) = state else {
        return Some("agent not running (no state)".into());
    };
    if state.node != me {
        return Some(format!("agent state belongs to node '{}'", state.node));
    }
    let age = heartbeat_age_ms(state);
    if age > stale_after.as_millis() as u64 {
        return Some(format!("agent state is stale ({age} ms old)"));
    }
    if !pid_alive(state.pid) {
        return Some(format!("agent (pid {}) is not running", state.pid));
    }
    None
}

/// A zombie (killed, not yet reaped) counts as dead.
pub fn pid_alive(pid: u32) -> bool {
    if let Some(stat) = crate::files::read_proc_stat(pid) {
        return !matches!(stat.split_whitespace().next(), Some("Z" | "X"));
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl View {
    pub fn agent_alive(&self) -> bool {
        self.agent_problem.is_none()
    }

    pub fn role(&self) -> Role {
        match self.authority() {
            Authority::Leader { .. } => Role::Leader,
            Authority::Refused { .. } => Role::Passive,
        }
    }

    pub fn authority(&self) -> Authority {
        let (leader, epoch) = match &self.record {
            Ok(Some(r)) => (r.node.clone(), r.epoch),
            Ok(None) => ("none".to_owned(), 0),
            Err(e) => {
                return refused("unknown".into(), 0, format!("cannot read the leader record: {e}"));
            }
        };
        if let Some(problem) = &self.agent_problem {
            return refused(leader, epoch, problem.clone());
        }
        let Some(state) = &self.state else {
            return refused(leader, epoch, "agent not running".into());
        };
        if state.role != Role::Leader {
            return refused(leader, epoch, PASSIVE.into());
        }
        if let Some(why) = &state.draining {
            return refused(leader, epoch, format!("draining: {why}"));
        }
        if is_etcd(&state.lock) && state.valid_until_boot_ms.is_none() {
            return refused(leader, epoch, "no etcd lease to lead under".into());
        }
        if let Some(until) = state.valid_until_boot_ms
            && crate::clock::boot_ms() >= until
        {
            let why = state.lease_problem.as_deref().unwrap_or("no answer from etcd");
            return refused(leader, epoch, format!("the etcd lease was not renewed in time ({why})"));
        }
        if leader != self.me || epoch != state.epoch {
            let why = format!("fenced: this node led epoch {}, the lease is now at epoch {epoch}", state.epoch);
            return refused(leader, epoch, why);
        }
        Authority::Leader { epoch }
    }
}

fn refused(leader: String, epoch: u64, reason: String) -> Authority {
    Authority::Refused { leader, epoch, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hooks' view of a node whose `node.json` cannot be used names the file and why;
    /// a corrupt one read as "agent not running (no state)".
    #[test]
    fn an_unusable_node_state_is_named_by_the_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        for (make, want) in [
            (Box::new(|| std::fs::write(&path, b"{\"node\"").unwrap()) as Box<dyn Fn()>, "is corrupt: "),
            (Box::new(|| std::os::unix::fs::symlink("/dev/zero", &path).unwrap()), "is a symbolic link; refused"),
        ] {
            let _ = std::fs::remove_file(&path);
            make();
            let view = inspect_state(Some(dir.path()));
            let problem = view.agent_problem.clone().unwrap_or_default();
            assert!(problem.contains(&path.display().to_string()) && problem.contains(want), "{problem}");
            assert!(matches!(view.authority(), Authority::Refused { .. }));
        }
    }

    /// The compatibility rule on `node.json` (docs/ARCHITECTURE.md, Formats and versions):
    /// what 0.1.0 wrote (no format, no version) is read; what this build writes says its
    /// format first and its build; a later format is refused by the hooks, naming the file
    /// and both numbers, and the node accepts no write on it.
    #[test]
    fn a_node_state_of_the_previous_release_is_read_and_a_later_format_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        let previous = r#"{"node":"a","lock":"/l","stale_after_ms":2000,"peers":[],"pid":1,"role":"leader","epoch":3,"heartbeat_ms":5,"heartbeat_boot_ms":7,"started_ms":1,"journal_keep":600}"#;
        std::fs::write(&path, previous).unwrap();
        let state = read_state(dir.path()).unwrap().unwrap();
        assert_eq!((state.node.as_str(), state.epoch, state.version), ("a", 3, None));

        let state = State { version: Some(crate::version::VERSION.into()), ..state };
        write_state(dir.path(), &state).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.starts_with("{\"format\":1,\"node\":\"a\""), "{written}");
        assert!(written.contains(&format!("\"version\":\"{}\"", crate::version::VERSION)), "{written}");
        assert_eq!(read_state(dir.path()).unwrap().unwrap().version.as_deref(), Some(crate::version::VERSION));

        std::fs::write(&path, written.replacen("\"format\":1", "\"format\":2", 1)).unwrap();
        let err = read_state(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Format(_)), "{err}");
        let view = inspect_state(Some(dir.path()));
        let problem = view.agent_problem.clone().unwrap_or_default();
        assert!(
            problem.starts_with(&format!("{}: node state format 2, and this build (", path.display())),
            "{problem}"
        );
        assert!(problem.contains("reads node state format 1 at most"), "{problem}");
        assert!(matches!(view.authority(), Authority::Refused { .. }));
    }
}
