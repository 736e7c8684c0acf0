//! Reading your own writes through `stargate::` with `stargate.readFrom = replica`
//! (git-remote-stargate(1), READING YOUR OWN WRITES), at the shipped settings: a replica
//! whose agent is frozen serves no stale read after a push; a current one serves them;
//! `git kv`; a failover between a push and a read; the position a push prints, and
//! `git stargate wait` for it.

use std::time::{Duration, Instant};

use crate::support::*;

/// A client of `lab` whose reads go to a replica, with a clone of `kv.git` in `c`.
fn reading_client(lab: &Lab) -> Client {
    let client = stargate_client(lab);
    ok(client.git("c", &["config", "--global", "stargate.readFrom", "replica"]));
    client
}

fn git(client: &Client, args: &[&str]) -> std::process::Output {
    run(with_helper(client.git("c", args)))
}

/// Commit a new file and push it; the pushed commit, and the position the push printed.
fn push(client: &Client, round: usize) -> (String, String) {
    std::fs::write(client.home.path().join("c/round"), format!("{round}\n")).unwrap();
    ok(client.git("c", &["add", "round"]));
    ok(client.git("c", &["commit", "-q", "-m", &format!("round {round}")]));
    let out = git(client, &["push", "origin", "HEAD:refs/heads/main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let position = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("remote: stargate: position "))
        .map(|p| p.trim().to_owned())
        .unwrap_or_else(|| panic!("no position in the push's output: {}", stderr(&out)));
    (ok(client.git("c", &["rev-parse", "HEAD"])).trim().to_owned(), position)
}

/// Fetch `main` through the helper: what it read, and from which node.
fn read(client: &Client, extra: &[&str]) -> (String, String) {
    let mut args = extra.to_vec();
    args.extend(["fetch", "-v", "origin", "+refs/heads/main:refs/remotes/read/main"]);
    let out = git(client, &args);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let node = (err.lines())
        .find_map(|l| l.strip_prefix("stargate: reading from "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no node named: {err}"))
        .to_owned();
    (ok(client.git("c", &["rev-parse", "refs/remotes/read/main"])).trim().to_owned(), node)
}

fn replica_of(lab: &Lab, leader: &str) -> String {
    lab.nodes.iter().find(|n| *n != leader).unwrap().clone()
}

/// 100 rounds of push-then-fetch; in every fifth round the replica's agent is frozen
/// (SIGSTOP) from before the push until after the read, so it cannot apply the push while
/// it still looks alive: no read is stale, the frozen rounds are read from the leader after
/// `stargate.readYourWrites.timeout` (1 s, the default), and the others from the replica.
/// The same frozen round with read-your-writes off reads the replica's stale value: what
/// this test guards against does happen without it.
#[test]
fn a_push_is_read_back_from_a_replica_only_once_it_has_applied_it() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = replica_of(&lab, &leader);
    let client = reading_client(&lab);
    let (mut stale, mut from_replica, mut current_rounds, mut waits) = (Vec::new(), 0, 0, Vec::new());
    for round in 0..100 {
        let frozen = round % 5 == 0;
        if frozen {
            lab.kill(&replica, "agent", "STOP");
        }
        let (pushed, _) = push(&client, round);
        let started = Instant::now();
        let (got, node) = read(&client, &[]);
        if frozen {
            waits.push(started.elapsed());
            lab.kill(&replica, "agent", "CONT");
            assert_eq!(node, leader, "round {round}: the frozen replica cannot have applied the push");
        } else {
            current_rounds += 1;
            from_replica += usize::from(node == replica);
        }
        if got != pushed {
            stale.push((round, node));
        }
    }
    assert!(stale.is_empty(), "stale reads (round, node): {stale:?}");
    // The replica applies a push within tens of milliseconds of its signal; a round it
    // missed would be read from the leader, correctly but without spreading the load.
    assert!(
        from_replica >= current_rounds * 9 / 10,
        "{from_replica} of {current_rounds} current rounds read the replica"
    );
    let waited = waits.iter().min().unwrap();
    assert!(*waited >= Duration::from_secs(1), "a frozen round waits the timeout before the leader: {waits:?}");
    eprintln!("read-your-writes: 0 stale of 100; {from_replica} of {current_rounds} current rounds from the replica");

    // Outside any clone (`git ls-remote` anywhere): the user's own record of the push.
    lab.kill(&replica, "agent", "STOP");
    let (pushed, _) = push(&client, 100);
    let url = format!("stargate::{}/kv.git", lab.nodes.join(","));
    let listed = ok(with_helper(client.git(".", &["ls-remote", &url, "refs/heads/main"])));
    assert!(listed.starts_with(&pushed), "{listed}");

    // Without read-your-writes, the frozen replica serves the old value.
    let (got, node) = read(&client, &["-c", "stargate.readYourWrites=false"]);
    lab.kill(&replica, "agent", "CONT");
    assert_eq!(node, replica);
    assert_ne!(got, pushed, "a frozen replica read without read-your-writes is stale");
}

/// `git kv set` then `git kv get` through the helper: the get sees the set whether the
/// replica applied it or is frozen.
#[test]
fn a_kv_set_is_read_back_by_the_next_get() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = replica_of(&lab, &leader);
    let client = reading_client(&lab);
    for round in 0..20 {
        let frozen = round % 4 == 0;
        if frozen {
            lab.kill(&replica, "agent", "STOP");
        }
        let value = format!("v{round}");
        let out = run(with_helper(client.git("c", &["kv", "set", "k", &value])));
        assert!(out.status.success(), "{}", stderr(&out));
        let out = run(with_helper(client.git("c", &["kv", "get", "k"])));
        if frozen {
            lab.kill(&replica, "agent", "CONT");
        }
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{value}\n"), "round {round} (frozen: {frozen})");
    }
}

/// A planned promotion between a push and a read: the old leader, a replica now, holds
/// the push and serves the read. A forced one that loses the push: the replica that
/// will never apply it says so, the position is forgotten, and the read goes to the
/// leader at once (no wait for the timeout).
#[test]
fn a_failover_between_a_push_and_a_read_neither_blocks_nor_reads_stale() {
    // No cooldown between the two promotions (its default keeps a node from being
    // promoted again within minutes, which is what a second test promotion does here).
    let lab = Lab::up_with(2, "[stargate \"promote\"]\n\tcooldown = 0s\n");
    let first = lab.wait_leader(None, Duration::from_secs(10));
    let second = replica_of(&lab, &first);
    let client = reading_client(&lab);
    let (pushed, _) = push(&client, 1);
    let out = run(lab.node_cmd(&second, "git").args(["stargate", "promote", "--yes"]));
    assert!(out.status.success(), "{}{}", stderr(&out), lab.logs());
    assert_eq!(lab.wait_leader(None, Duration::from_secs(10)), second);
    let (got, node) = read(&client, &[]);
    assert_eq!((got.as_str(), node.as_str()), (pushed.as_str(), first.as_str()), "the old leader holds the push");

    // The second leader takes a push its replica never gets, then loses its machine.
    lab.kill(&first, "agent", "KILL");
    let (lost, position) = push(&client, 2);
    lab.kill(&second, "agent", "KILL");
    lab.kill(&second, "daemon", "KILL");
    lab.start(&first, "agent");
    assert_eq!(lab.wait_leader(Some(&second), Duration::from_secs(15)), first);
    lab.start(&second, "daemon");
    lab.start(&second, "agent");
    // Its journal too: a full mirror moves the journal ref after the others.
    lab.wait_parity(&first, &second, Duration::from_secs(20));
    assert_eq!(lab.rev(&second, "refs/heads/main").as_deref(), Some(pushed.as_str()));
    // The new leader knows the push is lost; the replica cannot tell before the new
    // leader's journal has an entry of its own: it is behind until the timeout.
    assert_eq!(lab.http(&first, &format!("/applied?repo=kv.git&position={position}")).0, 410);
    let (code, body) = lab.http(&second, &format!("/applied?repo=kv.git&position={position}"));
    assert_eq!(code, 503, "{body} (position {position}){}", lab.logs());
    let (got, node) = read(&client, &[]);
    assert_eq!(node, first, "not applied on the replica: read from the leader");
    assert_eq!(got, pushed, "the leader's main: the lost push is not there");
    assert_ne!(got, lost);
    // The leader said it will never apply it: forgotten, the next read goes to the replica.
    let started = Instant::now();
    assert_eq!(read(&client, &[]).1, second);
    assert!(started.elapsed() < Duration::from_secs(1), "no wait for a position that will never come");

    // Once the new leader wrote, the replica knows as well: from its journal, which a sync
    // moves after the refs it applies (so the wait is for both).
    let (newer, _) = push(&client, 3);
    lab.wait_until("the replica to apply the next push and journal it", Duration::from_secs(10), || {
        lab.rev(&second, "refs/heads/main").as_deref() == Some(newer.as_str())
            && lab.rev(&second, "refs/stargate/journal") == lab.rev(&first, "refs/stargate/journal")
    });
    assert_eq!(lab.http(&second, &format!("/applied?repo=kv.git&position={position}")).0, 410);
}

/// The position a push prints, waited for on a replica with `git stargate wait` and over
/// HTTP: behind while its agent is frozen (exit 124 after the timeout), applied once it
/// runs again; superseded positions and bad input refused.
#[test]
fn git_stargate_wait_returns_once_the_position_is_applied() {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = replica_of(&lab, &leader);
    let client = reading_client(&lab);
    let wait = |position: &str, timeout: &str| {
        lab.node_cmd(&replica, "git")
            .args(["stargate", "wait", "kv.git", position, "--timeout", timeout])
            .output()
            .unwrap()
    };
    lab.kill(&replica, "agent", "STOP");
    let (_, position) = push(&client, 1);
    // Said from the mark of the push's git (its last outcome), it is the leader's tip.
    assert_eq!(lab.http(&leader, "/position?repo=kv.git").1.trim(), position);
    let out = wait(&position, "300ms");
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("has not applied"), "{}", stderr(&out));
    let (code, body) = lab.http(&replica, &format!("/applied?repo=kv.git&position={position}"));
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("behind: at "), "{body}");
    let waiter = lab
        .node_cmd(&replica, "git")
        .args(["stargate", "wait", "kv.git", &position, "--timeout", "20s"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let thawed = Instant::now();
    lab.kill(&replica, "agent", "CONT");
    let status = waiter.wait_with_output().unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    eprintln!("wait returned {:?} after the replica's agent resumed", thawed.elapsed());
    assert_eq!(lab.http(&replica, &format!("/applied?repo=kv.git&position={position}")).0, 200);
    let (code, now) = lab.http(&replica, "/position?repo=kv.git");
    assert_eq!(code, 200);
    assert_eq!(now.trim(), position, "the replica is where the leader was after the push");

    // A position of an epoch the journal went past without it: refused, exit 1.
    let (epoch, rest) = position.split_once(':').unwrap();
    let (seq, _) = rest.split_once(':').unwrap();
    let foreign = format!("0:{}:{}", seq.parse::<u64>().unwrap() + 5, "ab".repeat(20));
    assert!(epoch.parse::<u64>().unwrap() >= 1);
    let out = wait(&foreign, "5s");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("will never apply"), "{}", stderr(&out));
    assert_eq!(lab.http(&replica, &format!("/applied?repo=kv.git&position={foreign}")).0, 410);
    // Bad input: usage, 4xx.
    assert_eq!(wait("3:1", "1s").status.code(), Some(129));
    assert_eq!(lab.http(&replica, "/applied?repo=kv.git&position=3:1").0, 400);
    assert_eq!(lab.http(&replica, "/applied?repo=../x.git&position=3:1").0, 404);
    assert_eq!(lab.http(&replica, "/position?repo=nope.git").0, 404);
}
