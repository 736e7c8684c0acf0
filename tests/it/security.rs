//! The attacks of docs/ARCHITECTURE.md, "Threat model", tried on the lab: forged, replayed
//! and stale requests between nodes change nothing, a flood of hints costs bounded work,
//! and the trust root (the lease backend's directory) is checked.

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::*;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Where `node`'s agent hears hints: the UDP port of its health address.
fn signal_addr(lab: &Lab, node: &str) -> String {
    format!("{}:8080", lab.ip(node))
}

fn send(to: &str, datagrams: &[&[u8]]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        let _ = socket.send_to(d, to);
    }
}

/// What must not move when a request is refused: the record, the audit, the leader.
struct Unchanged {
    record: serde_json::Value,
    audit: usize,
    leader: String,
}

impl Unchanged {
    fn note(lab: &Lab, leader: &str) -> Unchanged {
        Unchanged { record: lab.record(), audit: lab.audit().len(), leader: leader.to_owned() }
    }

    fn check(&self, lab: &Lab, what: &str) {
        assert_eq!(lab.record(), self.record, "{what}: the leader record moved");
        let new: Vec<_> = lab.audit().into_iter().skip(self.audit).collect();
        assert!(new.is_empty(), "{what}: audit events {new:?}");
        assert_eq!(lab.ready(), std::slice::from_ref(&self.leader), "{what}: who accepts writes");
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(lab.dir.path().join(&self.leader).join("repos/.stargate/node.json")).unwrap(),
        )
        .unwrap();
        assert!(state["draining"].is_null(), "{what}: the leader drains: {state}");
    }
}

/// A push through the leader's git daemon, which must be accepted.
fn push(lab: &Lab, leader: &str, client: &Client, n: usize) {
    std::fs::write(client.home.path().join("w/file"), format!("{n}\n")).unwrap();
    ok(client.git("w", &["commit", "-q", "-am", &format!("write {n}")]));
    ok(client.git("w", &["push", "-q", &lab.url(leader, "kv"), "HEAD:refs/heads/main"]));
}

fn client(lab: &Lab, leader: &str) -> Client {
    let c = Client::new();
    ok(c.git(".", &["init", "-q", "w"]));
    std::fs::write(c.home.path().join("w/file"), "0\n").unwrap();
    ok(c.git("w", &["add", "file"]));
    ok(c.git("w", &["commit", "-q", "-m", "first"]));
    ok(c.git("w", &["push", "-q", &lab.url(leader, "kv"), "HEAD:refs/heads/main"]));
    c
}

const FAST_METRICS: &str = "[stargate \"metrics\"]\n\tinterval = 1s\n";

#[test]
fn forged_hints_and_garbage_on_the_signal_port_change_nothing() {
    let lab = Lab::up_with(2, FAST_METRICS);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let other = if leader == "a" { "b" } else { "a" };
    let c = client(&lab, &leader);
    lab.wait_parity(&leader, other, Duration::from_secs(10));
    let before = Unchanged::note(&lab, &leader);
    let refused_before = counter(&lab, &leader, "stargate_hints_refused_total");
    let long = [b'x'; 2000];
    let forged: [&[u8]; 9] = [
        b"stargate-handoff",
        b"stargate-handoff\n",
        b"stargate-sync ../../../etc/passwd.git\n",
        b"stargate-sync /srv/git/kv.git\n",
        b"stargate-sync nosuch.git\n",
        b"stargate-promote b\n",
        b"\x00\xff garbage",
        b"",
        &long,
    ];
    for node in [&leader, other] {
        for _ in 0..10 {
            send(&signal_addr(&lab, node), &forged);
        }
    }
    // Counters reach /metrics at the next publication (stargate.metrics.interval).
    lab.wait_until("the refusals to be counted", Duration::from_secs(5), || {
        counter(&lab, &leader, "stargate_hints_refused_total") >= refused_before + 60
            && counter(&lab, other, "stargate_hints_refused_total") >= 60
    });
    before.check(&lab, "forged hints");
    let log = lab.agent_log(&leader);
    assert!(log.contains("refused") && log.contains("they change nothing"), "{log}");
    // Logged once, not once a datagram.
    assert!(log.matches("on the signal port").count() <= 2, "{log}");
    // The leader still takes writes and the replica still follows.
    push(&lab, &leader, &c, 1);
    lab.wait_parity(&leader, other, Duration::from_secs(10));
}

#[test]
fn handoff_records_for_another_epoch_expired_or_naming_the_leader_are_refused() {
    let lab = Lab::up_with(2, FAST_METRICS);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let other = if leader == "a" { "b" } else { "a" };
    let c = client(&lab, &leader);
    let epoch = lab.record()["epoch"].as_u64().unwrap();
    let path = lab.dir.path().join("shared/stargate.lock.handoff");
    let handoff = |epoch: u64, to: &str, heartbeat_ms: u64| {
        serde_json::json!({
            "from": leader, "epoch": epoch, "to": to, "forced": false, "user": "mallory",
            "requested_ms": heartbeat_ms, "heartbeat_ms": heartbeat_ms,
        })
    };
    let before = Unchanged::note(&lab, &leader);
    for (i, (what, record)) in [
        // A record from an earlier promotion, replayed with a fresh heartbeat.
        ("a stale epoch", handoff(epoch - 1, other, now_ms())),
        ("a future epoch", handoff(epoch + 1, other, now_ms())),
        // The current epoch, but a record nobody keeps fresh (an old one, replayed as is).
        ("an expired record", handoff(epoch, other, now_ms() - 60_000)),
        ("the leader itself", handoff(epoch, &leader, now_ms())),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = counter(&lab, &leader, "stargate_handoffs_refused_total");
        std::fs::write(&path, record.to_string()).unwrap();
        send(&signal_addr(&lab, &leader), &[b"stargate-handoff"]);
        lab.wait_until(&format!("{what} to be refused"), Duration::from_secs(5), || {
            counter(&lab, &leader, "stargate_handoffs_refused_total") > refused
        });
        before.check(&lab, what);
        push(&lab, &leader, &c, i + 1);
        std::fs::remove_file(&path).unwrap();
    }
    let log = lab.agent_log(&leader);
    assert!(log.contains("refused the handoff") && log.contains("nothing changed"), "{log}");

    // The control: a record for the current epoch, kept fresh, is a promotion. Whoever can
    // write the lease's directory is trusted, which is why the agent checks who can.
    std::fs::write(&path, handoff(epoch, other, now_ms()).to_string()).unwrap();
    send(&signal_addr(&lab, &leader), &[b"stargate-handoff"]);
    let new = lab.wait_leader(Some(&leader), Duration::from_secs(10));
    assert_eq!(new, other);
    assert!(lab.record()["epoch"].as_u64().unwrap() > epoch);
    assert!(lab.audit().iter().any(|e| e["event"] == "draining" && e["user"] == "mallory"), "{:?}", lab.audit());
}

/// A handoff hint without any handoff record: nothing happens, on either node.
#[test]
fn a_handoff_hint_without_a_record_does_nothing() {
    let lab = Lab::up_with(2, FAST_METRICS);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let other = if leader == "a" { "b" } else { "a" };
    let before = Unchanged::note(&lab, &leader);
    for node in [&leader, other] {
        send(&signal_addr(&lab, node), &[&b"stargate-handoff"[..]; 20]);
    }
    std::thread::sleep(Duration::from_secs(2));
    before.check(&lab, "hints without a record");
    assert!(!lab.dir.path().join("shared/stargate.lock.handoff").exists());
}

/// A flood of signals, handoff hints and garbage at the highest rate one sender reaches on
/// loopback, for 3 s (at most 600k datagrams): the replica runs at most one sync per 50 ms,
/// both agents' CPU stays well under a core, leadership does not move, and afterwards
/// replication works as before.
#[test]
fn a_flood_of_hints_costs_bounded_work() {
    let lab = Lab::up_with(2, FAST_METRICS);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let other = if leader == "a" { "b" } else { "a" };
    let c = client(&lab, &leader);
    lab.wait_parity(&leader, other, Duration::from_secs(10));
    let before = Unchanged::note(&lab, &leader);
    let syncs = counter(&lab, other, "stargate_sync_syncs_total");
    let (replica_pid, leader_pid) = (lab.pid(other, "agent"), lab.pid(&leader, "agent"));
    let (replica_cpu, leader_cpu) = (cpu(replica_pid), cpu(leader_pid));

    let start = Instant::now();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let targets = [signal_addr(&lab, other), signal_addr(&lab, &leader)];
    let kinds: [&[u8]; 3] = [b"stargate-sync kv.git\n", b"stargate-handoff", b"\x01garbage"];
    let mut sent = 0u64;
    while sent < 600_000 && start.elapsed() < Duration::from_secs(3) {
        for target in &targets {
            if socket.send_to(kinds[(sent % 3) as usize], target).is_ok() {
                sent += 1;
            }
        }
    }
    let wall = start.elapsed();
    let (replica_used, leader_used) = (cpu(replica_pid) - replica_cpu, cpu(leader_pid) - leader_cpu);
    eprintln!("sent {sent} datagrams in {wall:?}; replica agent used {replica_used:?}, leader agent {leader_used:?}");
    assert!(sent > 10_000, "the flood was no flood: {sent}");
    for (who, used) in [("replica", replica_used), ("leader", leader_used)] {
        assert!(used < wall / 2, "the {who}'s agent used {used:?} of CPU in {wall:?}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let ran = counter(&lab, other, "stargate_sync_syncs_total") - syncs;
    // One repository: at most one signalled sync per 50 ms, and the replica's polls.
    let bound = (wall.as_millis() as u64 + 1500) / 50 + 5;
    assert!(ran <= bound, "{ran} syncs in {wall:?} (bound {bound})");
    assert!(counter(&lab, other, "stargate_hints_throttled_total") > 0, "the budget never ran out");
    before.check(&lab, "the flood");
    push(&lab, &leader, &c, 1);
    lab.wait_parity(&leader, other, Duration::from_secs(10));
}

/// Whoever can write the lease's directory or the node's state directory is trusted: an
/// agent refuses to start when every user of the host could.
#[test]
fn an_agent_refuses_a_lease_directory_everyone_may_write() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let other = if leader == "a" { "b" } else { "a" };
    let shared = lab.dir.path().join("shared");
    for dir in [shared.clone(), lab.dir.path().join(other).join("repos/.stargate")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = run(lab.node_cmd(other, "git").args(["stargate", "agent"]));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(128), "{err}");
        assert!(err.contains("is writable by every user of this host") && err.contains("chmod o-w"), "{err}");
        assert!(err.contains(dir.to_str().unwrap()), "{err}");
    }
    assert_eq!(lab.ready(), [leader]);
}

/// A node whose state files someone replaced (a symbolic link to `/dev/zero`, a FIFO, a
/// file past the cap, corrupt JSON; the leader record beside the lock as a link too): `git
/// stargate status` and the health responder's `/status` and `/healthz` answer at once,
/// naming the file and why, instead of reading forever or saying the agent is not running.
#[test]
fn hostile_state_files_are_refused_at_once_by_name() {
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let root = h.join("repos");
    let state_dir = root.join(".stargate");
    std::fs::create_dir_all(&state_dir).unwrap();
    let config = format!("[stargate]\n\tnode = a\n\tlock = {0}/lock\n\troot = {1}\n", h.display(), root.display());
    std::fs::write(h.join(".gitconfig"), config).unwrap();
    let addr = format!("127.{}.{}.1:8080", rand_octet(), rand_octet());
    let mut responder = cmd(crate::support::HOOK, h)
        .args(["health", "--listen", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the responder", Duration::from_secs(5), || std::net::TcpStream::connect(&addr).is_ok());

    let node_json = state_dir.join("node.json");
    let fifo = || {
        let path = std::ffi::CString::new(node_json.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
    };
    let big = || std::fs::write(&node_json, vec![b' '; 2 << 20]).unwrap();
    let cases: [(&str, &dyn Fn(), String); 4] = [
        (
            "a link to /dev/zero",
            &|| std::os::unix::fs::symlink("/dev/zero", &node_json).unwrap(),
            format!("{} is a symbolic link; refused", node_json.display()),
        ),
        ("a FIFO", &fifo, format!("{} is not a regular file (a FIFO); refused", node_json.display())),
        ("2 MiB", &big, format!("{} is larger than 1048576 bytes; refused", node_json.display())),
        (
            "corrupt",
            &|| std::fs::write(&node_json, b"{\"node\": \"a\", ").unwrap(),
            format!("node state {} is corrupt: ", node_json.display()),
        ),
    ];
    for (what, make, want) in cases {
        let _ = std::fs::remove_file(&node_json);
        make();
        let start = Instant::now();
        let out = run(cmd("timeout", h).args(["20", "git", "stargate", "status"]).current_dir(h));
        let text = stdout(&out);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert!(text.contains(&want), "{what}: git stargate status says\n{text}");
        assert!(!text.contains("no state"), "{what}: {text}");
        let (code, body) = http_get(&addr, "/status");
        assert_eq!(code, 200, "{what}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let problem = status["agent"]["problem"].as_str().unwrap_or_default();
        assert!(problem.contains(&want), "{what}: /status says {problem:?}");
        let (code, body) = http_get(&addr, "/healthz");
        assert_eq!(code, 503, "{what}: {body}");
        assert!(body.contains(&want), "{what}: /healthz says {body}");
        assert!(start.elapsed() < Duration::from_secs(5), "{what}: took {:?}", start.elapsed());
    }

    // The leader record beside the lock, as a link to /dev/zero.
    let record = h.join("lock.leader");
    std::os::unix::fs::symlink("/dev/zero", &record).unwrap();
    let start = Instant::now();
    let out = run(cmd("timeout", h).args(["20", "git", "stargate", "status"]).current_dir(h));
    let want = format!("{} is a symbolic link; refused", record.display());
    assert!(stdout(&out).contains(&want) || stderr(&out).contains(&want), "{}{}", stdout(&out), stderr(&out));
    let body = http_get(&addr, "/status").1;
    assert!(body.contains(&want), "/status: {body}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let _ = responder.kill();
    let _ = responder.wait();
}
