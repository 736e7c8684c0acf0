//! Rolling upgrades (RUNBOOK.md, Upgrading the group; docs/ARCHITECTURE.md, Formats and
//! versions): the previous release, built from this repository's own history, and this build
//! side by side in one group under a writer; one node at a time, the leader's turn after a
//! planned promotion away from it; then one node rolled back. The previous release is built
//! once into `target/previous/` (a git worktree of its tag; `git worktree prune` forgets it
//! after `cargo clean`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::failover::Writer;
use crate::support::*;

/// The release before this one: an annotated tag in this repository (CHANGELOG.md).
const PREVIOUS: &str = "v0.1.0";

const FAST: &str = "[stargate \"sync\"]\n\tinterval = 1s\n[stargate \"promote\"]\n\tcooldown = 0s\n";

/// `PREVIOUS` built from this repository's history: a worktree of the tag and its own
/// target directory under `target/previous/`, kept, so that a second run only checks it;
/// returns a directory holding its `stargate-hook` and the links a node needs.
fn previous_release() -> PathBuf {
    let base = repo_root().join("target/previous");
    let src = base.join(PREVIOUS);
    if !src.join("Cargo.toml").exists() {
        let out = run(Command::new("git")
            .current_dir(repo_root())
            .args(["worktree", "add", "--detach"])
            .arg(&src)
            .arg(PREVIOUS));
        assert!(out.status.success(), "git worktree add {PREVIOUS}: {}", stderr(&out));
    }
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(&src).args(["build", "--bins", "--target-dir"]).arg(base.join("target"));
    // The test runs with this build's STARGATE_COMMIT in its environment (nextest passes a
    // build script's rustc-env on): the tag's build must name its own commit.
    let out = run(build.env_remove("CARGO_TARGET_DIR").env_remove("STARGATE_COMMIT"));
    assert!(out.status.success(), "building {PREVIOUS}: {}", stderr(&out));
    eprintln!("{PREVIOUS} built (or found built) in {:?}", started.elapsed());
    let built = base.join("target/debug");
    let bin = base.join(format!("bin-{PREVIOUS}"));
    std::fs::create_dir_all(&bin).unwrap();
    for (name, target) in [
        ("stargate-hook", "stargate-hook"),
        ("git-stargate", "stargate-hook"),
        ("git-kv", "stargate-hook"),
        ("git-remote-stargate", "git-remote-stargate"),
    ] {
        let _ = std::fs::remove_file(bin.join(name));
        std::os::unix::fs::symlink(built.join(target), bin.join(name)).unwrap();
    }
    bin
}

/// What `stargate-hook --version` of the binaries in `bin` says: "0.1.0 (3eca48f)".
fn version_in(bin: &Path) -> String {
    let text = ok(Command::new(bin.join("stargate-hook")).arg("--version"));
    text.trim().strip_prefix("stargate-hook ").expect("stargate-hook <version>").to_owned()
}

/// The build `node` runs, as its `/status` says.
fn build(lab: &Lab, node: &str) -> String {
    lab.status(node)["version"].as_str().unwrap_or_default().to_owned()
}

/// A planned promotion of `node`, run with its own binaries: the time from the command to
/// the new leader answering ready, during which writes may be refused.
fn promote(lab: &Lab, node: &str) -> (Instant, Instant) {
    let start = Instant::now();
    let out = run(lab.node_cmd(node, "git").args(["stargate", "promote", "--yes"]));
    assert!(
        out.status.success(),
        "promote {node}: {}{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        lab.logs()
    );
    assert_eq!(lab.wait_leader(None, Duration::from_secs(10)), node);
    (start, Instant::now())
}

#[test]
#[ignore = "long suite: builds the previous release (minutes on the first run); contrib/lab/long-suite upgrade::"]
fn a_rolling_upgrade_and_a_rollback_under_a_writer_lose_no_acknowledged_write() {
    let test_started = Instant::now();
    let old = previous_release();
    let new = bin_dir();
    let (old_version, new_version) = (version_in(&old), stargate::version::VERSION.to_owned());
    assert_ne!(old_version, new_version, "the previous release and this build differ");
    let lab = Lab::up_with_bin(3, FAST, &old);
    assert_eq!(lab.wait_leader(None, Duration::from_secs(10)), "a");
    for node in &lab.nodes {
        assert_eq!(build(&lab, node), old_version, "{node} runs {PREVIOUS}");
    }
    let writer = Writer::start(stargate_client(&lab));
    let pause = || std::thread::sleep(Duration::from_millis(1500));
    let mut handovers = Vec::new();
    pause();

    // The replicas first, one at a time: stop, replace the binaries, start.
    lab.upgrade("c", new);
    assert_eq!(build(&lab, "c"), new_version);
    assert_eq!(lab.status("c")["agent_version"], new_version.as_str(), "the new node state says its build");
    // A mixed group says so: the upgraded node sees the leader's older build.
    let status: serde_json::Value =
        serde_json::from_slice(&run(lab.node_cmd("c", "git").args(["stargate", "status", "--json"])).stdout).unwrap();
    let peers = status["peers"].as_array().expect("peers");
    assert!(peers.iter().any(|p| p["node"] == "a" && p["version"] == old_version.as_str()), "{status}");
    lab.wait_parity("a", "c", Duration::from_secs(20));
    pause();
    lab.upgrade("b", new);
    lab.wait_parity("a", "b", Duration::from_secs(20));
    pause();
    // The leader's turn: leadership moves away first, by a planned promotion of a node
    // already upgraded (the new leader, an old replica: the new formats read by the old).
    handovers.push(promote(&lab, "b"));
    assert_eq!(lab.record()["format"], 1, "the new leader writes the record with its format");
    pause();
    lab.upgrade("a", new);
    lab.wait_parity("b", "a", Duration::from_secs(20));
    for node in &lab.nodes {
        assert_eq!(build(&lab, node), new_version, "{node} upgraded");
    }
    pause();

    // A rollback of one node, the leader: leadership moves away, the node goes back to the
    // previous release, then leads again (an old leader, new replicas).
    handovers.push(promote(&lab, "c"));
    pause();
    lab.upgrade("b", &old);
    assert_eq!(build(&lab, "b"), old_version);
    lab.wait_parity("c", "b", Duration::from_secs(20));
    pause();
    handovers.push(promote(&lab, "b"));
    let record = lab.record();
    assert!(record.get("format").is_none(), "{PREVIOUS} wrote this record: {record}");
    pause();
    let done = writer.stop();

    // Nothing acknowledged lost, and every node at parity.
    let acked: Vec<usize> = done.iter().filter(|d| d.1).map(|d| d.0).collect();
    assert!(acked.len() >= 20, "the writer kept writing: {done:?}");
    for node in &lab.nodes {
        lab.wait_parity("b", node, Duration::from_secs(20));
    }
    for node in &lab.nodes {
        let out = run(lab.git(node, &["ls-tree", "--name-only", "refs/kv/default"]));
        let keys: std::collections::HashSet<String> =
            String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        let lost: Vec<&usize> = acked.iter().filter(|i| !keys.contains(&format!("w{i}"))).collect();
        assert!(lost.is_empty(), "acknowledged writes missing on {node}: {lost:?}{}", lab.logs());
    }
    // Writes were refused only during the planned handovers (and the second after each,
    // while the client learns the new leader).
    let slack = Duration::from_secs(1);
    let refused: Vec<_> = (done.iter().filter(|d| !d.1))
        .filter(|(_, _, start, end)| !handovers.iter().any(|(from, to)| *start <= *to + slack && *end >= *from))
        .map(|(i, _, start, end)| (i, start.duration_since(test_started), end.duration_since(test_started)))
        .collect();
    let windows: Vec<_> = handovers
        .iter()
        .map(|(from, to)| (from.duration_since(test_started), to.duration_since(test_started)))
        .collect();
    assert!(refused.is_empty(), "writes refused outside the handovers {windows:?}: {refused:?}{}", lab.logs());
    let failed = done.iter().filter(|d| !d.1).count();
    eprintln!(
        "rolling upgrade: {} writes acknowledged, {failed} refused during {} handovers, {:?} in all",
        acked.len(),
        handovers.len(),
        test_started.elapsed()
    );
}
