//! `git kv` against a real leader: round trips, deletes, listing, bad input, namespaces,
//! and concurrent writers from two clones.

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

/// The measurement: 8 clients writing unique keys into one namespace, 10 each.
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
