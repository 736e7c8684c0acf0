//! Failover operations on the lab (git-stargate(1): promote, failback, verify, sync
//! --full): planned promotion under a continuous writer, forced promotion from a frozen
//! leader, preflight refusals, catch-up when the leader's agent crashes, the protected
//! namespace, verification and repair, and no false report of lost commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// Failover settings for tests: no cooldown unless a test sets one.
const FAST: &str = "[stargate \"sync\"]\n\tinterval = 1s\n[stargate \"promote\"]\n\tcooldown = 0s\n";

fn other(lab: &Lab, node: &str) -> String {
    lab.nodes.iter().find(|n| *n != node).unwrap().clone()
}

fn stargate(lab: &Lab, node: &str, args: &[&str]) -> std::process::Output {
    run(lab.node_cmd(node, "git").arg("stargate").args(args))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn value(lab: &Lab, node: &str, key: &str) -> Option<String> {
    let out = run(lab.git(node, &["show", &format!("refs/kv/default:{key}")]));
    out.status.success().then(|| stdout(&out))
}

fn events(lab: &Lab, event: &str) -> Vec<serde_json::Value> {
    lab.audit().into_iter().filter(|e| e["event"] == event).collect()
}

/// `git kv set w<i> <i>` through `stargate::` in a loop until stopped: which succeeded.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(usize, bool, Instant, Instant)>>,
}

impl Writer {
    pub(crate) fn start(client: Client) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut done = Vec::new();
            for i in 0.. {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let start = Instant::now();
                let out = kv(&client, &["set", &format!("w{i}"), &i.to_string()]);
                done.push((i, out.status.success(), start, Instant::now()));
            }
            done
        });
        Writer { stop, thread }
    }

    pub(crate) fn stop(self) -> Vec<(usize, bool, Instant, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The longest time between the end of one acknowledged write and the end of the next.
fn longest_gap(done: &[(usize, bool, Instant, Instant)]) -> Duration {
    let acked: Vec<Instant> = done.iter().filter(|d| d.1).map(|d| d.3).collect();
    acked.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

#[test]
fn planned_promotion_and_failback_under_a_writer_lose_no_acknowledged_write() {
    // Three nodes: the third must leave the lease to the node promoted.
    let lab = Lab::up_with(3, FAST);
    let first = lab.wait_leader(None, Duration::from_secs(5));
    let second = lab.nodes.iter().rev().find(|n| **n != first).unwrap().clone();
    let writer = Writer::start(stargate_client(&lab));
    std::thread::sleep(Duration::from_millis(1500));

    let out = stargate(&lab, &second, &["promote", "--yes"]);
    assert!(out.status.success(), "{}{}{}", stdout(&out), stderr(&out), lab.logs());
    assert!(stdout(&out).contains(&format!("{second} leads at epoch 2")), "{}", stdout(&out));
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), second);
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&stargate(&lab, &first, &["status", "--json"]))).unwrap();
    assert_eq!(status["role"], "passive", "{status}");
    assert_eq!(status["last_promotion"]["node"], second.as_str(), "{status}");
    assert_eq!(status["version"], stargate::version::VERSION, "{status}");
    let peers = status["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{status}");
    assert!(peers.iter().all(|p| p["version"] == stargate::version::VERSION), "every peer's build: {status}");
    let text = stdout(&stargate(&lab, &first, &["status"]));
    assert!(text.contains(&format!("version:  {}\n", stargate::version::VERSION)), "{text}");
    let peer_lines = text.lines().filter(|l| l.starts_with("peer:"));
    assert!(
        peer_lines.clone().count() == 2
            && peer_lines.clone().all(|l| l.ends_with(&format!("version {}", stargate::version::VERSION))),
        "{text}"
    );
    assert!(peers.iter().any(|p| p["node"] == second.as_str() && p["accepts_writes"] == true), "{status}");
    assert!(peers.iter().all(|p| p["reachable"] == true), "{status}");
    std::thread::sleep(Duration::from_millis(1500));

    // Failback: the node the promotion took over from promotes itself back.
    let out = stargate(&lab, &second, &["failback", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "failback runs on the previous leader: {}", stderr(&out));
    let out = stargate(&lab, &first, &["failback", "--yes"]);
    assert!(out.status.success(), "{}{}{}", stdout(&out), stderr(&out), lab.logs());
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), first);
    std::thread::sleep(Duration::from_millis(1500));
    let done = writer.stop();

    let acked: Vec<usize> = done.iter().filter(|d| d.1).map(|d| d.0).collect();
    assert!(acked.len() >= 10, "the writer kept writing: {done:?}");
    for node in &lab.nodes {
        lab.wait_parity(&first, node, Duration::from_secs(10));
    }
    for node in &lab.nodes {
        for i in &acked {
            assert_eq!(value(&lab, node, &format!("w{i}")).as_deref(), Some(i.to_string().as_str()), "w{i} on {node}");
        }
    }
    for event in ["promote-requested", "draining", "drained", "demoted", "elected", "promoted"] {
        assert_eq!(events(&lab, event).len(), if event == "elected" { 3 } else { 2 }, "{event}: {:?}", lab.audit());
    }
    for node in [&first, &second] {
        let local = std::fs::read_to_string(lab.dir.path().join(node).join("repos/.stargate/audit.log")).unwrap();
        assert!(local.contains("\"event\":\"promoted\"") || local.contains("\"event\":\"demoted\""), "{node}: {local}");
    }
    let promoted = events(&lab, "promoted");
    assert_eq!(promoted[0]["node"], second.as_str());
    assert_eq!(promoted[0]["previous_leader"], first.as_str());
    assert!(promoted[0]["user"].as_str().is_some_and(|u| !u.is_empty() && u != "agent"), "{:?}", promoted[0]);
    assert!(promoted[0]["positions"]["kv.git"].as_u64().is_some(), "{:?}", promoted[0]);
    for (drain, promote) in events(&lab, "draining").iter().zip(&promoted) {
        let window = promote["time_ms"].as_u64().unwrap() - drain["time_ms"].as_u64().unwrap();
        eprintln!("writes refused for {window} ms (drain to promoted, from the audit log)");
    }
    eprintln!("{} acknowledged writes, longest gap between two: {:?}", acked.len(), longest_gap(&done));
}

/// Over ssh a sync lasts hundreds of milliseconds, and under a writer the replica's agent
/// runs one after another: the promotion's lag check used to poll the repository's sync
/// lock for 2 s, never found it free, and refused (`cannot compare with a: another sync of
/// this repository is running`). It now waits its turn.
#[test]
fn a_planned_promotion_under_a_writer_over_ssh_waits_for_the_running_sync() {
    let lab = Lab::up_over(2, FAST, Transport::Ssh);
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let writer = Writer::start(stargate_client(&lab));
    lab.wait_until("the writer to be acknowledged", Duration::from_secs(20), || {
        lab.rev("b", "refs/kv/default").is_some()
    });
    std::thread::sleep(Duration::from_millis(1500));
    for (node, command, leader) in [("b", "promote", "b"), ("a", "failback", "a")] {
        let out = stargate(&lab, node, &[command, "--yes"]);
        assert!(out.status.success(), "{command}: {}{}{}", stdout(&out), stderr(&out), lab.logs());
        assert_eq!(lab.wait_leader(None, Duration::from_secs(10)), leader);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let done = writer.stop();
    let acked: Vec<usize> = done.iter().filter(|d| d.1).map(|d| d.0).collect();
    assert!(acked.len() >= 5, "the writer kept writing: {done:?}");
    lab.wait_parity("a", "b", Duration::from_secs(15));
    for i in &acked {
        assert_eq!(value(&lab, "b", &format!("w{i}")).as_deref(), Some(i.to_string().as_str()), "w{i} on b");
    }
}

#[test]
fn forced_promotion_from_a_frozen_leader_fences_it_and_keeps_what_only_it_had() {
    let lab = Lab::up_with(2, FAST);
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    assert!(client.kv("c", &["set", "k", "replicated"]).status.success());
    lab.wait_parity("a", "b", Duration::from_secs(10));
    // b misses the next write; then a freezes, with its storage.
    lab.kill("b", "agent", "STOP");
    assert!(client.kv("c", &["set", "k", "only-on-a"]).status.success());
    let only_on_a = lab.rev("a", "refs/kv/default").unwrap();
    lab.kill("a", "agent", "STOP");
    lab.kill("a", "daemon", "STOP");
    lab.kill("b", "agent", "CONT");
    std::thread::sleep(Duration::from_millis(2500));

    let out = stargate(&lab, "b", &["promote", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "a frozen leader fails the preflight: {}", stderr(&out));
    assert!(stderr(&out).contains("not healthy") || stderr(&out).contains("cannot ask"), "{}", stderr(&out));

    let start = Instant::now();
    let out = stargate(&lab, "b", &["promote", "--force", "--yes"]);
    assert!(out.status.success(), "{}{}{}", stdout(&out), stderr(&out), lab.logs());
    assert!(stdout(&out).contains("may lose"), "{}", stdout(&out));
    let client2 = Client::new();
    client2.clone(&lab.url("b", "kv"), "c");
    lab.wait_until("b to accept a write", Duration::from_secs(5), || {
        client2.kv("c", &["set", "k", "on-b"]).status.success()
    });
    eprintln!("promote --force to the first accepted write: {:?}", start.elapsed());
    assert_eq!(lab.record()["node"], "b");
    let epoch = lab.record()["epoch"].as_u64().unwrap();

    // a returns: fenced at once, a replica of b, its commit kept and listed.
    lab.kill("a", "daemon", "CONT");
    lab.kill("a", "agent", "CONT");
    let out = run(client.git("c", &["commit", "-q", "--allow-empty", "-m", "late"]));
    assert!(out.status.success());
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/late"]));
    assert!(!out.status.success(), "the deposed leader refuses: {}", stderr(&out));
    lab.wait_parity("b", "a", Duration::from_secs(15));
    let kept = format!("refs/stargate/local/lost/{epoch}/refs/kv/default");
    assert_eq!(lab.rev("a", &kept).as_deref(), Some(only_on_a.as_str()), "{}", lab.logs());
    assert_eq!(ok(lab.git("a", &["show", &format!("{kept}:k")])), "only-on-a", "the kept commit is readable");
    lab.wait_until("a to list the kept commit", Duration::from_secs(5), || {
        stdout(&stargate(&lab, "a", &["status"])).contains(&kept)
    });
    lab.wait_until("b to hold the lease's lock", Duration::from_secs(10), || {
        !lab.dir.path().join("shared/stargate.lock.handoff").exists()
    });
    assert_eq!(events(&lab, "forced-promotion").len(), 1);
    assert!(events(&lab, "fenced").iter().any(|e| e["node"] == "a"), "{:?}", lab.audit());
    assert!(events(&lab, "lost-commits").iter().any(|e| e["node"] == "a"), "{:?}", lab.audit());
    assert_eq!(value(&lab, "b", "k").as_deref(), Some("on-b"));
    // /metrics reads the kept refs from the repositories: what an alert fires on lasts
    // until the refs go, not until the agent restarts.
    let lost_refs = |node: &str| {
        lab.http(node, "/metrics")
            .1
            .lines()
            .find(|l| l.starts_with("stargate_replication_lost_refs{"))
            .map(str::to_owned)
    };
    assert_eq!(lost_refs("a").as_deref(), Some("stargate_replication_lost_refs{node=\"a\"} 1"));
    // Recovered (here: looked at), the kept value is removed by the operator, on the replica.
    ok(lab.git("a", &["update-ref", "-d", &kept]));
    assert_eq!(lab.rev("a", &kept), None);
    assert_eq!(lost_refs("a").as_deref(), Some("stargate_replication_lost_refs{node=\"a\"} 0"));
}

#[test]
fn preflight_refuses_on_lag_and_cooldown_and_force_overrides_both() {
    // A frozen agent still counts as alive for 10 s: long enough to ask while it lags.
    let lab = Lab::up_with(
        2,
        "[stargate \"promote\"]\n\tcooldown = 1h\n\tmaxLag = 1s\n[stargate \"lease\"]\n\tstaleAfter = 10s\n",
    );
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    assert!(client.kv("c", &["set", "k", "1"]).status.success());
    lab.wait_parity("a", "b", Duration::from_secs(10));
    lab.kill("b", "agent", "STOP");
    assert!(client.kv("c", &["set", "k", "2"]).status.success());
    std::thread::sleep(Duration::from_millis(1500));
    let out = stargate(&lab, "b", &["promote", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "promoted although behind: {}{err}", stdout(&out));
    assert!(err.contains("lacks 1 update,") && err.contains("stargate.promote.maxLag"), "{err}");
    lab.kill("b", "agent", "CONT");

    lab.wait_parity("a", "b", Duration::from_secs(10));
    let out = stargate(&lab, "b", &["promote", "--yes"]);
    assert!(out.status.success(), "{}{}{}", stdout(&out), stderr(&out), lab.logs());
    let out = stargate(&lab, "a", &["promote", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("stargate.promote.cooldown"), "{}", stderr(&out));
    let out = stargate(&lab, "a", &["promote", "--force", "--yes"]);
    assert!(out.status.success(), "{}{}{}", stdout(&out), stderr(&out), lab.logs());
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    // Without --yes and without a terminal, nothing happens.
    let out = stargate(&lab, "b", &["promote", "--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert_eq!(lab.record()["node"], "a");
}

#[test]
fn a_crash_of_the_leaders_agent_alone_loses_no_acknowledged_write() {
    let lab = Lab::up_with(2, FAST);
    let mut leader = lab.wait_leader(None, Duration::from_secs(5));
    let mut took = Vec::new();
    for round in 0..10 {
        let replica = other(&lab, &leader);
        let client = Client::new();
        client.clone(&lab.url(&leader, "kv"), "c");
        // The replica cannot have mirrored it: its agent is frozen while the write is acknowledged.
        lab.kill(&replica, "agent", "STOP");
        let key = format!("round{round}");
        assert!(client.kv("c", &["set", &key, "acked"]).status.success());
        lab.kill(&leader, "agent", "KILL");
        lab.kill(&replica, "agent", "CONT");
        let new = lab.wait_leader(Some(&leader), Duration::from_secs(10));
        assert_eq!(new, replica);
        assert_eq!(value(&lab, &new, &key).as_deref(), Some("acked"), "round {round}{}", lab.logs());
        lab.start(&leader, "agent");
        lab.wait_parity(&new, &leader, Duration::from_secs(10));
        leader = new;
    }
    for node in &lab.nodes {
        for line in lab.agent_log(node).lines().filter(|l| l.contains("caught up with")) {
            if let Some(ms) = line.rsplit("in ").next().and_then(|t| t.trim_end_matches(" ms").parse::<u64>().ok()) {
                took.push(ms);
            }
        }
    }
    took.sort();
    assert_eq!(took.len(), 10, "every election caught up first");
    eprintln!("catch-up after an agent crash: median {} ms, worst {} ms", took[took.len() / 2], took[took.len() - 1]);
}

/// A push into `refs/stargate/` changes nothing there on any node: git hands the refs spelt
/// `refs/stargate/` to `proc-receive`, which answers them as done and leaves them as they
/// are (so that `git push --mirror` succeeds); any other spelling is refused.
#[test]
fn client_pushes_into_refs_stargate_change_nothing_on_every_node() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    client.clone(&lab.url(&leader, "kv"), "c");
    assert!(client.kv("c", &["set", "k", "v"]).status.success());
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "x"]));
    lab.wait_parity(&leader, lab.nodes.iter().find(|n| **n != leader).unwrap(), Duration::from_secs(10));
    for node in lab.nodes.clone() {
        let before = lab.mirrored_refs(&node);
        let journal = lab.rev(&node, "refs/stargate/journal");
        assert!(journal.is_some(), "{node}");
        let url = lab.url(&node, "kv");
        for spec in ["+HEAD:refs/stargate/journal", ":refs/stargate/journal", "HEAD:refs/stargate/local/mine"] {
            let out = run(client.git("c", &["push", &url, spec]));
            if node == leader {
                assert!(out.status.success(), "{node} {spec}: {}", stderr(&out));
                assert!(stderr(&out).contains("left as they are"), "{node} {spec}: {}", stderr(&out));
            } else {
                assert_eq!(out.status.code(), Some(1), "{node} {spec}: {}", stderr(&out));
                assert!(stderr(&out).contains("not leader"), "{node} {spec}: {}", stderr(&out));
            }
        }
        // Every case: on a case-insensitive filesystem refs/Stargate/journal is the journal.
        for spec in ["+HEAD:refs/Stargate/journal", "HEAD:refs/STARGATE/local/mine", "HEAD:refs/sTaRgAtE/x"] {
            let out = run(client.git("c", &["push", &url, spec]));
            assert_eq!(out.status.code(), Some(1), "{node} {spec}: {}", stderr(&out));
            assert!(stderr(&out).contains("refs/stargate/ belongs to Stargate"), "{node} {spec}: {}", stderr(&out));
            assert!(!stderr(&out).contains("not leader"), "refused as protected, not as passive: {}", stderr(&out));
        }
        assert_eq!(lab.mirrored_refs(&node), before, "{node}");
        assert_eq!(lab.rev(&node, "refs/stargate/journal"), journal, "{node}");
        for name in ["refs/stargate/local/mine", "refs/Stargate/journal", "refs/STARGATE/local/mine", "refs/sTaRgAtE/x"]
        {
            assert_eq!(lab.rev(&node, name), None, "{node} {name}");
        }
    }
}

#[test]
fn verify_finds_a_ref_written_behind_stargates_back_and_sync_full_repairs_it() {
    let lab = Lab::up_with(2, FAST);
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    assert!(client.kv("c", &["set", "k", "v"]).status.success());
    lab.wait_parity("a", "b", Duration::from_secs(10));
    let out = stargate(&lab, "b", &["verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("kv.git b: in-sync"), "{}", stdout(&out));

    // Written on the leader with hooks off: not journaled, so never mirrored.
    let head = lab.rev("a", "refs/kv/default").unwrap();
    ok(lab.git("a", &["-c", "core.hooksPath=/dev/null", "update-ref", "refs/heads/sneaky", &head]));
    let out = stargate(&lab, "b", &["verify", "--wait", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("kv.git b: diverged"), "{}", stdout(&out));
    assert!(stdout(&out).contains("differs: refs/heads/sneaky"), "{}", stdout(&out));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&stargate(&lab, "a", &["verify", "--json", "--wait", "0s"]))).unwrap();
    assert_eq!(json["repositories"][0]["nodes"][1]["state"], "diverged", "{json}");
    // b is at a's journal position, so "0 behind" would be a lie: status says the refs
    // differ, and a planned promotion refuses rather than lead without that ref.
    let out = stargate(&lab, "b", &["status"]);
    assert!(stdout(&out).contains("refs differ from the leader's in 1 repositories"), "{}", stdout(&out));
    assert!(stdout(&out).contains("diverged: kv.git: refs/heads/sneaky"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("0 operations behind"), "{}", stdout(&out));
    let out = stargate(&lab, "b", &["promote", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("but refs differ: refs/heads/sneaky"), "{}", stderr(&out));
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a", "the refused promotion changed nothing");

    // The agent's own sync (every second here) may hold the repository's lock: a sync by
    // hand then says it skipped, and is run again.
    for _ in 0..20 {
        let out = stargate(&lab, "b", &["sync", "--full", "kv.git"]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        if !stderr(&out).contains("skipped") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.rev("b", "refs/heads/sneaky"), Some(head));
    let out = stargate(&lab, "a", &["verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// A full mirror keeps suspects first and drops those the leader turns out to contain: it
/// used to log them all as kept, although the leader had only advanced the ref.
fn full_mirror_reports_no_false_loss(lab: &Lab) {
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    assert!(client.kv("c", &["set", "k", "1"]).status.success());
    lab.wait_parity("a", "b", Duration::from_secs(10));
    // b forgets its journal position: its next sync is a full mirror.
    lab.kill("b", "agent", "STOP");
    ok(lab.git("b", &["-c", "core.hooksPath=/dev/null", "update-ref", "-d", "refs/stargate/journal"]));
    assert!(client.kv("c", &["set", "k", "2"]).status.success());
    lab.kill("b", "agent", "CONT");
    lab.wait_parity("a", "b", Duration::from_secs(15));
    let log = lab.agent_log("b");
    assert!(log.contains("full mirror"), "{log}");
    assert!(!log.contains("kept as") && !log.contains("not on the leader"), "a false loss was reported: {log}");
    assert!(!ok(lab.git("b", &["for-each-ref", "refs/stargate/local/"])).contains("lost"));
    assert!(events(lab, "lost-commits").is_empty(), "{:?}", lab.audit());
    // And the incremental syncs that follow report none either.
    assert!(client.kv("c", &["set", "k", "3"]).status.success());
    lab.wait_parity("a", "b", Duration::from_secs(15));
    assert!(!lab.agent_log("b").contains("kept as"), "{}", lab.agent_log("b"));
    assert!(!ok(lab.git("b", &["for-each-ref", "refs/stargate/local/"])).contains("lost"));
}

#[test]
fn a_full_mirror_reports_no_loss_when_the_leader_only_advanced() {
    full_mirror_reports_no_false_loss(&Lab::up_with(2, FAST));
}

/// Over ssh as production runs it (`lab up --transport ssh`: a fetch-only key, strict host
/// keys), where the full mirror is a protocol v2 session through sshd.
#[test]
fn a_full_mirror_over_ssh_reports_no_loss_when_the_leader_only_advanced() {
    let lab = Lab::up_over(2, FAST, Transport::Ssh);
    assert!(ok(lab.git("b", &["config", "stargate.a.url"])).starts_with("ssh://"));
    full_mirror_reports_no_false_loss(&lab);
}

/// Over https through nginx asking for the nodes' client certificates (`lab up --transport
/// https`, contrib/nginx/stargate-git-mtls.conf).
#[test]
fn a_full_mirror_over_https_reports_no_loss_when_the_leader_only_advanced() {
    let lab = Lab::up_over(2, FAST, Transport::Https);
    assert!(ok(lab.git("b", &["config", "stargate.a.url"])).starts_with("https://"));
    full_mirror_reports_no_false_loss(&lab);
}

#[test]
fn a_full_mirror_over_http_reports_no_loss_when_the_leader_only_advanced() {
    let lab = Lab::up_with(2, &format!("{FAST}[stargate \"a\"]\n\turl = http://@NET@.1:8181/\n"));
    http_backend(&format!("{}:8181", lab.ip("a")), &lab.dir.path().join("a/repos"));
    full_mirror_reports_no_false_loss(&lab);
}
