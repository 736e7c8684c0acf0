//! Writes a failover left on the old leader, found with `git stargate lost` and brought
//! back with `git stargate recover` (git-stargate(1)): a branch moved on (fast-forward), a new
//! one (created), a `git kv`
//! namespace whose keys the new leader did not touch (merged), one whose key it changed
//! (refused, naming the key); nothing kept is deleted, and each recovery is a journaled
//! write that the replicas follow.

use std::time::Duration;

use crate::support::*;

fn stargate(lab: &Lab, node: &str, args: &[&str]) -> std::process::Output {
    run(lab.node_cmd(node, "git").arg("stargate").args(args))
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kept_writes_are_listed_and_recovered_through_the_leader() {
    let lab = Lab::up(2);
    let first = lab.wait_leader(None, Duration::from_secs(10));
    let second = lab.nodes.iter().find(|n| **n != first).unwrap().clone();
    let client = stargate_client(&lab);
    let kv = |args: &[&str]| {
        let o = run(with_helper(client.git("c", &[&["kv"], args].concat())));
        assert!(o.status.success(), "kv {args:?}: {}", stderr(&o));
        out(&o)
    };
    kv(&["set", "k0", "v0"]);
    kv(&["-n", "conf", "set", "c", "base"]);
    let commit = |text: &str| {
        std::fs::write(client.home.path().join("c/f"), text).unwrap();
        ok(client.git("c", &["add", "f"]));
        ok(client.git("c", &["commit", "-q", "-m", text]));
        ok(client.git("c", &["rev-parse", "HEAD"])).trim().to_owned()
    };
    commit("topic\n");
    ok(with_helper(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/topic"])));
    lab.wait_parity(&first, &second, Duration::from_secs(10));

    // The second node stops mirroring; the first takes writes it never sees, then goes.
    lab.kill(&second, "agent", "KILL");
    kv(&["set", "k", "unreplicated"]);
    kv(&["-n", "conf", "set", "c", "mine"]);
    let topic = commit("topic, further\n");
    ok(with_helper(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/topic"])));
    let feature = commit("feature\n");
    ok(with_helper(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/feature"])));
    lab.kill(&first, "agent", "KILL");
    lab.kill(&first, "daemon", "KILL");
    lab.start(&second, "agent");
    assert_eq!(lab.wait_leader(Some(&first), Duration::from_secs(15)), second);
    lab.start(&first, "daemon");
    lab.start(&first, "agent");
    lab.wait_until("the old leader to keep what the new one lacks", Duration::from_secs(20), || {
        ok(lab.git(&first, &["for-each-ref", "refs/stargate/local/lost/"])).lines().count() == 4
    });
    // The new leader goes on: a key of its own, and the conflicting key changed.
    kv(&["set", "k2", "v2"]);
    kv(&["-n", "conf", "set", "c", "theirs"]);

    let ledger = |node: &str| -> serde_json::Value {
        let o = stargate(&lab, node, &["lost", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&out(&o)).unwrap()
    };
    let state = |v: &serde_json::Value, r: &str| {
        let kept = v["kept"].as_array().unwrap();
        let k = kept.iter().find(|k| k["ref"] == r).unwrap_or_else(|| panic!("{r} not listed: {v}"));
        assert_eq!(k["node"], first.as_str(), "{v}");
        assert_eq!(k["repository"], "kv.git", "{v}");
        k["state"].as_str().unwrap_or("").to_owned()
    };
    // Asked on either node, the same ledger: kept on the first, judged against the leader.
    for node in [&second, &first] {
        let v = ledger(node);
        assert_eq!(v["leader"], second.as_str());
        assert_eq!(state(&v, "refs/heads/feature"), "missing", "{v}");
        assert_eq!(state(&v, "refs/heads/topic"), "fast-forward", "{v}");
        assert_eq!(state(&v, "refs/kv/default"), "diverged", "{v}");
        assert_eq!(state(&v, "refs/kv/conf"), "diverged", "{v}");
    }
    let text = out(&stargate(&lab, &second, &["lost", "kv.git"]));
    assert!(text.contains(&format!("kv.git refs/heads/feature lost at epoch 2 on {first}")), "{text}");

    // A dry run changes nothing.
    let before = lab.mirrored_refs(&second);
    let o = stargate(&lab, &second, &["recover", "kv.git", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "the conflicting key is refused: {}{}", out(&o), stderr(&o));
    assert!(out(&o).contains("would recover it on the leader (create)"), "{}", out(&o));
    assert_eq!(lab.mirrored_refs(&second), before);

    // The branch is created, the keys merged (from the other node: recovery goes through
    // the leader wherever it runs).
    let o = stargate(&lab, &first, &["recover", "kv.git", "refs/heads/feature"]);
    assert!(o.status.success(), "{}{}", out(&o), stderr(&o));
    assert_eq!(lab.rev(&second, "refs/heads/feature").as_deref(), Some(feature.as_str()));
    let o = stargate(&lab, &second, &["recover", "kv.git", "--epoch", "2", "refs/heads/topic"]);
    assert!(o.status.success(), "{}{}", out(&o), stderr(&o));
    assert!(out(&o).contains("recovered (fast-forward)"), "{}", out(&o));
    assert_eq!(lab.rev(&second, "refs/heads/topic").as_deref(), Some(topic.as_str()));
    let o = stargate(&lab, &second, &["recover", "kv.git", "refs/kv/default"]);
    assert!(o.status.success(), "{}{}", out(&o), stderr(&o));
    assert_eq!(kv(&["get", "--from-leader", "k"]), "unreplicated\n");
    assert_eq!(kv(&["get", "--from-leader", "k2"]), "v2\n");
    assert_eq!(kv(&["get", "--from-leader", "k0"]), "v0\n");
    // The key both changed: refused by name, nothing moved.
    let conf = lab.rev(&second, "refs/kv/conf");
    let o = stargate(&lab, &second, &["recover", "kv.git", "refs/kv/conf"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), stderr(&o));
    assert!(stderr(&o).contains("changed these keys since, differently: c"), "{}", stderr(&o));
    assert_eq!(lab.rev(&second, "refs/kv/conf"), conf);
    assert_eq!(kv(&["-n", "conf", "get", "--from-leader", "c"]), "theirs\n");

    // Recovered, not deleted; journaled and mirrored; audited.
    let v = ledger(&second);
    assert_eq!(state(&v, "refs/heads/feature"), "recovered");
    assert_eq!(state(&v, "refs/heads/topic"), "recovered");
    assert_eq!(state(&v, "refs/kv/default"), "recovered");
    assert_eq!(state(&v, "refs/kv/conf"), "diverged");
    assert_eq!(ok(lab.git(&first, &["for-each-ref", "refs/stargate/local/lost/"])).lines().count(), 4);
    lab.wait_parity(&second, &first, Duration::from_secs(10));
    assert!(lab.audit().iter().any(|e| e["event"] == "recovered"), "{:?}", lab.audit());
}
