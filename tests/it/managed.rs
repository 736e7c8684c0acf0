//! Which repositories Stargate's hooks run for: only those it manages, each with its own
//! `core.hooksPath` (`git stargate manage`, stargate(7) MANAGED REPOSITORIES). A repository
//! it does not manage costs what it costs without Stargate; a repository with a work tree
//! is never managed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The hooks git started for a command, from its trace2 events: each hook's name and the
/// path git ran, in order.
fn hooks_started(events: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "child_start" && e["child_class"] == "hook")
        .map(|e| (e["hook_name"].as_str().unwrap_or("").to_owned(), e["argv"][0].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// A client work tree with one commit, made with `node`'s configuration.
fn work(lab: &Lab, node: &str) -> std::path::PathBuf {
    let w = lab.dir.path().join(node).join("work");
    ok(lab.node_cmd(node, "git").args(["init", "-q", "-b", "main"]).arg(&w));
    ok(lab.node_cmd(node, "git").arg("-C").arg(&w).args(["commit", "-q", "--allow-empty", "-m", "one"]));
    w
}

/// A push by path, as `node`'s git would run it, traced; the hooks it started.
fn traced_push(lab: &Lab, node: &str, w: &Path, to: &Path, name: &str) -> Vec<(String, String)> {
    let events = lab.dir.path().join(format!("{name}.trace"));
    let _ = std::fs::remove_file(&events);
    let mut c = lab.node_cmd(node, "git");
    c.arg("-C").arg(w).args(["push", "-q"]).arg(to).arg(format!("HEAD:refs/heads/{name}"));
    ok(c.env("GIT_TRACE2_EVENT", &events));
    hooks_started(&events)
}

#[test]
fn an_unmanaged_repository_on_a_node_starts_no_hook_and_a_managed_one_only_stargates() {
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let w = work(&lab, "a");
    // Beside the root, with the node's own configuration: no hook process at all, as
    // without Stargate.
    let other = lab.dir.path().join("a/other.git");
    ok(lab.node_cmd("a", "git").args(["init", "-q", "--bare"]).arg(&other));
    assert_eq!(traced_push(&lab, "a", &w, &other, "plain"), vec![], "an unmanaged repository runs no hook");

    // The managed one: its own hooks directory, and of it only the hooks Stargate needs
    // start (no update, post-update: the repository has none of its own).
    let kv = lab.repo("a", "kv");
    let hooks = kv.canonicalize().unwrap().join("stargate/hooks");
    assert_eq!(ok(lab.git("a", &["config", "--local", "core.hooksPath"])).trim(), hooks.to_str().unwrap());
    assert_eq!(
        ok(lab.git("a", &["config", "--local", "--get-all", "receive.procReceiveRefs"])),
        "refs/for/kv/\nrefs/stargate/\n"
    );
    assert!(kv.join("stargate/managed").is_file());
    let started = traced_push(&lab, "a", &w, &kv, "main");
    let names: Vec<&str> = started.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pre-receive", "reference-transaction", "reference-transaction", "post-receive"], "{started:?}");
    for (name, path) in &started {
        assert_eq!(Path::new(path), hooks.join(name), "{started:?}");
    }
    assert!(lab.rev("a", "refs/stargate/journal").is_some(), "the push was journaled");

    // A hook of the repository's own runs in its place: `update` directly (git runs it
    // through its link, no Stargate process), `pre-receive` after Stargate's.
    let log = lab.dir.path().join("own-hooks.log");
    for name in ["update", "pre-receive"] {
        let script = kv.join("hooks").join(name);
        std::fs::write(&script, format!("#!/bin/sh\necho \"{name} $0\" >>'{}'\n", log.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    ok(lab.node_cmd("a", "git").arg("-C").arg(&w).args(["commit", "-q", "--allow-empty", "-m", "two"]));
    let names: Vec<String> = traced_push(&lab, "a", &w, &kv, "main").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["pre-receive", "update", "reference-transaction", "reference-transaction", "post-receive"]);
    let ran = std::fs::read_to_string(&log).unwrap();
    assert!(ran.contains("pre-receive hooks/pre-receive\n"), "{ran}");
    assert!(ran.contains(&format!("update {}\n", hooks.join("update").display())), "{ran}");
}

#[test]
fn manage_refuses_what_it_cannot_manage_and_says_why() {
    let lab = Lab::up(1);
    let root = lab.dir.path().join("a/repos");
    let manage = |path: &Path| run(lab.node_cmd("a", "git").args(["stargate", "manage"]).arg(path));
    let refused = |path: &Path, words: &str| {
        let out = manage(path);
        assert_eq!(out.status.code(), Some(1), "{}: {}", path.display(), stderr(&out));
        assert!(stderr(&out).contains(words), "{}: {}", path.display(), stderr(&out));
    };
    // Outside the root.
    let outside = lab.dir.path().join("a/outside.git");
    ok(lab.node_cmd("a", "git").args(["init", "-q", "--bare"]).arg(&outside));
    refused(&outside, "is not under stargate.root");
    // Nothing there.
    refused(&root.join("missing.git"), "No such file or directory");
    // A directory that is no repository, and a name Stargate does not serve.
    std::fs::create_dir_all(root.join("empty.git")).unwrap();
    refused(&root.join("empty.git"), "is not a git repository");
    ok(lab.node_cmd("a", "git").args(["init", "-q", "--bare"]).arg(root.join("x/y/deep.git")));
    refused(&root.join("x/y/deep.git"), "not a repository name under stargate.root");
    // A repository with a work tree, by its work tree or by its git directory.
    let tree = root.join("tree.git");
    ok(lab.node_cmd("a", "git").args(["init", "-q"]).arg(&tree));
    refused(&tree, "is not a bare repository");
    refused(&tree.join(".git"), "is not a bare repository");
    assert!(!outside.join("stargate").exists() && !tree.join(".git/stargate").exists(), "nothing was written");
    assert_eq!(
        run(lab.node_cmd("a", "git").arg("-C").arg(&tree).args(["config", "core.hooksPath"])).status.code(),
        Some(1)
    );

    // A bare repository under the root is managed, once.
    let new = root.join("team/new.git");
    ok(lab.node_cmd("a", "git").args(["init", "-q", "--bare"]).arg(&new));
    assert_eq!(
        ok(lab.node_cmd("a", "git").args(["stargate", "manage"]).arg(&new)),
        "team/new.git: managed on this node\n"
    );
    assert_eq!(
        ok(lab.node_cmd("a", "git").args(["stargate", "manage"]).arg(&new)),
        "team/new.git: already managed on this node\n"
    );
    assert!(new.join("stargate/managed").is_file());
}

/// A repository with a work tree under the root is not managed: with Stargate's hooks for
/// the whole node (the older setting) a push to it, `updateInstead` included, goes as
/// without Stargate. Marked by hand, every push to it is refused before anything, its work
/// tree included, changes: never half applied.
#[test]
fn a_repository_with_a_work_tree_is_passed_through_or_refused_whole() {
    let lab = Lab::up_with(1, "[core]\n\thooksPath = @LAB@/githooks\n");
    lab.wait_leader(None, Duration::from_secs(5));
    let tree = lab.dir.path().join("a/repos/site.git");
    ok(lab.node_cmd("a", "git").args(["init", "-q", "-b", "main"]).arg(&tree));
    let git = |args: &[&str]| lab.node_cmd("a", "git").arg("-C").arg(&tree).args(args).output().unwrap();
    assert!(git(&["commit", "-q", "--allow-empty", "-m", "base"]).status.success());
    assert!(git(&["config", "receive.denyCurrentBranch", "updateInstead"]).status.success());
    // Through the node's Git server, which runs receive-pack with the node's configuration.
    let client = Client::new();
    client.clone(&lab.url("a", "site"), "c");
    std::fs::write(client.home.path().join("c/page.html"), "one\n").unwrap();
    ok(client.git("c", &["add", "page.html"]));
    ok(client.git("c", &["commit", "-q", "-m", "page"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:main"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(tree.join("page.html")).unwrap(), "one\n");
    let head = |()| String::from_utf8_lossy(&git(&["rev-parse", "HEAD"]).stdout).trim().to_owned();
    assert_eq!(head(()), ok(client.git("c", &["rev-parse", "HEAD"])).trim());
    assert!(!tree.join(".git/refs/stargate").exists(), "nothing journaled");

    // Marked by hand: refused whole.
    std::fs::create_dir_all(tree.join(".git/stargate")).unwrap();
    std::fs::write(tree.join(".git/stargate/managed"), "").unwrap();
    let before = head(());
    std::fs::write(client.home.path().join("c/page.html"), "two\n").unwrap();
    ok(client.git("c", &["commit", "-q", "-am", "two"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:main"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let words = stderr(&out) + &lab.logs();
    assert!(words.contains("Stargate manages bare repositories only"), "{words}");
    assert_eq!(head(()), before);
    assert_eq!(std::fs::read_to_string(tree.join("page.html")).unwrap(), "one\n", "the work tree is untouched");
    assert_eq!(String::from_utf8_lossy(&git(&["status", "--porcelain"]).stdout), "", "nothing staged");

    // Regression (git's t5516): a `.git` made bare by its config is laid out as a work tree,
    // and git runs its hooks with `GIT_DIR=.`: passed through as git would, not journaled
    // (the journal could not even open it there).
    let flip = lab.dir.path().join("a/repos/flip.git");
    ok(lab.node_cmd("a", "git").args(["init", "-q", "-b", "main"]).arg(&flip));
    ok(lab.node_cmd("a", "git").arg("-C").arg(&flip).args(["config", "core.bare", "true"]));
    let out = run(client.git("c", &["push", &lab.url("a", "flip"), "HEAD:refs/heads/main"]));
    assert!(out.status.success(), "{}{}", stderr(&out), lab.logs());
    assert!(!flip.join(".git/refs/stargate").exists(), "nothing journaled");
}

/// The ways an existing repository moves onto a group: `git push --mirror` into a managed
/// repository (which would delete the journal: its `refs/stargate/` updates are answered and
/// ignored), and `git stargate import`, which creates the repository for the whole group
/// from the source's refs. Both are journaled on the leader and replicated like pushes.
#[test]
fn push_mirror_and_import_bring_an_existing_repository_in_journaled_and_replicated() {
    let lab = Lab::up_with(2, "[stargate \"sync\"]\n\tinterval = 1s\n");
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let replica = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    let client = Client::new();
    ok(client.git(".", &["init", "-q", "-b", "trunk", "src"]));
    for m in ["one", "two"] {
        ok(client.git("src", &["commit", "-q", "--allow-empty", "-m", m]));
    }
    ok(client.git("src", &["branch", "topic", "HEAD~1"]));
    ok(client.git("src", &["tag", "-a", "-m", "v1", "v1"]));
    ok(client.git(".", &["clone", "-q", "--bare", "src", "src.git"]));
    let source = client.home.path().join("src.git");
    let refs_of = |git_dir: &Path| {
        let mut c = Command::new("git");
        c.arg("--git-dir").arg(git_dir).args(["for-each-ref", "--format=%(objectname) %(refname)"]);
        let out = String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned();
        out.lines().filter(|l| !l.contains(" refs/stargate/")).map(str::to_owned).collect::<Vec<_>>()
    };
    let stargate = |node: &str, args: &[&str]| run(lab.node_cmd(node, "git").arg("stargate").args(args));

    // push --mirror into a repository created for the group.
    let out = stargate(&leader, &["create", "moved"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(client.git("src.git", &["push", "--mirror", &lab.url(&leader, "moved")]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("refs/stargate/journal left as they are"), "{}", stderr(&out));
    let moved = |node: &str| lab.repo(node, "moved");
    assert_eq!(refs_of(&moved(&leader)), refs_of(&source));
    let journal = |node: &str, repo: &Path| {
        let out = run(lab.node_cmd(node, "git").arg("--git-dir").arg(repo).args([
            "log",
            "--format=%s",
            "refs/stargate/journal",
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        journal(&leader, &moved(&leader)).lines().count() >= 3,
        "genesis, prepare, outcome: {}",
        journal(&leader, &moved(&leader))
    );
    lab.wait_until("the mirror pushed, on the replica", Duration::from_secs(20), || {
        refs_of(&moved(&replica)) == refs_of(&source)
    });

    // A mirror of the managed repository itself carries its journal: pushed back with a
    // new branch, the branch is written and the journal stays Stargate's.
    ok(client.git(".", &["clone", "-q", "--mirror", &lab.url(&leader, "moved"), "again.git"]));
    let old_journal = ok(client.git("again.git", &["rev-parse", "refs/stargate/journal"]));
    ok(client.git("again.git", &["branch", "extra", "trunk"]));
    let out = run(client.git("again.git", &["push", "--mirror", &lab.url(&leader, "moved")]));
    assert!(out.status.success(), "{}", stderr(&out));
    let now = lab
        .node_cmd(&leader, "git")
        .arg("--git-dir")
        .arg(moved(&leader))
        .args(["rev-parse", "refs/stargate/journal", "refs/heads/extra"])
        .output()
        .unwrap();
    let now = String::from_utf8_lossy(&now.stdout).into_owned();
    assert!(
        now.lines().count() == 2 && !now.starts_with(old_journal.trim()),
        "the journal went on, past the pushed value: {now}"
    );

    // import: refused on the passive node, done on the leader.
    let url = source.to_str().unwrap();
    let out = stargate(&replica, &["import", url, "team/imported"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!lab.repo(&replica, "team/imported").exists());
    let out = stargate(&leader, &["import", url, "team/imported"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported team/imported.git"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let imported = |node: &str| lab.repo(node, "team/imported");
    assert_eq!(refs_of(&imported(&leader)), refs_of(&source));
    let head = ok(lab.node_cmd(&leader, "git").arg("--git-dir").arg(imported(&leader)).args(["symbolic-ref", "HEAD"]));
    assert_eq!(head.trim(), "refs/heads/trunk");
    let entries = journal(&leader, &imported(&leader));
    assert!(entries.lines().count() >= 3, "genesis, prepare, outcome: {entries}");
    lab.wait_until("the imported repository, on the replica", Duration::from_secs(20), || {
        refs_of(&imported(&replica)) == refs_of(&source)
    });
    let refused = run(lab.node_cmd(&leader, "git").arg("stargate").args(["import", url, "team/imported"]));
    assert_eq!(refused.status.code(), Some(1), "an existing repository: {}", stderr(&refused));
}

/// A bare repository put under the root by hand is managed by the agent within seconds
/// (its own hooks, config and marker), so that a push to it is checked like any other.
#[test]
fn the_agent_manages_a_repository_put_under_the_root() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let passive = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    let found = lab.repo(&passive, "found");
    ok(lab.node_cmd(&passive, "git").args(["init", "-q", "--bare"]).arg(&found));
    let hooks_path = || {
        let out = run(lab.node_cmd(&passive, "git").arg("--git-dir").arg(&found).args([
            "config",
            "--local",
            "core.hooksPath",
        ]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    lab.wait_until("the agent to manage it", Duration::from_secs(20), || !hooks_path().is_empty());
    assert_eq!(Path::new(&hooks_path()), found.canonicalize().unwrap().join("stargate/hooks"));
    assert!(found.join("stargate/managed").is_file());
    let client = Client::new();
    ok(client.git(".", &["init", "-q", "w"]));
    ok(client.git("w", &["commit", "-q", "--allow-empty", "-m", "x"]));
    let out = run(client.git("w", &["push", &lab.url(&passive, "found"), "HEAD:refs/heads/main"]));
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
}
