//! Installed for the whole machine (`core.hooksPath` in the system or global config):
//! repositories Stargate does not manage behave as if it were not there, a managed one
//! whose node state is gone still fails closed, and every repository's own hooks run
//! after Stargate's decision allowed the write. Also the help and first-contact texts.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::*;

/// A hooks directory as install.sh lays it out: one link to `stargate-hook` per shim.
fn installed_hooks(dir: &Path) -> PathBuf {
    let hooks = dir.join("githooks");
    std::fs::create_dir_all(&hooks).unwrap();
    for shim in std::fs::read_dir(repo_root().join("githooks")).unwrap() {
        let name = shim.unwrap().file_name();
        std::os::unix::fs::symlink(bin_dir().join("stargate-hook"), hooks.join(name)).unwrap();
    }
    hooks
}

/// A client whose global config sets `core.hooksPath` to Stargate's hooks.
fn system_wide() -> Client {
    let client = Client::new();
    let hooks = installed_hooks(client.home.path());
    let config = client.home.path().join(".gitconfig");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("[core]\n\thooksPath = {}\n[init]\n\tdefaultBranch = main\n", hooks.display());
    std::fs::write(config, text).unwrap();
    client
}

/// Succeeds and prints nothing of Stargate's.
fn quiet_ok(c: std::process::Command) -> Output {
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).to_lowercase().contains("stargate"), "Stargate spoke: {}", stderr(&out));
    out
}

fn hook(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn every_hook_git_knows_has_a_shim_and_nothing_else_does() {
    let mut shims: Vec<String> = std::fs::read_dir(repo_root().join("githooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shims.sort();
    let mut names: Vec<String> = stargate::hook::NAMES.iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(shims, names);
    for name in &names {
        let text = std::fs::read_to_string(repo_root().join("githooks").join(name)).unwrap();
        assert_eq!(text, format!("#!/bin/sh\nexec stargate-hook {name} \"$@\"\n"), "{name}");
    }
}

#[test]
fn a_machine_wide_hooks_path_leaves_unrelated_repositories_alone() {
    let client = system_wide();
    let home = client.home.path();
    let git = |dir: &str, args: &[&str]| {
        let mut c = cmd("git", home);
        c.current_dir(home.join(dir)).args(args);
        c
    };
    quiet_ok(git(".", &["init", "-q", "work"]));
    // The repository's own local hooks still run.
    hook(&home.join("work/.git/hooks/pre-commit"), &format!("touch {}/pre-commit.ran", home.display()));
    std::fs::write(home.join("work/file"), "one\n").unwrap();
    quiet_ok(git("work", &["add", "file"]));
    quiet_ok(git("work", &["commit", "-q", "-m", "one"]));
    assert!(home.join("pre-commit.ran").exists(), "the repository's own pre-commit hook ran");
    quiet_ok(git("work", &["branch", "topic"]));
    quiet_ok(git("work", &["tag", "v1"]));
    // Many refs in one transaction: hooks that do not read their input must not break it.
    let refs: String = (0..3000).map(|i| format!("create refs/tags/t{i} HEAD\n")).collect();
    let mut update = git("work", &["update-ref", "--stdin"]);
    update
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = update.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), refs.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    quiet_ok(git(".", &["init", "-q", "--bare", "other.git"]));
    quiet_ok(git("work", &["push", "-q", "../other.git", "main", "topic", "v1"]));
    quiet_ok(git(".", &["clone", "-q", "other.git", "copy"]));
    quiet_ok(git("copy", &["fetch", "-q", "origin"]));
    assert_eq!(ok(git("copy", &["tag", "--list", "v1"])).trim(), "v1");

    // proc-receive: without a repository hook, the refs it would handle are refused as git refuses them.
    quiet_ok(git("other.git", &["config", "receive.procReceiveRefs", "refs/for"]));
    let out = run(git("work", &["push", "../other.git", "HEAD:refs/for/main"]));
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot find hook 'proc-receive'"), "{}", stderr(&out));
    assert!(stderr(&out).contains("(fail to run proc-receive hook)"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("negotiate"), "nothing git would not say: {}", stderr(&out));

    // push-to-checkout: without a repository hook, git's own updateInstead still happens.
    quiet_ok(git(".", &["init", "-q", "site"]));
    quiet_ok(git("site", &["config", "receive.denyCurrentBranch", "updateInstead"]));
    quiet_ok(git("work", &["push", "-q", "../site", "main"]));
    assert_eq!(std::fs::read_to_string(home.join("site/file")).unwrap(), "one\n", "the work tree was updated");
    std::fs::write(home.join("site/file"), "edited on the server\n").unwrap();
    std::fs::write(home.join("work/file"), "two\n").unwrap();
    quiet_ok(git("work", &["commit", "-q", "-am", "two"]));
    let out = run(git("work", &["push", "../site", "main"]));
    assert!(!out.status.success(), "a dirty work tree refuses the push, as git does");
    assert!(stderr(&out).contains("Working directory has unstaged changes"), "{}", stderr(&out));
}

#[test]
fn a_managed_repository_whose_node_state_is_gone_refuses_writes() {
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let repo = lab.repo("a", "kv");
    lab.wait_until("the agent to mark its repositories", Duration::from_secs(10), || {
        repo.join("stargate/managed").is_file()
    });
    let client = system_wide();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));

    lab.kill("a", "agent", "KILL");
    std::fs::remove_dir_all(lab.dir.path().join("a/repos/.stargate")).unwrap();
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "two"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    assert!(!out.status.success(), "a managed repository must not become writable");
    assert!(stderr(&out).contains("no .stargate directory above it"), "{}", stderr(&out));
    let out = run(lab.git("a", &["update-ref", "refs/heads/local", "refs/heads/main"]));
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
    assert!(run(lab.git("a", &["rev-parse", "--verify", "-q", "refs/heads/local"])).stdout.is_empty());
}

#[test]
fn a_repositorys_own_hooks_run_after_stargate_allowed_the_write() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let passive = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    let logs = lab.dir.path();
    for node in &lab.nodes {
        let hooks = lab.repo(node, "kv").join("hooks");
        let log = |what: &str| logs.join(format!("{node}.{what}")).display().to_string();
        hook(
            &hooks.join("pre-receive"),
            &format!(
                "tee {} | grep -q refs/heads/blocked && {{ echo 'policy: no pushes to blocked' >&2; exit 1; }}\nexit 0",
                log("pre-receive")
            ),
        );
        hook(
            &hooks.join("update"),
            "[ \"$1\" = refs/heads/noupdate ] && { echo 'policy: update says no' >&2; exit 3; }\nexit 0",
        );
        hook(&hooks.join("post-receive"), &format!("cat > {}", log("post-receive")));
        hook(&hooks.join("reference-transaction"), &format!("echo \"$1 $(cat)\" >> {}", log("transaction")));
    }
    let client = Client::new();
    client.clone(&lab.url(&leader, "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    let head = ok(client.git("c", &["rev-parse", "HEAD"])).trim().to_owned();

    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let read =
        |node: &str, what: &str| std::fs::read_to_string(logs.join(format!("{node}.{what}"))).unwrap_or_default();
    assert!(read(&leader, "pre-receive").contains("refs/heads/main"), "pre-receive got git's input");
    assert!(read(&leader, "post-receive").contains(&format!("{head} refs/heads/main")));
    let transaction = read(&leader, "transaction");
    assert!(transaction.contains(&format!("prepared 0000000000000000000000000000000000000000 {head} refs/heads/main")));
    assert!(transaction.contains("committed"), "{transaction}");

    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/blocked"]));
    assert!(!out.status.success() && stderr(&out).contains("policy: no pushes to blocked"), "{}", stderr(&out));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/noupdate"]));
    assert!(!out.status.success() && stderr(&out).contains("policy: update says no"), "{}", stderr(&out));
    let refs = ok(lab.git(&leader, &["for-each-ref", "--format=%(refname)", "refs/heads"]));
    assert_eq!(refs.trim(), "refs/heads/main", "refused refs were not written");

    // On the passive node Stargate refuses first, and alone.
    let out = run(client.git("c", &["push", &lab.url(&passive, "kv"), "HEAD:refs/heads/other"]));
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("policy"), "{}", stderr(&out));
    assert_eq!(read(&passive, "pre-receive"), "", "the repository's own pre-receive did not run");
}

#[test]
fn every_program_says_its_version_and_the_commit_it_was_built_from() {
    let home = tempfile::tempdir().unwrap();
    // build.rs: the short commit of the checkout (this test runs in one), never "unknown" here.
    let commit = run(cmd("git", home.path()).current_dir(repo_root()).args(["rev-parse", "--short", "HEAD"]));
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_owned();
    assert_eq!(stargate::version::VERSION, format!("{} ({commit})", env!("CARGO_PKG_VERSION")));
    for (program, args, name) in [
        (HOOK, &["--version"][..], "stargate-hook"),
        (REMOTE_HELPER, &["--version"][..], "git-remote-stargate"),
        ("git", &["stargate", "--version"][..], "git stargate"),
        ("git", &["kv", "--version"][..], "git kv"),
    ] {
        let out = run(cmd(program, home.path()).current_dir(home.path()).args(args));
        assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{name} {}", stargate::version::VERSION));
    }
}

#[test]
fn help_and_first_contact_texts() {
    let home = tempfile::tempdir().unwrap();
    let stdout = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();

    let out = run(cmd(HOOK, home.path()).arg("--help"));
    assert!(out.status.success(), "{}", stderr(&out));
    for program in ["git-stargate", "git-kv", "health", "pre-receive"] {
        assert!(stdout(&out).contains(program), "{program} in {}", stdout(&out));
    }
    let out = run(cmd(REMOTE_HELPER, home.path()).arg("--help"));
    assert!(out.status.success() && stdout(&out).contains("stargate::<name>[,<name>...]/<path>"), "{}", stdout(&out));
    let out = run(cmd(repo_root().join("contrib/lab/lab").to_str().unwrap(), home.path()).arg("--help"));
    assert!(out.status.success() && stdout(&out).contains("lab up"), "{}", stderr(&out));
    let out = run(cmd(repo_root().join("contrib/lab/lab").to_str().unwrap(), home.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("lab up"), "no arguments shows usage: {}", stderr(&out));

    // Outside a configured node: the key, and where to read about it.
    let out = run(cmd("git", home.path()).current_dir(home.path()).args(["stargate", "status"]));
    assert_eq!(out.status.code(), Some(128));
    assert!(stderr(&out).contains("is not set") && stderr(&out).contains("stargate(7)"), "{}", stderr(&out));

    // git kv without a usable remote: one line naming the remote and what to set.
    let client = Client::new();
    ok(client.git(".", &["init", "-q", "lonely"]));
    let out = client.kv("lonely", &["list"]);
    assert_eq!(out.status.code(), Some(128));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no remote 'origin'") && err.contains("kv.remote"), "{err}");
    ok(client.git("lonely", &["remote", "add", "origin", "git://127.0.0.1:1/kv.git"]));
    let out = client.kv("lonely", &["list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(128));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("fatal: cannot fetch from remote 'origin': "), "{err}");

    // Every argument and option of every subcommand says what it is.
    let subcommands: [&[&str]; 9] = [
        &["stargate", "agent"],
        &["stargate", "status"],
        &["stargate", "sync"],
        &["stargate", "lag"],
        &["kv", "set"],
        &["kv", "get"],
        &["kv", "del"],
        &["kv", "list"],
        &["kv"],
    ];
    for sub in subcommands {
        let out = run(cmd("git", home.path()).current_dir(home.path()).args(sub).arg("-h"));
        assert!(out.status.success(), "{sub:?}: {}", stderr(&out));
        for line in stdout(&out).lines().filter(|l| l.starts_with("  ") && !l.starts_with("   ")) {
            let item = line.trim_start();
            if item.starts_with('<') || item.starts_with('-') || item.starts_with('[') {
                assert!(item.contains("  "), "{sub:?}: no help text for '{item}'");
            }
        }
    }
}
