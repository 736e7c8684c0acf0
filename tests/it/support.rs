//! The test harness: the lab (contrib/lab/lab) around real processes, and git run in an
//! environment isolated from the user's configuration.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const HOOK: &str = env!("CARGO_BIN_EXE_stargate-hook");

/// A directory holding `stargate-hook` and its `git-kv` / `git-stargate` links.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(HOOK).parent().unwrap().join("it-bin");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["stargate-hook", "git-kv", "git-stargate"] {
            // symlink + rename: atomic, so concurrent test processes cannot trip over each other
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(HOOK, &tmp).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
        dir
    })
}

pub fn path_env() -> String {
    format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default())
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A command with the isolated test environment (git's t/test-lib.sh habit).
pub fn cmd(program: &str, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", path_env())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    if let Ok(log) = std::env::var("STARGATE_LOG") {
        c.env("STARGATE_LOG", log);
    }
    c
}

pub fn run(mut c: impl std::borrow::BorrowMut<Command>) -> Output {
    let c = c.borrow_mut();
    c.output().unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

pub fn ok(mut c: impl std::borrow::BorrowMut<Command>) -> String {
    let c = c.borrow_mut();
    let out = run(&mut *c);
    assert!(out.status.success(), "{c:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A client workspace: its own HOME and clones.
pub struct Client {
    pub home: tempfile::TempDir,
}

impl Client {
    pub fn new() -> Client {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".gitconfig"), "[user]\n\tname = Test\n\temail = test@example.com\n").unwrap();
        Client { home }
    }

    pub fn git(&self, dir: &str, args: &[&str]) -> Command {
        let mut c = cmd("git", self.home.path());
        c.current_dir(self.home.path().join(dir)).args(args);
        c
    }

    pub fn clone(&self, url: &str, dir: &str) {
        ok(cmd("git", self.home.path()).current_dir(self.home.path()).args(["clone", "-q", url, dir]));
    }

    pub fn kv(&self, dir: &str, args: &[&str]) -> Output {
        run(self.git(dir, &[&["kv"], args].concat()))
    }
}

/// Fails the calling test unless it runs as root. A test that needs root says so with
/// `#[ignore = "needs root: <why>"]`: the fast tier (`cargo test`, any user) reports it as
/// ignored, with that reason and in its count, and the full suite runs it as root
/// (`contrib/test.sh`: `cargo nextest run --run-ignored all`). Asked for by another user
/// anyway (`-- --include-ignored`), it fails here, saying why, rather than pass unrun or fail
/// on something unrelated.
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(euid == 0, "needs root: {why}; this runs as uid {euid} (contrib/test.sh runs the full suite as root)");
}

/// A running lab cluster, torn down on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub net: String,
    pub nodes: Vec<String>,
    /// In a `--netns` lab: the calling thread's own network namespace, to return to on drop.
    netns: Option<std::fs::File>,
}

impl Lab {
    pub fn up(nodes: usize) -> Lab {
        Lab::up_with(nodes, "")
    }

    /// `extra` is appended to every node's git config before anything starts.
    pub fn up_with(nodes: usize, extra: &str) -> Lab {
        Lab::up_on(nodes, &format!("127.{}.{}", rand_octet(), rand_octet()), extra)
    }

    /// As `up_with`, every node serving the repositories `repos` (names without `.git`,
    /// separated by spaces) instead of `kv` alone.
    pub fn up_with_repos(nodes: usize, extra: &str, repos: &str) -> Lab {
        Lab::launch(nodes, &format!("127.{}.{}", rand_octet(), rand_octet()), extra, &["--repos", repos])
    }

    /// As `up_with`, every node running the binaries in `bin` (`stargate-hook` and its
    /// links) rather than this build's: `contrib/lab/lab up --bin`.
    pub fn up_with_bin(nodes: usize, extra: &str, bin: &Path) -> Lab {
        let net = format!("127.{}.{}", rand_octet(), rand_octet());
        Lab::launch(nodes, &net, extra, &["--bin", bin.to_str().unwrap()])
    }

    /// Stop every process of `node`, run its binaries from `bin` from now on, start it again
    /// and wait for it (`contrib/lab/lab upgrade`): a node upgraded, or rolled back.
    pub fn upgrade(&self, node: &str, bin: &Path) {
        let out = run(self.script("upgrade").args([node, bin.to_str().unwrap()]));
        assert!(out.status.success(), "lab upgrade {node}: {}{}", stderr(&out), self.logs());
    }

    /// As `up_with`, on the addresses `<net>.1`, `<net>.2`, ...
    pub fn up_on(nodes: usize, net: &str, extra: &str) -> Lab {
        Lab::launch(nodes, net, extra, &[])
    }

    /// As `up_with`, the replicas mirroring over `transport` (`lab up --transport`): with
    /// ssh, sshd on port 2222 of every node's address; with https, nginx on port 8443.
    pub fn up_over(nodes: usize, extra: &str, transport: Transport) -> Lab {
        let net = format!("127.{}.{}", rand_octet(), rand_octet());
        Lab::launch(nodes, &net, extra, &["--transport", transport.name()])
    }

    fn launch(nodes: usize, net: &str, extra: &str, flags: &[&str]) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let net = net.to_owned();
        let names = ["a", "b", "c", "d", "e"][..nodes].iter().map(|s| s.to_string()).collect();
        let lab = Lab { dir, net, nodes: names, netns: None };
        if !extra.is_empty() {
            // `@LAB@` stands for the lab's directory, e.g. to give a node a file-path URL;
            // `@NET@` for its first three address octets.
            let extra = extra.replace("@LAB@", lab.dir.path().to_str().unwrap()).replace("@NET@", &lab.net);
            std::fs::write(lab.dir.path().join("extra.gitconfig"), extra).unwrap();
        }
        let out = run(lab
            .script("up")
            .args(["--nodes", &nodes.to_string(), "--net", &lab.net])
            .args(flags)
            .env("LAB_EXTRA_CONFIG", lab.dir.path().join("extra.gitconfig")));
        assert!(out.status.success(), "lab up failed: {}{}", stderr(&out), lab.logs());
        lab
    }

    /// A `--netns` lab (root only; `contrib/lab/lab`, docs/ARCHITECTURE.md "The lab"): every
    /// node in its own network namespace on `<net>.1`, `<net>.2`, ... and the floating address
    /// `<net>.100` when `opts.vip`. The calling thread joins the lab's hub namespace (where
    /// `<net>.254` is) until the lab is dropped, and so do the threads and processes it starts
    /// meanwhile: the test's clients, HTTP requests and receivers reach the nodes as they
    /// would over a network, while `node_cmd` runs inside a node's namespace. The lab is
    /// torn down on drop, and by its reaper if this process dies first or `opts.ttl` passes.
    pub fn up_netns(nodes: usize, extra: &str, opts: NetOpts) -> Lab {
        require_root("network namespaces (a --netns lab)");
        // Each lab has a network of its own, so its addresses cannot collide with another
        // test's; they differ anyway, to keep logs apart.
        let net = format!("10.{}.{}", 200 + rand_octet() % 50, rand_octet());
        let mut flags = vec!["--netns".to_owned(), "--owner".into(), std::process::id().to_string()];
        flags.extend(["--ttl".into(), opts.ttl.as_secs().max(60).to_string()]);
        if opts.sshd {
            flags.push("--sshd".into());
        }
        if opts.vip {
            flags.extend(["--vip".into(), format!("{net}.100")]);
        }
        if opts.etcd {
            flags.push("--etcd".into());
        }
        flags.extend(["--transport".into(), opts.transport.name().into()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut lab = Lab::launch(nodes, &net, extra, &flags);
        let own = std::fs::File::open("/proc/thread-self/ns/net").expect("own network namespace");
        let hub = std::fs::File::open(Path::new("/run/netns").join(lab.ns(None))).expect("the lab's hub namespace");
        setns(&hub);
        lab.netns = Some(own);
        lab
    }

    /// The network namespace of `node`, or of the hub with None (`--netns` labs).
    pub fn ns(&self, node: Option<&str>) -> String {
        let f = match node {
            Some(n) => self.dir.path().join(n).join("ns"),
            None => self.dir.path().join("netns"),
        };
        std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{}: {e} (not a --netns lab?)", f.display()))
            .trim()
            .to_owned()
    }

    pub fn script(&self, sub: &str) -> Command {
        let mut c = cmd(repo_root().join("contrib/lab/lab").to_str().unwrap(), self.dir.path());
        c.arg(sub).args(["--dir", self.dir.path().to_str().unwrap()]);
        c
    }

    pub fn ip(&self, node: &str) -> String {
        let i = self.nodes.iter().position(|n| n == node).expect("known node");
        format!("{}.{}", self.net, i + 1)
    }

    pub fn url(&self, node: &str, repo: &str) -> String {
        format!("git://{}/{repo}.git", self.ip(node))
    }

    pub fn repo(&self, node: &str, repo: &str) -> PathBuf {
        self.dir.path().join(node).join("repos").join(format!("{repo}.git"))
    }

    /// A command running as part of `node` (its git config and environment, its binaries
    /// when it has its own (`up_with_bin`, `upgrade`); in a `--netns` lab, inside the node's
    /// namespace).
    pub fn node_cmd(&self, node: &str, program: &str) -> Command {
        let home = self.dir.path().join(node);
        let mut c = if self.netns.is_some() {
            let mut c = cmd(ip_bin(), &home);
            c.args(["netns", "exec", &self.ns(Some(node)), program]);
            c
        } else {
            cmd(program, &home)
        };
        c.env("GIT_CONFIG_GLOBAL", home.join("gitconfig"));
        if let Ok(bin) = std::fs::read_to_string(home.join("bin")) {
            c.env("PATH", format!("{}:{}", bin.trim(), path_env()));
        }
        c
    }

    /// A new bare repository `repo` on `node` (with `init_args`), set up as an operator does
    /// (README, Install): `git init --bare`, then `git stargate manage`.
    pub fn init_managed(&self, node: &str, repo: &str, init_args: &[&str]) -> PathBuf {
        let dir = self.repo(node, repo);
        ok(self.node_cmd(node, "git").args(["init", "-q", "--bare"]).args(init_args).arg(&dir));
        ok(self.node_cmd(node, "git").args(["stargate", "manage"]).arg(&dir));
        dir
    }

    /// git run as part of `node`, in its `kv` repository.
    pub fn git(&self, node: &str, args: &[&str]) -> Command {
        let mut c = self.node_cmd(node, "git");
        c.arg("--git-dir").arg(self.repo(node, "kv")).args(args);
        c
    }

    pub fn kill(&self, node: &str, what: &str, signal: &str) {
        ok(self.script("kill").args([node, what, signal]));
    }

    pub fn start(&self, node: &str, what: &str) {
        ok(self.script("start").args([node, what]));
    }

    pub fn pid(&self, node: &str, what: &str) -> u32 {
        let f = self.dir.path().join(node).join(format!("{what}.pid"));
        std::fs::read_to_string(f).unwrap().trim().parse().unwrap()
    }

    pub fn http(&self, node: &str, path: &str) -> (u16, String) {
        http_get(&format!("{}:8080", self.ip(node)), path)
    }

    /// The nodes whose `/readyz` answers 200; a node that cannot be reached within a second
    /// (stopped, cut off) is not ready.
    pub fn ready(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| self.try_http(n, "/readyz").is_some_and(|(code, _)| code == 200))
            .cloned()
            .collect()
    }

    /// The nodes that lead, ready or not: in quorum mode a leader that has not heard a
    /// quorum of peers follow it answers `/readyz` 503 `not ready: ...` (stargate(7), Readiness).
    pub fn leading(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| {
                self.try_http(n, "/readyz").is_some_and(|(code, body)| code == 200 || body.starts_with("not ready: "))
            })
            .cloned()
            .collect()
    }

    /// As `http`, but None when the node cannot be reached or does not answer in time.
    pub fn try_http(&self, node: &str, path: &str) -> Option<(u16, String)> {
        let addr: std::net::SocketAddr = format!("{}:8080", self.ip(node)).parse().ok()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
    }

    /// Wait until exactly one node is ready and it is not `not`; returns it.
    /// `wait_until`, with the lab's logs in the failure message.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_leader(&self, not: Option<&str>, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let ready = self.ready();
            if let [one] = &ready[..]
                && Some(one.as_str()) != not
            {
                return one.clone();
            }
            assert!(start.elapsed() < timeout, "no leader within {timeout:?} (ready: {ready:?}){}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn record(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("shared/stargate.lock.leader")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("shared/stargate.lock.audit")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            for what in ["agent", "health", "daemon", "sshd", "nginx", "fcgiwrap", "keepalived"] {
                let f = self.dir.path().join(n).join(format!("{what}.log"));
                let Ok(text) = std::fs::read_to_string(f) else { continue };
                // The tail: a long run's log would drown the failure message.
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(300)..].join("\n");
                out += &format!("\n--- {n}/{what}.log\n{tail}");
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(own) = self.netns.take() {
            setns(&own);
        }
        let _ = run(&mut self.script("down"));
    }
}

/// What a `--netns` lab runs besides git daemon, agent and health responder.
#[derive(Clone, Copy)]
pub struct NetOpts {
    /// sshd on port 22 of every node (`Lab::ssh_command` for clients).
    pub sshd: bool,
    /// keepalived on every node with `contrib/keepalived/keepalived.conf.example`, its
    /// address `<net>.100`.
    pub vip: bool,
    /// The reaper's deadline: the lab is torn down after this in any case.
    pub ttl: Duration,
    /// One etcd member in every node's namespace, on the node's address (port 2379), the
    /// members one cluster, started before the nodes (`lab up --etcd`).
    pub etcd: bool,
    /// What every node's `stargate.<id>.url` is (`lab up --transport`).
    pub transport: Transport,
}

impl Default for NetOpts {
    fn default() -> NetOpts {
        NetOpts { sshd: false, vip: false, ttl: Duration::from_secs(600), etcd: false, transport: Transport::Git }
    }
}

/// The transport replicas mirror over in a lab (`lab up --transport`, contrib/lab/README.md):
/// every node's `stargate.<id>.url` is `git://`, `ssh://` (sshd on every node, the agents'
/// fetch-only key and strict host keys, contrib/ssh) or `https://` (nginx asking for the
/// nodes' client certificates, contrib/nginx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Git,
    Ssh,
    Https,
}

impl Transport {
    /// `STARGATE_TRANSPORT` (`git`, `ssh` or `https`), `git` when unset.
    pub fn from_env() -> Transport {
        match std::env::var("STARGATE_TRANSPORT").as_deref() {
            Err(_) | Ok("") | Ok("git") => Transport::Git,
            Ok("ssh") => Transport::Ssh,
            Ok("https") => Transport::Https,
            Ok(other) => panic!("STARGATE_TRANSPORT={other}: git, ssh or https"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Git => "git",
            Transport::Ssh => "ssh",
            Transport::Https => "https",
        }
    }

    /// The scheme of the nodes' URLs.
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Git => "git://",
            Transport::Ssh => "ssh://",
            Transport::Https => "https://",
        }
    }
}

/// Move the calling thread into the network namespace `ns` (an open /run/netns or /proc file).
fn setns(ns: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; only this thread's network namespace changes.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// iproute2's `ip`, wherever Debian puts it.
pub fn ip_bin() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("ip")
}

/// A `--netns` lab's controls (contrib/lab/lab): whole nodes and their network.
impl Lab {
    /// Power `node` off: every process killed with SIGKILL, its link down.
    pub fn stop_node(&self, node: &str) {
        ok(self.script("stop").arg(node));
    }

    /// Start a stopped (or running) node again, link up, every process anew; waits for it.
    pub fn restart(&self, node: &str) {
        let out = run(self.script("restart").arg(node));
        assert!(out.status.success(), "lab restart {node}: {}{}", stderr(&out), self.logs());
    }

    /// Drop `node`'s traffic with nft in its namespace: all of it (`peers` empty), or only
    /// to and from `peers`.
    pub fn cut(&self, node: &str, peers: &[&str]) {
        ok(self.script("cut").arg(node).args(peers));
    }

    /// Load the nft ruleset `rules` (`nft -f` syntax) in `node`'s namespace.
    pub fn nft(&self, node: &str, rules: &str) {
        let mut nft = self.node_cmd(node, "nft");
        let mut child = nft.args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft -f in {node}:\n{rules}");
    }

    pub fn heal(&self, node: &str) {
        ok(self.script("heal").arg(node));
    }

    /// The nodes that hold the floating address now.
    pub fn vip_holders(&self) -> Vec<String> {
        let out = run(&mut self.script("vip"));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    pub fn vip(&self) -> String {
        format!("{}.100", self.net)
    }

    /// The clients' address in the hub namespace, where test receivers (alerts, StatsD) listen.
    pub fn hub_ip(&self) -> String {
        format!("{}.254", self.net)
    }

    /// `GIT_SSH_COMMAND` for the nodes' sshd (`NetOpts::sshd`).
    pub fn ssh_command(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ssh/command")).expect("a lab with sshd").trim().to_owned()
    }
}

pub fn rand_octet() -> u8 {
    // Distinct per test process and call: nextest runs tests in parallel processes.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % 250) as u8 + 2
}

/// GET `path` from `addr`; (status, body). Panics on transport failure.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (code, _, body) =
        http_raw(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("http answer");
    (code, body)
}

/// Send `request` as is; (status, head, body), or None if the server closed without answering.
pub fn http_raw(addr: &str, request: &[u8]) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, head.to_owned(), body.to_owned()))
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// libfaketime, which `faketime` (Debian) preloads: `FAKETIME` shifts this process's wall
/// clock; the clocks since boot stay true, as under an NTP step.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `c` with its wall clock (and its children's) shifted `by` ("+1h", "-30s").
pub fn shifted(mut c: Command, by: &str) -> Command {
    assert!(Path::new(LIBFAKETIME).exists(), "faketime is not installed (contrib/test.sh installs it)");
    c.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", by).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    c
}

/// `git-remote-stargate`, built with the tests.
pub const REMOTE_HELPER: &str = env!("CARGO_BIN_EXE_git-remote-stargate");

/// `c` with `git-remote-stargate` found first on PATH.
pub fn with_helper(mut c: Command) -> Command {
    let dir = Path::new(REMOTE_HELPER).parent().unwrap();
    c.env("PATH", format!("{}:{}", dir.display(), path_env()));
    c
}

impl Lab {
    /// Close `node`'s shared ssh connections (`stargate.sync.sshMultiplex`; `ssh -O exit`
    /// on each socket), as a restart of the other end's machine would: the next sync
    /// connects again, and sshd reads its keys and `authorized_keys` again.
    pub fn close_ssh_connections(&self, node: &str) {
        let dir = self.dir.path().join(node).join("repos/.stargate/ssh");
        let sockets: Vec<_> =
            std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(!sockets.is_empty(), "no shared ssh connection in {}", dir.display());
        for socket in sockets {
            let out = run(Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", socket.display()))
                .args(["-O", "exit", "x"]));
            assert!(out.status.success(), "ssh -O exit: {}", stderr(&out));
        }
    }

    /// The `[stargate "<id>"]` sections a client of this lab needs (`lab client-config`),
    /// for `transport` `git`, `file` or `ssh <port>`.
    pub fn client_config(&self, transport: &[&str]) -> String {
        ok(self.script("client-config").args(transport))
    }
}

/// An OpenSSH server on loopback for the tests: generated host and client keys, the
/// addresses given, `AcceptEnv GIT_PROTOCOL`. Stopped on drop.
pub struct Sshd {
    child: std::process::Child,
    pub dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start(ips: &[String], port: u16) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(sshd.exists(), "sshd is not installed (Debian: openssh-server; contrib/test.sh installs it)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let out = run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join(key)));
            assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let mut config = format!(
            "Port {port}\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\nPidFile none\nLogLevel ERROR\n\
             SetEnv HOME={0}\n",
            d.display()
        );
        // SetEnv HOME: commands start as a dedicated git user's would, without the shell
        // startup files of whoever runs the tests (root's may take half a second each).
        for ip in ips {
            config += &format!("ListenAddress {ip}:{port}\n");
        }
        std::fs::write(d.join("sshd_config"), config).unwrap();
        // Privilege separation needs this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let sshd = Sshd { child, dir };
        for ip in ips {
            let addr = format!("{ip}:{port}");
            wait_until(&format!("sshd on {addr}"), Duration::from_secs(10), || TcpStream::connect(&addr).is_ok());
        }
        sshd
    }

    /// `GIT_SSH_COMMAND` for a client of this server.
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -i {}/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.dir.path().display()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The listening sshd's process id (each connection gets a child of its own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal smart-HTTP server for the tests: every request goes to `git http-backend` (CGI)
/// for the repositories under `root`, pushes allowed. One thread per connection, one
/// request per connection. Runs until the test process ends.
pub fn http_backend(addr: &str, root: &Path) {
    serve_http(addr, root, true);
}

/// `http_backend` for a server that speaks only protocol v0 (its web server does not pass
/// the `Git-Protocol` header on, as some proxies do not).
pub fn http_backend_v0(addr: &str, root: &Path) {
    serve_http(addr, root, false);
}

fn serve_http(addr: &str, root: &Path, v2: bool) {
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let root = root.to_owned();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = serve_cgi(conn, &root, v2);
            });
        }
    });
}

fn serve_cgi(mut conn: TcpStream, root: &Path, v2: bool) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("GET").to_owned(), parts.next().unwrap_or("/").to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("PATH", path_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(v) = header(name).filter(|_| v2 || name != "git-protocol") {
            cgi.env(var, v);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, cgi_body) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&out.stdout[..i]).into_owned(), &out.stdout[i + n..]),
        None => (String::new(), &out.stdout[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            Some(_) => response += &format!("{line}\r\n"),
            None => {}
        }
    }
    let head =
        format!("HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n", cgi_body.len());
    conn.write_all(head.as_bytes())?;
    conn.write_all(cgi_body)?;
    conn.flush()
}

impl Lab {
    /// With a leading and b mirroring: b stops mirroring, a takes a write b never sees
    /// (`git kv set k unreplicated` in `client`'s clone `c`), then the epoch moves to b
    /// while a still holds that commit and its storage is out of reach (agent and git
    /// daemon killed), so that b's catch-up on election cannot fetch it. Returns a's value
    /// of `refs/kv/default`, the one b never got.
    pub fn diverge_and_fail_over(&self, client: &Client) -> String {
        self.kill("b", "agent", "KILL");
        assert!(client.kv("c", &["set", "k", "unreplicated"]).status.success());
        let divergent = self.rev("a", "refs/kv/default").unwrap();
        self.kill("a", "agent", "KILL");
        self.kill("a", "daemon", "KILL");
        self.start("b", "agent");
        self.wait_leader(Some("a"), Duration::from_secs(15));
        divergent
    }
}

/// What the tests read off a node of the lab.
impl Lab {
    /// Every ref a mirror copies (all but `refs/stargate/local/*`), with its value.
    pub fn mirrored_refs(&self, node: &str) -> String {
        let out = ok(self.git(node, &["for-each-ref", "--format=%(objectname) %(refname)"]));
        out.lines().filter(|l| !l.contains(" refs/stargate/local/")).collect::<Vec<_>>().join("\n")
    }

    pub fn rev(&self, node: &str, refname: &str) -> Option<String> {
        let out = run(self.git(node, &["rev-parse", "--verify", "-q", refname]));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn status(&self, node: &str) -> serde_json::Value {
        serde_json::from_str(&self.http(node, "/status").1).expect("status JSON")
    }

    /// Wait until `replica` holds the refs `leader` holds; how long that took.
    pub fn wait_parity(&self, leader: &str, replica: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        self.wait_until(&format!("{replica} to mirror {leader}"), timeout, || {
            self.mirrored_refs(leader) == self.mirrored_refs(replica)
        });
        start.elapsed()
    }

    pub fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(node).join("agent.log")).unwrap_or_default()
    }
}

/// A real etcd cluster for the tests: `members` processes on loopback addresses of `net`
/// (`<net>.101`, `.102`, ...), each with its own data directory. Stopped on drop.
pub struct Etcd {
    pub dir: tempfile::TempDir,
    pub net: String,
    members: Vec<Option<std::process::Child>>,
    token: String,
    /// `(certificate, key, CA)` for TLS on the client port, asking clients for certificates.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Etcd {
    pub fn start(net: &str, members: usize) -> Etcd {
        Etcd::start_with(net, members, None)
    }

    /// Members serving `https://` with `cert`/`key`, asking clients for a certificate
    /// signed by `ca`.
    pub fn start_with(net: &str, members: usize, tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Etcd {
        assert!(
            Path::new("/usr/bin/etcd").exists(),
            "etcd is not installed (Debian: etcd-server; contrib/test.sh installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let token = format!("stargate-test-{}-{}", std::process::id(), rand_octet());
        let mut etcd = Etcd { dir, net: net.to_owned(), members: Vec::new(), token, tls };
        for i in 0..members {
            etcd.members.push(None);
            etcd.spawn(i, members, "new");
        }
        etcd.wait_healthy(Duration::from_secs(20));
        etcd
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.net, 101 + i)
    }

    /// `host:port` of every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| format!("{}:2379", self.ip(i))).collect()
    }

    fn spawn(&mut self, i: usize, members: usize, state: &str) {
        let name = |i: usize| format!("m{i}");
        let cluster: Vec<String> = (0..members).map(|j| format!("{}=http://{}:2380", name(j), self.ip(j))).collect();
        let ip = self.ip(i);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))
            .unwrap();
        let mut etcd = Command::new("/usr/bin/etcd");
        if let Some((cert, key, ca)) = &self.tls {
            etcd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
            etcd.arg("--trusted-ca-file").arg(ca).arg("--client-cert-auth");
        }
        let child = etcd
            .args(["--name", &name(i), "--data-dir"])
            .arg(self.dir.path().join(name(i)))
            .args(["--listen-client-urls", &format!("{scheme}://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("{scheme}://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{ip}:2380")])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", state, "--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i] = Some(child);
    }

    fn healthy(&self, i: usize) -> bool {
        let addr = format!("{}:2379", self.ip(i));
        let body = "{\"key\":\"eA==\"}";
        let request = format!(
            "POST /v3/kv/range HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        TcpStream::connect(&addr).is_ok() && http_raw(&addr, request.as_bytes()).is_some_and(|(code, _, _)| code == 200)
    }

    pub fn wait_healthy(&self, timeout: Duration) {
        let up: Vec<usize> = (0..self.members.len()).filter(|i| self.members[*i].is_some()).collect();
        if self.tls.is_some() {
            // No TLS client here: the port accepting connections is as far as it goes.
            let addr = |i: usize| format!("{}:2379", self.ip(i));
            wait_until("etcd to listen", timeout, || up.iter().all(|i| TcpStream::connect(addr(*i)).is_ok()));
            return;
        }
        wait_until("etcd to answer", timeout, || up.iter().all(|i| self.healthy(*i)));
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let n = self.members.len();
        self.spawn(i, n, "existing");
        self.wait_healthy(Duration::from_secs(20));
    }

    /// Member `i` started again on an empty data directory: a single-member cluster
    /// restored from a backup taken before anything was written, its revisions from 1 again.
    pub fn wipe(&mut self, i: usize) {
        self.kill(i);
        std::fs::remove_dir_all(self.dir.path().join(format!("m{i}"))).unwrap();
        let n = self.members.len();
        self.spawn(i, n, "new");
        self.wait_healthy(Duration::from_secs(20));
    }

    /// Write `key` through member `i`'s JSON gateway: etcd's revision moves on by one.
    pub fn put(&self, i: usize, key: &str, value: &str) {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let body = format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", b64(key), b64(value));
        let request = format!(
            "POST /v3/kv/put HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = http_raw(&format!("{}:2379", self.ip(i)), request.as_bytes());
        assert!(answer.as_ref().is_some_and(|(code, _, _)| *code == 200), "etcd put: {answer:?}");
    }

    pub fn log(&self) -> String {
        (0..self.members.len())
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// CPU time (user + system) a process used so far.
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The lab (with `extra` config) whose replica mirrors node a over http (a server that
/// speaks protocol v2 when `v2`), after checking that a second write, a deletion among
/// them, is mirrored without a full mirror, and in a protocol v2 session when the server
/// speaks it (else with git's fetch, whose side repository `stargate/sync.git` it makes).
pub fn mirrors_over_http_incrementally(extra: &str, v2: bool) -> Lab {
    let lab = Lab::up_with(
        2,
        &format!("{extra}[stargate \"a\"]\n\turl = http://@NET@.1:8181/\n[stargate \"sync\"]\n\tinterval = 1s\n"),
    );
    let (addr, root) = (format!("{}:8181", lab.ip("a")), lab.dir.path().join("a/repos"));
    if v2 {
        http_backend(&addr, &root)
    } else {
        http_backend_v0(&addr, &root)
    }
    assert_eq!(lab.wait_leader(None, Duration::from_secs(5)), "a");
    let client = Client::new();
    client.clone(&lab.url("a", "kv"), "c");
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "one"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main", "HEAD:refs/heads/doomed"]));
    lab.wait_parity("a", "b", Duration::from_secs(15));
    let fulls = || lab.agent_log("b").matches("full mirror").count();
    let before = fulls();
    ok(client.git("c", &["commit", "-q", "--allow-empty", "-m", "two"]));
    ok(client.git("c", &["push", "-q", "origin", "HEAD:refs/heads/main", ":refs/heads/doomed"]));
    lab.wait_parity("a", "b", Duration::from_secs(15));
    assert_eq!(lab.rev("b", "refs/heads/doomed"), None);
    assert_eq!(fulls(), before, "incremental after the first mirror{}", lab.logs());
    let side = lab.dir.path().join("b/repos/kv.git/stargate/sync.git");
    assert_eq!(side.exists(), !v2, "git's fetch used: {}{}", !v2, lab.logs());
    lab
}

/// Every JSON body a stand-in received, with the wall time it arrived (ms).
pub type Posts = std::sync::Arc<std::sync::Mutex<Vec<(u64, serde_json::Value)>>>;

/// A PagerDuty stand-in on `listener`: records every JSON body POSTed to it (`Posts`), and
/// answers 202.
pub fn json_posts(listener: std::net::TcpListener) -> Posts {
    use std::io::BufRead;
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = std::sync::Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(json) = serde_json::from_slice(&body)
            {
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                store.lock().unwrap().push((at, json));
            }
            let _ =
                reader.get_mut().write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    bodies
}

/// A client of `lab` that talks `stargate::<every node>/kv.git`, with a clone in `c`.
pub fn stargate_client(lab: &Lab) -> Client {
    let client = Client::new();
    let config = client.home.path().join(".gitconfig");
    let text = std::fs::read_to_string(&config).unwrap() + &lab.client_config(&["git"]);
    std::fs::write(config, text).unwrap();
    let names = lab.nodes.join(",");
    ok(with_helper(client.git(".", &["clone", "-q", &format!("stargate::{names}/kv.git"), "c"])));
    client
}

/// The value of counter `name` in `node`'s `/metrics`, which must answer.
pub fn counter(lab: &Lab, node: &str, name: &str) -> u64 {
    let (code, body) = lab.http(node, "/metrics");
    assert_eq!(code, 200);
    exported(&body, node, name)
}

/// The value of counter `name` of `node` in a `/metrics` answer (0 when it is not there).
pub fn exported(metrics: &str, node: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{node=\"{node}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `git kv <args>` in that client's clone, through the remote helper.
pub fn kv(client: &Client, args: &[&str]) -> Output {
    run(with_helper(client.git("c", &[&["kv"], args].concat())))
}
