//! Many repositories on one node (stargate(7), Change summary): an idle replica syncs none
//! of them, a write to one still reaches the replica at once, and a repository created on
//! the leader appears on the replica, with Stargate's hooks.

use std::time::{Duration, Instant};

use crate::support::*;

fn syncs(lab: &Lab, node: &str) -> u64 {
    lab.status(node)["replication"]["counters"]["syncs"].as_u64().unwrap_or(0)
}

/// Wait until `node`'s sync counter has not moved for `quiet`; its value.
fn settled(lab: &Lab, node: &str, quiet: Duration, timeout: Duration) -> u64 {
    let start = Instant::now();
    let (mut last, mut since) = (syncs(lab, node), Instant::now());
    while since.elapsed() < quiet {
        assert!(start.elapsed() < timeout, "{node} kept syncing: {last} syncs{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
        let now = syncs(lab, node);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

#[test]
fn idle_repositories_cost_the_replica_no_sync_each_and_a_write_still_arrives_at_once() {
    let names: Vec<String> = (0..150).map(|i| format!("r{i:03}")).collect();
    let lab = Lab::up_with_repos(2, "[stargate \"sync\"]\n\tinterval = 200ms\n", &names.join(" "));
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let replica = if leader == "a" { "b" } else { "a" };
    // The first look at the summary syncs every repository once; then nothing, at five
    // looks a second.
    let swept = settled(&lab, replica, Duration::from_secs(2), Duration::from_secs(90));
    assert!(swept >= names.len() as u64, "{swept} syncs for {} repositories{}", names.len(), lab.logs());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(syncs(&lab, replica), swept, "15 intervals later, no repository was synced{}", lab.logs());
    assert!(lab.agent_log(replica).contains("change summary"), "{}", lab.agent_log(replica));

    let (_, before) = lab.http(&leader, "/changes");
    let head = before.lines().next().unwrap().to_owned();
    let client = Client::new();
    client.clone(&format!("git://{}/r042.git", lab.ip(&leader)), "w");
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "one"]));
    let pushed = Instant::now();
    ok(client.git("w", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let at_leader = ok(lab.node_cmd(&leader, "git").arg("--git-dir").arg(lab.repo(&leader, "r042")).args(["rev-parse", "main"]));
    let copy = lab.repo(replica, "r042");
    wait_until("the write on the replica", Duration::from_secs(5), || {
        run(lab.node_cmd(replica, "git").arg("--git-dir").arg(&copy).args(["rev-parse", "main"])).stdout
            == at_leader.as_bytes()
    });
    eprintln!("write reached the replica after {:?}", pushed.elapsed());
    let after = settled(&lab, replica, Duration::from_secs(1), Duration::from_secs(20));
    assert!(after - swept <= 3, "one write cost {} syncs{}", after - swept, lab.logs());

    // The summary names the repository written, once, after the cursor of before.
    let (generation, offset) = {
        let fields: Vec<&str> = head.split(' ').collect();
        (fields[1].to_owned(), fields[2].to_owned())
    };
    let (code, since) = lab.http(&leader, &format!("/changes?since={generation}.{offset}"));
    assert_eq!(code, 200, "{since}");
    assert_eq!(since.lines().skip(1).collect::<Vec<_>>(), ["r042.git"], "{since}");
    let (code, reset) = lab.http(&leader, "/changes?since=0000000000000001.0");
    assert!(code == 200 && reset.lines().next().unwrap().ends_with(" reset"), "{reset}");
    assert_eq!(reset.lines().count(), names.len() + 1, "a reset lists every repository");
}

#[test]
fn a_repository_created_on_the_leader_appears_on_the_replica_with_its_hooks() {
    let lab = Lab::up_with(2, "[stargate \"sync\"]\n\tinterval = 200ms\n");
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let replica = if leader == "a" { "b" } else { "a" };
    let hooks = ok(lab.git(&leader, &["config", "core.hooksPath"]));
    let on = |node: &str| lab.dir.path().join(node).join("repos/team/new.git");
    ok(lab.node_cmd(&leader, "git").args(["init", "-q", "--bare"]).arg(on(&leader)));
    ok(lab.node_cmd(&leader, "git").arg("--git-dir").arg(on(&leader)).args(["config", "core.hooksPath", hooks.trim()]));
    wait_until("the new repository on the replica", Duration::from_secs(20), || on(replica).join("HEAD").is_file());
    assert!(lab.agent_log(replica).contains("team/new.git: created"), "{}", lab.agent_log(replica));

    let client = Client::new();
    client.clone(&format!("git://{}/team/new.git", lab.ip(&leader)), "w");
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "first"]));
    ok(client.git("w", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let rev = |node: &str| {
        let out = run(lab.node_cmd(node, "git").arg("--git-dir").arg(on(node)).args(["rev-parse", "-q", "--verify", "main"]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    wait_until("the write mirrored", Duration::from_secs(10), || !rev(&leader).is_empty() && rev(&leader) == rev(replica));
    // The replica's copy has Stargate's hooks: a push there is refused, not accepted.
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "second"]));
    let out = run(client.git("w", &["push", &format!("git://{}/team/new.git", lab.ip(replica)), "HEAD:refs/heads/main"]));
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
}
