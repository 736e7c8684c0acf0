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
