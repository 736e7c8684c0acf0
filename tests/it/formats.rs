//! Repository formats Stargate cannot replicate yet (reftable ref storage, SHA-256 objects)
//! are refused with a clear message, never accepted unreplicated; the rest of the node
//! works on (stargate(7), Repository formats).

use std::time::Duration;

use crate::support::*;

#[test]
fn repositories_in_formats_stargate_cannot_replicate_refuse_writes_and_say_why() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    for node in &lab.nodes {
        let root = lab.dir.path().join(node).join("repos");
        ok(lab
            .node_cmd(node, "git")
            .args(["init", "-q", "--bare", "--ref-format=reftable"])
            .arg(root.join("table.git")));
        ok(lab
            .node_cmd(node, "git")
            .args(["init", "-q", "--bare", "--object-format=sha256"])
            .arg(root.join("sha.git")));
        for repo in ["table", "sha"] {
            ok(lab.node_cmd(node, "git").arg("--git-dir").arg(lab.repo(node, repo)).args([
                "config",
                "core.hooksPath",
                lab.dir.path().join("githooks").to_str().unwrap(),
            ]));
        }
    }
    let client = Client::new();
    for (repo, format, init) in
        [("table", "reftable ref storage", "--ref-format=reftable"), ("sha", "SHA-256", "--object-format=sha256")]
    {
        ok(client.git(".", &["init", "-q", init, repo]));
        ok(client.git(repo, &["commit", "-q", "--allow-empty", "-m", "x"]));
        let out = run(client.git(repo, &["push", &lab.url(&leader, repo), "HEAD:refs/heads/main"]));
        assert_eq!(out.status.code(), Some(1), "{repo}: {}", stderr(&out));
        assert!(stderr(&out).contains(format) && stderr(&out).contains("cannot replicate"), "{repo}: {}", stderr(&out));
        let refs = ok(lab.node_cmd(&leader, "git").arg("--git-dir").arg(lab.repo(&leader, repo)).arg("for-each-ref"));
        assert_eq!(refs, "", "{repo}: nothing was written");
    }
    // The node's other repositories work on.
    client.clone(&lab.url(&leader, "kv"), "c");
    assert!(client.kv("c", &["set", "k", "v"]).status.success());
    let status = ok(lab.node_cmd(&leader, "git").args(["stargate", "status"]));
    assert!(status.contains("table.git: not served: this repository uses reftable ref storage"), "{status}");
    assert!(status.contains("sha.git: not served: this repository uses the SHA-256 object format"), "{status}");
    lab.wait_until("the agent to report them", Duration::from_secs(10), || {
        let log = lab.agent_log(&leader);
        log.contains("table.git: this repository uses reftable")
            && log.contains("sha.git: this repository uses the SHA-256")
    });
}
