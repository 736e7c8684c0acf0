//! `git kv` against a real leader: round trips, deletes, listing, bad input, namespaces,
//! concurrent writers from two clones and eight through `stargate::` (the leader applying
//! each change in turn, git-kv(1) WRITES), `cas` under contention, the passive node's
//! refusal, and the older way for a remote that does not apply changes.

use std::time::Duration;

use crate::support::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_node() -> (Lab, Client) {
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    (lab, client)
}

#[test]
fn set_get_del_list_round_trip() {
    let (lab, client) = one_node();
    for (k, v) in [("color", "blue"), ("app/db/password", "s3cr=t"), ("app/db/user", "root"), ("ünï", "ok")] {
        let out = client.kv("c", &["set", k, v]);
        assert!(out.status.success(), "set {k}: {}", stderr(&out));
    }
    assert_eq!(stdout(&client.kv("c", &["get", "app/db/password"])), "s3cr=t\n");
    assert!(client.kv("c", &["set", "color", "red"]).status.success());
    assert_eq!(stdout(&client.kv("c", &["get", "color"])), "red\n");
    assert_eq!(stdout(&client.kv("c", &["list"])), "app/db/password\napp/db/user\ncolor\nünï\n");
    assert_eq!(stdout(&client.kv("c", &["list", "app/"])), "app/db/password\napp/db/user\n");

    assert!(client.kv("c", &["del", "app/db/user"]).status.success());
    let out = client.kv("c", &["get", "app/db/user"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("app/db/user: not found"), "{}", stderr(&out));
    assert_eq!(client.kv("c", &["del", "app/db/user"]).status.code(), Some(1));

    // One commit per set/del, on the server, readable by another clone.
    let log = ok(lab.git("a", &["rev-list", "--count", "refs/kv/default"]));
    assert_eq!(log.trim(), "6");
    let other = Client::new();
    other.clone(&lab.url("a", "kv"), "o");
    assert_eq!(stdout(&other.kv("o", &["get", "color"])), "red\n");
    assert_eq!(stdout(&other.kv("o", &["get", "--from-leader", "color"])), "red\n");
}

#[test]
fn namespaces_are_separate_refs() {
    let (_lab, client) = one_node();
    assert!(client.kv("c", &["--namespace", "prod", "set", "k", "p"]).status.success());
    assert!(client.kv("c", &["-n", "dev", "set", "k", "d"]).status.success());
    assert_eq!(stdout(&client.kv("c", &["-n", "prod", "get", "k"])), "p\n");
    assert_eq!(stdout(&client.kv("c", &["get", "k", "--namespace", "dev"])), "d\n");
    assert_eq!(client.kv("c", &["get", "k"]).status.code(), Some(1), "default namespace is empty");
    ok(client.git("c", &["config", "kv.namespace", "prod"]));
    assert_eq!(stdout(&client.kv("c", &["get", "k"])), "p\n");
}

#[test]
fn invalid_input_is_refused_clearly_and_writes_nothing() {
    let (lab, client) = one_node();
    assert!(client.kv("c", &["set", "a/b", "1"]).status.success());
    for key in ["", "/abs", "a//b", "trailing/", ".hidden", "x/../y", "with space", "tab\tkey"] {
        let out = client.kv("c", &["set", key, "v"]);
        assert_eq!(out.status.code(), Some(129), "{key:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("invalid key"), "{key:?}: {}", stderr(&out));
    }
    for ns in ["a/b", "..", "-x", "x.lock", ""] {
        let out = client.kv("c", &[&format!("--namespace={ns}"), "set", "k", "v"]);
        assert_eq!(out.status.code(), Some(129), "{ns:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("invalid namespace"), "{ns:?}: {}", stderr(&out));
    }
    // A key cannot be both a value and a prefix of other keys.
    let out = client.kv("c", &["set", "a", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("conflicts"), "{}", stderr(&out));
    let out = client.kv("c", &["set", "a/b/c", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let out = client.kv("c", &["frob"]);
    assert_eq!(out.status.code(), Some(129));
    let count = ok(lab.git("a", &["rev-list", "--count", "refs/kv/default"]));
    assert_eq!(count.trim(), "1", "refused input wrote nothing");
}

#[test]
fn concurrent_writers_from_two_clones_lose_nothing() {
    let (_lab, client) = one_node();
    let other = Client::new();
    let url = client
        .git("c", &["remote", "get-url", "origin"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap()
        .to_string();
    other.clone(&url, "o");
    let writes = 15;
    std::thread::scope(|s| {
        for (who, dir) in [(&client, "c"), (&other, "o")] {
            s.spawn(move || {
                for i in 0..writes {
                    let out = who.kv(dir, &["set", &format!("{dir}/{i}"), &i.to_string()]);
                    assert!(out.status.success(), "{dir}/{i}: {}", stderr(&out));
                }
            });
        }
    });
    let keys = stdout(&client.kv("c", &["list"]));
    assert_eq!(keys.lines().count(), 2 * writes, "{keys}");
    assert_eq!(stdout(&other.kv("o", &["get", "c/14"])), "14\n");
}

/// The issue's measurement: 8 clients writing unique keys into one namespace, 10 each.
/// Every set succeeds (a lost race is retried after a jittered backoff, until kv.timeout),
/// and none is lost or duplicated: 80 keys, 80 commits.
#[test]
fn eight_concurrent_writers_on_one_namespace_never_give_up_and_lose_or_duplicate_nothing() {
    let (lab, first) = one_node();
    let clients: Vec<Client> = (0..8)
        .map(|_| {
            let c = Client::new();
            c.clone(&lab.url("a", "kv"), "c");
            c
        })
        .collect();
    std::thread::scope(|s| {
        for (w, client) in clients.iter().enumerate() {
            s.spawn(move || {
                for i in 0..10 {
                    let out = client.kv("c", &["set", &format!("w{w}/k{i}"), &format!("{w}.{i}")]);
                    assert!(out.status.success(), "w{w}/k{i}: {}", stderr(&out));
                }
            });
        }
    });
    let keys = stdout(&first.kv("c", &["list"]));
    assert_eq!(keys.lines().count(), 80, "{keys}");
    assert_eq!(stdout(&first.kv("c", &["get", "w7/k9"])), "7.9\n");
    let commits = ok(lab.git("a", &["rev-list", "--count", "refs/kv/default"]));
    assert_eq!(commits.trim(), "80", "one commit per set, none twice");
}

/// Several pairs, or `--stdin`, are one commit and one push; a writer whose clone is
/// current pushes without fetching, and one whose clone is stale still wins its write.
#[test]
fn a_batch_is_one_commit_and_a_stale_clone_still_writes() {
    let (lab, client) = one_node();
    let out = client.kv("c", &["set", "a", "1", "b/c", "two words"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = client.git("c", &["kv", "set", "--stdin"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"x 10\ny/z the rest of the line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ok(lab.git("a", &["rev-list", "--count", "refs/kv/default"])).trim(), "2");
    assert_eq!(stdout(&client.kv("c", &["get", "y/z"])), "the rest of the line\n");
    assert_eq!(stdout(&client.kv("c", &["get", "b/c"])), "two words\n");
    // Another clone writes; this one's tip is now stale, and its next set still lands.
    let other = Client::new();
    other.clone(&lab.url("a", "kv"), "o");
    assert!(other.kv("o", &["set", "from-other", "1"]).status.success());
    let out = client.kv("c", &["set", "after", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = stdout(&other.kv("o", &["list"]));
    assert!(keys.contains("after") && keys.contains("from-other") && keys.contains("x"), "{keys}");
    // A pair without its value, or a key twice, is a usage error and writes nothing.
    for bad in [&["set", "lonely"][..], &["set", "k", "1", "k", "2"]] {
        let out = client.kv("c", bad);
        assert_eq!(out.status.code(), Some(129), "{bad:?}: {}", stderr(&out));
    }
    assert_eq!(ok(lab.git("a", &["rev-list", "--count", "refs/kv/default"])).trim(), "4");
}

fn two_nodes() -> (Lab, String) {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    (lab, leader)
}

/// Eight writers on one namespace through `stargate::`, ten sets each: every set is one
/// push that the leader applies in its turn. None gives up, none is lost or written twice,
/// and no writer ever fetched (its own copy of the namespace never moved: no lost race,
/// no retry), while the replica follows.
#[test]
fn eight_writers_through_stargate_wait_their_turn_and_lose_nothing() {
    let (lab, leader) = two_nodes();
    let clients: Vec<Client> = (0..8).map(|_| stargate_client(&lab)).collect();
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for (w, client) in clients.iter().enumerate() {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..10 {
                    let out = kv(client, &["set", &format!("w{w}/k{i}"), &format!("{w}.{i}")]);
                    assert!(out.status.success(), "w{w}/k{i}: {}", stderr(&out));
                }
            });
        }
    });
    for (w, client) in clients.iter().enumerate() {
        let own = run(client.git("c", &["rev-parse", "-q", "--verify", "refs/kv/default"]));
        assert!(!own.status.success(), "writer {w} fetched or moved its copy: {}", stdout(&own));
    }
    let keys = stdout(&kv(&clients[0], &["list", "--from-leader"]));
    assert_eq!(keys.lines().count(), 80, "{keys}");
    for w in 0..8 {
        for i in 0..10 {
            assert!(keys.lines().any(|k| k == format!("w{w}/k{i}")), "w{w}/k{i} lost: {keys}");
        }
    }
    assert_eq!(stdout(&kv(&clients[3], &["get", "--from-leader", "w7/k9"])), "7.9\n");
    let commits = ok(lab.git(&leader, &["rev-list", "--count", "refs/kv/default"]));
    assert_eq!(commits.trim(), "80", "one commit per set, none twice");
    let stray = ok(lab.git(&leader, &["for-each-ref", "refs/for/"]));
    assert!(stray.is_empty(), "changes are applied, never stored: {stray}");
    // Each applied change is one journaled write: the replica has the same tip.
    let tip = ok(lab.git(&leader, &["rev-parse", "refs/kv/default"]));
    let replica = lab.nodes.iter().find(|n| **n != leader).unwrap();
    let start = std::time::Instant::now();
    while run(lab.git(replica, &["rev-parse", "refs/kv/default"])).stdout != tip.as_bytes() {
        assert!(start.elapsed() < Duration::from_secs(20), "the replica never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Keys another writer changed since the clone last looked stay as that writer left them:
/// a set names its keys, and only those change.
#[test]
fn a_set_from_a_stale_clone_changes_only_the_keys_it_names() {
    let (lab, leader) = two_nodes();
    let (a, b) = (stargate_client(&lab), stargate_client(&lab));
    assert!(kv(&a, &["set", "x", "1", "y", "1"]).status.success());
    assert!(kv(&b, &["get", "x"]).status.success(), "b has seen x = 1");
    assert!(kv(&a, &["set", "x", "2"]).status.success());
    // b's copy still says x = 1; its set of y must leave x = 2.
    let out = kv(&b, &["set", "y", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ok(lab.git(&leader, &["show", "refs/kv/default:x"])), "2");
    assert_eq!(ok(lab.git(&leader, &["show", "refs/kv/default:y"])), "3");
    // A delete judged on the leader's tip: x is there, though b's copy is stale.
    assert!(kv(&a, &["del", "y"]).status.success());
    let out = kv(&b, &["del", "y"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// `git kv cas` under contention: ten rounds, each with all eight writers trying to move
/// the same key from the same value at once. Exactly one wins each round; the seven others
/// are refused with exit 1 and print the value the winner wrote.
#[test]
fn cas_under_eight_writers_lets_exactly_one_win_each_round() {
    let (lab, leader) = two_nodes();
    let clients: Vec<Client> = (0..8).map(|_| stargate_client(&lab)).collect();
    assert!(kv(&clients[0], &["set", "counter", "0"]).status.success());
    for round in 0..10 {
        let barrier = std::sync::Barrier::new(8);
        let outs: Vec<std::process::Output> = std::thread::scope(|s| {
            let handles: Vec<_> = (clients.iter())
                .map(|client| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        kv(client, &["cas", "counter", &round.to_string(), &(round + 1).to_string()])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<usize> = (0..8).filter(|&w| outs[w].status.success()).collect();
        assert_eq!(won.len(), 1, "round {round}: winners {won:?}");
        for (w, out) in outs.iter().enumerate().filter(|(w, _)| !won.contains(w)) {
            assert_eq!(out.status.code(), Some(1), "round {round}, writer {w}: {}", stderr(out));
            assert_eq!(stdout(out), format!("{}\n", round + 1), "round {round}, writer {w}: {}", stderr(out));
        }
        assert_eq!(ok(lab.git(&leader, &["show", "refs/kv/default:counter"])), (round + 1).to_string());
    }
    let commits = ok(lab.git(&leader, &["rev-list", "--count", "refs/kv/default"]));
    assert_eq!(commits.trim(), "11", "the set and one cas a round");
    // A cas on a key with no value is refused too.
    let out = kv(&clients[1], &["cas", "nothing", "a", "b"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("has no value"), "{}", stderr(&out));
}

/// The leader's `proc-receive` itself refuses on a node that does not lead, whatever let the
/// push through to it: run on the passive node as git would run it, it answers `ng` with
/// "not leader", and the namespace does not move.
#[test]
fn a_change_given_to_a_passive_nodes_proc_receive_is_refused_as_not_leader() {
    let (lab, leader) = two_nodes();
    let client = stargate_client(&lab);
    assert!(kv(&client, &["set", "k", "v"]).status.success());
    let passive = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    let start = std::time::Instant::now();
    let tip = ok(lab.git(&leader, &["rev-parse", "refs/kv/default"]));
    while run(lab.git(&passive, &["rev-parse", "refs/kv/default"])).stdout != tip.as_bytes() {
        assert!(start.elapsed() < Duration::from_secs(20), "the replica never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pkt = |s: &str| format!("{:04x}{s}", s.len() + 4);
    let input = format!(
        "{}0000{}0000",
        pkt("version=1\0push-options\n"),
        pkt(&format!("{} {} refs/for/kv/default\n", "0".repeat(40), tip.trim()))
    );
    let mut hook = lab.node_cmd(&passive, HOOK);
    hook.arg("proc-receive").env("GIT_DIR", lab.repo(&passive, "kv"));
    hook.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = hook.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = stdout(&out);
    assert!(said.contains("ng refs/for/kv/default not leader"), "{said}\n{}", stderr(&out));
    assert!(stderr(&out).contains("stargate: not leader"), "{}", stderr(&out));
    assert_eq!(ok(lab.git(&passive, &["rev-parse", "refs/kv/default"])), tip);
    // And a client sent there directly is refused as not leader (exit 9), nothing written.
    let direct = Client::new();
    direct.clone(&lab.url(&passive, "kv"), "c");
    let out = direct.kv("c", &["set", "k", "w"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert_eq!(ok(lab.git(&leader, &["show", "refs/kv/default:k"])), "v");
}

/// A remote that does not apply changes (plain git, no `receive.procReceiveRefs`) stores
/// the pushed change as a ref: `git kv` takes it back and writes the older way, with a
/// lease on the namespace; `cas` too.
#[test]
fn a_remote_that_does_not_apply_changes_gets_the_older_way() {
    let client = Client::new();
    let server = client.home.path().join("server.git");
    ok(client.git(".", &["init", "-q", "--bare", server.to_str().unwrap()]));
    client.clone(server.to_str().unwrap(), "c");
    let out = client.kv("c", &["set", "a", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = client.kv("c", &["cas", "a", "1", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = client.kv("c", &["cas", "a", "1", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2\n");
    let git = |args: &[&str]| ok(client.git(".", &[&["--git-dir", server.to_str().unwrap()], args].concat()));
    assert_eq!(git(&["show", "refs/kv/default:a"]), "2");
    assert_eq!(git(&["for-each-ref", "refs/for/"]), "", "the stored change was taken back");
    assert_eq!(git(&["rev-list", "--count", "refs/kv/default"]).trim(), "2");
}

/// A managed repository whose git does not hand `refs/for/kv/` to `proc-receive` (an
/// operator removed it from the repository's config, and the node's sets none) refuses the
/// change (it would be stored and journaled as a ref), and `git kv` writes the older way.
#[test]
fn a_repository_without_proc_receive_refs_refuses_the_change_and_kv_writes_with_a_lease() {
    let (lab, client) = one_node();
    assert_eq!(
        ok(lab.git("a", &["config", "--local", "--get-all", "receive.procReceiveRefs"])),
        "refs/for/kv/\nrefs/stargate/\n"
    );
    ok(lab.git("a", &["config", "--local", "--unset-all", "receive.procReceiveRefs"]));
    let text = std::fs::read_to_string(lab.dir.path().join("a/gitconfig")).unwrap();
    assert!(!text.contains("procReceiveRefs"), "the node sets none: {text}");
    // The agent publishes what the node's git config says, for the hooks.
    let start = std::time::Instant::now();
    let published = || {
        let text = std::fs::read_to_string(lab.dir.path().join("a/repos/.stargate/node.json")).unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        state["kv_changes"] == false && state["role"] == "leader"
    };
    while !published() {
        assert!(start.elapsed() < Duration::from_secs(20), "the agent never published it");
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.wait_leader(None, Duration::from_secs(10));
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "set x"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/for/kv/default"]));
    assert!(!out.status.success(), "stored as a ref: {}", stderr(&out));
    assert!(stderr(&out).contains("receive.procReceiveRefs"), "{}", stderr(&out));
    for i in 0..3 {
        let out = client.kv("c", &["set", &format!("k{i}"), "v"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(stdout(&client.kv("c", &["list"])), "k0\nk1\nk2\n");
    assert_eq!(ok(lab.git("a", &["for-each-ref", "refs/for/"])), "");
    assert_eq!(ok(lab.git("a", &["rev-list", "--count", "refs/kv/default"])).trim(), "3");
}

/// In a managed repository, refs of a push for `proc-receive` that are not `refs/for/kv/`
/// still reach the repository's own `proc-receive` hook, whose report is git's answer.
#[test]
fn other_proc_receive_refs_go_to_the_repositorys_own_hook() {
    let (lab, client) = one_node();
    let config = lab.dir.path().join("a/gitconfig");
    let text = std::fs::read_to_string(&config).unwrap() + "[receive]\n\tprocReceiveRefs = refs/for/review/\n";
    std::fs::write(&config, text).unwrap();
    let hook = lab.repo("a", "kv").join("hooks/proc-receive");
    // Reads the version and the commands, accepts each by writing refs/heads/reviewed.
    let script = r#"#!/usr/bin/env python3
import subprocess, sys
def section():
    lines = []
    while True:
        n = int(sys.stdin.buffer.read(4), 16)
        if n == 0:
            return lines
        lines.append(sys.stdin.buffer.read(n - 4).decode().rstrip("\n"))
def pkt(s):
    b = (s + "\n").encode()
    sys.stdout.buffer.write(b"%04x" % (len(b) + 4) + b)
section()
pkt("version=1")
sys.stdout.buffer.write(b"0000"); sys.stdout.flush()
for c in section():
    old, new, ref = c.split()
    subprocess.run(["git", "update-ref", "refs/heads/reviewed", new], check=True)
    pkt("ok " + ref); pkt("option refname refs/heads/reviewed")
sys.stdout.buffer.write(b"0000"); sys.stdout.flush()
"#;
    std::fs::write(&hook, script).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "review me"]));
    let out = run(client.git("c", &["push", "--porcelain", "origin", "HEAD:refs/for/review/main"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(":refs/heads/reviewed"), "{}", stdout(&out));
    let head = ok(client.git("c", &["rev-parse", "HEAD"]));
    assert_eq!(ok(lab.git("a", &["rev-parse", "refs/heads/reviewed"])), head);
    // And a git kv change in the same repository is still Stargate's.
    assert!(client.kv("c", &["set", "k", "v"]).status.success());
    assert_eq!(ok(lab.git("a", &["show", "refs/kv/default:k"])), "v");
}
