//! The push log and restores (git-stargate(1): log, restore): who force-pushed main, and
//! getting it back on every node; a restore to a point behind a journal checkpoint; a
//! restore whose objects were pruned is refused.

use std::time::Duration;

use crate::support::*;

fn stargate(lab: &Lab, node: &str, args: &[&str]) -> std::process::Output {
    run(lab.node_cmd(node, "git").arg("stargate").args(args))
}

fn log(lab: &Lab, node: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let o = stargate(lab, node, &[&["log", "kv.git", "--json"], args].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_force_push_is_in_the_log_and_restored_on_every_node() {
    // A generation of 6 entries (the default is 10,000): the restore below reaches behind
    // a checkpoint after a handful of pushes.
    let lab = Lab::up_with(2, "[stargate \"journal\"]\n\tkeep = 6\n");
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    let client = Client::new();
    let server = lab.repo(&leader, "kv");
    let work = client.home.path().join("w");
    ok(client.git(".", &["init", "-q", "-b", "main", "w"]));
    // Pushed by path: receive-pack runs here, and the hooks see who pushes, as a server's
    // ssh forced command or web server would tell them.
    let push = |who: &str, args: &[&str]| {
        let mut c = client.git("w", &[&["push", "-q"], args].concat());
        c.env("STARGATE_PUSHER", who).env("GIT_CONFIG_GLOBAL", lab.dir.path().join(&leader).join("gitconfig"));
        let o = run(c);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let commit = |text: &str| {
        std::fs::write(work.join("f"), text).unwrap();
        ok(client.git("w", &["add", "f"]));
        ok(client.git("w", &["commit", "-q", "-m", text]));
        ok(client.git("w", &["rev-parse", "HEAD"])).trim().to_owned()
    };
    let url = server.to_str().unwrap();
    let mut good = String::new();
    for i in 0..3 {
        good = commit(&format!("good {i}\n"));
        push("alice", &[url, "main"]);
    }
    lab.wait_parity(&leader, &replica, Duration::from_secs(10));
    let entries = log(&lab, &replica, &["--ref", "refs/heads/main"]);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.iter().all(|e| e["pusher"] == "alice" && e["forced"] == false), "{entries:?}");
    let before = entries.last().unwrap()["seq"].as_u64().unwrap();

    // Mallory replaces main with unrelated history, then keeps pushing past a checkpoint.
    ok(client.git("w", &["checkout", "-q", "--orphan", "other"]));
    commit("bad\n");
    push("mallory", &["--force", url, "other:main"]);
    for i in 0..8 {
        commit(&format!("more {i}\n"));
        push("mallory", &[url, "other:main"]);
    }
    lab.wait_parity(&leader, &replica, Duration::from_secs(10));
    let entries = log(&lab, &replica, &["--ref", "refs/heads/main"]);
    let forced: Vec<&serde_json::Value> = entries.iter().filter(|e| e["forced"] == true).collect();
    assert_eq!(forced.len(), 1, "{entries:?}");
    assert_eq!(forced[0]["pusher"], "mallory");
    assert_eq!(forced[0]["old"], good.as_str());
    assert!(entries.len() >= 12, "both generations are read: {}", entries.len());
    let text = String::from_utf8_lossy(&stargate(&lab, &leader, &["log", "kv.git"]).stdout).into_owned();
    assert!(text.contains("(forced) by mallory"), "{text}");
    let since = log(&lab, &leader, &["--since", "1 hour ago", "--ref", "refs/heads/main"]);
    assert_eq!(since.len(), entries.len());
    assert!(log(&lab, &leader, &["--until", "1 hour ago"]).is_empty());

    // Back to the value before the force-push, from the replica, through the leader.
    let o = stargate(&lab, &replica, &["restore", "kv.git", "--to", &before.to_string(), "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(lab.rev(&leader, "refs/heads/main").as_deref(), Some(good.as_str()), "a dry run moves nothing");
    let o = stargate(&lab, &replica, &["restore", "kv.git", "--to", &before.to_string()]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(lab.rev(&leader, "refs/heads/main").as_deref(), Some(good.as_str()));
    lab.wait_parity(&leader, &replica, Duration::from_secs(10));
    assert_eq!(lab.rev(&replica, "refs/heads/main").as_deref(), Some(good.as_str()));
    let last = log(&lab, &leader, &["--ref", "refs/heads/main"]).pop().unwrap();
    assert_eq!(
        (last["new"].as_str(), last["forced"].as_bool()),
        (Some(good.as_str()), Some(true)),
        "the restore is logged"
    );
    assert!(lab.audit().iter().any(|e| e["event"] == "restored"));

    // The bad history, which the restore replaced, survives gc on both nodes: anchored
    // for 2 x stargate.journal.keep updates (12 here).
    let bad_tip = entries.last().unwrap()["new"].as_str().unwrap().to_owned();
    let gc = |lab: &Lab| {
        for node in [&leader, &replica] {
            ok(lab.git(node, &["reflog", "expire", "--expire=now", "--all"]));
            ok(lab.git(node, &["gc", "-q", "--prune=now"]));
        }
    };
    gc(&lab);
    let bad_point = (last["seq"].as_u64().unwrap() - 1).to_string();
    for node in [&leader, &replica] {
        let o = stargate(&lab, node, &["restore", "kv.git", "--to", &bad_point, "--dry-run"]);
        assert!(o.status.success(), "{node}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(&bad_tip[..12]), "{}", String::from_utf8_lossy(&o.stdout));
    }

    // A value whose anchor is gone (as on a node that never anchored it) is pruned, and
    // a restore that needs it is refused by name.
    ok(lab.git(&replica, &["update-ref", "-d", &format!("refs/stargate/local/retained/{}", last["seq"])]));
    gc(&lab);
    let o = stargate(&lab, &replica, &["restore", "kv.git", "--to", &bad_point]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("are gone from this node"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&bad_tip), "{}", stderr(&o));
    let o = stargate(&lab, &leader, &["restore", "kv.git", "--to", &bad_point, "--dry-run"]);
    assert!(o.status.success(), "the leader still has it: {}", stderr(&o));

    // Past the journal kept: the values then are no longer known, refused.
    ok(client.git("w", &["checkout", "-q", "main"]));
    ok(client.git("w", &["reset", "-q", "--hard", &good]));
    for i in 0..14 {
        commit(&format!("later {i}\n"));
        push("alice", &[url, "main"]);
    }
    lab.wait_parity(&leader, &replica, Duration::from_secs(10));
    gc(&lab);
    let o = stargate(&lab, &leader, &["restore", "kv.git", "--to", &bad_point]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no longer known"), "{}", stderr(&o));
}
