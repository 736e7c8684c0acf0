//! Repositories of the group (git-stargate(1): create, list): created on the leader,
//! followed by every replica, names checked.

use std::time::Duration;

use crate::support::*;

#[test]
fn a_repository_created_on_the_leader_is_created_and_mirrored_on_the_replicas() {
    let lab = Lab::up_with(2, "[stargate \"sync\"]\n\tinterval = 1s\n");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let stargate = |node: &str, args: &[&str]| run(lab.node_cmd(node, "git").arg("stargate").args(args));
    let out = stargate("b", &["create", "team/app"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("on the leader (a)"), "{}", stderr(&out));
    for bad in ["../x", "/abs", "a/b/c", "x.git.git", "-x"] {
        let out = stargate("a", &["create", "--", bad]);
        assert_eq!(out.status.code(), Some(129), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("invalid repository name"), "{bad}: {}", stderr(&out));
    }
    let out = stargate("a", &["create", "team/app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = stargate("a", &["create", "team/app.git"]);
    assert_eq!(out.status.code(), Some(1), "exists already: {}", stderr(&out));

    let client = Client::new();
    ok(client.git(".", &["init", "-q", "w"]));
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "first"]));
    ok(client.git("w", &["push", "-q", &lab.url("a", "team/app"), "HEAD:refs/heads/main"]));
    let head = ok(client.git("w", &["rev-parse", "HEAD"])).trim().to_owned();
    let on_b = lab.dir.path().join("b/repos/team/app.git");
    lab.wait_until("b to create and mirror team/app.git", Duration::from_secs(20), || {
        run(lab.node_cmd("b", "git").arg("--git-dir").arg(&on_b).args([
            "rev-parse",
            "-q",
            "--verify",
            "refs/heads/main",
        ]))
        .stdout
        .starts_with(head.as_bytes())
    });
    assert!(on_b.join("stargate/managed").is_file(), "marked as managed on the replica");
    let out = ok(lab.node_cmd("b", "git").args(["stargate", "list"]));
    assert!(out.contains("team/app.git\tseq "), "{out}");
    // And a push to the passive's copy is refused like any other.
    let out = run(client.git("w", &["push", &lab.url("b", "team/app"), "HEAD:refs/heads/other"]));
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
    assert!(lab.audit().iter().any(|e| e["event"] == "created"), "{:?}", lab.audit());
}
