//! Clocks (docs/ARCHITECTURE.md, "Time and clocks"): a step of a node's wall clock neither
//! revives a frozen agent nor kills a live one, and replication lag stays true when the
//! leader's and a replica's clocks disagree.

use std::time::Duration;

use crate::support::*;

/// libfaketime, which `faketime` (Debian) preloads: `FAKETIME` shifts this process's wall
/// clock; the clocks since boot stay true, as under an NTP step.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn shifted(mut c: std::process::Command, by: &str) -> std::process::Command {
    assert!(std::path::Path::new(LIBFAKETIME).exists(), "faketime is not installed (contrib/test.sh installs it)");
    c.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", by).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    c
}

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
