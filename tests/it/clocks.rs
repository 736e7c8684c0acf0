//! Clocks (docs/ARCHITECTURE.md, "Time and clocks"): a step of a node's wall clock neither
//! revives a frozen agent nor kills a live one, and replication lag stays true when the
//! leader's and a replica's clocks disagree.

use std::time::Duration;

use crate::support::*;

#[test]
fn a_wall_clock_step_neither_revives_a_frozen_agent_nor_kills_a_live_one() {
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    let url = format!("file://{}", lab.repo("a", "kv").display());
    client.clone(&url, "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    // The hooks run an hour ahead: the live agent's heartbeat is not an hour old.
    let out = run(shifted(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]), "+1h"));
    assert!(out.status.success(), "a live agent looked dead: {}", stderr(&out));

    lab.kill("a", "agent", "STOP");
    std::thread::sleep(Duration::from_millis(2500));
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "two"]));
    // An hour behind: the frozen agent's last heartbeat would look an hour in the future.
    let out = run(shifted(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]), "-1h"));
    assert!(!out.status.success(), "a frozen agent looked alive");
    assert!(stderr(&out).contains("agent state is stale"), "{}", stderr(&out));
    lab.kill("a", "agent", "CONT");
}

fn aggregate(lab: &Lab, node: &str) -> (u64, f64) {
    let a = &lab.status(node)["replication"]["aggregate"];
    (a["count"].as_u64().unwrap_or(0), a["p50_s"].as_f64().unwrap_or(f64::NAN))
}

fn writes(lab: &Lab, client: &Client, from: usize, n: usize) {
    for i in from..from + n {
        assert!(client.kv("c", &["set", &format!("k{i}"), "v"]).status.success());
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.wait_parity("a", "b", Duration::from_secs(10));
}

/// Kill `node`'s agent and start it again with its wall clock shifted by `shift`.
fn restart_shifted(lab: &Lab, node: &str, shift: &str) {
    lab.kill(node, "agent", "KILL");
    let log = std::fs::File::create(lab.dir.path().join(format!("{node}/agent{shift}.log"))).unwrap();
    let mut agent = shifted(lab.node_cmd(node, HOOK), shift);
    agent.args(["git-stargate", "agent"]).stdout(log.try_clone().unwrap()).stderr(log);
    let mut child = agent.spawn().unwrap();
    // `lab down` (or the next round) stops it with the rest; reaped here.
    std::fs::write(lab.dir.path().join(format!("{node}/agent.pid")), child.id().to_string()).unwrap();
    std::thread::spawn(move || child.wait());
}

/// Updates a replica exposes in its first seconds are counted with the leader's clock
/// offset, never on the two skewed clocks: those exposed before the offset is measured wait
/// for it. (This one passes on the code before the samples were held too, the first
/// measurement being quick here; `lag_is_true_when_the_leaders_clock_cannot_be_read_at_first`
/// reproduces the outside report.)
#[test]
fn lag_is_true_from_the_first_sample_after_a_start() {
    // A shifted agent's heartbeat is judged on the clock since boot, but give it room anyway.
    let lab = Lab::up_with(2, "[stargate \"lease\"]\n\tstaleAfter = 10s\n");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    restart_shifted(&lab, "b", "+2s");
    // At once: the agent is starting, and measures a's clock only once it is passive.
    writes(&lab, &client, 0, 10);
    two_seconds_ahead_and_true(&lab, "written to from its start");
}

/// The outside report, reproduced: a replica 2 s ahead whose first measurements of the
/// leader's clock fail (its requests to the leader's health responder dropped for the
/// first 3 s after its start), written to at once. Its syncs work meanwhile (git://, and the
/// leader's UDP hints), so it exposes updates before it knows the offset; those wait for the
/// offset rather than count 2 s of skew as lag. On the code before they waited, the first
/// measurement came 5 s after the failed one, and the p99 read 2 s.
#[test]
#[ignore = "needs root: network namespaces (a --netns lab)"]
fn lag_is_true_when_the_leaders_clock_cannot_be_read_at_first() {
    let lab = Lab::up_netns(2, "[stargate \"lease\"]\n\tstaleAfter = 10s\n", NetOpts::default());
    assert_eq!(lab.wait_leader(None, Duration::from_secs(10)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    lab.wait_parity("a", "b", Duration::from_secs(20));
    let rules = format!(
        "table inet clockcut {{\n chain output {{\n  type filter hook output priority -10; policy accept;\n  \
         ip daddr {} tcp dport 8080 drop\n }}\n}}\n",
        lab.ip("a")
    );
    lab.nft("b", &rules);
    let started = std::time::Instant::now();
    restart_shifted(&lab, "b", "+2s");
    writes(&lab, &client, 0, 10);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    ok(lab.node_cmd("b", "nft").args(["delete", "table", "inet", "clockcut"]));
    two_seconds_ahead_and_true(&lab, "the leader's clock unreadable for 3 s, written to from its start");
}

/// Once b, 2 s ahead of a, counted ten updates: its lag p99 is under a second (not the
/// skew), and it measured a's clock 2 s behind its own.
fn two_seconds_ahead_and_true(lab: &Lab, how: &str) {
    lab.wait_until("b to count ten updates", Duration::from_secs(20), || aggregate(lab, "b").0 >= 10);
    let status = lab.status("b");
    let (p99, offset) = (&status["replication"]["aggregate"]["p99_s"], &status["replication"]["clock_offset"]);
    eprintln!("replica 2 s ahead, {how}: lag p99 {p99} s, offset {offset}");
    assert!(p99.as_f64().is_some_and(|p99| p99 < 1.0), "p99 {p99} s with the clock offset {offset}");
    assert!(offset["offset_ms"].as_i64().is_some_and(|o| (o + 2000).abs() < 200), "{offset}");
}

#[test]
fn lag_stays_true_when_the_replicas_clock_is_two_seconds_off_either_way() {
    // A shifted agent's heartbeat is judged on the clock since boot, but give it room anyway.
    let lab = Lab::up_with(2, "[stargate \"lease\"]\n\tstaleAfter = 10s\n[stargate \"sync\"]\n\tinterval = 1s\n");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    writes(&lab, &client, 0, 10);
    lab.wait_until("b to count ten updates", Duration::from_secs(10), || aggregate(&lab, "b").0 >= 10);
    let (_, one_clock) = aggregate(&lab, "b");
    eprintln!("lag p50 on one clock: {:.1} ms", one_clock * 1000.0);
    for (n, (shift, expected)) in [("+2s", -2000i64), ("-2s", 2000)].into_iter().enumerate() {
        restart_shifted(&lab, "b", shift);
        lab.wait_until("b to measure a's clock", Duration::from_secs(15), || {
            lab.status("b")["replication"]["clock_offset"]["offset_ms"]
                .as_i64()
                .is_some_and(|o| (o - expected).abs() < 200)
        });
        let offset = lab.status("b")["replication"]["clock_offset"].clone();
        writes(&lab, &client, 100 * (n + 1), 10);
        lab.wait_until("b to count ten updates", Duration::from_secs(10), || aggregate(&lab, "b").0 >= 10);
        let (_, p50) = aggregate(&lab, "b");
        let uncertainty = offset["uncertainty_ms"].as_u64().unwrap() as f64 / 1000.0;
        eprintln!(
            "clock {shift}: offset {} ms ± {} ms; lag p50 {:.1} ms (one clock: {:.1} ms; uncorrected it would read {:.1} ms)",
            offset["offset_ms"],
            offset["uncertainty_ms"],
            p50 * 1000.0,
            one_clock * 1000.0,
            ((p50 - offset["offset_ms"].as_i64().unwrap() as f64 / 1000.0).max(0.0)) * 1000.0
        );
        // The two-second skew is gone; what is left is the lag's own spread between two runs
        // (a few ms here, more on a loaded machine: the figures are printed above).
        assert!(p50 < 1.0 && p50 > 0.0, "p50 {p50} s against {one_clock} s on one clock (± {uncertainty} s)");
    }
    let out = ok(lab.node_cmd("b", "git").args(["stargate", "lag"]));
    assert!(out.contains("clock:") && out.contains("corrected"), "{out}");
}
