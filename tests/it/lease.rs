//! Leader election on one lock: exactly one leader, failover with epoch + 1, fencing,
//! clean release.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn exactly_one_node_is_ready_once_settled() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    for i in 0..200 {
        let ready = lab.ready();
        assert_eq!(ready.len(), 1, "sample {i}: ready = {ready:?}");
        assert_eq!(ready[0], leader, "sample {i}: leadership moved without cause");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(lab.record()["node"], leader.as_str());
}

#[test]
fn kill_9_of_the_leader_agent_elects_the_other_with_next_epoch() {
    let lab = Lab::up(2);
    let first = lab.wait_leader(None, Duration::from_secs(5));
    let epoch = lab.record()["epoch"].as_u64().unwrap();
    let start = Instant::now();
    lab.kill(&first, "agent", "KILL");
    let second = lab.wait_leader(Some(&first), Duration::from_secs(5));
    let handover = start.elapsed();
    assert_ne!(first, second);
    assert_eq!(lab.record()["epoch"].as_u64().unwrap(), epoch + 1);
    assert_eq!(lab.record()["node"], second.as_str());
    assert!(
        lab.audit()
            .iter()
            .any(|e| e["event"] == "elected" && e["node"] == second.as_str() && e["previous_leader"] == first.as_str())
    );
    eprintln!("handover after kill -9: {handover:?}");
    // The dead node's hooks and health now refuse too.
    assert_eq!(lab.http(&first, "/readyz").0, 503);
    assert_eq!(lab.http(&first, "/healthz").0, 503);
}

#[test]
fn fenced_leader_refuses_although_its_agent_still_runs() {
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    assert!(client.kv("c", &["set", "k", "v1"]).status.success());

    // An emergency promote elsewhere moves the epoch past node a.
    let mut record = lab.record();
    let epoch = record["epoch"].as_u64().unwrap() + 1;
    record["epoch"] = epoch.into();
    record["node"] = "z".into();
    let path = lab.dir.path().join("shared/stargate.lock.leader");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();

    let out = client.kv("c", &["set", "k", "v2"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("stargate: not leader (leader: z, epoch: {epoch})")), "{}", stderr(&out));
    assert_eq!(lab.http("a", "/readyz").0, 503);
    assert!(std::path::Path::new(&format!("/proc/{}", lab.pid("a", "agent"))).exists(), "agent must still run");
    assert_eq!(ok(lab.git("a", &["show", "refs/kv/default:k"])), "v1");
    wait_until("the agent to log the fencing", Duration::from_secs(3), || {
        lab.audit().iter().any(|e| e["event"] == "fenced" && e["node"] == "a")
    });
}

#[test]
fn sigterm_releases_the_lease_for_the_other_node() {
    let lab = Lab::up(2);
    let first = lab.wait_leader(None, Duration::from_secs(5));
    lab.kill(&first, "agent", "TERM");
    let second = lab.wait_leader(Some(&first), Duration::from_secs(5));
    assert_ne!(first, second);
    assert!(lab.audit().iter().any(|e| e["event"] == "released" && e["node"] == first.as_str()));
    // A clean stop leaves no state behind that could look alive.
    wait_until("the stopped agent to exit", Duration::from_secs(3), || {
        lab.http(&first, "/status").1.contains("not running")
    });
    assert_eq!(lab.http(&first, "/healthz").0, 503);
}

#[test]
fn restarted_node_rejoins_as_passive() {
    let lab = Lab::up(2);
    let first = lab.wait_leader(None, Duration::from_secs(5));
    lab.kill(&first, "agent", "KILL");
    let second = lab.wait_leader(Some(&first), Duration::from_secs(5));
    lab.start(&first, "agent");
    wait_until("the restarted agent to be healthy", Duration::from_secs(5), || lab.http(&first, "/healthz").0 == 200);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.ready(), vec![second]);
}

/// Started as `git stargate agent`, the agent runs under git's wrapper process: killing the
/// wrapper with SIGKILL (which git cannot pass on) used to leave the agent leading as an
/// orphan.
#[test]
fn an_agent_started_through_git_ends_when_its_git_wrapper_is_killed() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::create_dir_all(h.join("repos")).unwrap();
    let config = format!("[stargate]\n\tnode = a\n\tlock = {0}/lock\n\troot = {0}/repos\n", h.display());
    std::fs::write(h.join(".gitconfig"), config).unwrap();
    let mut wrapper =
        cmd("git", h).current_dir(h).args(["stargate", "agent"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let state = h.join("repos/.stargate/node.json");
    wait_until("the agent to publish its state", Duration::from_secs(10), || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"role\":\"leader\""))
    });
    let text = std::fs::read_to_string(&state).unwrap();
    let agent: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pid = agent["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid, wrapper.id(), "the agent is git's child, not git itself");
    // Should the test fail, the orphan must not outlive it.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-9", &self.0.to_string()]).status();
        }
    }
    let _reap = Reap(pid);
    wrapper.kill().unwrap();
    let _ = wrapper.wait();
    wait_until("the agent to end with its wrapper", Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"role\":\"passive\""), "it released the lease on its way out: {text}");
}

/// The epochs of every election and forced promotion in the audit log, in order.
fn issued(lab: &Lab) -> Vec<u64> {
    (lab.audit().iter())
        .filter(|e| e["event"] == "elected" || e["event"] == "forced-promotion")
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect()
}

/// An old `stargate.lock.leader` restored from a backup made the file lease issue one epoch
/// twice: the next election wrote the restored epoch plus one, which an earlier election had
/// issued to another node.
#[test]
fn a_leader_record_restored_from_a_backup_never_makes_the_lease_issue_an_epoch_twice() {
    let lab = Lab::up_with(2, "[stargate \"metrics\"]\n\tinterval = 1s\n");
    let first = lab.wait_leader(None, Duration::from_secs(5));
    let path = lab.dir.path().join("shared/stargate.lock.leader");
    let backup = std::fs::read(&path).unwrap();
    let old = lab.record()["epoch"].as_u64().unwrap();
    // Elections move on, twice: first, then the other, then first again.
    let healthy = |n: &str| {
        lab.wait_until("the agent to be healthy", Duration::from_secs(5), || lab.http(n, "/healthz").0 == 200)
    };
    lab.kill(&first, "agent", "KILL");
    let second = lab.wait_leader(Some(&first), Duration::from_secs(5));
    lab.start(&first, "agent");
    healthy(&first);
    lab.kill(&second, "agent", "KILL");
    assert_eq!(lab.wait_leader(Some(&second), Duration::from_secs(5)), first);
    lab.start(&second, "agent");
    healthy(&second);
    let newest = lab.record()["epoch"].as_u64().unwrap();
    assert_eq!(newest, old + 2);
    let seen = |n: &str| {
        let text =
            std::fs::read_to_string(lab.dir.path().join(n).join("repos/.stargate/epoch.json")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text).map(|v| v["epoch"].as_u64().unwrap_or(0)).unwrap_or(0)
    };
    lab.wait_until("both nodes to have seen the newest epoch", Duration::from_secs(5), || {
        seen(&first) == newest && seen(&second) == newest
    });

    // The backup comes back while the leader's agent is stopped, so that both nodes meet it.
    lab.kill(&first, "agent", "STOP");
    std::fs::write(&path, &backup).unwrap();
    let older = format!("its epoch {old} ({first}) is older than epoch {newest} ({first}), which this node has seen");
    for n in [&first, &second] {
        let (code, body) = lab.http(n, "/readyz");
        assert_eq!(code, 503, "{n}: {body}");
        assert!(body.contains(&older), "{n}: {body}");
        assert!(body.ends_with(&format!("\nleader {first}, epoch {newest}\n")), "the epoch that is current: {body}");
    }
    // The hooks refuse writes with the reason, as for a damaged record.
    let client = Client::new();
    client.clone(&lab.url(&first, "kv"), "c");
    let out = client.kv("c", &["set", "k", "v"]);
    lab.kill(&first, "agent", "CONT");
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains(&older), "{}", stderr(&out));
    lab.wait_until("the passive node to audit the refusal", Duration::from_secs(5), || {
        lab.audit().iter().any(|e| e["event"] == "epoch-refused" && e["node"] == second.as_str())
    });

    // The leader steps down; the next election writes an epoch after every one issued.
    lab.wait_until("a new epoch", Duration::from_secs(10), || lab.record()["epoch"].as_u64() != Some(old));
    assert_eq!(lab.record()["epoch"].as_u64().unwrap(), newest + 1);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let epochs = issued(&lab);
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "every epoch issued once, in order: {epochs:?}");
    assert_eq!(epochs.last(), Some(&(newest + 1)), "{epochs:?}");
    let writer = Client::new();
    writer.clone(&lab.url(&leader, "kv"), "c");
    let out = writer.kv("c", &["set", "k", "after the restore"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Each node reported the restored record once, however often it read it, and counted it.
    for n in [&first, &second] {
        let refusals = lab.audit().iter().filter(|e| e["event"] == "epoch-refused" && e["node"] == n.as_str()).count();
        assert!(refusals <= 1, "{n} audited the refusal {refusals} times");
        assert!(lab.agent_log(n).matches("refused the leader record").count() <= 1, "{}", lab.agent_log(n));
    }
    let counted = format!("stargate_epochs_refused_total{{node=\"{second}\"}} 1\n");
    lab.wait_until("the refusal to be counted", Duration::from_secs(5), || {
        lab.http(&second, "/metrics").1.contains(&counted)
    });
    assert!(lab.agent_log(&second).contains("refused the leader record"), "{}", lab.agent_log(&second));
}

/// What a restored record can still do (stargate(7), Epoch): a node that was down while the
/// epochs moved on has not seen them, takes the lease first and leads an epoch issued
/// before. The node that has seen the newest refuses it, clients do not push to it, and a
/// forced promotion there ends it, keeping what it accepted meanwhile.
#[test]
fn a_node_that_missed_the_newest_epochs_and_leads_under_a_restored_record_is_refused_and_forced_out() {
    let lab = Lab::up(2);
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let path = lab.dir.path().join("shared/stargate.lock.leader");
    let backup = std::fs::read(&path).unwrap();
    // b is down while a is elected twice more.
    lab.kill("b", "agent", "KILL");
    for epoch in [2, 3] {
        lab.kill("a", "agent", "KILL");
        lab.start("a", "agent");
        lab.wait_until("a to lead again", Duration::from_secs(5), || lab.record()["epoch"] == epoch);
    }
    // The backup comes back with a's agent gone; b returns and takes the lease first.
    lab.kill("a", "agent", "KILL");
    std::fs::write(&path, &backup).unwrap();
    lab.start("b", "agent");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "b");
    assert_eq!(lab.record()["epoch"], 2, "b never saw epoch 2 issued to a");
    lab.start("a", "agent");
    lab.wait_until("a to refuse b's epoch", Duration::from_secs(5), || {
        let (code, body) = lab.http("a", "/readyz");
        code == 503
            && body.contains("its epoch 2 (b) is older than epoch 3 (a)")
            && body.ends_with("leader a, epoch 3\n")
    });

    // A client of both is not sent to b, which leads an epoch a says is old.
    let client = Client::new();
    let config = std::fs::read_to_string(client.home.path().join(".gitconfig")).unwrap() + &lab.client_config(&["git"]);
    std::fs::write(client.home.path().join(".gitconfig"), config).unwrap();
    client.clone(&lab.url("b", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "to b"]));
    let out = run(with_helper(client.git("c", &["push", "stargate::a,b/kv.git", "HEAD:refs/heads/main"])));
    assert_eq!(out.status.code(), Some(128), "{}", stderr(&out));
    assert!(stderr(&out).contains("its epoch 2 is behind epoch 3, which a named"), "{}", stderr(&out));
    // b itself still accepts a push made to it directly.
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let accepted = lab.rev("b", "refs/heads/main").unwrap();

    // The operator's way out: a forced promotion on a, which has seen the newest epoch.
    let out = run(lab.node_cmd("a", "git").args(["stargate", "promote", "--force", "--yes"]));
    assert!(out.status.success(), "{}{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out), lab.logs());
    assert_eq!(lab.record()["epoch"], 4, "after every epoch a has seen");
    lab.wait_until("b to step down and a to lead", Duration::from_secs(10), || lab.ready() == ["a"]);
    lab.wait_until("b to keep what it accepted", Duration::from_secs(15), || {
        lab.rev("b", "refs/stargate/local/lost/4/refs/heads/main").as_deref() == Some(accepted.as_str())
    });
    assert!(lab.audit().iter().any(|e| e["event"] == "epoch-refused" && e["node"] == "a"));
}
