//! `git-remote-stargate` with real git against lab nodes: every ordinary command over
//! `git://`, file paths and ssh; routing to the leader and to replicas; failover in the
//! middle of a session; the retry before anything is sent; probe timeouts; hostile input.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A client whose git finds `git-remote-stargate`, configured with `config`.
struct Remote {
    client: Client,
    env: Vec<(String, String)>,
}

impl Remote {
    fn new(config: &str) -> Remote {
        let client = Client::new();
        let mut text = std::fs::read_to_string(client.home.path().join(".gitconfig")).unwrap();
        text += config;
        std::fs::write(client.home.path().join(".gitconfig"), text).unwrap();
        Remote { client, env: Vec::new() }
    }

    fn git(&self, dir: &str, args: &[&str]) -> Command {
        let mut c = with_helper(self.client.git(dir, args));
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn ok(&self, dir: &str, args: &[&str]) -> String {
        ok(self.git(dir, args))
    }

    fn run(&self, dir: &str, args: &[&str]) -> Output {
        run(self.git(dir, args))
    }

    fn path(&self, dir: &str) -> std::path::PathBuf {
        self.client.home.path().join(dir)
    }

    /// A work repository with a few commits touching one file (so that a blob-less clone
    /// has something to leave out), a branch and two tags.
    fn work(&self, dir: &str) {
        self.ok(".", &["init", "-q", "-b", "main", dir]);
        for i in 1..=3 {
            std::fs::write(self.path(dir).join("file"), format!("version {i}\n").repeat(100)).unwrap();
            self.ok(dir, &["add", "file"]);
            self.ok(dir, &["commit", "-q", "-m", &format!("commit {i}")]);
        }
        self.ok(dir, &["tag", "light"]);
        self.ok(dir, &["tag", "-a", "-m", "annotated", "v1"]);
        self.ok(dir, &["branch", "topic"]);
    }

    fn head(&self, dir: &str, rev: &str) -> String {
        self.ok(dir, &["rev-parse", rev]).trim().to_owned()
    }
}

fn git_dir(repo: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git").arg("--git-dir").arg(repo).args(args).env("GIT_CONFIG_NOSYSTEM", "1"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn lab_for_remote(nodes: usize) -> (Lab, String) {
    let lab = Lab::up(nodes);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    for node in &lab.nodes {
        // Partial clones need the server's consent.
        git_dir(&lab.repo(node, "kv"), &["config", "uploadpack.allowFilter", "true"]);
        git_dir(&lab.repo(node, "kv"), &["symbolic-ref", "HEAD", "refs/heads/main"]);
    }
    (lab, leader)
}

/// Every ordinary command through `url`; `server` is the leader's repository.
fn exercise(r: &Remote, url: &str, server: &Path) {
    r.work("w");
    // push: new branch, another branch, tags
    r.ok("w", &["push", "-q", url, "main", "topic"]);
    r.ok("w", &["push", "-q", url, "--tags"]);
    assert_eq!(git_dir(server, &["rev-parse", "refs/heads/main"]), r.head("w", "main"));
    assert_eq!(git_dir(server, &["rev-parse", "refs/tags/v1"]), r.head("w", "v1"));

    // ls-remote, over protocol v2
    let out = r.run("w", &["ls-remote", url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&format!("{}\trefs/heads/main", r.head("w", "main"))), "{listing}");
    assert!(listing.contains("refs/tags/v1^{}"), "{listing}");
    let traced = run(r.git("w", &["ls-remote", url]).env("GIT_TRACE_PACKET", "1"));
    assert!(stderr(&traced).contains("ls-remote< version 2"), "protocol v2: {}", stderr(&traced));

    // clone, with progress
    let out = r.run(".", &["clone", "--progress", url, "c1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Receiving objects"), "progress shown: {}", stderr(&out));
    assert_eq!(r.head("c1", "HEAD"), r.head("w", "main"));
    assert_eq!(r.ok("c1", &["tag", "-l"]), "light\nv1\n");

    // fetch and pull
    std::fs::write(r.path("w").join("new"), "new\n").unwrap();
    r.ok("w", &["add", "new"]);
    r.ok("w", &["commit", "-q", "-m", "commit 4"]);
    r.ok("w", &["push", "-q", url, "main"]);
    r.ok("c1", &["fetch", "-q"]);
    assert_eq!(r.head("c1", "origin/main"), r.head("w", "main"));
    r.ok("c1", &["pull", "-q", "--ff-only"]);
    assert_eq!(r.head("c1", "HEAD"), r.head("w", "main"));

    // force push, delete, atomic
    r.ok("w", &["commit", "-q", "--amend", "-m", "commit 4, reworded"]);
    let refused = r.run("w", &["push", url, "main"]);
    assert!(!refused.status.success(), "non-fast-forward must be refused");
    r.ok("w", &["push", "-q", "--force", url, "main"]);
    assert_eq!(git_dir(server, &["rev-parse", "refs/heads/main"]), r.head("w", "main"));
    r.ok("w", &["push", "-q", url, ":topic"]);
    assert_eq!(git_dir(server, &["rev-parse", "--verify", "-q", "refs/heads/topic"]), "");
    r.ok("w", &["branch", "one"]);
    r.ok("w", &["branch", "two", "main~1"]);
    r.ok("w", &["push", "-q", "--atomic", url, "one", "two"]);
    assert_eq!(git_dir(server, &["rev-parse", "refs/heads/two"]), r.head("w", "main~1"));

    // shallow, partial and mirror clones
    r.ok(".", &["clone", "-q", "--depth", "1", url, "shallow"]);
    assert_eq!(r.ok("shallow", &["rev-list", "--count", "HEAD"]).trim(), "1");
    r.ok(".", &["clone", "-q", "--filter=blob:none", url, "partial"]);
    assert_eq!(r.ok("partial", &["config", "remote.origin.promisor"]).trim(), "true");
    let missing = r.ok("partial", &["rev-list", "--objects", "--missing=print", "--all"]);
    assert!(missing.lines().any(|l| l.starts_with('?')), "older blobs are left out:\n{missing}");
    r.ok(".", &["clone", "-q", "--mirror", url, "mirror.git"]);
    let refs = r.ok("mirror.git", &["for-each-ref", "--format=%(refname)"]);
    for want in ["refs/heads/main", "refs/heads/one", "refs/heads/two", "refs/tags/light", "refs/tags/v1"] {
        assert!(refs.lines().any(|l| l == want), "{want} in the mirror:\n{refs}");
    }
}

#[test]
fn every_command_over_git_daemon() {
    let (lab, leader) = lab_for_remote(2);
    let r = Remote::new(&lab.client_config(&["git"]));
    exercise(&r, "stargate::a,b/kv.git", &lab.repo(&leader, "kv"));
}

#[test]
fn every_command_over_file_paths() {
    let (lab, leader) = lab_for_remote(2);
    let r = Remote::new(&lab.client_config(&["file"]));
    exercise(&r, "stargate::b,a/kv.git", &lab.repo(&leader, "kv"));
}

#[test]
fn every_command_over_ssh() {
    let (lab, leader) = lab_for_remote(2);
    let ips: Vec<String> = lab.nodes.iter().map(|n| lab.ip(n)).collect();
    let sshd = Sshd::start(&ips, 2222);
    let mut r = Remote::new(&lab.client_config(&["ssh", "2222"]));
    r.env.push(("GIT_SSH_COMMAND".into(), sshd.ssh_command()));
    exercise(&r, "stargate::a,b/kv.git", &lab.repo(&leader, "kv"));

    // A repository path cannot smuggle a command into the remote shell.
    let marker = lab.dir.path().join("pwned");
    let url = format!("stargate::a,b/kv.git';touch {};'", marker.display());
    let out = r.run("w", &["ls-remote", &url]);
    assert!(!out.status.success());
    assert!(!marker.exists(), "the path reached the shell unquoted: {}{}", stderr(&out), sshd.log());
}

#[test]
fn failover_in_the_middle_of_a_session() {
    let (lab, first) = lab_for_remote(2);
    let r = Remote::new(&lab.client_config(&["git"]));
    r.work("w");
    r.ok("w", &["push", "-q", "stargate::a,b/kv.git", "main"]);
    r.ok(".", &["clone", "-q", "stargate::a,b/kv.git", "c"]);
    // Let replication (when the replica runs it) settle first: a mirror landing in the middle
    // of the push below would race it, and that race is not what this test is about.
    let other = if first == "a" { "b" } else { "a" };
    let pushed = r.head("w", "main");
    let start = Instant::now();
    while git_dir(&lab.repo(other, "kv"), &["rev-parse", "-q", "--verify", "refs/heads/main"]) != pushed
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    lab.kill(&first, "agent", "KILL");
    let second = lab.wait_leader(Some(&first), Duration::from_secs(10));
    std::fs::write(r.path("c").join("after"), "after failover\n").unwrap();
    r.ok("c", &["add", "after"]);
    r.ok("c", &["commit", "-q", "-m", "after failover"]);
    let out = r.run("c", &["push", "-v", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("stargate: writing to {second} ")), "{}", stderr(&out));
    assert_eq!(git_dir(&lab.repo(&second, "kv"), &["rev-parse", "refs/heads/main"]), r.head("c", "HEAD"));
    r.ok("c", &["fetch", "-q"]);
    assert_eq!(r.head("c", "origin/main"), r.head("c", "HEAD"));
}

#[test]
fn a_push_to_a_node_that_is_not_leader_shows_the_refusal() {
    let (lab, leader) = lab_for_remote(2);
    let other = if leader == "a" { "b" } else { "a" };
    let r = Remote::new(&lab.client_config(&["git"]));
    r.work("w");
    // One name: no probe, straight to that node, whose pre-receive hook refuses.
    let out = r.run("w", &["push", &format!("stargate::{other}/kv.git"), "main"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("stargate: not leader (leader: {leader}, epoch:")), "{err}");
}

#[test]
fn no_leader_lists_what_every_node_answered() {
    let (lab, leader) = lab_for_remote(2);
    let r = Remote::new(&lab.client_config(&["git"]));
    r.work("w");
    lab.kill(&leader, "agent", "STOP");
    lab.kill(&leader, "health", "KILL");
    // The stopped agent keeps the lease: nobody leads.
    let out = r.run("w", &["push", "stargate::a,b/kv.git", "main"]);
    lab.kill(&leader, "agent", "CONT");
    let err = stderr(&out);
    // The helper exits 128 without answering `connect`, and git with it.
    assert_eq!(out.status.code(), Some(128), "{err}");
    assert!(err.contains("fatal: no leader among a,b:"), "{err}");
    assert!(err.contains(&format!("  {leader} (http://{}:8080): connection refused", lab.ip(&leader))), "{err}");
    let other = if leader == "a" { "b" } else { "a" };
    assert!(err.contains(&format!("  {other} (http://{}:8080): not leader:", lab.ip(other))), "{err}");
}

#[test]
fn an_unreachable_node_costs_at_most_the_probe_timeout() {
    let (lab, leader) = lab_for_remote(2);
    let other = if leader == "a" { "b" } else { "a" };
    // Accepts connections (the kernel does) but never answers.
    let hung = TcpListener::bind(format!("{}:8099", lab.ip("a"))).unwrap();
    let config = format!(
        "{}[stargate \"x\"]\n\turl = git://{}:9/\n\thealth = http://{}:8099\n[stargate]\n\tprobeTimeout = 300ms\n",
        lab.client_config(&["git"]),
        lab.ip("a"),
        lab.ip("a")
    );
    let r = Remote::new(&config);
    r.work("w");
    // No leader among x and a replica: every answer is awaited, x's for 300 ms at most.
    let start = Instant::now();
    let out = r.run("w", &["push", &format!("stargate::x,{other}/kv.git"), "main"]);
    let took = start.elapsed();
    let err = stderr(&out);
    assert!(err.contains(&format!("x (http://{}:8099): no answer within 300 ms", lab.ip("a"))), "{err}");
    assert!(took < Duration::from_millis(300 + 1200), "took {took:?}");
    // With the leader among the names, its answer settles it without waiting for x.
    let start = Instant::now();
    r.ok("w", &["push", "-q", &format!("stargate::x,{other},{leader}/kv.git"), "main"]);
    assert!(start.elapsed() < Duration::from_millis(300 + 1200), "took {:?}", start.elapsed());
    drop(hung);
}

/// Health answers from a script: each port answers its list in turn, then repeats the last
/// (`leader…` and JSON bodies with 200, others with 503; a body after `slow ` 200 ms late,
/// within the clients' 500 ms).
fn fake_health(ip: &str, answers: Vec<(u16, Vec<&'static str>)>) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for (port, script) in answers {
        let listener = TcpListener::bind(format!("{ip}:{port}")).unwrap();
        threads.push(std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let mut body = script[i.min(script.len() - 1)];
                if let Some(rest) = body.strip_prefix("slow ") {
                    std::thread::sleep(Duration::from_millis(200));
                    body = rest;
                }
                let ok = body.starts_with("leader") || body.starts_with('{');
                let code = if ok { "200 OK" } else { "503 Service Unavailable" };
                let _ = write!(conn, "HTTP/1.1 {code}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            }
        }));
    }
    threads
}

#[test]
fn a_connection_that_fails_before_anything_is_sent_is_retried_on_the_new_leader() {
    let (lab, leader) = lab_for_remote(2);
    let ip = lab.ip("a");
    // x looks like the leader at first, but nothing listens at its URL; then y leads, and y
    // is the real leader's repository (y is not the leader yet at the first look: were it, its
    // newer epoch would win that look).
    fake_health(
        &ip,
        vec![
            (8091, vec!["leader, epoch 5\n", "not leader: fenced\nleader y, epoch 6\n"]),
            (8092, vec!["not leader: electing\n", "leader, epoch 6\n"]),
        ],
    );
    let config = format!(
        "[stargate \"x\"]\n\turl = git://{ip}:9/\n\thealth = http://{ip}:8091\n\
         [stargate \"y\"]\n\turl = git://{}/\n\thealth = http://{ip}:8092\n",
        lab.ip(&leader)
    );
    let r = Remote::new(&config);
    r.work("w");
    let out = r.run("w", &["push", "-v", "stargate::x,y/kv.git", "main"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stargate: x: cannot reach git://") && err.contains("nothing was sent"), "{err}");
    assert!(err.contains("stargate: writing to y "), "{err}");
    assert_eq!(git_dir(&lab.repo(&leader, "kv"), &["rev-parse", "refs/heads/main"]), r.head("w", "main"));
}

#[test]
fn reads_follow_read_from_and_max_read_lag() {
    let (lab, leader) = lab_for_remote(2);
    let other = if leader == "a" { "b" } else { "a" };
    let r = Remote::new(&lab.client_config(&["git"]));
    r.work("w");
    r.ok("w", &["push", "-q", "stargate::a,b/kv.git", "main"]);
    // The node chosen, as `fetch -v` reports it.
    let reads_from = |config: &[&str]| {
        let mut args: Vec<&str> = Vec::new();
        for c in config {
            args.extend(["-c", c]);
        }
        // Any refs: a replica may not have the branch yet.
        args.extend(["fetch", "-v", "stargate::a,b/kv.git", "+refs/heads/*:refs/remotes/probe/*"]);
        let out = r.run("w", &args);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        let line = err.lines().find(|l| l.starts_with("stargate: reading from")).unwrap_or_default().to_owned();
        assert!(!line.is_empty(), "{err}");
        line
    };
    assert!(reads_from(&[]).starts_with(&format!("stargate: reading from {leader} ")));
    assert!(reads_from(&["stargate.readFrom=replica"]).starts_with(&format!("stargate: reading from {other} ")));
    let line = reads_from(&["stargate.readFrom=any"]);
    assert!(line.contains("reading from"), "{line}");
    // A bad value is refused, naming the key.
    let out = r.run("w", &["-c", "stargate.readFrom=nearest", "fetch", "stargate::a,b/kv.git"]);
    assert!(stderr(&out).contains("bad value 'nearest' for 'stargate.readFrom'"), "{}", stderr(&out));

    // Replicas that publish a lag of 30 s (y) and none at all (z), serving the real
    // replica's repository.
    let ip = lab.ip("a");
    fake_health(
        &ip,
        vec![
            (8093, vec![r#"{"accepts_writes":false,"refusal":"passive","agent":{"alive":true},"lag_seconds":30.0}"#]),
            (8094, vec![r#"{"accepts_writes":false,"refusal":"passive","agent":{"alive":true},"lag_seconds":null}"#]),
        ],
    );
    let replica_url = format!("git://{}/", lab.ip(other));
    let config = format!(
        "{}[stargate \"y\"]\n\turl = {replica_url}\n\thealth = http://{ip}:8093\n\
         [stargate \"z\"]\n\turl = {replica_url}\n\thealth = http://{ip}:8094\n",
        lab.client_config(&["git"])
    );
    let r = Remote::new(&config);
    r.work("w");
    let url = format!("stargate::{leader},y,z/kv.git");
    let read = |max_lag: &str| {
        let lag = format!("stargate.maxReadLag={max_lag}");
        let args =
            ["-c", "stargate.readFrom=replica", "-c", &lag, "fetch", "-v", &url, "+refs/heads/*:refs/remotes/p/*"];
        let out = r.run("w", &args);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        err.lines().find(|l| l.starts_with("stargate: reading from")).unwrap_or_default().to_owned()
    };
    // Within the limit: y. Above it, or unknown: skipped, and the leader serves.
    assert!(read("1m").starts_with("stargate: reading from y "), "{}", read("1m"));
    let line = read("10s");
    assert!(line.starts_with(&format!("stargate: reading from {leader} ")), "{line}");
}

/// Clients that reach only the public address of responders run with `--internal` (no
/// `/status` there): reads still follow `stargate.readFrom`, judging each node by `/readyz`,
/// and a replica whose lag is then unknown is skipped when `stargate.maxReadLag` is set.
#[test]
fn reads_through_responders_that_serve_only_the_probes() {
    let (lab, leader) = lab_for_remote(2);
    let other = if leader == "a" { "b" } else { "a" };
    let mut responders = Vec::new();
    let mut config = String::new();
    for n in &lab.nodes {
        let ip = lab.ip(n);
        let (public, internal) = (format!("{ip}:8097"), format!("{ip}:8098"));
        let child = lab
            .node_cmd(n, HOOK)
            .args(["health", "--listen", &public, "--internal", &internal])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the responder", Duration::from_secs(5), || std::net::TcpStream::connect(&internal).is_ok());
        responders.push(child);
        assert_eq!(http_get(&public, "/status").0, 404);
        config += &format!("[stargate \"{n}\"]\n\turl = git://{ip}/\n\thealth = http://{public}\n");
    }
    let r = Remote::new(&config);
    r.work("w");
    r.ok("w", &["push", "-q", "stargate::a,b/kv.git", "main"]);
    let reads_from = |extra: &[&str]| {
        let mut args = vec!["-c", "stargate.readFrom=replica"];
        args.extend(extra);
        args.extend(["fetch", "-v", "stargate::a,b/kv.git", "+refs/heads/*:refs/remotes/p/*"]);
        let out = r.run("w", &args);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        err.lines().find(|l| l.starts_with("stargate: reading from")).unwrap_or_default().to_owned()
    };
    let line = reads_from(&[]);
    assert!(line.starts_with(&format!("stargate: reading from {other} ")), "{line}");
    let line = reads_from(&["-c", "stargate.maxReadLag=1m"]);
    assert!(line.starts_with(&format!("stargate: reading from {leader} ")), "{line}");
    for mut child in responders {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn the_command_loop_fed_random_and_truncated_lines_exits_with_an_error() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".gitconfig"), "").unwrap();
    let helper = |input: &[u8]| {
        let mut child = cmd(REMOTE_HELPER, home.path())
            .args(["origin", "stargate::somehost/kv.git"])
            .current_dir(home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out = helper(b"capabilities\noption verbosity 1\noption nosuch x\n\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "connect\noption\n\nok\nunsupported\n");
    let mut x = 0x9E3779B97F4A7C15u64;
    let mut inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"capabilities".to_vec(),
        b"capabilities\noption verbos".to_vec(),
        b"connect git-upload-pac".to_vec(),
        b"connect nonsense\n".to_vec(),
        b"list\n".to_vec(),
        vec![b'x'; 100_000],
    ];
    for _ in 0..40 {
        let mut input = Vec::new();
        for _ in 0..(x % 300) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            input.push((x >> 24) as u8);
        }
        // A blank first line is a clean goodbye, not garbage.
        if input.first() == Some(&b'\n') {
            input[0] = b'x';
        }
        inputs.push(input);
    }
    for input in inputs {
        let out = helper(&input);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(128), "input {:?}: {err}", String::from_utf8_lossy(&input));
        assert!(err.starts_with("fatal: ") && !err.contains("panicked"), "{err}");
        assert!(!err.contains('\u{1b}'), "no terminal escapes echoed: {err:?}");
    }
}

#[test]
fn https_nodes_are_handed_to_git_remote_https() {
    let (lab, leader) = lab_for_remote(2);
    let other = if leader == "a" { "b" } else { "a" };
    let mut config = String::new();
    for node in &lab.nodes {
        let ip = lab.ip(node);
        http_backend(&format!("{ip}:8181"), &lab.dir.path().join(node).join("repos"));
        config += &format!("[stargate \"{node}\"]\n\turl = http://{ip}:8181/\n\thealth = http://{ip}:8080\n");
    }
    let r = Remote::new(&config);
    r.work("w");
    r.ok("w", &["push", "-q", "stargate::a,b/kv.git", "main", "--tags"]);
    assert_eq!(git_dir(&lab.repo(&leader, "kv"), &["rev-parse", "refs/heads/main"]), r.head("w", "main"));
    let listing = r.ok("w", &["ls-remote", "stargate::a,b/kv.git"]);
    assert!(listing.contains(&format!("{}\trefs/heads/main", r.head("w", "main"))), "{listing}");
    r.ok(".", &["clone", "-q", "stargate::b,a/kv.git", "c"]);
    assert_eq!(r.head("c", "HEAD"), r.head("w", "main"));
    // A read sent to the replica restarts git remote-https there, replaying what git said.
    let out =
        r.run("c", &["-c", "stargate.readFrom=replica", "fetch", "-v", "origin", "+refs/heads/*:refs/remotes/p/*"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("stargate: reading from {other} at http://{}:8181/kv.git", lab.ip(other))), "{err}");
}

/// Forwards each connection on `listen` to `target` after `delay`: a health responder that
/// answers late.
fn slow_relay(listen: &str, target: String, delay: Duration) {
    let listener = TcpListener::bind(listen).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            let target = target.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(mut server) = std::net::TcpStream::connect(&target) else { return };
                let mut request = [0u8; 4096];
                let Ok(n) = client.read(&mut request) else { return };
                let _ = server.write_all(&request[..n]);
                let mut answer = Vec::new();
                let _ = server.read_to_end(&mut answer);
                let _ = client.write_all(&answer);
            });
        }
    });
}

/// The helper pushed to the first node whose `/readyz` said 200: a deposed leader, frozen
/// with its health responder still answering 200 for its old epoch, got the push whenever it
/// answered first, and a repository that takes any push acknowledged it.
#[test]
fn a_push_goes_to_the_node_claiming_the_newest_epoch_not_to_the_first_answering_200() {
    let (lab, first) = lab_for_remote(2);
    let old = lab.record()["epoch"].as_u64().unwrap();
    lab.kill(&first, "agent", "KILL");
    let leader = lab.wait_leader(Some(&first), Duration::from_secs(10));
    let current = lab.record()["epoch"].as_u64().unwrap();
    assert!(current > old);
    let ip = lab.ip("a");
    // x: the deposed leader's responder, at once "leader, epoch <old>"; behind its URL a
    // repository without Stargate's hooks, which accepts anything pushed to it.
    let deposed = tempfile::tempdir().unwrap();
    ok(Command::new("git").args(["init", "-q", "--bare"]).arg(deposed.path().join("kv.git")));
    fake_health(&ip, vec![(8095, vec![format!("leader, epoch {old}\n").leak()])]);
    // y: the real leader, whose answer comes 150 ms later.
    slow_relay(&format!("{ip}:8096"), format!("{}:8080", lab.ip(&leader)), Duration::from_millis(150));
    let config = format!(
        "{}[stargate \"x\"]\n\turl = {}/\n\thealth = http://{ip}:8095\n\
         [stargate \"y\"]\n\turl = git://{}/\n\thealth = http://{ip}:8096\n",
        lab.client_config(&["git"]),
        deposed.path().display(),
        lab.ip(&leader)
    );
    let r = Remote::new(&config);
    r.work("w");
    let out = r.run("w", &["push", "-v", "stargate::x,y/kv.git", "main"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("stargate: writing to y at git://{}/kv.git (leader, epoch {current}", lab.ip(&leader))),
        "{err}"
    );
    assert_eq!(git_dir(&lab.repo(&leader, "kv"), &["rev-parse", "refs/heads/main"]), r.head("w", "main"));
    let stale_refs = || git_dir(&deposed.path().join("kv.git"), &["for-each-ref"]);
    assert_eq!(stale_refs(), "", "nothing reached the deposed leader");

    // A passive node names the current epoch: x is not the leader, although no leader answers.
    let passive = if leader == "a" { "b" } else { "a" };
    r.ok("w", &["commit", "-q", "--allow-empty", "-m", "more"]);
    let out = r.run("w", &["push", &format!("stargate::x,{passive}/kv.git"), "main"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(128), "{err}");
    assert!(err.contains(&format!("fatal: no leader among x,{passive}:")), "{err}");
    assert!(err.contains(&format!("its epoch {old} is behind epoch {current}, which {passive} named")), "{err}");
    assert_eq!(stale_refs(), "", "nothing reached the deposed leader");
}
