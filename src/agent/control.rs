//! How the agent is reached while it runs.
//!
//! - UDP on the node's health address: the leader's push signals (`stargate-sync <repo>`,
//!   passed to the replicator) and a promoting node's hint that a handoff waits
//!   (`stargate-handoff`). Both are hints only, never authenticated and never needing to
//!   be: they make the agent look now at what it would look at anyway (the repository, the
//!   handoff record in the lease backend), so a forged or replayed one costs a look. The
//!   cost is bounded: a signal at most one sync per repository per 50 ms (the replicator),
//!   a handoff hint at most one early look at the lease per 50 ms, and past a budget of
//!   datagrams per window the agent stops reading until the window ends (docs/
//!   ARCHITECTURE.md, Threat model). Anything else is refused, counted and logged.
//! - A Unix socket in the state directory (`<root>/.stargate/agent.sock`, mode 0600): the
//!   local operator's requests (`git stargate promote`), one JSON line each, answered with
//!   JSON lines of progress and one final line. Only this node's agent user (and root)
//!   can connect.

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::journal::{service, signal};
use crate::mirror::replicator::Replicator;

/// The hint a promoting node sends the leader's agent.
pub const HANDOFF_HINT: &str = "stargate-handoff";

/// Longest datagram accepted; a signal names a repository, a few dozen bytes.
const MAX_DATAGRAM: usize = 1024;
/// Datagrams read per `WINDOW` at most (2000 a second). A leader sends one per
/// transaction per peer, far below this; past it the agent stops reading for the rest of
/// the window and the kernel drops what comes meanwhile, so a flood costs bounded work and
/// the replicas' poll covers its duration.
const BUDGET: u32 = 200;
const WINDOW: Duration = Duration::from_millis(100);
/// Handoff hints wake the agent's loop at most this often; one arriving sooner is kept
/// and delivered when the gap has passed, never dropped.
const HINT_GAP: Duration = Duration::from_millis(50);
/// Refusals are logged once, then at most once per this long with their count.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What one datagram on the agent's UDP port says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// The leader accepted a write to this repository (a valid repository name).
    Sync(String),
    /// A handoff may wait in the lease backend.
    Handoff,
    /// Quorum mode: the leader waits for this repository's newest entry to be staged.
    Stage(String),
    /// Anything else, and why it is not a hint.
    Refused(&'static str),
}

/// Read one datagram: `stargate-sync <repository>`, `stargate-stage <repository>` or
/// `stargate-handoff`, each with an
/// optional final newline, nothing else.
pub fn parse_hint(datagram: &[u8]) -> Hint {
    if datagram.len() > MAX_DATAGRAM {
        return Hint::Refused("too long");
    }
    let Ok(text) = std::str::from_utf8(datagram) else { return Hint::Refused("not UTF-8") };
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text == HANDOFF_HINT {
        return Hint::Handoff;
    }
    if let Some(name) = text.strip_prefix(crate::journal::stage::HINT) {
        return match crate::repos::valid_name(name) {
            true => Hint::Stage(name.to_owned()),
            false => Hint::Refused("not a repository name"),
        };
    }
    match text.strip_prefix(signal::PREFIX) {
        Some(name) if crate::repos::valid_name(name) => Hint::Sync(name.to_owned()),
        Some(_) => Hint::Refused("not a repository name"),
        None => Hint::Refused("not a Stargate hint"),
    }
}

/// Refused datagrams, logged once and then in summaries.
#[derive(Default)]
struct Refusals {
    since_logged: u64,
    logged: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, why: &str, from: std::net::SocketAddr) {
        self.since_logged += 1;
        if self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            log::warn!(
                "refused {} datagram(s) on the signal port (last from {from}: {why}); they change nothing",
                self.since_logged
            );
            self.since_logged = 0;
            self.logged = Some(Instant::now());
        }
    }
}

/// What the local operator asks of the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Take leadership: planned (the leader drains first) or forced. `accept_loss`: a
    /// forced promotion in quorum mode leads even without hearing enough nodes to know the
    /// furthest position.
    Promote {
        force: bool,
        user: String,
        #[serde(default)]
        accept_loss: bool,
    },
}

/// One line of the agent's answer: progress (`say`), then one line with `done` set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub say: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Outcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
}

/// Where the agent answers a request; a closed connection only loses the progress.
pub struct Reply(Option<UnixStream>);

impl Reply {
    /// A reply nobody reads (an election the agent starts by itself).
    pub fn none() -> Reply {
        Reply(None)
    }

    pub fn say(&mut self, text: &str) {
        log::info!("{text}");
        self.send(&Line { say: Some(text.to_owned()), done: None });
    }

    /// The final line: what was done, or why not (its text is what crosses the socket).
    pub fn done(mut self, result: Result<String, impl std::error::Error>) {
        let (ok, message) = match result {
            Ok(m) => (true, m),
            Err(e) => (false, e.to_string()),
        };
        if ok {
            log::info!("{message}")
        } else {
            log::error!("{message}")
        }
        self.send(&Line { say: None, done: Some(Outcome { ok, message }) });
    }

    fn send(&mut self, line: &Line) {
        let Some(stream) = &mut self.0 else { return };
        let Ok(mut bytes) = serde_json::to_vec(line) else { return };
        bytes.push(b'\n');
        if stream.write_all(&bytes).is_err() {
            self.0 = None;
        }
    }
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
}

/// Longest request line accepted on the socket.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Default)]
struct Inbox {
    requests: Vec<(Request, Reply)>,
    woken: bool,
}

pub struct Control {
    inbox: Mutex<Inbox>,
    wake: Condvar,
}

impl Control {
    /// Listen on UDP `signal_addr` (when given) and on the socket in `state_dir`.
    pub fn start(state_dir: &Path, signal_addr: Option<&str>, replicator: Arc<Replicator>) -> Arc<Control> {
        let control = Arc::new(Control { inbox: Mutex::new(Inbox::default()), wake: Condvar::new() });
        match signal_addr.map(|addr| (addr, UdpSocket::bind(addr))) {
            Some((_, Ok(socket))) => {
                let (me, replicator) = (Arc::clone(&control), Arc::clone(&replicator));
                std::thread::spawn(move || me.listen_udp(socket, replicator));
            }
            Some((addr, Err(e))) => log::warn!("cannot listen for signals on udp {addr}: {e}; polling only"),
            None => log::warn!("this node's stargate.<id>.health is not set: no signals, polling only (stargate(7))"),
        }
        let path = socket_path(state_dir);
        let _ = std::fs::remove_file(&path);
        match bind_private(&path) {
            Ok(listener) => {
                let me = Arc::clone(&control);
                std::thread::spawn(move || me.listen_local(listener));
            }
            Err(e) => {
                log::error!("cannot listen on {}: {e}; git stargate promote will not reach this agent", path.display())
            }
        }
        listen_journal(state_dir, replicator);
        control
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wake the agent's loop now.
    pub fn wake(&self) {
        self.lock().woken = true;
        self.wake.notify_all();
    }

    /// Sleep up to `timeout`, less when woken, a request arrives or `stop` is set.
    pub fn wait(&self, timeout: Duration, stop: &AtomicBool) {
        let until = Instant::now() + timeout;
        let mut inbox = self.lock();
        while !inbox.woken && inbox.requests.is_empty() && !stop.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Slices: a signal handler cannot notify a condition variable.
            inbox = self
                .wake
                .wait_timeout(inbox, left.min(Duration::from_millis(50)))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        inbox.woken = false;
    }

    pub fn take_requests(&self) -> Vec<(Request, Reply)> {
        std::mem::take(&mut self.lock().requests)
    }

    fn listen_udp(self: Arc<Self>, socket: UdpSocket, replicator: Arc<Replicator>) {
        // Wakes up at least every gap, to deliver a handoff hint kept back.
        let _ = socket.set_read_timeout(Some(HINT_GAP));
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        let (mut window, mut read) = (Instant::now(), 0u32);
        let (mut woke, mut pending) = (None::<Instant>, false);
        let (mut refusals, mut throttled) = (Refusals::default(), Refusals::default());
        loop {
            if pending && woke.is_none_or(|t| t.elapsed() >= HINT_GAP) {
                self.wake();
                (woke, pending) = (Some(Instant::now()), false);
            }
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(_) => continue,
            };
            if window.elapsed() >= WINDOW {
                (window, read) = (Instant::now(), 0);
            }
            read += 1;
            match parse_hint(&buf[..n]) {
                Hint::Sync(name) => {
                    if !replicator.signal(&name) {
                        replicator.count(|c| c.hints_refused += 1);
                        refusals.note("no such repository here", from);
                        replicator.look_for(&name);
                    }
                }
                Hint::Handoff => pending = true,
                Hint::Stage(name) => {
                    if !replicator.stage(&name) {
                        replicator.count(|c| c.hints_refused += 1);
                        refusals.note("no such repository here", from);
                        replicator.look_for(&name);
                    }
                }
                Hint::Refused(why) => {
                    replicator.count(|c| c.hints_refused += 1);
                    refusals.note(why, from);
                }
            }
            if read >= BUDGET {
                replicator.count(|c| c.hints_throttled += 1);
                throttled.note("over the budget: not reading for the rest of the window", from);
                std::thread::sleep(WINDOW.saturating_sub(window.elapsed()));
                (window, read) = (Instant::now(), 0);
            }
        }
    }

    fn listen_local(self: Arc<Self>, listener: UnixListener) {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let me = Arc::clone(&self);
            std::thread::spawn(move || me.accept(stream));
        }
    }

    fn accept(&self, stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let Ok(reader) = stream.try_clone() else { return };
        let read = BufReader::new(std::io::Read::take(reader, MAX_REQUEST)).read_line(&mut line);
        let reply = Reply(Some(stream));
        let request = match read {
            Ok(_) => serde_json::from_str::<Request>(line.trim()),
            Err(e) => return reply.done(Err(Unread::Read(e))),
        };
        match request {
            Ok(request) => {
                self.lock().requests.push((request, reply));
                self.wake.notify_all();
            }
            Err(e) => reply.done(Err(Unread::Malformed(e))),
        }
    }
}

/// Journal pushes for the hooks (`journal::service`), on a socket of mode 0600 in
/// `state_dir`: `JOURNAL_WORKERS` threads take its connections, one at a time each, so
/// that pushes to different repositories are journaled side by side and more wait their
/// turn. Connections are taken in the order they came, so a push's prepare is always
/// taken before the wait for it, and a thread waiting never holds up what it waits for.
/// Unbound, the hooks journal by themselves.
fn listen_journal(state_dir: &Path, replicator: Arc<Replicator>) {
    let path = service::socket_path(state_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match bind_private(&path) {
        Ok(listener) => listener,
        Err(e) => return log::warn!("cannot listen on {}: {e}; the hooks journal by themselves", path.display()),
    };
    let asked = Arc::new(service::Asked::default());
    for _ in 0..JOURNAL_WORKERS {
        let Ok(listener) = listener.try_clone() else { continue };
        let (state_dir, replicator, asked) = (state_dir.to_owned(), Arc::clone(&replicator), Arc::clone(&asked));
        std::thread::spawn(move || {
            let mut opened = service::Opened::default();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let (journaled, signal) = service::serve(&state_dir, &mut opened, &asked, &mut stream);
                if journaled {
                    replicator.count(|c| c.journaled += 1);
                }
                drop(stream);
                if let Some(git_dir) = signal {
                    signal::peers(&state_dir, &git_dir);
                }
            }
        });
    }
}

/// Threads journaling for the hooks.
const JOURNAL_WORKERS: usize = 8;

/// A Unix socket at `path` that only this user (and root) can connect to (mode 0600, set
/// as it is bound).
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A request on the socket that was not taken.
#[derive(Debug, thiserror::Error)]
enum Unread {
    #[error("cannot read the request: {0}")]
    Read(#[source] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Why `ask` has no outcome: the agent was not reached, or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("cannot reach this node's agent at {}: {source} (is it running?)", .path.display())]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error("cannot send the request: {0}")]
    Send(#[source] std::io::Error),
    #[error("the agent's answer broke off: {0}")]
    BrokeOff(#[source] std::io::Error),
    #[error("the agent closed the connection without an answer (see its log)")]
    NoAnswer,
}

/// Send `request` to the agent whose state directory is `state_dir` and pass each line of
/// progress to `say`; the final outcome is returned.
pub fn ask(state_dir: &Path, request: &Request, mut say: impl FnMut(&str)) -> Result<Outcome, AskError> {
    let path = socket_path(state_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(source) => return Err(AskError::Unreachable { path, source }),
    };
    let mut bytes = serde_json::to_vec(request)?;
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(AskError::Send)?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(AskError::BrokeOff)?;
        let Ok(line) = serde_json::from_str::<Line>(&line) else { continue };
        if let Some(text) = &line.say {
            say(text);
        }
        if let Some(outcome) = line.done {
            return Ok(outcome);
        }
    }
    Err(AskError::NoAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hints_and_refusals() {
        assert_eq!(parse_hint(b"stargate-sync kv.git\n"), Hint::Sync("kv.git".into()));
        assert_eq!(parse_hint(b"stargate-sync owner/kv.git"), Hint::Sync("owner/kv.git".into()));
        assert_eq!(parse_hint(b"stargate-handoff"), Hint::Handoff);
        assert_eq!(parse_hint(b"stargate-handoff\n"), Hint::Handoff);
        for bad in [
            &b""[..],
            b"stargate-sync ",
            b"stargate-sync ../../etc/passwd.git",
            b"stargate-sync /abs.git",
            b"stargate-sync kv",
            b"stargate-sync a/b/c.git",
            b"stargate-sync kv.git\n\n",
            b"stargate-handoff now",
            b"\xff\xfe",
            b"STARGATE-HANDOFF",
        ] {
            assert!(matches!(parse_hint(bad), Hint::Refused(_)), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_hint(&[b'a'; MAX_DATAGRAM + 1]), Hint::Refused("too long"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any datagram: a hint naming a valid repository, the handoff hint, or a refusal.
        #[test]
        fn any_datagram_is_a_hint_or_refused(
            data in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..1100),
                "stargate-sync [a-z./_-]{0,20}\n?".prop_map(String::into_bytes),
                "stargate-(sync|handoff|stage)\\PC{0,10}".prop_map(String::into_bytes),
            ]
        ) {
            match parse_hint(&data) {
                Hint::Sync(name) => {
                    prop_assert!(crate::repos::valid_name(&name));
                    prop_assert!(!name.starts_with('/') && name.split('/').all(|c| c != "." && c != ".."));
                    let text = String::from_utf8(data).unwrap_or_default();
                    prop_assert_eq!(text.trim_end_matches('\n'), format!("{}{name}", signal::PREFIX));
                }
                Hint::Stage(name) => {
                    prop_assert!(crate::repos::valid_name(&name));
                    let text = String::from_utf8(data).unwrap_or_default();
                    prop_assert_eq!(text.trim_end_matches('\n'), format!("{}{name}", crate::journal::stage::HINT));
                }
                Hint::Handoff => prop_assert!(data == HANDOFF_HINT.as_bytes() || data == b"stargate-handoff\n"),
                Hint::Refused(why) => prop_assert!(!why.is_empty()),
            }
        }
    }
}
