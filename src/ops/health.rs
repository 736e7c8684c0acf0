//! `stargate-hook health`: a tiny read-only HTTP/1.x responder for `/healthz`, `/readyz`,
//! `/status` and `/metrics` (stargate-hook(1), HEALTH RESPONDER). Three modes, picked automatically: socket activation
//! (`LISTEN_FDS`), `--listen ADDR`, or inetd (the connection on stdin/stdout).
//!
//! Every request is bounded in size and time: one request per connection, a whole-request
//! deadline, and a 4xx (or a closed connection) for anything else. It never changes state.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use super::status::{self, Status};
use crate::config::Config;
use crate::error::{Error, Result};

/// Longest request head accepted; a longer one gets 431.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once in listener modes; more are closed unanswered.
const MAX_CONNECTIONS: usize = 32;

/// Serve /healthz, /readyz, /status and /metrics over HTTP.
#[derive(Parser)]
#[command(name = "stargate-hook health")]
struct Args {
    /// Listen on ADDR (host:port) instead of using an inherited socket.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

struct Ctx {
    /// A bad config is not fatal here: every request gets 503 naming it.
    cfg: std::result::Result<Config, String>,
    timeout: Duration,
}

pub fn main(args: &[String]) -> Result<()> {
    let args: Args = crate::args::parse("stargate-hook health", args)?;
    if args.listen.is_none() && socket_family(2).is_some() {
        // stderr is the client's connection (xinetd): a log line would corrupt the answer.
        log::set_max_level(log::LevelFilter::Off);
    }
    let cfg =
        Config::load(None).map_err(|e| e.to_string()).and_then(|c| c.validate().map(|()| c).map_err(|e| e.to_string()));
    if let Err(e) = &cfg {
        log::error!("{e}");
    }
    let setting = |f: fn(&Config) -> std::result::Result<Duration, crate::config::Error>, default| {
        cfg.as_ref().ok().and_then(|c| f(c).ok()).unwrap_or(default)
    };
    let timeout = setting(Config::health_timeout, Duration::from_secs(2));
    let idle = setting(Config::health_idle_exit, Duration::from_secs(60));
    let ctx = Arc::new(Ctx { cfg, timeout });
    let fatal = |what: &str, e: io::Error| Error::Fatal(format!("{what}: {e}"));
    if let Some(addr) = args.listen {
        let listener = TcpListener::bind(&addr).map_err(|e| fatal(&format!("cannot listen on {addr}"), e))?;
        log::info!("health responder listening on {addr}");
        return serve(Listener::Tcp(listener), ctx, None).map_err(|e| fatal("accept", e));
    }
    if let Some(fd) = inherited_fd() {
        // SAFETY: systemd passed us fd 3 and we are its only owner.
        return match (is_listening(fd), socket_family(fd)) {
            (true, Some(libc::AF_UNIX)) => {
                serve(Listener::Unix(unsafe { UnixListener::from_raw_fd(fd) }), ctx, Some(idle))
            }
            (true, _) => serve(Listener::Tcp(unsafe { TcpListener::from_raw_fd(fd) }), ctx, Some(idle)),
            (false, _) => inetd(fd, fd, &ctx),
        }
        .map_err(|e| fatal("socket activation", e));
    }
    inetd(0, 1, &ctx).map_err(|e| fatal("inetd", e))
}

/// fd 3 when systemd handed us sockets (`LISTEN_PID` is us, `LISTEN_FDS` ≥ 1).
fn inherited_fd() -> Option<RawFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    (pid == std::process::id() && fds >= 1).then_some(3)
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
fn inetd(input: RawFd, output: RawFd, ctx: &Ctx) -> io::Result<()> {
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
        Ok(head) => answer(&head, ctx),
        Err(Reject::Closed) => return Ok(()),
        Err(reject) => reject.response(),
    };
    let mut writer = writer;
    writer.write_all(&reply)?;
    writer.flush()
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

trait Conn: Read + Write + Send {
    fn set_timeouts(&self, t: Duration) -> io::Result<()>;
    fn close_write(&self);
}

impl Conn for TcpStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
    fn close_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Conn for UnixStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
    fn close_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> io::Result<Box<dyn Conn>> {
        Ok(match self {
            Listener::Tcp(l) => Box::new(l.accept()?.0),
            Listener::Unix(l) => Box::new(l.accept()?.0),
        })
    }
}

/// Accept until idle for `idle` (socket activation) or forever (`--listen`).
fn serve(listener: Listener, ctx: Arc<Ctx>, idle: Option<Duration>) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        if let Some(idle) = idle
            && !readable_within(listener.fd(), idle)?
        {
            if active.load(Ordering::SeqCst) == 0 {
                log::info!("idle for {} s; exiting", idle.as_secs());
                return Ok(());
            }
            continue;
        }
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closed unanswered
        }
        let (ctx, active) = (Arc::clone(&ctx), Arc::clone(&active));
        std::thread::spawn(move || {
            handle(conn, &ctx);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn readable_within(fd: RawFd, wait: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    match unsafe { libc::poll(&raw mut pfd, 1, ms) } {
        -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(false),
        -1 => Err(io::Error::last_os_error()),
        n => Ok(n > 0),
    }
}

fn handle(mut conn: Box<dyn Conn>, ctx: &Ctx) {
    let deadline = Instant::now() + ctx.timeout;
    let head = {
        let mut timed = Deadline { conn: &mut *conn, deadline };
        read_request(&mut timed)
    };
    let reply = match head {
        Ok(head) => answer(&head, ctx),
        Err(Reject::Closed) => return,
        Err(reject) => reject.response(),
    };
    let _ = conn.set_timeouts(ctx.timeout);
    if conn.write_all(&reply).is_ok() {
        // Let the client read the answer before unread input would turn close into a reset.
        conn.close_write();
        let _ = conn.set_timeouts(Duration::from_millis(200));
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 256 * 1024 {
            match conn.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

/// Reads that never outlive the whole-request deadline, however slowly the client trickles.
struct Deadline<'a> {
    conn: &'a mut dyn Conn,
    deadline: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.conn.set_timeouts(left)?;
        self.conn.read(buf)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reject {
    Closed,
    Timeout,
    TooLarge,
    Malformed,
}

impl Reject {
    fn response(&self) -> Vec<u8> {
        match self {
            Reject::Timeout => response(408, "text/plain", b"request timeout\n", false),
            Reject::TooLarge => response(431, "text/plain", b"request too large\n", false),
            Reject::Malformed | Reject::Closed => response(400, "text/plain", b"bad request\n", false),
        }
    }
}

/// The request head up to its blank line, or why there is none.
fn read_request(r: &mut impl Read) -> std::result::Result<String, Reject> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| Reject::Malformed);
        }
        if buf.len() >= MAX_REQUEST {
            return Err(Reject::TooLarge);
        }
        match r.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(Reject::Closed),
            Ok(0) => return Err(Reject::Malformed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Reject::Timeout);
            }
            Err(_) => return Err(Reject::Closed),
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Route one well-formed request head to its answer.
fn answer(head: &str, ctx: &Ctx) -> Vec<u8> {
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Reject::Malformed.response();
    };
    let valid_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    let valid_target = target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic());
    if !valid_method || !valid_target || lines.any(|l| !l.trim_end().is_empty() && !l.contains(':')) {
        return Reject::Malformed.response();
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return if version.starts_with("HTTP/") {
            response(505, "text/plain", b"HTTP/1.x only\n", false)
        } else {
            Reject::Malformed.response()
        };
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response(405, "text/plain", b"GET or HEAD only\n", false);
    }
    let path = target.split('?').next().unwrap_or(target);
    if !matches!(path, "/healthz" | "/readyz" | "/status" | "/metrics") {
        return response(404, "text/plain", b"not found\n", head_only);
    }
    let cfg = match &ctx.cfg {
        Ok(cfg) => cfg,
        Err(e) => {
            return response(503, "text/plain", format!("bad configuration: {e}\n").as_bytes(), head_only);
        }
    };
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
            None => response(200, "text/plain", format!("leader, epoch {}\n", status.epoch).as_bytes(), head_only),
            Some(why) => response(503, "text/plain", format!("not leader: {why}\n").as_bytes(), head_only),
        },
        "/status" => {
            let body = serde_json::to_vec_pretty(&status).unwrap_or_default();
            response(200, "application/json", &body, head_only)
        }
        _ => {
            let dir = cfg.state_dir().ok();
            let state = dir.as_deref().and_then(crate::lead::node::read_state);
            let agent = dir.as_deref().and_then(crate::replication::replicator::read_published);
            let body = super::metrics::render(&status, state.as_ref(), agent.as_ref());
            response(200, "text/plain; version=0.0.4", body.as_bytes(), head_only)
        }
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

    fn ctx() -> Ctx {
        Ctx { cfg: Err("test".into()), timeout: Duration::from_secs(1) }
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
            assert_eq!(code(&answer(head, &ctx())), want, "{head:?}");
        }
    }

    #[test]
    fn oversized_and_truncated_requests() {
        let big = vec![b'a'; 64 * 1024];
        assert_eq!(read_request(&mut &big[..]), Err(Reject::TooLarge));
        assert_eq!(read_request(&mut &b"GET / HTTP/1.1\r\n"[..]), Err(Reject::Malformed));
        assert_eq!(read_request(&mut &b""[..]), Err(Reject::Closed));
        assert_eq!(read_request(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).as_deref(), Ok("GET / HTTP/1.1"));
    }
}
