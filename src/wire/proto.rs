//! A git protocol v2 client for mirroring: one `upload-pack` session that lists refs
//! (`ls-refs`) and fetches objects by id (`fetch` with `done` in the first request, so no
//! negotiation rounds), over every transport a node's URL may name: `git://` (a TCP
//! connection of our own), a local `git upload-pack`, ssh (`wire::ssh`, the command git
//! would run), and smart HTTP(S) through git's own `git remote-http(s)` in its
//! `stateless-connect` mode, which carries each request in one POST with git's http
//! configuration (client certificate, CA, proxy, credentials) applied. git stores the pack
//! (`git::PackStore`). A server that does not speak v2 is left to `git fetch`.
//!
//! Why not `git fetch`: for a handful of refs its fixed costs dominate, and on `git://`
//! each response waits 40 ms. git daemon's upload-pack sends a response in several small
//! writes; with Nagle's algorithm on its side and delayed acknowledgements on ours, the
//! second small segment waits for our delayed-ACK timer (40 ms on Linux). Acknowledging at
//! once (`TCP_QUICKACK`, re-armed before each read) removes the stall: a fetch of one
//! commit from a 100k-ref repository takes ~2 ms instead of ~43 ms.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gix::ObjectId;

use super::endpoint::Endpoint;
use super::git;

/// How a session reaches the other node, besides its URL.
pub struct Via<'a> {
    /// The program for local repositories (`--upload-pack`).
    pub upload_pack: Option<&'a str>,
    /// This node's copy: its configuration is the one git's own transports would read
    /// (`core.sshCommand`, `ssh.variant`, `http.*`), read at every open so that an
    /// operator's change applies to the next session.
    pub local: &'a Path,
    /// Where shared ssh connections keep their sockets (`ssh::Ssh::control`).
    pub ssh_control: Option<&'a Path>,
}

/// An open protocol v2 session with one repository's `upload-pack`.
pub struct Session {
    reader: BufReader<Reader>,
    writer: Writer,
    url: String,
    /// The server's object format, when it advertises one (`object-format`), sent back
    /// with every command as protocol v2 requires of a SHA-256 server's clients.
    object_format: Option<String>,
}

struct Reader {
    input: Input,
    deadline: Instant,
    abandon: Option<Abandon>,
}

/// Asked while a read has waited `ABANDON_CHECK` in silence: true when the session is no
/// longer wanted (the node it reads from was replaced as leader), which ends the wait then
/// rather than at the deadline.
pub type Abandon = Box<dyn FnMut() -> bool + Send>;

/// How long a read waits in silence before it asks whether it is still wanted.
const ABANDON_CHECK: Duration = Duration::from_millis(500);

/// The error of a read abandoned (`Abandon`).
pub const ABANDONED: &str = "abandoned: the node read from no longer leads";

enum Input {
    Tcp(TcpStream),
    Process(ChildStdout),
}

enum Writer {
    Tcp(TcpStream),
    /// A local upload-pack in its own process group, killed with it when the session ends.
    Process {
        stdin: Option<ChildStdin>,
        child: Child,
        stderr: Option<JoinHandle<Vec<u8>>>,
    },
}

enum Pkt {
    Data(Vec<u8>),
    Flush,
    Delim,
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let wait = if self.abandon.is_some() { left.min(ABANDON_CHECK) } else { left };
            let read = match &mut self.input {
                Input::Tcp(s) => {
                    quickack(s);
                    s.set_read_timeout(Some(wait))?;
                    s.read(buf)
                }
                Input::Process(out) => {
                    let mut fd = libc::pollfd { fd: out.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
                    // SAFETY: one valid pollfd for the duration of the call.
                    match unsafe { libc::poll(&mut fd, 1, ms) } {
                        0 => Err(std::io::ErrorKind::TimedOut.into()),
                        n if n < 0 => Err(std::io::Error::last_os_error()),
                        _ => out.read(buf),
                    }
                }
            };
            match read {
                Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                    if self.abandon.as_mut().is_some_and(|still| still()) {
                        return Err(std::io::Error::other(ABANDONED));
                    }
                }
                other => return other,
            }
        }
    }
}

/// Acknowledge at once (see the module text). Linux drops the mode after a while, so it
/// is re-armed before every read; failing to set it only costs speed.
pub(crate) fn quickack(s: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket, and an option value of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Writer::Process { stdin, child, .. } = self {
            stdin.take();
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kills the process group this child leads, nothing else.
                unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
    }
}

/// Below this, a wait is not worth starting.
const MIN_WAIT: Duration = Duration::from_millis(1);

fn pkt(s: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", s.len() + 4).into_bytes();
    out.extend_from_slice(s.as_bytes());
    out
}

impl Session {
    /// Open a session with the repository at `endpoint`, to end by `deadline`. The server
    /// must accept the connection and advertise what it speaks within `answer_within`: a
    /// machine that is gone fails the session in that time, not at `deadline`. `Ok(None)`
    /// when this client does not speak the transport, or the server does not speak v2.
    /// `upload_pack` replaces the program for local repositories (`--upload-pack`).
    pub fn open(
        endpoint: &Endpoint,
        via: &Via,
        answer_within: Duration,
        deadline: Instant,
    ) -> Result<Option<Session>, git::Error> {
        let Via { upload_pack, local, ssh_control } = *via;
        let url = endpoint.display();
        let answer_by = deadline.min(Instant::now() + answer_within);
        let (input, writer) = match endpoint {
            Endpoint::Git { host, port, path } => {
                let io = |e| io_error(&url, e);
                let stream = connect_host(host, *port, answer_by).map_err(io)?;
                stream
                    .set_write_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(MIN_WAIT)))
                    .map_err(io)?;
                let mut w = stream.try_clone().map_err(io)?;
                let authority = if *port == 9418 { host.clone() } else { format!("{host}:{port}") };
                let path = if path.starts_with(['/', '~']) { path.clone() } else { format!("/{path}") };
                w.write_all(&pkt(&format!("git-upload-pack {path}\0host={authority}\0\0version=2\0"))).map_err(io)?;
                (Input::Tcp(stream), Writer::Tcp(w))
            }
            Endpoint::Local(path) => {
                process(&url, git::spawn_upload_pack(upload_pack, path).map_err(git::Error::Spawn)?)?
            }
            Endpoint::Ssh { host, port, path } => {
                let ssh = super::ssh::Ssh {
                    command: git::config_get(local, "core.sshCommand").ok().flatten(),
                    variant: git::config_get(local, "ssh.variant").ok().flatten(),
                    control: ssh_control.map(Path::to_owned),
                };
                let remote = format!("git-upload-pack {}", super::endpoint::sq_quote(path));
                let mut cmd = (ssh.command(host, *port, &remote, Some("version=2"), Some(answer_within)))
                    .map_err(|e| io_error(&url, std::io::Error::other(e.to_string())))?;
                std::os::unix::process::CommandExt::process_group(
                    cmd.stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped()),
                    0,
                );

                process(&url, cmd.spawn().map_err(git::Error::Spawn)?)?
            }
            Endpoint::Http(http) => {
                process(&url, git::spawn_stateless_connect(http, local).map_err(git::Error::Spawn)?)?
            }
        };
        let reader = BufReader::with_capacity(64 * 1024, Reader { input, deadline: answer_by, abandon: None });
        let mut session = Session { reader, writer, url, object_format: None };
        if endpoint.is_http() && !session.stateless_connect()? {
            return Ok(None);
        }
        let advertisement = session.lines()?;
        session.reader.get_mut().deadline = deadline;
        let has = |cap: &str| advertisement.iter().any(|l| l == cap || l.starts_with(&format!("{cap}=")));
        if advertisement.first().map(String::as_str) != Some("version 2") || !has("ls-refs") || !has("fetch") {
            return Ok(None);
        }
        if let Some(format) = advertisement.iter().find_map(|l| l.strip_prefix("object-format=")) {
            session.object_format = Some(format.to_owned());
        }
        Ok(Some(session))
    }

    /// Ask git's http helper for a protocol v2 connection (gitremote-helpers(7),
    /// `stateless-connect`): true when it has one, false when the server does not speak
    /// v2 (`fallback`).
    fn stateless_connect(&mut self) -> Result<bool, git::Error> {
        self.send(b"stateless-connect git-upload-pack\n")?;
        let mut line = Vec::new();
        match std::io::BufRead::read_until(&mut self.reader, b'\n', &mut line) {
            Ok(0) => Err(self.fail(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) if line == b"\n" => Ok(true),
            Ok(_) if line == b"fallback\n" => Ok(false),
            Ok(_) => Err(self.protocol(&format!("stateless-connect answered '{}'", text(&line)))),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// From now on, a read that waits in silence asks `abandon` now and then whether to
    /// give up (see `Abandon`).
    pub fn abandon_when(&mut self, abandon: Abandon) {
        self.reader.get_mut().abandon = Some(abandon);
    }

    /// The server's object format: `sha1` (also when it does not say) or `sha256`.
    pub fn object_format(&self) -> &str {
        self.object_format.as_deref().unwrap_or("sha1")
    }

    /// The start of a request for `command`, up to its delimiter.
    fn command(&self, command: &str) -> Vec<u8> {
        let mut request = pkt(&format!("command={command}\n"));
        if let Some(format) = &self.object_format {
            request.extend(pkt(&format!("object-format={format}\n")));
        }
        request.extend_from_slice(b"0001");
        request
    }

    /// The leader's refs named in `names` (all refs when empty), with their object ids.
    /// A name missing from the answer is a ref the server does not have.
    pub fn ls_refs(&mut self, names: &[&str]) -> Result<HashMap<String, ObjectId>, git::Error> {
        let mut request = self.command("ls-refs");
        for name in names {
            request.extend(pkt(&format!("ref-prefix {name}\n")));
        }
        request.extend_from_slice(b"0000");
        self.send(&request)?;
        let mut refs = HashMap::new();
        for line in self.lines()? {
            let mut fields = line.split(' ');
            let (Some(oid), Some(name)) = (fields.next(), fields.next()) else { continue };
            // A prefix also matches longer names; `unborn` lines carry no id.
            if (names.is_empty() || names.contains(&name))
                && let Ok(oid) = ObjectId::from_hex(oid.as_bytes())
            {
                refs.insert(name.to_owned(), oid);
            }
        }
        Ok(refs)
    }

    /// Fetch the objects of `wants` that `haves` do not reach, handing the pack to `store`
    /// as it arrives. With `progress`, the server's progress goes to our stderr.
    pub fn fetch(
        &mut self,
        wants: &[ObjectId],
        haves: &[ObjectId],
        progress: bool,
        store: &mut dyn FnMut(&[u8]) -> Result<(), git::Error>,
    ) -> Result<(), git::Error> {
        let mut request = self.command("fetch");
        request.extend(pkt("thin-pack\n"));
        request.extend(pkt("ofs-delta\n"));
        if !progress {
            request.extend(pkt("no-progress\n"));
        }
        for oid in wants {
            request.extend(pkt(&format!("want {oid}\n")));
        }
        for oid in haves {
            request.extend(pkt(&format!("have {oid}\n")));
        }
        request.extend(pkt("done\n"));
        request.extend_from_slice(b"0000");
        self.send(&request)?;
        // Sections before the pack (shallow-info, wanted-refs, packfile-uris) are skipped.
        loop {
            match self.read_pkt()? {
                Pkt::Data(line) if text(&line) == "packfile" => break,
                Pkt::Data(line) => self.check_err(&line)?,
                Pkt::Delim => {}
                Pkt::Flush => return Err(self.protocol("the response carries no pack")),
            }
        }
        loop {
            match self.read_pkt()? {
                Pkt::Data(data) => match data.split_first() {
                    Some((1, pack)) => store(pack)?,
                    Some((2, msg)) if progress => relay_progress(msg),
                    Some((2, _)) => {}
                    Some((3, msg)) => return Err(self.remote_error(&text(msg))),
                    _ => return Err(self.protocol("bad side-band packet")),
                },
                Pkt::Flush => return Ok(()),
                Pkt::Delim => return Err(self.protocol("unexpected delimiter in the pack")),
            }
        }
    }

    fn send(&mut self, request: &[u8]) -> Result<(), git::Error> {
        let result = match &mut self.writer {
            Writer::Tcp(s) => s.write_all(request),
            Writer::Process { stdin: Some(stdin), .. } => stdin.write_all(request).and_then(|()| stdin.flush()),
            Writer::Process { stdin: None, .. } => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        result.map_err(|e| self.fail(e))
    }

    /// Text lines up to the next flush or delimiter.
    fn lines(&mut self) -> Result<Vec<String>, git::Error> {
        let mut lines = Vec::new();
        while let Pkt::Data(line) = self.read_pkt()? {
            self.check_err(&line)?;
            lines.push(text(&line));
        }
        Ok(lines)
    }

    fn read_pkt(&mut self) -> Result<Pkt, git::Error> {
        loop {
            let mut len = [0u8; 4];
            self.read_exact(&mut len)?;
            let len = std::str::from_utf8(&len).ok().and_then(|s| usize::from_str_radix(s, 16).ok());
            return match len {
                Some(0) => Ok(Pkt::Flush),
                Some(1) => Ok(Pkt::Delim),
                // A response-end packet: a stateless transport (http) marks where each
                // response ends; the flush before it already said so.
                Some(2) => continue,
                Some(n) if n > 4 => {
                    let mut data = vec![0; n - 4];
                    self.read_exact(&mut data)?;
                    Ok(Pkt::Data(data))
                }
                _ => Err(self.protocol("bad pkt-line length")),
            };
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), git::Error> {
        self.reader.read_exact(buf).map_err(|e| self.fail(e))
    }

    fn check_err(&self, line: &[u8]) -> Result<(), git::Error> {
        match line.strip_prefix(b"ERR ") {
            Some(why) => Err(self.remote_error(&text(why))),
            None => Ok(()),
        }
    }

    fn remote_error(&self, why: &str) -> git::Error {
        git::Error::Failed {
            args: format!("upload-pack {}", self.url),
            status: "remote error".into(),
            stderr: why.into(),
        }
    }

    fn protocol(&self, why: &str) -> git::Error {
        self.remote_error(&format!("protocol error: {why}"))
    }

    /// What a broken read or write means: the deadline passed, or the server went away (for
    /// a local upload-pack, with its own last words).
    fn fail(&mut self, e: std::io::Error) -> git::Error {
        if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) {
            return git::Error::Timeout { args: format!("upload-pack {}", self.url) };
        }
        let gone = matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe);
        if let (true, Writer::Process { stdin, child, stderr }) = (gone, &mut self.writer) {
            stdin.take();
            let deadline = Instant::now() + Duration::from_secs(1);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.to_string(),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    _ => break "no exit".into(),
                }
            };
            let stderr = stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
            let stderr = crate::wire::sanitize::text(&String::from_utf8_lossy(&stderr)).trim().to_owned();
            return git::Error::Failed { args: format!("upload-pack {}", self.url), status, stderr };
        }
        if gone {
            return self.remote_error("the remote end hung up unexpectedly");
        }
        io_error(&self.url, e)
    }
}

/// The ends of a session with a process that speaks for the server (a local upload-pack,
/// ssh, git's http helper).
fn process(url: &str, mut child: Child) -> Result<(Input, Writer), git::Error> {
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let stderr = stderr.map(git::drain);
    let writer = Writer::Process { stdin, child, stderr };
    let Some(stdout) = stdout else { return Err(io_error(url, std::io::Error::other("no pipe"))) };
    Ok((Input::Process(stdout), writer))
}

fn text(line: &[u8]) -> String {
    crate::wire::sanitize::text(&String::from_utf8_lossy(line)).trim_end_matches('\n').to_owned()
}

/// The server's progress, as `git fetch` shows it: each line prefixed, `\r` kept so that
/// counters overwrite themselves.
fn relay_progress(msg: &[u8]) {
    let msg = String::from_utf8_lossy(msg);
    let mut err = std::io::stderr().lock();
    for piece in msg.split_inclusive(['\r', '\n']) {
        let end = if piece.ends_with(['\r', '\n']) { &piece[piece.len() - 1..] } else { "" };
        let _ = write!(err, "remote: {}{end}", crate::wire::sanitize::text(piece.trim_end_matches(['\r', '\n'])));
    }
}

fn io_error(url: &str, e: std::io::Error) -> git::Error {
    if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) {
        return git::Error::Timeout { args: format!("upload-pack {url}") };
    }
    git::Error::Failed { args: format!("upload-pack {url}"), status: "io error".into(), stderr: e.to_string() }
}

/// A TCP connection to the first of `addrs` that answers by `deadline` (`name` is the
/// address as given, for messages), with `TCP_NODELAY` set: every client here sends
/// whole requests. Used for git daemon and the health probes alike.
pub(crate) fn connect(addrs: impl ToSocketAddrs, name: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    let resolved = addrs.to_socket_addrs().map_err(|e| std::io::Error::other(format!("cannot resolve {name}: {e}")))?;
    let mut last = std::io::Error::other(format!("cannot resolve {name}"));
    for addr in resolved {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                notice_a_vanished_peer(&s);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A peer whose machine is gone sends no FIN: a read would wait for its deadline (25 s
/// for a sync, while it holds the repository's sync lock). Keepalive probes after a second
/// of silence, three of them a second apart, and at most 5 s for data to be acknowledged,
/// end the connection within about 5 s instead; a live server that is busy (counting
/// objects) acknowledges the probes and is waited for. Best effort: a socket option the
/// kernel refuses leaves the deadline alone in charge.
fn notice_a_vanished_peer(s: &TcpStream) {
    let fd = s.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: a valid socket, and a pointer to an int of the size given.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 5000);
}

/// `host` or `[v6]` and a port, as `connect` takes them.
pub(crate) fn connect_host(host: &str, port: u16, deadline: Instant) -> std::io::Result<TcpStream> {
    connect((host.trim_start_matches('[').trim_end_matches(']'), port), host, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::TcpListener;

    /// A server on loopback that sends `script` to the first client, whatever it asks, and
    /// closes; what the client sends is read and dropped.
    fn serve_once(script: Vec<u8>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let _ = conn.set_write_timeout(Some(Duration::from_secs(3)));
            let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
            let mut reader = conn.try_clone().unwrap();
            let drain = std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
            let _ = conn.write_all(&script);
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = drain.join();
        });
        port
    }

    fn data(bytes: &[u8]) -> Vec<u8> {
        let mut out = format!("{:04x}", bytes.len() + 4).into_bytes();
        out.extend_from_slice(bytes);
        out
    }

    /// One element of a server's answer: mostly well-formed pkt-lines, some not.
    fn element() -> impl Strategy<Value = Vec<u8>> {
        let oid = "[0-9a-f]{40}";
        prop_oneof![
            Just(b"0000".to_vec()),
            Just(b"0001".to_vec()),
            Just(b"0002".to_vec()),
            Just(data(b"version 2\n")),
            Just(data(b"ls-refs=unborn\n")),
            Just(data(b"fetch=shallow\n")),
            Just(data(b"packfile\n")),
            (oid, "[ -~]{0,30}").prop_map(|(o, n)| data(format!("{o} {n}\n").as_bytes())),
            "\\PC{0,40}".prop_map(|t| data(format!("ERR {t}").as_bytes())),
            (0u8..5, prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(band, mut d)| {
                d.insert(0, band);
                data(&d)
            }),
            prop::collection::vec(any::<u8>(), 0..200).prop_map(|d| data(&d)),
            // Lengths that lie: too short, not hex, longer than what follows.
            prop::collection::vec(any::<u8>(), 4..8),
            "[0-9a-f]{4}".prop_map(String::into_bytes),
        ]
    }

    fn advertisement() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => Just([data(b"version 2\n"), data(b"ls-refs\n"), data(b"fetch\n"), b"0000".to_vec()].concat()),
            1 => prop::collection::vec(element(), 0..6).prop_map(|v| v.concat()),
        ]
    }

    /// Every error is text fit for a terminal.
    fn clean(e: &git::Error) -> std::result::Result<(), TestCaseError> {
        let text = e.to_string();
        prop_assert!(!text.is_empty());
        prop_assert!(!text.contains('\u{1b}'), "{text:?}");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a server (or whoever sits between) answers: the session opens or not,
        /// each command returns refs, a pack or an error, never a panic, and everything ends
        /// by the deadline.
        #[test]
        fn any_server_answer_ends_in_a_result_by_the_deadline(
            advertised in advertisement(),
            rest in prop::collection::vec(element(), 0..40),
        ) {
            let script = [advertised, rest.concat()].concat();
            let port = serve_once(script);
            let started = Instant::now();
            let deadline = started + Duration::from_secs(2);
            let endpoint = Endpoint::Git { host: "127.0.0.1".into(), port, path: "/kv.git".into() };
            match Session::open(&endpoint, &Via { upload_pack: None, local: Path::new("."), ssh_control: None }, Duration::from_secs(2), deadline) {
                Ok(Some(mut session)) => {
                    match session.ls_refs(&[]) {
                        Ok(refs) => prop_assert!(refs.keys().all(|name| !name.contains('\n'))),
                        Err(e) => clean(&e)?,
                    }
                    match session.ls_refs(&["refs/heads/main"]) {
                        Ok(refs) => prop_assert!(refs.keys().all(|name| name == "refs/heads/main")),
                        Err(e) => clean(&e)?,
                    }
                    let mut stored = 0usize;
                    let want = [ObjectId::null(gix::hash::Kind::Sha1)];
                    match session.fetch(&want, &[], false, &mut |pack| { stored += pack.len(); Ok(()) }) {
                        Ok(()) => {}
                        Err(e) => clean(&e)?,
                    }
                }
                Ok(None) => {}
                Err(e) => clean(&e)?,
            }
            prop_assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        }
    }

    /// A server that answers, then falls silent (its machine gone): the read waits until
    /// the session is abandoned, not until the deadline, and says why; and a server that
    /// never advertises fails the session at `answer_within`.
    #[test]
    fn a_silent_server_is_abandoned_when_no_longer_wanted_and_one_that_never_answers_is_given_up() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (i, conn) in listener.incoming().take(2).enumerate() {
                let Ok(mut conn) = conn else { return };
                if i == 0 {
                    let _ = conn.write_all(
                        &[data(b"version 2\n"), data(b"ls-refs\n"), data(b"fetch\n"), b"0000".to_vec()].concat(),
                    );
                }
                held.push(conn);
            }
            std::thread::sleep(Duration::from_secs(10));
        });
        let endpoint = Endpoint::Git { host: "127.0.0.1".into(), port, path: "/kv.git".into() };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut session = Session::open(
            &endpoint,
            &Via { upload_pack: None, local: Path::new("."), ssh_control: None },
            Duration::from_secs(2),
            deadline,
        )
        .unwrap()
        .unwrap();
        let mut asked = 0;
        session.abandon_when(Box::new(move || {
            asked += 1;
            asked >= 2
        }));
        let started = Instant::now();
        let e = session.ls_refs(&[]).unwrap_err().to_string();
        assert!(e.contains(ABANDONED), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let started = Instant::now();
        let e = Session::open(
            &endpoint,
            &Via { upload_pack: None, local: Path::new("."), ssh_control: None },
            Duration::from_millis(300),
            deadline,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(started.elapsed() < Duration::from_secs(2), "{e} after {:?}", started.elapsed());
    }

    /// Every connection asks the kernel to notice a peer that vanished (see
    /// `notice_a_vanished_peer`).
    #[test]
    fn connections_probe_a_silent_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let s = connect(addr, "test", Instant::now() + Duration::from_secs(2)).unwrap();
        let get = |level, name| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a valid socket, and an int with its size.
            let rc = unsafe {
                libc::getsockopt(s.as_raw_fd(), level, name, (&mut value as *mut libc::c_int).cast(), &mut len)
            };
            assert_eq!(rc, 0);
            value
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 5000);
    }

    #[test]
    fn a_lying_length_is_an_error() {
        let script = [data(b"version 2\n"), data(b"ls-refs\n"), data(b"fetch\n"), b"0000".to_vec(), b"zzzz".to_vec()];
        let port = serve_once(script.concat());
        let endpoint = Endpoint::Git { host: "127.0.0.1".into(), port, path: "/kv.git".into() };
        let mut session = Session::open(
            &endpoint,
            &Via { upload_pack: None, local: Path::new("."), ssh_control: None },
            Duration::from_secs(2),
            Instant::now() + Duration::from_secs(2),
        )
        .unwrap()
        .unwrap();
        let e = session.ls_refs(&[]).unwrap_err().to_string();
        assert!(e.contains("bad pkt-line length"), "{e}");
    }
}
