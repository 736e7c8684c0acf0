//! Many repositories on one node (stargate(7), Change summary): an idle replica syncs none
//! of them, a write to one still reaches the replica at once, and a repository created on
//! the leader appears on the replica, with Stargate's hooks.

use std::path::Path;
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
    let agents = [lab.pid(&leader, "agent"), lab.pid(replica, "agent")];
    let used_before = agents.map(cpu);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(syncs(&lab, replica), swept, "15 intervals later, no repository was synced{}", lab.logs());
    // Idle agents sleep: a tenth of a core at most (a spinning scheduler takes all of one).
    for (i, who) in [&leader, replica].into_iter().enumerate() {
        let used = cpu(agents[i]) - used_before[i];
        assert!(used < Duration::from_millis(300), "{who}'s idle agent used {used:?} of CPU in 3 s");
    }
    assert!(lab.agent_log(replica).contains("change summary"), "{}", lab.agent_log(replica));

    let (_, before) = lab.http(&leader, "/changes");
    let head = before.lines().next().unwrap().to_owned();
    let client = Client::new();
    client.clone(&format!("git://{}/r042.git", lab.ip(&leader)), "w");
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "one"]));
    let pushed = Instant::now();
    ok(client.git("w", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let at_leader =
        ok(lab.node_cmd(&leader, "git").arg("--git-dir").arg(lab.repo(&leader, "r042")).args(["rev-parse", "main"]));
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
    let on = |node: &str| lab.dir.path().join(node).join("repos/team/new.git");
    lab.init_managed(&leader, "team/new", &[]);
    // git writes HEAD first and the agent logs once the hooks are set: wait for the log.
    wait_until("the new repository on the replica", Duration::from_secs(20), || {
        lab.agent_log(replica).contains("team/new.git: created")
    });
    assert!(on(replica).join("HEAD").is_file());
    // Managed there as on the leader: its own hooks directory in its own config.
    let hooks_path = ok(lab.node_cmd(replica, "git").arg("--git-dir").arg(on(replica)).args([
        "config",
        "--local",
        "core.hooksPath",
    ]));
    assert_eq!(Path::new(hooks_path.trim()), on(replica).canonicalize().unwrap().join("stargate/hooks"));
    assert!(on(replica).join("stargate/managed").is_file());

    let client = Client::new();
    client.clone(&format!("git://{}/team/new.git", lab.ip(&leader)), "w");
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "first"]));
    ok(client.git("w", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let rev = |node: &str| {
        let out =
            run(lab.node_cmd(node, "git").arg("--git-dir").arg(on(node)).args(["rev-parse", "-q", "--verify", "main"]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    wait_until("the write mirrored", Duration::from_secs(10), || {
        !rev(&leader).is_empty() && rev(&leader) == rev(replica)
    });
    // The replica's copy has Stargate's hooks: a push there is refused, not accepted.
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "second"]));
    let out =
        run(client.git("w", &["push", &format!("git://{}/team/new.git", lab.ip(replica)), "HEAD:refs/heads/main"]));
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
}

#[test]
fn a_full_mirror_of_many_refs_writes_packed_refs_once_runs_no_hook_and_keeps_what_the_leader_lacks() {
    let lab = Lab::up_with(2, "[stargate \"sync\"]\n\tinterval = 1h\n");
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let replica = if leader == "a" { "b" } else { "a" };
    let client = Client::new();
    client.clone(&lab.url(&leader, "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "base"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    lab.wait_parity(&leader, replica, Duration::from_secs(10));
    // The replica stops mirroring, and holds a commit of its own that the leader never had.
    lab.kill(replica, "agent", "KILL");
    let (l, r) = (lab.repo(&leader, "kv"), lab.repo(replica, "kv"));
    let git = |node: &str, repo: &std::path::Path, args: &[&str]| {
        ok(lab.node_cmd(node, "git").arg("--git-dir").arg(repo).args(["-c", "core.hooksPath=/dev/null"]).args(args))
    };
    let tree = git(replica, &r, &["rev-parse", "main^{tree}"]);
    let own = git(replica, &r, &["commit-tree", tree.trim(), "-p", "main", "-m", "only here"]);
    git(replica, &r, &["update-ref", "refs/heads/mine", own.trim()]);
    // The leader gains 1500 branches behind the journal's back, then one pushed change.
    let base = git(&leader, &l, &["rev-parse", "main"]);
    let mut packed = String::from("# pack-refs with: peeled fully-peeled sorted \n");
    for i in 0..1500 {
        packed.push_str(&format!("{} refs/heads/b{i:05}\n", base.trim()));
    }
    std::fs::write(l.join("packed-refs"), packed).unwrap();
    git(&leader, &l, &["pack-refs", "--all"]);
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "change"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    // The replica's copy has a reference-transaction hook of its own, which logs its runs.
    let runs = lab.dir.path().join("hook-runs");
    let hook = r.join("hooks/reference-transaction");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, format!("#!/bin/sh\necho \"$1\" >> '{}'\ncat >/dev/null\n", runs.display())).unwrap();
    ok(std::process::Command::new("chmod").args(["+x", hook.to_str().unwrap()]));

    let out = ok(lab.node_cmd(replica, "git").args(["stargate", "sync", "--full", "kv.git"]));
    assert_eq!(lab.mirrored_refs(&leader), lab.mirrored_refs(replica), "{out}");
    let text = std::fs::read_to_string(r.join("packed-refs")).unwrap();
    assert!(text.contains(" refs/heads/b01499\n") && text.contains(" refs/stargate/journal\n"), "one packed-refs");
    let loose = std::fs::read_dir(r.join("refs/heads")).unwrap().count();
    assert_eq!(loose, 0, "no loose branch");
    assert!(!runs.exists(), "no hook ran: {}", std::fs::read_to_string(&runs).unwrap_or_default());
    // The commit only the replica had is kept, not destroyed.
    let kept = git(replica, &r, &["for-each-ref", "--format=%(objectname) %(refname)", "refs/stargate/local/lost/"]);
    assert!(kept.contains(own.trim()) && kept.contains("/refs/heads/mine"), "kept: {kept}\n{out}");
    assert!(!lab.mirrored_refs(replica).contains("refs/heads/mine"));
    git(replica, &r, &["fsck", "--connectivity-only", "--no-dangling"]);
}
