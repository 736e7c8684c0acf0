//! The hooks: passive nodes refuse pushes (exit 9, refs unchanged), the mirroring
//! exemption cannot be forged, and a node whose agent is gone fails closed.

use std::time::Duration;

use crate::support::*;

fn refs(lab: &Lab, node: &str) -> String {
    ok(lab.git(node, &["for-each-ref"]))
}

#[test]
fn push_to_the_passive_is_refused_and_changes_nothing() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let passive = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    let client = Client::new();
    client.clone(&lab.url(&leader, "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    // Mirroring moves the passive's refs; only the refused push must not.
    wait_until("the passive to mirror the leader", Duration::from_secs(10), || {
        refs(&lab, &passive) == refs(&lab, &leader)
    });
    let before = refs(&lab, &passive);

    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "two"]));
    let out = run(client.git("c", &["push", &lab.url(&passive, "kv"), "HEAD:refs/heads/main"]));
    assert_eq!(out.status.code(), Some(1), "plain git push fails as git always does");
    let epoch = lab.record()["epoch"].as_u64().unwrap();
    let msg = format!("stargate: not leader (leader: {leader}, epoch: {epoch})");
    assert!(stderr(&out).contains(&msg), "{}", stderr(&out));
    assert_eq!(refs(&lab, &passive), before);

    client.clone(&lab.url(&passive, "kv"), "p");
    let out = client.kv("p", &["set", "key", "value"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains(&msg), "{}", stderr(&out));
    assert_eq!(refs(&lab, &passive), before);
}

#[test]
fn only_the_agents_token_lets_mirroring_write_on_a_passive_node() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let passive = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    // Freeze the passive's agent so that only this test's fetches write there.
    lab.kill(&passive, "agent", "STOP");
    let client = Client::new();
    client.clone(&lab.url(&leader, "kv"), "c");
    assert!(client.kv("c", &["set", "k", "v"]).status.success());

    let replica = lab.repo(&passive, "kv");
    let fetch = |token: Option<&str>| {
        let mut c = lab.node_cmd(&passive, "git");
        c.args(["--git-dir", replica.to_str().unwrap(), "fetch", "-q", &lab.url(&leader, "kv"), "+refs/*:refs/*"]);
        if let Some(t) = token {
            c.env("STARGATE_SYNC_TOKEN", t);
        }
        run(&mut c)
    };
    let out = fetch(None);
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
    let out = fetch(Some("forged"));
    assert!(!out.status.success(), "a wrong token must not pass");
    // (The agent may have mirrored the journal's first entry before it was frozen.)
    assert!(!refs(&lab, &passive).contains("refs/kv/"), "{}", refs(&lab, &passive));

    let token = std::fs::read_to_string(lab.dir.path().join(&passive).join("repos/.stargate/sync.token")).unwrap();
    let out = fetch(Some(&token));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(refs(&lab, &passive).contains("refs/kv/default"));

    // A pushing client that somehow knows the token still cannot write: pre-receive never honours it.
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "x"]));
    let mut push = client.git("c", &["push", &lab.url(&passive, "kv"), "HEAD:refs/heads/forged"]);
    let out = run(push.env("STARGATE_SYNC_TOKEN", &token));
    assert!(!out.status.success());
    assert!(!refs(&lab, &passive).contains("refs/heads/forged"));
}

#[test]
fn dead_or_frozen_agent_fails_closed() {
    let lab = Lab::up_with(1, "[stargate \"lease\"]\n\tstaleAfter = 1s\n");
    lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    assert!(client.kv("c", &["set", "k", "1"]).status.success());

    // Frozen: the lock is still held, but the state goes stale.
    lab.kill("a", "agent", "STOP");
    std::thread::sleep(Duration::from_millis(1500));
    let out = client.kv("c", &["set", "k", "2"]);
    assert_eq!(out.status.code(), Some(9));
    assert!(stderr(&out).contains("stale"), "{}", stderr(&out));
    lab.kill("a", "agent", "CONT");
    wait_until("the thawed agent to lead again", Duration::from_secs(3), || lab.http("a", "/readyz").0 == 200);
    assert!(client.kv("c", &["set", "k", "3"]).status.success());

    // Dead: refused at once, without waiting for staleness.
    lab.kill("a", "agent", "KILL");
    let out = client.kv("c", &["set", "k", "4"]);
    assert_eq!(out.status.code(), Some(9));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
}

#[test]
fn reference_transaction_recheck_refuses_a_leader_fenced_after_pre_receive() {
    // The fencing lands between the two checks: pre-receive passes, then the epoch moves to
    // another node (a slow pre-receive hook stands in for the race window), and prepared must
    // refuse. (The same epoch naming another node is refused too, as a restored backup.)
    let lab = Lab::up(1);
    lab.wait_leader(None, Duration::from_secs(5));
    let hooks = lab.dir.path().join("racy-hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let record = lab.dir.path().join("shared/stargate.lock.leader");
    let pre = format!(
        "#!/bin/sh\nstargate-hook pre-receive || exit $?\nsed -i 's/\"epoch\":1,\"node\":\"a\"/\"epoch\":2,\"node\":\"z\"/' '{}'\n",
        record.display()
    );
    std::fs::write(hooks.join("pre-receive"), pre).unwrap();
    std::fs::write(hooks.join("reference-transaction"), "#!/bin/sh\nexec stargate-hook reference-transaction \"$@\"\n")
        .unwrap();
    for h in ["pre-receive", "reference-transaction"] {
        ok(std::process::Command::new("chmod").args(["+x", hooks.join(h).to_str().unwrap()]));
    }
    ok(lab.git("a", &["config", "core.hooksPath", hooks.to_str().unwrap()]));

    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "x"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    assert!(!out.status.success());
    assert!(!refs(&lab, "a").contains("refs/heads/main"), "nothing may be committed: {}", refs(&lab, "a"));
    // git dies in receive-pack when this hook aborts ("ref updates aborted by hook"), and the
    // hook's words go to receive-pack's stderr: the daemon's log here, the client over ssh.
    // receive-pack may write its last words after the client saw the connection end.
    let log = || std::fs::read_to_string(lab.dir.path().join("a/daemon.log")).unwrap_or_default();
    let said = |log: &str| log.contains("ref updates aborted by hook");
    let waited = std::time::Instant::now();
    while !said(&log()) && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = log();
    assert!(log.contains("stargate: not leader (leader: z, epoch: 2)"), "{log}");
    assert!(said(&log), "{log}");
}

#[test]
fn pack_refs_and_gc_work_on_every_node_and_journal_nothing() {
    // Regression: pack-refs reports its storage moves as ref transactions (`0000 -> X` into
    // the packed store, then `X -> 0000` pruning loose files); they were refused on passive
    // nodes and journaled on the leader, where the extra journal write broke the prune.
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    client.clone(&lab.url(&leader, "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main", "HEAD:refs/heads/other"]));
    let passive = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    lab.wait_until("the passive to mirror", Duration::from_secs(10), || refs(&lab, &passive) == refs(&lab, &leader));
    let seq = || ok(lab.git(&leader, &["log", "-1", "--format=%s", "refs/stargate/journal"]));
    let before = seq();
    for node in [&leader, &passive] {
        let dir = lab.repo(node, "kv");
        ok(lab.node_cmd(node, "git").args(["--git-dir", dir.to_str().unwrap(), "pack-refs", "--all"]));
        ok(lab.node_cmd(node, "git").args(["--git-dir", dir.to_str().unwrap(), "gc", "-q"]));
    }
    assert_eq!(seq(), before, "storage moves are not journaled");
    // A real deletion of a now packed ref is still checked, journaled and refused on the passive.
    ok(client.git("c", &["push", "-q", "origin", ":refs/heads/other"]));
    assert_ne!(seq(), before);
    let out = run(lab.git(&passive, &["update-ref", "-d", "refs/heads/main"]));
    assert!(!out.status.success() && stderr(&out).contains("not leader"), "{}", stderr(&out));
}

#[test]
fn a_mirror_overtaken_by_its_nodes_election_cannot_write() {
    // Regression: a sync still in flight when its node was elected went on writing there
    // (seen as "cannot lock ref ... reference already exists" on a push to the new leader).
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(5));
    let other = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    let client = Client::new();
    client.clone(&lab.url(&other, "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "x"]));
    let token = std::fs::read_to_string(lab.dir.path().join(&leader).join("repos/.stargate/sync.token")).unwrap();
    // The leader's own token, as its mirroring would present it: refused, since it leads.
    let src = client.home.path().join("c");
    let mut fetch = lab.node_cmd(&leader, "git");
    fetch.env("STARGATE_SYNC_TOKEN", token.trim()).args([
        "--git-dir",
        lab.repo(&leader, "kv").to_str().unwrap(),
        "fetch",
        "-q",
    ]);
    let out = run(fetch.arg(&src).arg("+HEAD:refs/heads/mirrored"));
    assert!(!out.status.success(), "a mirror must not write on the leader");
    assert!(stderr(&out).contains("mirroring refused: this node is no longer passive"), "{}", stderr(&out));
    assert!(!refs(&lab, &leader).contains("refs/heads/mirrored"));
}

/// The journal's sequence number at the tip, in node `node`'s `kv`.
fn journal_seq(lab: &Lab, node: &str) -> u64 {
    let subject = ok(lab.git(node, &["log", "-1", "--format=%s", "refs/stargate/journal"]));
    subject.trim().strip_prefix("stargate journal ").and_then(|s| s.parse().ok()).expect("a journal entry")
}

/// `stargate_journal_served_total` as node `node` exports it.
fn journaled_by_agent(lab: &Lab, node: &str) -> u64 {
    counter(lab, node, "stargate_journal_served_total")
}

/// A one-node lab, a clone `c` of its `kv`, and a first push, whose prepare and outcome the
/// leader's agent has counted.
fn one_push_counted() -> (Lab, Client) {
    // Counters are published each metrics interval (10 s by default): 1 s, to read them soon.
    let lab = Lab::up_with(1, "[stargate \"metrics\"]\n\tinterval = 1s\n");
    lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    wait_until("the agent to count the first push's entries", Duration::from_secs(5), || {
        journaled_by_agent(&lab, "a") >= 2
    });
    (lab, client)
}

#[test]
fn the_leaders_agent_journals_a_push_and_the_hooks_do_when_it_does_not_listen() {
    let (lab, client) = one_push_counted();
    let (seq, served) = (journal_seq(&lab, "a"), journaled_by_agent(&lab, "a"));

    // Journaled by the agent: the prepare and its outcome, the ref where the client sent it.
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "two"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(journal_seq(&lab, "a"), seq + 1, "one update: its prepare numbers it, its outcome repeats it");
    wait_until("the agent to count both entries", Duration::from_secs(5), || {
        journaled_by_agent(&lab, "a") == served + 2
    });
    let head = ok(client.git("c", &["rev-parse", "HEAD"]));
    assert_eq!(ok(lab.git("a", &["rev-parse", "refs/heads/main"])), head);
    let position = ok(lab.git("a", &["rev-parse", "refs/stargate/journal"]));
    assert!(
        stderr(&out).contains(&format!("stargate: position 1:{}:{}", seq + 1, position.trim())),
        "{}",
        stderr(&out)
    );

    // No agent listening (one older than the hooks): the hooks journal the same by themselves.
    std::fs::remove_file(lab.dir.path().join("a/repos/.stargate/journal.sock")).unwrap();
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "three"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(journal_seq(&lab, "a"), seq + 2);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(journaled_by_agent(&lab, "a"), served + 2, "not the agent's");
    let head = ok(client.git("c", &["rev-parse", "HEAD"]));
    assert_eq!(ok(lab.git("a", &["rev-parse", "refs/heads/main"])), head);
    let log = ok(lab.git("a", &["log", "-2", "--format=%B", "refs/stargate/journal"]));
    assert!(log.contains("state committed"), "the outcome, committed: {log}");
}

#[test]
fn a_push_whose_agent_freezes_while_it_journals_is_refused_and_moves_nothing() {
    let lab = Lab::up_with(1, "[stargate \"lease\"]\n\tstaleAfter = 1s\n");
    lab.wait_leader(None, Duration::from_secs(5));
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main"]));
    let (before, seq) = (ok(lab.git("a", &["rev-parse", "refs/heads/main"])), journal_seq(&lab, "a"));

    // Frozen between the lease check and the journal: the state still fresh when the push
    // looks, then no answer. The push waits at most staleAfter for one, then is refused at
    // `prepared`, where git ends receive-pack: pushed by path, the client reads the hook's
    // words (over git:// they may be lost with it).
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "two"]));
    lab.kill("a", "agent", "STOP");
    let started = std::time::Instant::now();
    let path = lab.repo("a", "kv").display().to_string();
    let out = run(client.git("c", &["push", &path, "HEAD:refs/heads/main"]));
    let waited = started.elapsed();
    lab.kill("a", "agent", "CONT");
    assert!(!out.status.success(), "{}", stderr(&out));
    let why = stderr(&out);
    assert!(why.contains("the agent did not answer") || why.contains("stale"), "{why}");
    assert!(waited < Duration::from_secs(10), "bounded by staleAfter: {waited:?}");
    assert_eq!(ok(lab.git("a", &["rev-parse", "refs/heads/main"])), before, "the refused push moved nothing");

    wait_until("the thawed agent to lead again", Duration::from_secs(5), || lab.http("a", "/readyz").0 == 200);
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(journal_seq(&lab, "a") > seq);
}

/// The `committed` that ends a push asks the leader's agent for the outcome and goes on;
/// `post-receive` waits for it, so the push ends with its outcome journaled, once. The agent
/// is frozen by the repository's own `reference-transaction` hook at the push's `prepared`
/// (after its prepare, before `committed` asks) and thawed later by a process it leaves:
/// 0.5 s later, `post-receive` gets the agent's `committed` outcome and says its position,
/// and `committed` had ended before the thaw (its chained hook ran);
/// 6 s later (past the two waits of `stargate.lease.staleAfter`, default 2 s), the push is
/// acknowledged all the same, and its outcome is journaled once the agent thaws.
#[test]
fn a_push_ends_once_the_outcome_its_committed_asked_of_the_agent_is_journaled() {
    let (lab, client) = one_push_counted();
    let entries = || ok(lab.git("a", &["rev-list", "--count", "refs/stargate/journal"])).trim().parse::<u64>().unwrap();
    let tip = || ok(lab.git("a", &["log", "-1", "--format=%B", "refs/stargate/journal"]));
    let agent = lab.pid("a", "agent");
    let own = lab.repo("a", "kv").join("hooks/reference-transaction");
    let (committed_at, thawed_at) = (client.home.path().join("committed"), client.home.path().join("thawed"));
    let freeze_at_prepared = |thaw_after: &str| {
        let (committed_at, thawed_at) = (committed_at.display(), thawed_at.display());
        let script = format!(
            "#!/bin/sh\ncat >/dev/null\ncase $1 in\nprepared) kill -STOP {agent}\n\
             (sleep {thaw_after}; date +%s%N >'{thawed_at}'; kill -CONT {agent}) </dev/null >/dev/null 2>&1 & ;;\n\
             committed) date +%s%N >'{committed_at}' ;;\nesac\n"
        );
        std::fs::write(&own, script).unwrap();
        std::fs::set_permissions(&own, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };

    // Thawed within post-receive's wait: the agent's outcome, the push's position.
    let (before, served) = (entries(), journaled_by_agent(&lab, "a"));
    freeze_at_prepared("0.5");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "two"]));
    let started = std::time::Instant::now();
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    let took = started.elapsed();
    std::fs::remove_file(&own).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(took >= Duration::from_millis(500), "post-receive waited for the thawed agent: {took:?}");
    let nanos = |f: &std::path::Path| std::fs::read_to_string(f).unwrap().trim().parse::<u128>().unwrap();
    assert!(nanos(&committed_at) < nanos(&thawed_at), "committed did not wait for the agent");
    assert_eq!(entries(), before + 2, "one prepare, one outcome");
    assert!(tip().contains("state committed"), "{}", tip());
    let position = ok(lab.git("a", &["rev-parse", "refs/stargate/journal"]));
    assert!(stderr(&out).contains(&format!(":{}", position.trim())), "{}", stderr(&out));
    wait_until("the agent to count both entries", Duration::from_secs(5), || {
        journaled_by_agent(&lab, "a") == served + 2
    });
    assert_eq!(ok(lab.git("a", &["rev-parse", "refs/heads/main"])), ok(client.git("c", &["rev-parse", "HEAD"])));

    // Frozen past both waits: acknowledged, and its outcome journaled once the agent thaws
    // (`committed` if it still finds the git process, else `ended` by its sweep).
    let before = entries();
    freeze_at_prepared("6");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "three"]));
    let out = run(client.git("c", &["push", "origin", "HEAD:refs/heads/main"]));
    std::fs::remove_file(&own).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ok(lab.git("a", &["rev-parse", "refs/heads/main"])), ok(client.git("c", &["rev-parse", "HEAD"])));
    wait_until("the thawed agent to journal the outcome", Duration::from_secs(15), || entries() == before + 2);
    let outcome = tip();
    assert!(outcome.contains("state committed") || outcome.contains("state ended"), "{outcome}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(entries(), before + 2, "one outcome only");
}

/// Pushes journaled by the leader's agent while it is killed, restarted and frozen: every
/// push acknowledged is kept (on its branch of whichever node leads at the end, and
/// mirrored), a push refused moved nothing, and `git stargate verify` agrees. Four clients
/// push by path to the first leader, each to its own branch, as fast as they can; a kill of
/// its agent may hand leadership to the other node, whose catch-up must then carry every
/// write the first acknowledged.
#[test]
fn pushes_acknowledged_while_the_leaders_agent_is_killed_and_frozen_are_kept_and_mirrored() {
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let lab = Lab::up(2);
    let first = lab.wait_leader(None, Duration::from_secs(5));
    let path = lab.repo(&first, "kv").display().to_string();
    let clients: Vec<Client> = (0..4).map(|_| Client::new()).collect();
    for c in &clients {
        c.clone(&path, "c");
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked: Vec<Vec<String>> = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let pushers: Vec<_> = (clients.iter().enumerate())
            .map(|(i, c)| {
                let (stop, path) = (&stop, &path);
                s.spawn(move || {
                    let mut acked = Vec::new();
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        n += 1;
                        ok(c.git("c", &["commit", "-q", "--allow-empty", "-m", &format!("{i}.{n}")]));
                        let out = run(c.git("c", &["push", "-q", path, &format!("HEAD:refs/heads/b{i}")]));
                        let head = ok(c.git("c", &["rev-parse", "HEAD"])).trim().to_owned();
                        match out.status.success() {
                            true => acked.push(head),
                            // Refused: the next commit builds on what was acknowledged.
                            false => drop(ok(c.git("c", &["reset", "-q", "--hard", "HEAD~1"]))),
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        for round in 0..2u64 {
            lab.kill(&first, "agent", "KILL");
            std::thread::sleep(Duration::from_millis(300));
            lab.start(&first, "agent");
            std::thread::sleep(Duration::from_millis(1500));
            if lab.http(&first, "/readyz").0 == 200 {
                lab.kill(&first, "agent", "STOP");
                std::thread::sleep(Duration::from_millis(300 + 400 * round));
                lab.kill(&first, "agent", "CONT");
                std::thread::sleep(Duration::from_millis(700));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        pushers.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(acked.iter().any(|a| !a.is_empty()), "some pushes were acknowledged: {acked:?}");
    let leader = lab.wait_leader(None, Duration::from_secs(20));
    eprintln!(
        "acknowledged pushes per client: {:?}; {first} led first, {leader} leads now",
        acked.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let replica = lab.nodes.iter().find(|n| **n != leader).unwrap().clone();
    lab.wait_parity(&leader, &replica, Duration::from_secs(20));
    for (i, commits) in acked.iter().enumerate().filter(|(_, c)| !c.is_empty()) {
        let tip = ok(lab.git(&leader, &["rev-parse", &format!("refs/heads/b{i}")])).trim().to_owned();
        for c in commits {
            let kept = run(lab.git(&leader, &["merge-base", "--is-ancestor", c, &tip])).status.success();
            assert!(kept, "client {i}'s acknowledged {c} is on b{i} of {leader} (tip {tip})");
        }
    }
    let out = run(lab.node_cmd(&leader, "git").args(["stargate", "verify"]));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}
