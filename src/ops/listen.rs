//! The health responder's connections in the listener modes (stargate-hook(1), HEALTH
//! RESPONDER, Limits): one thread polls every listening socket and every open connection,
//! reading request heads, writing answers and reading what a client sends after its answer,
//! never blocking on a client. A slow client (silent, trickling its request, or trickling
//! after it) therefore holds only its own connection, and only until that connection's
//! deadline: the client's whole share of it, head, answer and what follows, is bounded by
//! one timeout. Answers are computed on worker threads, a bounded number per socket. When a
//! socket has its most connections open, a new one closes the oldest of the least worth
//! keeping (`evict`), so that no number of slow clients keeps a probe out.
//!
//! Also the reading of a request head, incremental here and blocking for inetd.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Longest request head accepted; a longer one gets 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Connections open at once per listening socket; another one closes the oldest.
pub const MAX_OPEN: usize = 256;
/// Answers computed at once per listening socket; complete requests beyond wait their turn.
pub const MAX_WORKERS: usize = 32;
/// The most read from a client after its answer before its connection is closed.
const MAX_AFTER: usize = 256 * 1024;
/// Connections accepted from one socket before the others get a turn.
const ACCEPT_BURST: usize = 256;
/// Connections the kernel completes for a `--listen` socket before they are accepted: a
/// deep queue, so that a burst of connections does not make a probe's connection wait for
/// its SYN to be sent again (a second).
pub const BACKLOG: libc::c_int = 4096;

/// Why a request head was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    /// Closed (or failed) before sending anything: nothing to answer.
    Closed,
    Timeout,
    TooLarge,
    Malformed,
}

/// A request head as it arrives, up to its blank line.
#[derive(Default)]
pub struct Head {
    buf: Vec<u8>,
    /// Where the search for the blank line resumes: a client trickling one byte at a time
    /// must not make each read rescan the whole head.
    scanned: usize,
}

impl Head {
    /// Add what arrived: the head once complete, a rejection, or `None` to read on.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Result<String, Reject>> {
        self.buf.extend_from_slice(bytes);
        if let Some(end) = head_end(&self.buf[self.scanned..]) {
            let mut head = std::mem::take(&mut self.buf);
            head.truncate(self.scanned + end);
            return Some(String::from_utf8(head).map_err(|_| Reject::Malformed));
        }
        self.scanned = self.buf.len().saturating_sub(3);
        (self.buf.len() >= MAX_REQUEST).then_some(Err(Reject::TooLarge))
    }

    /// Why a connection that ends now gets no answer, or a 400.
    fn ended(&self) -> Reject {
        if self.buf.is_empty() { Reject::Closed } else { Reject::Malformed }
    }
}

/// The request head up to its blank line, or why there is none (inetd: `r` is blocking).
pub fn read_request(r: &mut impl Read) -> Result<String, Reject> {
    let mut head = Head::default();
    let mut chunk = [0u8; 1024];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return Err(head.ended()),
            Ok(n) => {
                if let Some(done) = head.feed(&chunk[..n]) {
                    return done;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Reject::Timeout);
            }
            Err(_) => return Err(Reject::Closed),
        }
    }
}

pub fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        let stream = match self {
            Listener::Tcp(l) => Stream::Tcp(l.accept()?.0),
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
        };
        stream.set_nonblocking()?;
        Ok(stream)
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(true),
            Stream::Unix(s) => s.set_nonblocking(true),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn close_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

/// What answers one socket's requests: a complete head in, the response's bytes out.
pub type Handler = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// A listening socket and what answers on it.
pub struct Socket {
    pub listener: Listener,
    pub handler: Handler,
}

enum Phase {
    /// Reading the request head.
    Reading(Head),
    /// A complete head, waiting for a worker.
    Queued(String),
    /// A worker is computing the answer.
    Answering,
    /// Writing the answer, `at` bytes of it written.
    Writing { reply: Vec<u8>, at: usize },
    /// Answered, write side closed: reading and dropping what the client still sends, so
    /// that closing does not reset the connection before the client has read its answer.
    After { read: usize },
}

struct Conn {
    stream: Stream,
    socket: usize,
    /// When the client's share ends. The time the responder takes to compute the answer is
    /// not the client's: `paused` since then, added back when the answer is ready.
    deadline: Instant,
    paused: Option<Instant>,
    phase: Phase,
}

impl Conn {
    /// Whether the client is holding this connection now (its deadline runs).
    fn on_client(&self) -> bool {
        !matches!(self.phase, Phase::Queued(_) | Phase::Answering)
    }

    fn events(&self) -> libc::c_short {
        match self.phase {
            Phase::Reading(_) | Phase::After { .. } => libc::POLLIN,
            Phase::Writing { .. } => libc::POLLOUT,
            Phase::Queued(_) | Phase::Answering => 0,
        }
    }

    /// Read, write or drop as far as the socket allows without waiting; false when done
    /// with (the connection is then closed).
    fn advance(&mut self, refusal: fn(&Reject) -> Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match &mut self.phase {
                Phase::Reading(head) => match self.stream.read(&mut chunk[..1024]) {
                    Ok(0) => match head.ended() {
                        Reject::Closed => return false,
                        why => self.phase = Phase::Writing { reply: refusal(&why), at: 0 },
                    },
                    Ok(n) => match head.feed(&chunk[..n]) {
                        None => {}
                        Some(Ok(head)) => {
                            self.phase = Phase::Queued(head);
                            self.paused = Some(Instant::now());
                            return true;
                        }
                        Some(Err(why)) => self.phase = Phase::Writing { reply: refusal(&why), at: 0 },
                    },
                    Err(e) => return pending(&e),
                },
                Phase::Writing { reply, at } => match self.stream.write(&reply[*at..]) {
                    Ok(n) if *at + n >= reply.len() => {
                        self.stream.close_write();
                        self.phase = Phase::After { read: 0 };
                    }
                    Ok(n) => *at += n,
                    Err(e) => return pending(&e),
                },
                Phase::After { read } => match self.stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => {
                        *read += n;
                        if *read > MAX_AFTER {
                            return false;
                        }
                    }
                    Err(e) => return pending(&e),
                },
                Phase::Queued(_) | Phase::Answering => return true,
            }
        }
    }
}

/// After a failed read or write: whether the connection is still worth waiting for.
fn pending(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// An answer computed, sent back to the polling thread when its worker ends, even by a
/// panic (the connection is then closed unanswered and the worker's place freed).
struct Done {
    id: u64,
    socket: usize,
    reply: Option<Vec<u8>>,
    tx: mpsc::Sender<(u64, usize, Option<Vec<u8>>)>,
    wake: Arc<UnixStream>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.tx.send((self.id, self.socket, self.reply.take()));
        // A full pipe already wakes the poller.
        let _ = (&*self.wake).write(&[1]);
    }
}

/// Serve every socket until all have been idle for `idle` (socket activation) or forever
/// (`--listen`). `timeout` bounds each connection's client side; `refusal` is the answer to
/// a head that cannot be read.
pub fn serve(
    sockets: Vec<Socket>,
    timeout: Duration,
    idle: Option<Duration>,
    refusal: fn(&Reject) -> Vec<u8>,
) -> io::Result<()> {
    if sockets.is_empty() {
        return Err(io::Error::other("no listening socket"));
    }
    for s in &sockets {
        s.listener.set_nonblocking()?;
    }
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let wake_tx = Arc::new(wake_tx);
    let (done_tx, done_rx) = mpsc::channel();
    // By id, so in the order accepted: the first is the oldest.
    let mut conns: BTreeMap<u64, Conn> = BTreeMap::new();
    let mut open = vec![0usize; sockets.len()];
    let mut working = vec![0usize; sockets.len()];
    let mut next_id = 0u64;
    let mut last_accept = Instant::now();
    loop {
        let now = Instant::now();
        let next_deadline = conns.values().filter(|c| c.on_client()).map(|c| c.deadline).min();
        let mut wait = next_deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(now));
        if let Some(idle) = idle {
            wait = wait.min((last_accept + idle).saturating_duration_since(now));
        }
        let mut pfds: Vec<libc::pollfd> = (sockets.iter().map(|s| s.listener.fd()))
            .chain([wake_rx.as_raw_fd()])
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        let polled: Vec<u64> = (conns.iter()).filter(|(_, c)| c.events() != 0).map(|(id, _)| *id).collect();
        pfds.extend(polled.iter().map(|id| libc::pollfd {
            fd: conns[id].stream.fd(),
            events: conns[id].events(),
            revents: 0,
        }));
        poll(&mut pfds, wait)?;

        for (i, socket) in sockets.iter().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            for _ in 0..ACCEPT_BURST {
                let stream = match socket.listener.accept() {
                    Ok(stream) => stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {
                        continue;
                    }
                    // Out of descriptors: make room, and take the connection at the next turn.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                        ) =>
                    {
                        evict(&mut conns, &mut open, None);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                last_accept = Instant::now();
                if open[i] >= MAX_OPEN {
                    evict(&mut conns, &mut open, Some(i));
                }
                let mut conn = Conn {
                    stream,
                    socket: i,
                    deadline: last_accept + timeout,
                    paused: None,
                    phase: Phase::Reading(Head::default()),
                };
                if conn.advance(refusal) {
                    conns.insert(next_id, conn);
                    open[i] += 1;
                }
                next_id += 1;
            }
        }

        if pfds[sockets.len()].revents != 0 {
            let mut sink = [0u8; 256];
            while matches!((&wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        for (id, socket, reply) in done_rx.try_iter() {
            working[socket] -= 1;
            let Some(conn) = conns.get_mut(&id) else { continue };
            let keep = match reply {
                Some(reply) => {
                    if let Some(paused) = conn.paused.take() {
                        conn.deadline += paused.elapsed();
                    }
                    conn.phase = Phase::Writing { reply, at: 0 };
                    conn.advance(refusal)
                }
                None => false,
            };
            if !keep {
                close(&mut conns, &mut open, id);
            }
        }

        for (pfd, id) in pfds[sockets.len() + 1..].iter().zip(polled) {
            if pfd.revents != 0 && !conns.get_mut(&id).is_some_and(|c| c.advance(refusal)) {
                close(&mut conns, &mut open, id);
            }
        }

        let now = Instant::now();
        let expired: Vec<u64> =
            (conns.iter()).filter(|(_, c)| c.on_client() && c.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(Phase::Reading(_)) = conns.get(&id).map(|c| &c.phase) {
                // Best effort: a client that reads gets told why.
                if let Some(conn) = conns.get_mut(&id) {
                    let _ = conn.stream.write(&refusal(&Reject::Timeout));
                }
            }
            close(&mut conns, &mut open, id);
        }

        for (i, socket) in sockets.iter().enumerate() {
            while working[i] < MAX_WORKERS {
                let Some((&id, conn)) =
                    conns.iter_mut().find(|(_, c)| c.socket == i && matches!(c.phase, Phase::Queued(_)))
                else {
                    break;
                };
                let Phase::Queued(head) = std::mem::replace(&mut conn.phase, Phase::Answering) else { break };
                let handler = Arc::clone(&socket.handler);
                let done = Done { id, socket: i, reply: None, tx: done_tx.clone(), wake: Arc::clone(&wake_tx) };
                let spawned = std::thread::Builder::new().name("health-answer".into()).spawn(move || {
                    let mut done = done;
                    done.reply = Some(handler(&head));
                });
                match spawned {
                    Ok(_) => working[i] += 1,
                    Err(e) => {
                        log::warn!("cannot start a thread to answer a request: {e}");
                        close(&mut conns, &mut open, id);
                        break;
                    }
                }
            }
        }

        if let Some(idle) = idle
            && conns.is_empty()
            && working.iter().all(|&w| w == 0)
            && last_accept.elapsed() >= idle
        {
            log::info!("idle for {} s; exiting", idle.as_secs());
            return Ok(());
        }
    }
}

fn close(conns: &mut BTreeMap<u64, Conn>, open: &mut [usize], id: u64) {
    if let Some(conn) = conns.remove(&id) {
        open[conn.socket] -= 1;
    }
}

/// Close the oldest connection of `socket` (of any socket with `None`) to make room, the
/// least worth keeping first: one already answered, then one whose request has not
/// arrived (a client sending its request at once is past this within a round trip), then
/// one not reading its answer, and only then a whole request waiting for a worker.
fn evict(conns: &mut BTreeMap<u64, Conn>, open: &mut [usize], socket: Option<usize>) {
    let rank = |c: &Conn| match c.phase {
        Phase::After { .. } => Some(0),
        Phase::Reading(_) => Some(1),
        Phase::Writing { .. } => Some(2),
        Phase::Queued(_) => Some(3),
        Phase::Answering => None,
    };
    let mut victim: Option<(u64, u8)> = None;
    for (&id, c) in conns.iter().filter(|(_, c)| socket.is_none_or(|s| c.socket == s)) {
        match rank(c) {
            Some(0) => {
                victim = Some((id, 0));
                break;
            }
            Some(r) if victim.is_none_or(|(_, best)| r < best) => victim = Some((id, r)),
            _ => {}
        }
    }
    if let Some((id, _)) = victim {
        close(conns, open, id);
    }
}

/// Wait until one of `pfds` is ready or `wait` has passed; an interrupted wait is a turn.
fn poll(pfds: &mut [libc::pollfd], wait: Duration) -> io::Result<()> {
    // Rounded up, so that a deadline less than a millisecond away is not a busy loop.
    let ms = (wait.as_micros().div_ceil(1000)).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: a valid array of pollfds of the length given.
    match unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) } {
        -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_truncated_requests() {
        let big = vec![b'a'; 64 * 1024];
        assert_eq!(read_request(&mut &big[..]), Err(Reject::TooLarge));
        assert_eq!(read_request(&mut &b"GET / HTTP/1.1\r\n"[..]), Err(Reject::Malformed));
        assert_eq!(read_request(&mut &b""[..]), Err(Reject::Closed));
        assert_eq!(read_request(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).as_deref(), Ok("GET / HTTP/1.1"));
    }

    /// Hands out its bytes in the pieces given (a client writing in bursts).
    struct Pieces {
        data: Vec<u8>,
        sizes: Vec<usize>,
        at: usize,
        turn: usize,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes.get(self.turn % self.sizes.len().max(1)).copied().unwrap_or(1).max(1);
            self.turn += 1;
            let n = size.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// A connection that ends mid-head gets 400; one that sent nothing gets nothing.
    #[test]
    fn fed_in_pieces_a_head_is_found_across_reads() {
        let mut head = Head::default();
        assert_eq!(head.feed(b"GET / HTTP/1.1\r"), None);
        assert_eq!(head.feed(b"\n\r"), None);
        assert_eq!(head.feed(b"\nextra"), Some(Ok("GET / HTTP/1.1".to_owned())));
        assert_eq!(Head::default().ended(), Reject::Closed);
        let mut head = Head::default();
        assert_eq!(head.feed(b"G"), None);
        assert_eq!(head.ended(), Reject::Malformed);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any bytes, in any pieces: a head within the limit, or a rejection; never a
            /// panic, never more than the limit buffered.
            #[test]
            fn reading_a_head_is_bounded(data in prop::collection::vec(any::<u8>(), 0..10_000),
                                         sizes in prop::collection::vec(1usize..3000, 1..8)) {
                let mut input = Pieces { data: data.clone(), sizes, at: 0, turn: 0 };
                match read_request(&mut input) {
                    Ok(head) => {
                        prop_assert!(head.len() <= MAX_REQUEST + 1024);
                        prop_assert!(!head.contains("\r\n\r\n") && !head.contains("\n\n"), "{head:?}");
                        prop_assert!(head_end(&data).is_some());
                    }
                    Err(Reject::TooLarge) => prop_assert!(input.at >= MAX_REQUEST),
                    Err(Reject::Closed) => prop_assert!(data.is_empty()),
                    Err(Reject::Malformed) => {}
                    Err(Reject::Timeout) => prop_assert!(false, "no read timed out"),
                }
            }
        }
    }
}
