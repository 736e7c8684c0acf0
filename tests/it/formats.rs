//! Repository formats (stargate(7), Repository formats): reftable ref storage is served
//! like the files backend, on every node or only some; SHA-256 object names too, on every
//! node alike. What cannot be served (reftable in quorum mode; copies whose object formats
//! differ) is refused with the reason, never accepted unreplicated.
//!
//! Stargate's own formats (docs/ARCHITECTURE.md, Formats and versions): a leader record or
//! a journal entry in a format newer than this build reads is refused, named, and fails
//! closed: no write accepted on the record, no sync applied from the entry.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

const REFTABLE: &str = "[init]\n\tdefaultRefFormat = reftable\n";

fn ref_format(lab: &Lab, node: &str, repo: &str) -> String {
    ok(lab.git(node, &["--git-dir", lab.repo(node, repo).to_str().unwrap(), "rev-parse", "--show-ref-format"]))
        .trim()
        .to_owned()
}

fn journal_text(lab: &Lab, node: &str) -> String {
    ok(lab.git(node, &["log", "--format=%B", "refs/stargate/journal"]))
}

/// Both nodes' repositories in reftable: writes are journaled, mirrored incrementally and
/// survive a failover, and a former leader's unreplicated commit is kept, as on files.
#[test]
fn reftable_repositories_are_journaled_mirrored_and_fail_over() {
    let lab = Lab::up_with(2, &format!("{REFTABLE}[stargate \"sync\"]\n\tinterval = 1s\n"));
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    for node in ["a", "b"] {
        assert_eq!(ref_format(&lab, node, "kv"), "reftable");
    }
    // The client's clone in reftable too: `git kv` reads and moves its refs through git.
    let client = Client::new();
    ok(client.git(".", &["config", "--global", "init.defaultRefFormat", "reftable"]));
    client.clone(&lab.url("a", "kv"), "c");
    assert_eq!(ok(client.git("c", &["rev-parse", "--show-ref-format"])).trim(), "reftable");
    for i in 0..5 {
        assert!(client.kv("c", &["set", "k", &format!("v{i}")]).status.success());
    }
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "x"]));
    ok(client.git("c", &["push", "-q", &lab.url("a", "kv"), "HEAD:refs/heads/main"]));
    lab.wait_parity("a", "b", Duration::from_secs(10));
    let journal = journal_text(&lab, "a");
    assert!(journal.contains(" refs/kv/default\n") && journal.contains(" refs/heads/main\n"), "{journal}");
    assert_eq!(journal_text(&lab, "b"), journal, "the replica holds the leader's journal");
    assert!(!lab.repo("a", "kv").join("stargate/journal.pending").exists(), "every entry published");
    let fulls = lab.agent_log("b").matches("full mirror").count();
    assert!(fulls <= 1, "the journal drives the syncs, not full mirrors{}", lab.logs());
    let fsck = run(lab.git("b", &["--git-dir", lab.repo("b", "kv").to_str().unwrap(), "fsck", "--no-progress"]));
    assert!(fsck.status.success(), "{}", stderr(&fsck));

    // a takes a write b never sees; b leads; a returns as its replica.
    let divergent = lab.diverge_and_fail_over(&client);
    lab.start("a", "daemon");
    let epoch = lab.record()["epoch"].as_u64().unwrap();
    let client2 = Client::new();
    client2.clone(&lab.url("b", "kv"), "c");
    assert!(client2.kv("c", &["set", "k", "new-leader"]).status.success(), "{}", lab.logs());
    lab.start("a", "agent");
    lab.wait_parity("b", "a", Duration::from_secs(15));
    let kept = format!("refs/stargate/local/lost/{epoch}/refs/kv/default");
    assert_eq!(lab.rev("a", &kept), Some(divergent), "{}", lab.logs());
    ok(client.git("c", &["remote", "set-url", "origin", &lab.url("b", "kv")]));
    assert!(client.kv("c", &["set", "k2", "v"]).status.success(), "the reftable clone writes on");
    assert_eq!(String::from_utf8_lossy(&client.kv("c", &["get", "k"]).stdout).trim(), "new-leader");
    assert_eq!(ref_format(&lab, "a", "kv"), "reftable", "mirroring kept the storage");
}

/// The bounded journal on reftable: checkpoints published with the previous generation's
/// ref, replicas following across them, a replica behind both mirroring in full.
#[test]
fn the_journal_keeps_two_generations_on_reftable_too() {
    crate::replication::journal_generations(REFTABLE);
}

/// Storage is each node's own business: a repository in reftable on one node and files on
/// the other replicates both ways, and one node serves both kinds side by side.
#[test]
fn a_node_with_both_storages_and_a_cluster_with_mixed_ones_replicate() {
    let lab = Lab::up_with_repos(2, "[stargate \"sync\"]\n\tinterval = 1s\n", "kv table");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    // Before any write: a's `table` and b's `kv` move to reftable.
    for (node, repo) in [("a", "table"), ("b", "kv")] {
        let dir = lab.repo(node, repo);
        ok(lab.git(node, &["--git-dir", dir.to_str().unwrap(), "refs", "migrate", "--ref-format=reftable"]));
        assert_eq!(ref_format(&lab, node, repo), "reftable");
    }
    assert_eq!(ref_format(&lab, "a", "kv"), "files");
    let client = Client::new();
    for repo in ["kv", "table"] {
        ok(client.git(".", &["init", "-q", repo]));
        for i in 0..3 {
            ok(client.git(repo, &["commit", "-q", "--allow-empty", "-m", &format!("{i}")]));
            ok(client.git(repo, &["push", "-q", &lab.url("a", repo), "HEAD:refs/heads/main"]));
        }
        ok(client.git(repo, &["push", "-q", &lab.url("a", repo), "HEAD:refs/tags/t"]));
        ok(client.git(repo, &["push", "-q", &lab.url("a", repo), ":refs/tags/t"]));
    }
    let same = |repo: &str| {
        let refs = |node: &str| {
            let dir = lab.repo(node, repo);
            ok(lab
                .git(node, &["--git-dir", dir.to_str().unwrap(), "for-each-ref", "--format=%(objectname) %(refname)"]))
        };
        let a = refs("a");
        a.contains("refs/heads/main") && a.contains("refs/stargate/journal") && a == refs("b")
    };
    lab.wait_until("both repositories mirrored", Duration::from_secs(15), || same("kv") && same("table"));
    for repo in ["kv", "table"] {
        let dir = lab.repo("b", repo);
        let tags = ok(lab.git("b", &["--git-dir", dir.to_str().unwrap(), "for-each-ref", "refs/tags"]));
        assert_eq!(tags, "", "{repo}: the deletion was mirrored");
    }
    assert_eq!(ref_format(&lab, "b", "kv"), "reftable");
    assert_eq!(ref_format(&lab, "b", "table"), "files");
    let verify = |node: &str| run(lab.node_cmd(node, "git").args(["stargate", "verify", "--wait", "2s"]));
    let out = verify("b");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("kv.git b: in-sync") && text.contains("table.git b: in-sync"),
        "{text}"
    );
    // A ref written behind Stargate's back on the reftable side is found, and repaired.
    let dir = lab.repo("a", "table");
    let head = ok(lab.git("a", &["--git-dir", dir.to_str().unwrap(), "rev-parse", "main"]));
    let mut sneak = lab.node_cmd("a", "git");
    sneak.arg("--git-dir").arg(&dir).args([
        "-c",
        "core.hooksPath=/dev/null",
        "update-ref",
        "refs/heads/sneaky",
        head.trim(),
    ]);
    ok(&mut sneak);
    let out = verify("a");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("differs: refs/heads/sneaky"));
    ok(lab.node_cmd("b", "git").args(["stargate", "sync", "--full", "table.git"]));
    assert!(verify("a").status.success());
}

/// SHA-256 repositories: journaled, mirrored over a protocol v2 session (which names the
/// object format), `git kv` in a SHA-256 clone, and a
/// repository the leader creates made alike on the replica, whatever its default.
#[test]
fn sha256_repositories_are_journaled_mirrored_and_created_alike() {
    let lab = Lab::up_with(
        2,
        &format!("[init]\n\tdefaultObjectFormat = sha256\n{REFTABLE}[stargate \"sync\"]\n\tinterval = 1s\n"),
    );
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let format = |node: &str, repo: &str| {
        let dir = lab.repo(node, repo);
        ok(lab.git(node, &["--git-dir", dir.to_str().unwrap(), "rev-parse", "--show-object-format"])).trim().to_owned()
    };
    assert_eq!(format("a", "kv"), "sha256");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    assert_eq!(ok(client.git("c", &["rev-parse", "--show-object-format"])).trim(), "sha256");
    for i in 0..3 {
        assert!(client.kv("c", &["set", "k", &format!("v{i}")]).status.success(), "{}", lab.logs());
    }
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "x"]));
    ok(client.git("c", &["push", "-q", &lab.url("a", "kv"), "HEAD:refs/heads/main"]));
    lab.wait_parity("a", "b", Duration::from_secs(10));
    let head = lab.rev("b", "refs/heads/main").unwrap();
    assert_eq!(head.len(), 64, "{head}");
    assert!(journal_text(&lab, "b").contains(&format!(" {head} refs/heads/main\n")), "{}", journal_text(&lab, "b"));
    assert!(lab.agent_log("b").matches("full mirror").count() <= 1, "{}", lab.logs());
    assert_eq!(String::from_utf8_lossy(&client.kv("c", &["get", "k"]).stdout).trim(), "v2");
    let fsck = run(lab.git("b", &["fsck", "--no-progress"]));
    assert!(fsck.status.success(), "{}", stderr(&fsck));

    // A repository the leader gains is created on the replica in the leader's format, even
    // where the replica's own default says otherwise.
    ok(lab.git("b", &["config", "--global", "init.defaultObjectFormat", "sha1"]));
    lab.init_managed("a", "new", &["--object-format=sha256"]);
    lab.wait_until("the new repository on the replica", Duration::from_secs(20), || {
        lab.agent_log("b").contains("new.git: created")
    });
    assert_eq!(format("b", "new"), "sha256");
    ok(client.git(".", &["clone", "-q", &lab.url("a", "new"), "n"]));
    ok(client.git("n", &["commit", "-q", "--allow-empty", "-m", "first"]));
    ok(client.git("n", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let rev = |node: &str| {
        let dir = lab.repo(node, "new");
        let out = run(lab.git(node, &["--git-dir", dir.to_str().unwrap(), "rev-parse", "-q", "--verify", "main"]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    lab.wait_until("the write mirrored", Duration::from_secs(10), || !rev("a").is_empty() && rev("a") == rev("b"));
}

/// Quorum mode stages and acknowledges SHA-256 entries as SHA-1 ones.
#[test]
fn sha256_writes_in_quorum_mode_are_staged_on_a_majority() {
    let lab = Lab::up_with(
        2,
        "[init]\n\tdefaultObjectFormat = sha256\n[stargate \"replication\"]\n\tmode = quorum\n[stargate \"quorum\"]\n\ttimeout = 1s\n",
    );
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    // Two of two: acknowledged only once b staged it.
    assert!(client.kv("c", &["set", "k", "v"]).status.success(), "{}", lab.logs());
    lab.wait_parity("a", "b", Duration::from_secs(10));
    lab.kill("b", "agent", "KILL");
    let out = client.kv("c", &["set", "k", "w"]);
    // Over git:// the daemon keeps the hook's words: they are in its log.
    assert!(!out.status.success() && lab.logs().contains("no quorum"), "{}{}", stderr(&out), lab.logs());
}

/// A repository whose copies name objects differently (SHA-1 here, SHA-256 there) cannot
/// be mirrored: the replica says why, and changes nothing.
#[test]
fn copies_in_different_object_formats_are_refused_with_the_reason() {
    let lab = Lab::up_with_repos(2, "[stargate \"sync\"]\n\tinterval = 1s\n", "kv");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    for (node, format) in [("a", "sha1"), ("b", "sha256")] {
        lab.init_managed(node, "mixed", &[&format!("--object-format={format}")]);
    }
    let client = Client::new();
    ok(client.git(".", &["init", "-q", "m"]));
    ok(client.git("m", &["commit", "-q", "--allow-empty", "-m", "x"]));
    ok(client.git("m", &["push", "-q", &lab.url("a", "mixed"), "HEAD:refs/heads/main"]));
    lab.wait_until("the replica to say why", Duration::from_secs(15), || {
        lab.agent_log("b").contains("names objects with sha1 and this node's copy with sha256")
    });
    let dir = lab.repo("b", "mixed");
    let refs = ok(lab.node_cmd("b", "git").arg("--git-dir").arg(&dir).arg("for-each-ref"));
    assert_eq!(refs, "", "nothing was written");
}

/// Quorum mode cannot serve reftable repositories yet: writes are refused at `pre-receive`
/// with the reason, nothing is written, and the node's other repositories work on.
#[test]
fn reftable_in_quorum_mode_refuses_writes_and_says_why() {
    let lab = Lab::up_with(2, "[stargate \"replication\"]\n\tmode = quorum\n");
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    for node in &lab.nodes {
        lab.init_managed(node, "table", &["--ref-format=reftable"]);
    }
    let client = Client::new();
    ok(client.git(".", &["init", "-q", "--ref-format=reftable", "table"]));
    ok(client.git("table", &["commit", "-q", "--allow-empty", "-m", "x"]));
    let out = run(client.git("table", &["push", &lab.url(&leader, "table"), "HEAD:refs/heads/main"]));
    assert_eq!(out.status.code(), Some(1), "{}{}", stderr(&out), lab.logs());
    assert!(
        stderr(&out).contains("reftable ref storage in quorum mode, which Stargate cannot replicate"),
        "{}",
        stderr(&out)
    );
    let refs = ok(lab.node_cmd(&leader, "git").arg("--git-dir").arg(lab.repo(&leader, "table")).arg("for-each-ref"));
    assert_eq!(refs, "", "nothing was written");
    client.clone(&lab.url(&leader, "kv"), "c");
    assert!(client.kv("c", &["set", "k", "v"]).status.success());
    let status = ok(lab.node_cmd(&leader, "git").args(["stargate", "status"]));
    assert!(status.contains("table.git: not served: this repository uses reftable ref storage in quorum"), "{status}");
    lab.wait_until("the agent to report it", Duration::from_secs(10), || {
        lab.agent_log(&leader).contains("table.git: this repository uses reftable ref storage in quorum mode")
    });
}

/// A full mirror of many refs into a reftable replica (one `update-ref` transaction where
/// the files backend writes `packed-refs` whole) runs no hook, prunes, and keeps what only
/// the replica had.
#[test]
fn a_full_mirror_of_many_refs_into_reftable_runs_no_hook_and_keeps_what_the_leader_lacks() {
    let lab = Lab::up_with(2, &format!("{REFTABLE}[stargate \"sync\"]\n\tinterval = 1h\n"));
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "base"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main", "HEAD:refs/heads/doomed"]));
    lab.wait_parity("a", "b", Duration::from_secs(10));
    lab.kill("b", "agent", "KILL");
    let (l, r) = (lab.repo("a", "kv"), lab.repo("b", "kv"));
    let git = |node: &str, repo: &std::path::Path, args: &[&str]| {
        ok(lab.node_cmd(node, "git").arg("--git-dir").arg(repo).args(["-c", "core.hooksPath=/dev/null"]).args(args))
    };
    let tree = git("b", &r, &["rev-parse", "main^{tree}"]);
    let own = git("b", &r, &["commit-tree", tree.trim(), "-p", "main", "-m", "only here"]);
    git("b", &r, &["update-ref", "refs/heads/mine", own.trim()]);
    // The leader gains 1500 branches behind the journal's back and loses one.
    let base = git("a", &l, &["rev-parse", "main"]);
    let creates: String = (0..1500).map(|i| format!("create refs/heads/b{i:05} {}\n", base.trim())).collect();
    let file = lab.dir.path().join("creates");
    std::fs::write(&file, creates).unwrap();
    let mut update = lab.node_cmd("a", "git");
    update.arg("--git-dir").arg(&l).args(["-c", "core.hooksPath=/dev/null", "update-ref", "--stdin"]);
    ok(update.stdin(std::fs::File::open(&file).unwrap()));
    git("a", &l, &["update-ref", "-d", "refs/heads/doomed"]);
    let runs = lab.dir.path().join("hook-runs");
    let hook = r.join("hooks/reference-transaction");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, format!("#!/bin/sh\necho \"$1\" >> '{}'\ncat >/dev/null\n", runs.display())).unwrap();
    ok(std::process::Command::new("chmod").args(["+x", hook.to_str().unwrap()]));

    let out = ok(lab.node_cmd("b", "git").args(["stargate", "sync", "--full", "kv.git"]));
    assert_eq!(lab.mirrored_refs("a"), lab.mirrored_refs("b"), "{out}");
    assert!(lab.mirrored_refs("b").contains(" refs/heads/b01499") && !lab.mirrored_refs("b").contains("doomed"));
    assert!(!runs.exists(), "no hook ran: {}", std::fs::read_to_string(&runs).unwrap_or_default());
    let kept = git("b", &r, &["for-each-ref", "--format=%(objectname) %(refname)", "refs/stargate/local/lost/"]);
    assert!(kept.contains(own.trim()) && kept.contains("/refs/heads/mine"), "kept: {kept}\n{out}");
    assert_eq!(ref_format(&lab, "b", "kv"), "reftable");
    git("b", &r, &["fsck", "--connectivity-only", "--no-dangling"]);
}

/// Over http the replica mirrors with git's own commands, in a side repository that must
/// name objects as the replica's copy does: SHA-256 and reftable together, incremental.
#[test]
fn sha256_reftable_repositories_mirror_over_http_incrementally() {
    let extra = format!("[init]\n\tdefaultObjectFormat = sha256\n{REFTABLE}");
    let lab = mirrors_over_http_incrementally(&extra, true);
    assert_eq!(lab.rev("b", "refs/heads/main").map(|r| r.len()), Some(64));
    assert_eq!(ref_format(&lab, "b", "kv"), "reftable");
}

/// A leader record in a later format than this build reads (written by a newer node, as a
/// node of this build would meet it mid-upgrade): the leader accepts no write on it and
/// says why, naming the file and both format numbers; the record as it was restores writes.
#[test]
fn a_leader_record_in_a_later_format_is_refused_and_no_write_accepted() {
    // A 1 s poll (default 30 s): the replica's syncs also meet the record within the waits.
    let lab = Lab::up_with(2, "[stargate \"sync\"]\n\tinterval = 1s\n");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "before"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let before = lab.rev("a", "refs/heads/main");
    let path = lab.dir.path().join("shared/stargate.lock.leader");
    let record = std::fs::read_to_string(&path).unwrap();
    assert!(record.starts_with("{\"format\":1,"), "this build writes its format first: {record}");
    let later = record.replacen("\"format\":1", "\"format\":2", 1);
    let tmp = path.with_extension("test");
    std::fs::write(&tmp, &later).unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "refused"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    let why = format!("{}: leader record format 2, and this build (", path.display());
    assert!(!out.status.success() && stderr(&out).contains(&why), "{}{}", stderr(&out), lab.logs());
    assert!(stderr(&out).contains("reads leader record format 1 at most"), "{}", stderr(&out));
    assert_eq!(lab.rev("a", "refs/heads/main"), before, "nothing accepted");
    let status = run(lab.node_cmd("a", "git").args(["stargate", "status"]));
    assert!(String::from_utf8_lossy(&status.stdout).contains(&why), "{}", String::from_utf8_lossy(&status.stdout));
    // The agent cannot follow it either: it stops leading, and nobody takes over on it.
    lab.wait_until("the agent to say why", Duration::from_secs(10), || lab.agent_log("a").contains(&why));
    assert_eq!(lab.ready(), Vec::<String>::new(), "no node leads on a record it cannot read");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), later, "and none overwrote it");

    // The record as this build writes it: a node leads again, and writes are accepted.
    std::fs::write(&tmp, &record).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let leader = lab.wait_leader(None, Duration::from_secs(15));
    let out = run(client.git("c", &["push", &lab.url(&leader, "kv"), "HEAD:refs/heads/main"]));
    assert!(out.status.success(), "{}{}", stderr(&out), lab.logs());
}

/// A journal entry in a later format than this build reads, on the leader: the replica
/// applies nothing from it (neither the entry nor the ref it names), keeps its position,
/// and its log names the entry and both format numbers.
#[test]
fn a_journal_entry_in_a_later_format_is_refused_and_no_sync_applied() {
    // A 1 s poll (default 30 s): the replica reads the entry within the test's waits even if
    // a hint is missed; what it does with it is the same at any interval.
    let lab = Lab::up_with(2, "[stargate \"sync\"]\n\tinterval = 1s\n");
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "base"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    lab.wait_parity("a", "b", Duration::from_secs(10));
    let replica_tip = lab.rev("b", "refs/stargate/journal");
    let fulls = lab.agent_log("b").matches("full mirror").count();

    // Behind the hooks' back, as a newer leader would write them: a ref and the entry that
    // says so, in format 2.
    let git = |args: &[&str]| ok(lab.git("a", &[&["-c", "core.hooksPath=/dev/null"], args].concat()));
    let tip = git(&["rev-parse", "refs/stargate/journal"]).trim().to_owned();
    let message = git(&["log", "-1", "--format=%B", &tip]);
    let seq: u64 = message.lines().next().unwrap().strip_prefix("stargate journal ").unwrap().parse().unwrap();
    let head = git(&["rev-parse", "refs/heads/main"]).trim().to_owned();
    let tree = git(&["rev-parse", "refs/heads/main^{tree}"]).trim().to_owned();
    let sneaky = git(&["commit-tree", &tree, "-p", &head, "-m", "newer"]).trim().to_owned();
    git(&["update-ref", "refs/heads/newer", &sneaky]);
    let epoch = lab.record()["epoch"].as_u64().unwrap();
    let zero = "0".repeat(40);
    let entry = format!(
        "stargate journal {next}\n\nformat 2\nepoch {epoch}\nnode a\ntime 1\ndepth 9\nstate committed-v2 {tip}\n{next} {zero} {sneaky} refs/heads/newer\n",
        next = seq + 1
    );
    let journal_tree = git(&["rev-parse", &format!("{tip}^{{tree}}")]).trim().to_owned();
    let newer = git(&["commit-tree", &journal_tree, "-p", &tip, "-m", &entry]).trim().to_owned();
    git(&["update-ref", "refs/stargate/journal", &newer, &tip]);
    // And its hook's note in the change summary, which tells the replica to look.
    let changes = lab.dir.path().join("a/repos/.stargate/changes");
    std::fs::OpenOptions::new().append(true).open(&changes).unwrap().write_all(b"kv.git\n").unwrap();

    let why = format!("journal entry {newer}: journal entry format 2, and this build (");
    lab.wait_until("the replica to say why", Duration::from_secs(30), || lab.agent_log("b").contains(&why));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.rev("b", "refs/heads/newer"), None, "nothing applied{}", lab.logs());
    assert_eq!(lab.rev("b", "refs/stargate/journal"), replica_tip, "the replica's position kept");
    assert_eq!(lab.agent_log("b").matches("full mirror").count(), fulls, "no full mirror instead{}", lab.logs());
}
