//! Every malformed config value is a `fatal:` naming the key and the value, exit 128.

use crate::support::*;

fn status_with(extra: &str) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let base = format!("[stargate]\n\tnode = a\n\tlock = {0}/lock\n\troot = {0}\n{extra}", home.path().display());
    std::fs::write(home.path().join(".gitconfig"), base).unwrap();
    run(cmd("git", home.path()).current_dir(home.path()).args(["stargate", "status"]))
}

#[test]
fn each_malformed_key_is_named() {
    let cases = [
        ("[stargate]\n\tnode = bad/id\n", "stargate.node", "bad/id"),
        ("[stargate]\n\tlock = relative/lock\n", "stargate.lock", "relative/lock"),
        ("[stargate]\n\troot = relative\n", "stargate.root", "relative"),
        ("[stargate \"lease\"]\n\tinterval = fast\n", "stargate.lease.interval", "fast"),
        ("[stargate \"lease\"]\n\tinterval = 0ms\n", "stargate.lease.interval", "0ms"),
        ("[stargate \"lease\"]\n\tstaleAfter = 10\n", "stargate.lease.staleAfter", "10"),
        ("[stargate \"health\"]\n\ttimeout = 2x\n", "stargate.health.timeout", "2x"),
        ("[stargate \"health\"]\n\tidleExit = -1s\n", "stargate.health.idleExit", "-1s"),
        ("[stargate \"b\"]\n\turl = git://b/\n\thealth = ftp://b\n", "stargate.b.health", "ftp://b"),
        ("[kv]\n\tpushAttempts = zero\n", "kv.pushAttempts", "zero"),
    ];
    for (extra, key, value) in cases {
        let out = status_with(extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(128), "{key}: {err}");
        assert!(err.starts_with("fatal: "), "{key}: {err}");
        assert!(err.contains(&format!("'{key}'")) && err.contains(&format!("'{value}'")), "{key}: {err}");
    }
}

#[test]
fn good_config_is_accepted_and_missing_lock_is_named() {
    let out = status_with("");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent not running"));

    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".gitconfig"), "[stargate]\n\tnode = a\n").unwrap();
    let out = run(cmd("git", home.path()).current_dir(home.path()).args(["stargate", "status"]));
    assert_eq!(out.status.code(), Some(128));
    assert!(stderr(&out).contains("'stargate.lock' is not set"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_129() {
    let home = tempfile::tempdir().unwrap();
    let out = run(cmd("git", home.path()).current_dir(home.path()).args(["stargate", "frobnicate"]));
    assert_eq!(out.status.code(), Some(129), "{}", stderr(&out));
    let out = run(cmd(HOOK, home.path()).arg("no-such-program"));
    assert_eq!(out.status.code(), Some(129));
    assert!(stderr(&out).contains("unknown program"));
}
