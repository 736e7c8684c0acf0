//! The health responder in its three modes: `--listen`, inetd (systemd `Accept=yes`) and
//! socket activation (`LISTEN_FDS`), each with good and hostile requests.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Every endpoint answers as the node's role says.
fn check_endpoints(addr: &str, node: &str, leader: bool) {
    let (code, body) = http_get(addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(addr, "/readyz");
    assert_eq!(code, if leader { 200 } else { 503 }, "{body}");
    let (code, body) = http_get(addr, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["node"], node);
    assert_eq!(status["role"], if leader { "leader" } else { "passive" });
    assert_eq!(status["repositories"][0]["name"], "kv.git");
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("stargate_leader{{node=\"{node}\"}} {}", leader as u8)), "{body}");
    assert!(body.contains("# TYPE stargate_epoch gauge"), "{body}");
    let (code, head, body) = http_raw(addr, b"HEAD /readyz HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(code, if leader { 200 } else { 503 }, "{head}");
    assert!(body.is_empty(), "HEAD has no body");
    assert_eq!(http_get(addr, "/nope").0, 404);
}

/// Hostile input: every request gets a 4xx or a closed connection, within the timeout.
fn check_hostile(addr: &str, timeout: Duration) {
    for (request, want) in [
        (&b"BLAH\r\n\r\n"[..], 400),
        (b"GET /healthz HTTP/9.9\r\n\r\n", 505),
        (b"POST /healthz HTTP/1.1\r\n\r\n", 405),
        (b"GET /healthz HTTP/1.1\r\nbroken header\r\n\r\n", 400),
        (b"\x00\xff\xfe\r\n\r\n", 400),
    ] {
        let got = http_raw(addr, request).map(|r| r.0);
        assert_eq!(got, Some(want), "{:?}", String::from_utf8_lossy(request));
    }
    let mut big = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend(b"\r\n\r\n");
    let got = http_raw(addr, &big).map(|r| r.0);
    assert!(got.is_none() || got == Some(431), "64 KiB header: {got:?}");

    // A client that sends nothing, and one that trickles: answered 408 or closed in time.
    let start = Instant::now();
    let got = http_raw(addr, b"").map(|r| r.0);
    assert!(got.is_none() || got == Some(408), "silent client: {got:?}");
    assert!(start.elapsed() < timeout + Duration::from_secs(2), "silent client held {:?}", start.elapsed());
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    for b in b"GET /healthz HTTP/1.1\r\n" {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if start.elapsed() > timeout + Duration::from_secs(2) {
            break;
        }
    }
    assert!(start.elapsed() < timeout + Duration::from_secs(3), "trickling client held {:?}", start.elapsed());
}

#[test]
fn listen_mode_serves_every_endpoint_and_survives_hostile_clients() {
    let lab = Lab::up_with(2, "[stargate \"health\"]\n\ttimeout = 1s\n");
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    for node in lab.nodes.clone() {
        let addr = format!("{}:8080", lab.ip(&node));
        check_endpoints(&addr, &node, node == leader);
        check_hostile(&addr, Duration::from_secs(1));
    }
    // Still alive and answering after all that.
    check_endpoints(&format!("{}:8080", lab.ip(&leader)), &leader, true);
}

fn socket_activate(lab: &Lab, node: &str, args: &[&str], port: u16) -> (Child, String) {
    let addr = format!("{}:{port}", lab.ip(node));
    let child = lab
        .node_cmd(node, "systemd-socket-activate")
        .args(args)
        // It passes no environment of its own accord; a unit would say Environment=.
        .args(["-E", "GIT_CONFIG_GLOBAL", "-E", "GIT_CONFIG_NOSYSTEM", "-E", "PATH", "-E", "HOME"])
        .args(["-l", &addr, crate::support::HOOK, "health"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate is installed");
    wait_until("the socket", Duration::from_secs(5), || TcpStream::connect(&addr).is_ok());
    (child, addr)
}

#[test]
fn inetd_and_socket_activation_modes() {
    let lab = Lab::up_with(1, "[stargate \"health\"]\n\ttimeout = 1s\n\tidleExit = 2s\n");
    lab.wait_leader(None, Duration::from_secs(5));
    // Accept=yes, connection on stdin/stdout (xinetd style).
    let (mut inetd, addr) = socket_activate(&lab, "a", &["--inetd", "-a"], 8081);
    check_endpoints(&addr, "a", true);
    check_hostile(&addr, Duration::from_secs(1));
    // Accept=yes, connection as fd 3 with LISTEN_FDS=1.
    let (mut accept, addr3) = socket_activate(&lab, "a", &["-a"], 8083);
    check_endpoints(&addr3, "a", true);
    check_hostile(&addr3, Duration::from_secs(1));
    // Accept=no: one process serves many connections from the listening fd 3, then exits when idle.
    let (mut listen, addr2) = socket_activate(&lab, "a", &[], 8082);
    check_endpoints(&addr2, "a", true);
    check_hostile(&addr2, Duration::from_secs(1));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = listen.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "socket-activated responder never exited when idle");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "idle exit is a clean exit: {status}");
    let _ = inetd.kill();
    let _ = accept.kill();
    let _ = inetd.wait();
    let _ = accept.wait();
}

#[test]
fn bad_config_answers_503_naming_the_key() {
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let mut child = lab
        .node_cmd("a", crate::support::HOOK)
        .args(["health", "--listen", &format!("{}:8084", lab.ip("a"))])
        .env("GIT_CONFIG_PARAMETERS", "'stargate.lease.interval'='soon'")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("{}:8084", lab.ip("a"));
    wait_until("the listener", Duration::from_secs(5), || TcpStream::connect(&addr).is_ok());
    let (code, body) = http_get(&addr, "/readyz");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 503);
    assert!(body.contains("stargate.lease.interval") && body.contains("soon"), "{body}");
}

/// A responder started by hand as part of `node`, stopped on drop.
struct Responder(Child);

impl Responder {
    fn start(lab: &Lab, node: &str, args: &[&str], wait_for: &str) -> Responder {
        let child = lab
            .node_cmd(node, crate::support::HOOK)
            .arg("health")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the responder", Duration::from_secs(5), || TcpStream::connect(wait_for).is_ok());
        Responder(child)
    }

    fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What only the internal address answers: operators' endpoints, and those only nodes ask
/// each other (the responder is the leader's, so it keeps a change summary).
const INTERNAL_ONLY: [&str; 6] =
    ["/status", "/metrics", "/status?pretty", "/repositories", "/staged?repo=kv.git", "/changes"];

/// The probes answer on the public address, and nothing else does; the internal address
/// answers everything.
fn check_split(public: &str, internal: &str) {
    assert_eq!(http_get(public, "/healthz").0, 200);
    assert_eq!(http_get(public, "/readyz").0, 200);
    for path in INTERNAL_ONLY {
        let (code, body) = http_get(public, path);
        assert_eq!(code, 404, "{path} on the public address: {body}");
        assert!(!body.contains("kv.git") && !body.contains("stargate"), "{body}");
    }
    for path in ["/healthz", "/readyz"].into_iter().chain(INTERNAL_ONLY) {
        assert_eq!(http_get(internal, path).0, 200, "{path} on the internal address");
    }
    assert!(http_get(internal, "/repositories").1.contains("kv.git"));
    assert!(http_get(internal, "/changes").1.starts_with("stargate-changes "));
}

#[test]
fn everything_but_the_probes_on_the_internal_address_only_when_configured() {
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let ip = lab.ip("a");
    // Without --internal, one address serves everything (the lab's own responder).
    assert_eq!(lab.http("a", "/status").0, 200);
    assert_eq!(lab.http("a", "/metrics").0, 200);

    // --listen and --internal.
    let (public, internal) = (format!("{ip}:8090"), format!("{ip}:8091"));
    let _r = Responder::start(&lab, "a", &["--listen", &public, "--internal", &internal], &internal);
    check_split(&public, &internal);

    // Socket activation with two sockets, named as FileDescriptorName= would name them.
    let (public, internal) = (format!("{ip}:8092"), format!("{ip}:8093"));
    let mut both = lab
        .node_cmd("a", "systemd-socket-activate")
        .args(["-E", "GIT_CONFIG_GLOBAL", "-E", "GIT_CONFIG_NOSYSTEM", "-E", "PATH", "-E", "HOME"])
        .args(["-l", &public, "-l", &internal, "--fdname=public:internal", crate::support::HOOK, "health"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the sockets", Duration::from_secs(5), || TcpStream::connect(&internal).is_ok());
    check_split(&public, &internal);
    let _ = both.kill();
    let _ = both.wait();

    // One connection per process (Accept=yes, inetd): --public serves the probes only.
    let public = format!("{ip}:8094");
    let mut probes = lab
        .node_cmd("a", "systemd-socket-activate")
        .args(["-E", "GIT_CONFIG_GLOBAL", "-E", "GIT_CONFIG_NOSYSTEM", "-E", "PATH", "-E", "HOME"])
        .args(["--inetd", "-a", "-l", &public, crate::support::HOOK, "health", "--public"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the socket", Duration::from_secs(5), || TcpStream::connect(&public).is_ok());
    assert_eq!(http_get(&public, "/readyz").0, 200);
    for path in INTERNAL_ONLY {
        assert_eq!(http_get(&public, path).0, 404, "{path}");
    }
    let _ = probes.kill();
    let _ = probes.wait();

    // --internal without --listen is a usage error.
    let out = run(lab.node_cmd("a", crate::support::HOOK).args(["health", "--internal", &internal]));
    assert_eq!(out.status.code(), Some(129), "{}", stderr(&out));
}

/// A flood from loopback, bounded in count and time: more silent connections than a socket
/// keeps open, renewed as the responder closes them, yet the public port answers every probe
/// within a second (a new connection closes the oldest), the internal address answers at
/// once, and the responder never runs more than its bounded number of threads. Then a burst
/// of hostile requests, each answered 4xx or closed.
#[test]
fn a_flood_on_the_public_port_leaves_the_internal_one_answering() {
    let lab = Lab::up_with(1, "[stargate \"health\"]\n\ttimeout = 1s\n");
    lab.wait_leader(None, Duration::from_secs(5));
    let ip = lab.ip("a");
    let (public, internal) = (format!("{ip}:8095"), format!("{ip}:8096"));
    let mut r = Responder::start(&lab, "a", &["--listen", &public, "--internal", &internal], &internal);

    let start = Instant::now();
    let mut held = Vec::new();
    let (mut most_threads, mut probes, mut slowest) = (0, 0, Duration::ZERO);
    // Silent connections, renewed as the responder closes them, for 3 s.
    while start.elapsed() < Duration::from_secs(3) {
        held.retain(|s: &TcpStream| {
            let mut b = [0u8; 1];
            s.set_nonblocking(true).is_ok() && matches!(std::io::Read::read(&mut &*s, &mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        while held.len() < 400 {
            match TcpStream::connect_timeout(&public.parse().unwrap(), Duration::from_millis(200)) {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
        let asked = Instant::now();
        let (code, _) = http_get(&internal, "/status");
        assert_eq!(code, 200, "the internal address during the flood");
        assert!(asked.elapsed() < Duration::from_millis(900), "internal /status took {:?}", asked.elapsed());
        most_threads = most_threads.max(r.threads());
        let asked = Instant::now();
        let got = http_raw(&public, b"GET /readyz HTTP/1.0\r\n\r\n").map(|r| r.0);
        assert_eq!(got, Some(200), "a probe on the public port during the flood");
        slowest = slowest.max(asked.elapsed());
        probes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{probes} probes under a flood of 400 silent connections, slowest {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "a probe took {slowest:?}");
    // 32 answering per listener, the polling thread and the main thread.
    assert!(most_threads <= 2 * 32 + 2, "{most_threads} threads under the flood");
    drop(held);

    // A burst of hostile requests from 4 threads, 250 each, within 20 s in all.
    let start = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let public = public.clone();
            std::thread::spawn(move || {
                let mut answered = 0;
                for i in 0..250 {
                    let request: Vec<u8> = match (t + i) % 4 {
                        0 => b"GET /status HTTP/1.1\r\n\r\n".to_vec(),
                        1 => {
                            [b"GET /healthz HTTP/1.1\r\nX: ".to_vec(), vec![b'a'; 9000], b"\r\n\r\n".to_vec()].concat()
                        }
                        2 => b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
                        _ => b"DELETE /readyz HTTP/1.1\r\n\r\n".to_vec(),
                    };
                    if let Some((code, _, _)) = http_raw(&public, &request) {
                        assert!([400, 404, 405, 431].contains(&code), "{code}");
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(start.elapsed() < Duration::from_secs(20), "the burst took {:?}", start.elapsed());
    assert!(answered > 0, "nothing answered");
    assert!(r.alive(), "the responder died under the flood");
    check_split(&public, &internal);
}

/// What a slow client does after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    /// Sends nothing.
    Silent,
    /// Sends a request head one byte per tick, never ending it.
    TrickleHead,
    /// Sends a whole request, then one byte per tick, ignoring the answer and its end.
    TrickleAfter,
}

/// `n` slow clients of one kind on `addr`, driven by one thread every 150 ms until `stop`;
/// each connects again when the responder closes it. Returns how many connections the
/// responder closed and the longest any of them was held open.
fn slow_clients(
    addr: &str,
    kind: Slow,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Duration)> {
    use std::io::{ErrorKind, Read};
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    std::thread::spawn(move || {
        const HEAD: &[u8] = b"GET /readyz HTTP/1.1\r\nX-Slow: ";
        let connect = || {
            let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
            if kind == Slow::TrickleAfter {
                (&s).write_all(b"GET /readyz HTTP/1.1\r\n\r\n").ok()?;
            }
            s.set_nonblocking(true).ok()?;
            Some((s, Instant::now(), 0usize))
        };
        let mut clients: Vec<Option<(TcpStream, Instant, usize)>> = (0..n).map(|_| connect()).collect();
        let (mut closed, mut longest) = (0, Duration::ZERO);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for slot in &mut clients {
                let Some((s, since, sent)) = slot else {
                    *slot = connect();
                    continue;
                };
                let mut buf = [0u8; 512];
                let ended = match (&*s).read(&mut buf) {
                    // The answer, or a 408: read, and go on as if nothing came.
                    Ok(n) if n > 0 => false,
                    // The end of the answer: a hostile client writes on regardless.
                    Ok(_) => kind != Slow::TrickleAfter,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                };
                let byte = match kind {
                    Slow::Silent => None,
                    Slow::TrickleHead => Some(HEAD.get(*sent).copied().unwrap_or(b'a')),
                    Slow::TrickleAfter => Some(b'x'),
                };
                let ended = ended || byte.is_some_and(|b| (&*s).write_all(&[b]).is_err());
                *sent += 1;
                if ended {
                    closed += 1;
                    longest = longest.max(since.elapsed());
                    *slot = connect();
                }
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        (closed, longest)
    })
}

/// The health responder cannot be held: 64 clients of each slow kind (silent, trickling
/// the request head, trickling after a whole request) on the public port, for 6 s, and
/// every `/readyz` probe there is answered within a second; the responder closes every slow
/// connection by its deadline (2 s for the whole connection), whatever the client does.
#[test]
fn slow_clients_of_every_kind_cannot_hold_the_responder() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let timeout = Duration::from_secs(2);
    let lab = Lab::up_with(1, "[stargate \"health\"]\n\ttimeout = 2s\n");
    lab.wait_leader(None, Duration::from_secs(5));
    let ip = lab.ip("a");
    let (public, internal) = (format!("{ip}:8099"), format!("{ip}:8100"));
    let mut r = Responder::start(&lab, "a", &["--listen", &public, "--internal", &internal], &internal);

    let stop = Arc::new(AtomicBool::new(false));
    let kinds = [Slow::Silent, Slow::TrickleHead, Slow::TrickleAfter];
    let drivers: Vec<_> = kinds.iter().map(|&k| (k, slow_clients(&public, k, 64, Arc::clone(&stop)))).collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (mut probes, mut slowest, mut most_threads) = (0, Duration::ZERO, 0);
    while start.elapsed() < Duration::from_secs(6) {
        let asked = Instant::now();
        let got = http_raw(&public, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").map(|r| r.0);
        let took = asked.elapsed();
        assert_eq!(got, Some(200), "probe {probes} under slow clients, after {took:?}");
        assert!(took < Duration::from_secs(1), "probe {probes} took {took:?}");
        slowest = slowest.max(took);
        probes += 1;
        most_threads = most_threads.max(r.threads());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    for (kind, driver) in drivers {
        let (closed, longest) = driver.join().unwrap();
        eprintln!("{kind:?}: {closed} connections closed by the responder, the longest held {longest:?}");
        assert!(closed >= 64, "{kind:?}: only {closed} slow connections closed in 6 s");
        // The deadline, plus the driver's ticks to notice (a write after the close is reset,
        // the next one fails) and slack for a loaded machine.
        assert!(longest < timeout + Duration::from_secs(1), "{kind:?}: a connection held {longest:?}");
    }
    eprintln!(
        "{probes} probes answered under 3 x 64 slow clients, slowest {slowest:?}, {most_threads} threads at most"
    );
    assert!(most_threads <= 2 * 32 + 2, "{most_threads} threads");
    assert!(r.alive(), "the responder died");
}
