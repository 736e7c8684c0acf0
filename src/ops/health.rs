//! `stargate-hook health`: a tiny read-only HTTP/1.x responder for `/healthz`, `/readyz`,
//! `/status` and `/metrics` (stargate-hook(1), HEALTH RESPONDER). Three modes, picked
//! automatically: socket activation (`LISTEN_FDS`), `--listen ADDR`, or inetd (the
//! connection on stdin/stdout).
//!
//! Each socket has a scope: every endpoint, or the probes only (`/healthz`, `/readyz`), so
//! that what the other endpoints tell (repositories, journal positions, kept commits, who
//! promoted) can stay off the load balancer's port (`--internal`, or a socket named
//! `internal`).
//!
//! Every request is bounded in size and time: one request per connection, a deadline on
//! the whole connection, and a 4xx (or a closed connection) for anything else; in the
//! listener modes no number of slow clients keeps a probe out (`listen`). It never changes
//! state.

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use super::listen::{self, Listener, Reject, Socket, read_request};
use super::status::{self, Status};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lead::heard;

/// What a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every endpoint.
    All,
    /// `/healthz` and `/readyz` only; `/status`, `/metrics` and the endpoints only nodes
    /// use (`/repositories`, `/staged`, `/changes`) answer 404.
    Probes,
}

/// The socket name (systemd `FileDescriptorName=`) that serves every endpoint when the
/// others serve the probes only.
pub const INTERNAL: &str = "internal";
/// The socket name that serves the probes only.
pub const PUBLIC: &str = "public";

/// Serve /healthz, /readyz, /status and /metrics over HTTP.
#[derive(Parser)]
#[command(name = "stargate-hook health")]
struct Args {
    /// Listen on ADDR (host:port) instead of using an inherited socket.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Also listen on ADDR, serving every endpoint there; --listen then serves only
    /// /healthz and /readyz.
    #[arg(long, value_name = "ADDR", requires = "listen")]
    internal: Option<String>,
    /// Serve only /healthz and /readyz on the inherited sockets or connection (except a
    /// socket named "internal").
    #[arg(long, conflicts_with = "internal")]
    public: bool,
}

/// The scope of each inherited socket, by its name: `internal` serves everything,
/// `public` the probes; an unnamed one serves the probes when `--public` was given or
/// another socket is named `internal`, else everything.
pub fn scopes(names: &[Option<&str>], public: bool) -> Vec<Scope> {
    let split = public || names.contains(&Some(INTERNAL));
    (names.iter())
        .map(|name| match *name {
            Some(INTERNAL) => Scope::All,
            Some(PUBLIC) => Scope::Probes,
            _ if split => Scope::Probes,
            _ => Scope::All,
        })
        .collect()
}

struct Ctx {
    /// A bad config is not fatal here: every request gets 503 naming it.
    cfg: std::result::Result<Config, crate::config::Error>,
    timeout: Duration,
}

/// Why the health responder could not serve: listening, or accepting and answering.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    /// On the sockets of one mode: `accept` (`--listen`), `socket activation`, `inetd`.
    #[error("{mode}: {source}")]
    Serve { mode: &'static str, source: io::Error },
}

impl From<ServeError> for Error {
    fn from(e: ServeError) -> Self {
        Error::fatal(e)
    }
}

pub fn main(args: &[String]) -> Result<()> {
    let args: Args = crate::args::parse("stargate-hook health", args)?;
    if args.listen.is_none() && socket_family(2).is_some() {
        // stderr is the client's connection (xinetd): a log line would corrupt the answer.
        log::set_max_level(log::LevelFilter::Off);
    }
    let cfg = Config::load(None).and_then(|c| c.validate().map(|()| c));
    if let Err(e) = &cfg {
        log::error!("{e}");
    }
    let setting = |f: fn(&Config) -> std::result::Result<Duration, crate::config::Error>, default| {
        cfg.as_ref().ok().and_then(|c| f(c).ok()).unwrap_or(default)
    };
    let timeout = setting(Config::health_timeout, Duration::from_secs(2));
    let idle = setting(Config::health_idle_exit, Duration::from_secs(60));
    let ctx = Arc::new(Ctx { cfg, timeout });
    let serving = |mode| move |source| ServeError::Serve { mode, source };
    if let Some(addr) = args.listen {
        let mut listeners = Vec::new();
        let public = if args.internal.is_some() { Scope::Probes } else { Scope::All };
        for (addr, scope) in [(Some(addr), public), (args.internal, Scope::All)] {
            let Some(addr) = addr else { continue };
            let listener = match TcpListener::bind(&addr).and_then(deepen) {
                Ok(listener) => listener,
                Err(source) => return Err(ServeError::Listen { addr, source }.into()),
            };
            log::info!("health responder listening on {addr} ({})", describe(scope));
            listeners.push(socket(Listener::Tcp(listener), &ctx, scope));
        }
        return Ok(listen::serve(listeners, ctx.timeout, None, refusal).map_err(serving("accept"))?);
    }
    if let Some(fds) = inherited_fds() {
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let names: Vec<Option<&str>> = (0..fds.len()).map(|i| names.split(':').nth(i)).collect();
        let scopes = scopes(&names, args.public);
        if !is_listening(fds[0]) {
            // systemd Accept=yes: fd 3 is the connection.
            return Ok(inetd(fds[0], fds[0], &ctx, scopes[0]).map_err(serving("socket activation"))?);
        }
        let mut listeners = Vec::new();
        for (&fd, scope) in fds.iter().zip(scopes) {
            // SAFETY: systemd passed us these descriptors and we are their only owner.
            let listener = match (is_listening(fd), socket_family(fd)) {
                (true, Some(libc::AF_UNIX)) => Listener::Unix(unsafe { UnixListener::from_raw_fd(fd) }),
                (true, _) => Listener::Tcp(unsafe { TcpListener::from_raw_fd(fd) }),
                (false, _) => {
                    log::warn!("inherited descriptor {fd} is not a listening socket; ignored");
                    continue;
                }
            };
            listeners.push(socket(listener, &ctx, scope));
        }
        return Ok(listen::serve(listeners, ctx.timeout, Some(idle), refusal).map_err(serving("socket activation"))?);
    }
    let scope = if args.public { Scope::Probes } else { Scope::All };
    Ok(inetd(0, 1, &ctx, scope).map_err(serving("inetd"))?)
}

/// `listener` with a deeper queue of connections not yet accepted than the standard
/// library's (`listen::BACKLOG`; the kernel caps it at `net.core.somaxconn`).
fn deepen(listener: TcpListener) -> io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) again on a socket that listens only changes its backlog.
    match unsafe { libc::listen(listener.as_raw_fd(), listen::BACKLOG) } {
        0 => Ok(listener),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `listener`, answering with `scope`.
fn socket(listener: Listener, ctx: &Arc<Ctx>, scope: Scope) -> Socket {
    let ctx = Arc::clone(ctx);
    Socket { listener, handler: Arc::new(move |head: &str| answer(head, &ctx, scope)) }
}

fn describe(scope: Scope) -> &'static str {
    match scope {
        Scope::All => "every endpoint",
        Scope::Probes => "/healthz and /readyz only",
    }
}

/// Most inherited sockets used; systemd passes one per `Listen*=` line.
const MAX_FDS: u32 = 16;

/// fds 3, 4, ... when systemd handed us sockets (`LISTEN_PID` is us, `LISTEN_FDS` ≥ 1).
fn inherited_fds() -> Option<Vec<RawFd>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    (pid == std::process::id() && fds >= 1).then(|| (0..fds.min(MAX_FDS)).map(|i| 3 + i as RawFd).collect())
}

fn sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for the size we pass.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
    (rc == 0).then_some(value)
}

fn is_listening(fd: RawFd) -> bool {
    sockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1)
}

fn socket_family(fd: RawFd) -> Option<libc::c_int> {
    sockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
}

/// One connection on already-open descriptors; a watchdog ends the process at the deadline
/// because stdin may not be a socket we can put a timeout on.
fn inetd(input: RawFd, output: RawFd, ctx: &Ctx, scope: Scope) -> io::Result<()> {
    // SAFETY: the descriptors were given to this process for exactly this connection.
    let mut reader = unsafe { std::fs::File::from_raw_fd(input) };
    let writer = unsafe { std::fs::File::from_raw_fd(libc::dup(output)) };
    let timeout = ctx.timeout;
    let mut watchdog_out = writer.try_clone()?;
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let _ = watchdog_out.write_all(&response(408, "text/plain", b"request timeout\n", false));
        std::process::exit(0);
    });
    let reply = match read_request(&mut reader) {
        Ok(head) => answer(&head, ctx, scope),
        Err(Reject::Closed) => return Ok(()),
        Err(reject) => refusal(&reject),
    };
    let mut writer = writer;
    writer.write_all(&reply)?;
    writer.flush()
}

/// The answer to a head that could not be read.
fn refusal(why: &Reject) -> Vec<u8> {
    match why {
        Reject::Timeout => response(408, "text/plain", b"request timeout\n", false),
        Reject::TooLarge => response(431, "text/plain", b"request too large\n", false),
        Reject::Malformed | Reject::Closed => response(400, "text/plain", b"bad request\n", false),
    }
}

/// Route one well-formed request head to its answer.
fn answer(head: &str, ctx: &Ctx, scope: Scope) -> Vec<u8> {
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return refusal(&Reject::Malformed);
    };
    // An answer to HEAD has no body, whatever it says (RFC 9110, 9.3.2).
    let head_only = method == "HEAD";
    let malformed = || response(400, "text/plain", b"bad request\n", head_only);
    let valid_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    let valid_target = target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic());
    if !valid_method || !valid_target || lines.any(|l| !l.trim_end().is_empty() && !l.contains(':')) {
        return malformed();
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return if version.starts_with("HTTP/") {
            response(505, "text/plain", b"HTTP/1.x only\n", head_only)
        } else {
            malformed()
        };
    }
    if method != "GET" && !head_only {
        return response(405, "text/plain", b"GET or HEAD only\n", false);
    }
    let path = target.split('?').next().unwrap_or(target);
    let known = match scope {
        Scope::All => {
            matches!(
                path,
                "/healthz"
                    | "/readyz"
                    | "/repositories"
                    | "/staged"
                    | "/changes"
                    | "/position"
                    | "/applied"
                    | "/status"
                    | "/metrics"
            )
        }
        // What a load balancer and a client need (stargate-hook(1), Scopes): the endpoints
        // only nodes ask each other name repositories and journal positions; a client
        // reading its own writes asks `/position` and `/applied` of the repository it uses.
        Scope::Probes => matches!(path, "/healthz" | "/readyz" | "/position" | "/applied"),
    };
    if !known {
        return response(404, "text/plain", b"not found\n", head_only);
    }
    let cfg = match &ctx.cfg {
        Ok(cfg) => cfg,
        Err(e) => {
            return response(503, "text/plain", format!("bad configuration: {e}\n").as_bytes(), head_only);
        }
    };
    if path == "/changes" {
        return changes(cfg, target.split_once('?').map(|(_, q)| q), head_only);
    }
    if matches!(path, "/position" | "/applied") {
        return position(cfg, target.split_once('?').map_or("", |(_, q)| q), head_only);
    }
    let status = match status::status(cfg, matches!(path, "/status" | "/metrics")) {
        Ok(s) => s,
        Err(e) => return response(503, "text/plain", format!("{e}\n").as_bytes(), head_only),
    };
    match path {
        "/healthz" => match (unhealthy(&status), &status.lease_problem) {
            // Alive, but unable to take part in leadership: healthy, and says why.
            (None, Some(problem)) => response(
                200,
                "text/plain",
                format!("ok, but cannot reach the lease: {problem}\n").as_bytes(),
                head_only,
            ),
            (None, None) => response(200, "text/plain", b"ok\n", head_only),
            (Some(why), _) => response(503, "text/plain", format!("unhealthy: {why}\n").as_bytes(), head_only),
        },
        "/readyz" => match &status.refusal {
            None => match &status.quorum_shortfall {
                None => response(200, "text/plain", format!("leader, epoch {}\n", status.epoch).as_bytes(), head_only),
                // Leading, but a write sent now would not find a quorum: not ready.
                Some(why) => {
                    let body = format!("not ready: {why}\n{}\n", heard::follows_line(&status.node, status.epoch));
                    response(503, "text/plain", body.as_bytes(), head_only)
                }
            },
            // The second line says which epoch is current here, so that a client can tell a
            // deposed leader still answering 200 from the leader (remote::resolve).
            Some(why) => {
                let current = status.current().map(|c| format!("{}\n", heard::follows_line(&c.node, c.epoch)));
                let body = format!("not leader: {why}\n{}", current.unwrap_or_default());
                response(503, "text/plain", body.as_bytes(), head_only)
            }
        },
        "/staged" => {
            let name = target.split_once("?repo=").map(|(_, n)| n).unwrap_or("");
            let root = cfg.root().ok();
            match root
                .filter(|_| crate::repos::valid_name(name))
                .map(|r| r.join(name))
                .filter(|p| p.join("HEAD").is_file())
            {
                Some(path) => {
                    let body =
                        crate::format::STAGED.to_json(&crate::journal::stage::position(&path)).unwrap_or_default();
                    response(200, "application/json", &body, head_only)
                }
                None => response(404, "text/plain", b"no such repository\n", head_only),
            }
        }
        "/repositories" => {
            let served = status.repositories.iter().filter(|r| r.readable && r.unsupported.is_none());
            let body: String = served.map(|r| format!("{}\n", r.name)).collect();
            response(200, "text/plain", body.as_bytes(), head_only)
        }
        "/status" => {
            let body = serde_json::to_vec_pretty(&status).unwrap_or_default();
            response(200, "application/json", &body, head_only)
        }
        _ => {
            let dir = cfg.state_dir().ok();
            let state = dir.as_deref().and_then(crate::lead::node::state);
            let agent = dir.as_deref().and_then(crate::mirror::replicator::published);
            let body = super::metrics::render(&status, state.as_ref(), agent.as_ref());
            response(200, "text/plain; version=0.0.4", body.as_bytes(), head_only)
        }
    }
}

/// `/position?repo=<name>`: this node's journal position in a repository;
/// `/applied?repo=<name>&position=<position>`: whether it has applied that one (200
/// `applied`, 503 `behind`, 410 `superseded`: never will be), each with where it is
/// (stargate-hook(1), HEALTH RESPONDER). Read only, from the repository alone.
fn position(cfg: &crate::config::Config, query: &str, head_only: bool) -> Vec<u8> {
    use crate::journal::position::{self, Applied, Position};
    let text = |code: u16, body: String| response(code, "text/plain", body.as_bytes(), head_only);
    let param = |key: &str| query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
    let name = param("repo").unwrap_or("");
    let Some(path) = cfg
        .root()
        .ok()
        .filter(|_| crate::repos::valid_name(name))
        .map(|r| r.join(name))
        .filter(|p| p.join("HEAD").is_file())
    else {
        return text(404, "no such repository\n".into());
    };
    let at = |p: Option<Position>| p.map_or_else(|| "no journal".to_owned(), |p| p.to_string());
    let Some(want) = param("position") else {
        return match position::current(&path) {
            Ok(Some(p)) => text(200, format!("{p}\n")),
            Ok(None) => text(404, "no journal\n".into()),
            Err(e) => text(503, format!("{e}\n")),
        };
    };
    let want = match want.parse::<Position>() {
        Ok(p) => p,
        Err(e) => return text(400, format!("{e}\n")),
    };
    let led = (cfg.state_dir().ok())
        .and_then(|d| crate::lead::node::read_state(&d).ok().flatten())
        .and_then(|s| (s.role == crate::lead::node::Role::Leader).then_some(s.epoch));
    match position::applied(&path, &want, led) {
        Ok(Applied::Yes) => text(200, format!("applied {want}\n")),
        Ok(Applied::Behind { at: now }) => text(503, format!("behind: at {}\n", at(now))),
        Ok(Applied::Superseded { at: now }) => text(410, format!("superseded: at {now}\n")),
        Err(e) => text(503, format!("{e}\n")),
    }
}

/// `/changes`: the leader's change summary for replicas (`journal::changes`). Read
/// only; 404 on a node that keeps none.
fn changes(cfg: &crate::config::Config, query: Option<&str>, head_only: bool) -> Vec<u8> {
    let (Ok(state_dir), Ok(root)) = (cfg.state_dir(), cfg.root()) else {
        return response(503, "text/plain", b"no stargate.root\n", head_only);
    };
    let all = || crate::repos::list(&root).unwrap_or_default().into_iter().map(|r| r.name).collect();
    match crate::journal::changes::answer(&state_dir, query, all) {
        Ok(Some(body)) => response(200, "text/plain", body.as_bytes(), head_only),
        Ok(None) => response(404, "text/plain", b"no change summary on this node\n", head_only),
        Err(e) => response(503, "text/plain", format!("change summary: {e}\n").as_bytes(), head_only),
    }
}

fn unhealthy(s: &Status) -> Option<String> {
    if let Some(problem) = &s.agent.problem {
        return Some(problem.clone());
    }
    if let Some(e) = s.errors.first() {
        return Some(e.clone());
    }
    let bad: Vec<&str> = s.repositories.iter().filter(|r| !r.readable).map(|r| r.name.as_str()).collect();
    (!bad.is_empty()).then(|| format!("unreadable repositories: {}", bad.join(", ")))
}

fn response(code: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    };
    let allow = if code == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    // This node's wall clock, for a replica's estimate of the offset between the two.
    let now = crate::clock::now_ms();
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\n{}: {now}\r\nConnection: close\r\n\r\n",
        body.len(),
        crate::wire::http::TIME_HEADER
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::test_runner::TestCaseError;

    fn ctx() -> Ctx {
        Ctx { cfg: Err(crate::config::Error::Missing("stargate.root")), timeout: Duration::from_secs(1) }
    }

    fn code(reply: &[u8]) -> String {
        String::from_utf8_lossy(reply).split(' ').nth(1).unwrap_or("").to_owned()
    }

    #[test]
    fn malformed_requests_get_4xx() {
        for (head, want) in [
            ("GARBAGE", "400"),
            ("GET /healthz", "400"),
            ("GET healthz HTTP/1.1", "400"),
            ("get /healthz HTTP/1.1", "400"),
            ("GET /healthz HTTP/2.0", "505"),
            ("POST /healthz HTTP/1.1", "405"),
            ("GET /nope HTTP/1.1", "404"),
            ("GET /healthz HTTP/1.1\r\nno colon here", "400"),
            ("GET /healthz HTTP/1.1\r\nHost: x", "503"),
        ] {
            assert_eq!(code(&answer(head, &ctx(), Scope::All)), want, "{head:?}");
        }
    }

    #[test]
    fn probes_scope_hides_everything_but_the_probes() {
        let node_only = ["/repositories", "/staged?repo=kv.git", "/changes", "/changes?since=0000000000000001.5"];
        for path in ["/status", "/metrics", "/status?x=1", "/metrics?"].into_iter().chain(node_only) {
            let head = format!("GET {path} HTTP/1.1");
            assert_eq!(code(&answer(&head, &ctx(), Scope::Probes)), "404", "{path}");
            assert_eq!(code(&answer(&head, &ctx(), Scope::All)), "503", "{path}: bad config in the test ctx");
        }
        for path in ["/healthz", "/readyz"] {
            assert_eq!(code(&answer(&format!("GET {path} HTTP/1.1"), &ctx(), Scope::Probes)), "503", "{path}");
        }
    }

    /// Found by the property test: a HEAD request refused with 505 or 400 got a body.
    #[test]
    fn refused_head_request_gets_no_body() {
        for head in ["HEAD /healthz HTTP/1\u{a1}1", "HEAD /healthz HTTP/2.0", "HEAD nope HTTP/1.1"] {
            let reply = String::from_utf8(answer(head, &ctx(), Scope::All)).unwrap();
            assert!(reply.ends_with("\r\n\r\n"), "{head:?}: {reply:?}");
        }
    }

    #[test]
    fn socket_names_pick_scopes() {
        use Scope::*;
        assert_eq!(scopes(&[None], false), [All]);
        assert_eq!(scopes(&[None], true), [Probes]);
        assert_eq!(scopes(&[Some("public"), Some("internal")], false), [Probes, All]);
        assert_eq!(scopes(&[Some("health"), Some("internal")], false), [Probes, All]);
        assert_eq!(scopes(&[Some("internal")], true), [All]);
        assert_eq!(scopes(&[Some("public")], false), [Probes]);
        assert_eq!(scopes(&[Some("x"), None], false), [All, All]);
    }

    /// A response as the responder writes it: status line, headers, blank line, and a body
    /// of exactly Content-Length bytes (none for HEAD).
    fn well_formed(reply: &[u8], head_only: bool) -> std::result::Result<u16, TestCaseError> {
        let bad = |why: &str| TestCaseError::fail(why.to_owned());
        let text = String::from_utf8(reply.to_vec()).map_err(|_| bad("not UTF-8"))?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no blank line"))?;
        let code: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let length: usize = (head.lines())
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("no Content-Length"))?;
        let want = if head_only { 0 } else { length };
        if body.len() != want {
            return Err(bad(&format!("body of {} bytes, Content-Length {length}", body.len())));
        }
        Ok(code)
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() }
        }

        /// Request heads close to valid ones, so that the checks past the request line run.
        fn near_valid_head() -> impl Strategy<Value = String> {
            let method = prop_oneof!["GET", "HEAD", "POST", "get", "[A-Z]{0,8}", "\\PC{0,4}"];
            let target = prop_oneof![
                "/healthz",
                "/readyz",
                "/status",
                "/metrics",
                "/repositories",
                "/staged\\?repo=[a-z.]{0,8}",
                "/changes",
                "/status\\?[ -~]{0,10}",
                "/[ -~]{0,20}",
                "[^/]\\PC{0,8}"
            ];
            let version = prop_oneof!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/[0-9.]{0,4}", "\\PC{0,6}"];
            let header = prop_oneof!["Host: x", "[A-Za-z-]{1,10}: [ -~]{0,20}", "\\PC{0,20}", ""];
            let sep = prop_oneof![" ", "  ", "\t", ""];
            (method, sep.clone(), target, sep, version, prop::collection::vec(header, 0..6)).prop_map(
                |(m, s1, t, s2, v, h)| {
                    let mut head = format!("{m}{s1}{t}{s2}{v}");
                    for line in h {
                        head += "\r\n";
                        head += &line;
                    }
                    head
                },
            )
        }

        proptest! {
            #![proptest_config(config())]

            /// Any head: one well-formed response with a status from the documented set.
            #[test]
            fn every_head_gets_a_well_formed_answer(head in prop_oneof![near_valid_head(), "\\PC{0,200}"],
                                                   probes in any::<bool>()) {
                let scope = if probes { Scope::Probes } else { Scope::All };
                let reply = answer(&head, &ctx(), scope);
                let line = head.lines().next().unwrap_or("");
                let head_only = line.split(' ').count() == 3 && line.starts_with("HEAD ");
                let code = well_formed(&reply, head_only)?;
                prop_assert!([400, 404, 405, 503, 505].contains(&code), "{code} for {head:?}");
                let path = head.split(' ').nth(1).unwrap_or("").split('?').next().unwrap_or("");
                if code == 503 {
                    // Only a known endpoint reaches the configuration (which is bad here).
                    prop_assert!(matches!(path, "/healthz" | "/readyz" | "/position" | "/applied")
                        || (scope == Scope::All
                            && matches!(path, "/status" | "/metrics" | "/repositories" | "/staged" | "/changes")),
                        "{head:?}");
                }
            }
        }
    }
}
