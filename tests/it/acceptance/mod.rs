//! The acceptance plans, each an automated test on a `--netns` lab (docs/ARCHITECTURE.md,
//! "The lab"): real network namespaces, real kills, freezes and nft cuts, the floating address
//! by keepalived. Two suites run the same code. The default one (CI) shortens durations;
//! `contrib/lab/long-suite` sets `STARGATE_ACCEPTANCE=long` for full length and
//! `STARGATE_REPORT_DIR`, where every test writes what it measured (`<test>.json`, and
//! `<test>.csv` for series) for the report and plots. The replicas mirror over
//! `STARGATE_TRANSPORT` (`git`, the default, `ssh` or `https`: `lab up --transport`), and a
//! test's results are then named `<test>_ssh` or `<test>_https`; the long suite runs the
//! failover and disruption plans over ssh too, and the default suite runs the failover
//! plan over ssh whatever the variable says.

mod consistency;
mod failover;
mod slo;
mod sync;

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// Durations and sizes of one run: the default suite's, or the long suite's.
#[derive(Debug, Clone)]
pub struct Plan {
    pub long: bool,
    /// Network disruptions, one after another, each a cut of the replica from the leader.
    pub disruptions: Vec<Duration>,
    /// Steady state of the lag SLO test, before its partition.
    pub steady: Duration,
    /// The lag SLO test's partition, and its window and limits.
    pub partition: Duration,
    pub window: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Pause between two writes of a continuous writer.
    pub write_every: Duration,
    /// Each phase (before, during, after) of the consistency test.
    pub phase: Duration,
    /// Refs of the load test, and bytes of the large repository.
    pub refs: usize,
    pub large_bytes: usize,
}

impl Plan {
    pub fn get() -> Plan {
        let long = std::env::var("STARGATE_ACCEPTANCE").is_ok_and(|v| v == "long");
        let s = Duration::from_secs;
        if long {
            Plan {
                long,
                disruptions: vec![s(10), s(60), s(300)],
                steady: s(30 * 60),
                partition: s(300),
                window: s(300),
                p50: s(15),
                p99: s(120),
                write_every: s(1),
                phase: s(60),
                refs: 100_000,
                large_bytes: 200 << 20,
            }
        } else {
            Plan {
                long,
                disruptions: vec![s(10)],
                steady: s(12),
                partition: Duration::from_millis(6000),
                window: s(4),
                p50: s(1),
                p99: s(3),
                write_every: Duration::from_millis(200),
                phase: s(3),
                refs: 20_000,
                large_bytes: 16 << 20,
            }
        }
    }

    /// How long a lab of this plan may live (its reaper's deadline).
    pub fn ttl(&self) -> Duration {
        if self.long { Duration::from_secs(3 * 3600) } else { Duration::from_secs(600) }
    }

    /// The lab's options, the replicas mirroring over `STARGATE_TRANSPORT` (git:// unless set).
    pub fn net(&self, vip: bool, sshd: bool) -> NetOpts {
        NetOpts { vip, sshd, ttl: self.ttl(), etcd: false, transport: Transport::from_env() }
    }
}

/// What one test measured, printed and, in the long suite, written for the report.
pub struct Report {
    test: String,
    pub json: serde_json::Value,
}

impl Report {
    /// `title`: the test plan this test automates (its section); `check`: the plan's words.
    /// The replicas mirror over `STARGATE_TRANSPORT`.
    pub fn new(test: &'static str, title: &str, check: &str) -> Report {
        Report::over(Transport::from_env(), test, title, check)
    }

    /// As `new`, the replicas mirroring over `transport`: its results are `<test>_<transport>`
    /// unless it is git://, so that a run over each leaves both.
    pub fn over(transport: Transport, test: &'static str, title: &str, check: &str) -> Report {
        let plan = Plan::get();
        let test = match transport {
            Transport::Git => test.to_owned(),
            t => format!("{test}_{}", t.name()),
        };
        Report {
            json: serde_json::json!({
                "test": test, "plan": title, "check": check, "transport": transport.name(),
                "suite": if plan.long { "long" } else { "default" }, "measured": {}, "started_ms": now_ms(),
            }),
            test,
        }
    }

    pub fn measure(&mut self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap();
        eprintln!("{}: {key} = {value}", self.test);
        self.json["measured"][key] = value;
    }

    /// A series (header line first) beside the report, as CSV.
    pub fn series(&self, name: &str, header: &str, rows: &[String]) {
        if let Some(dir) = report_dir() {
            let text = format!("{header}\n{}\n", rows.join("\n"));
            std::fs::write(dir.join(format!("{}.{name}.csv", self.test)), text).unwrap();
        }
    }

    /// Called last, once every assertion held: a test that failed leaves no result.
    pub fn passed(mut self, summary: &str) {
        self.json["result"] = "passed".into();
        self.json["summary"] = summary.into();
        self.json["finished_ms"] = now_ms().into();
        eprintln!("{}: passed: {summary}", self.test);
        if let Some(dir) = report_dir() {
            std::fs::write(dir.join(format!("{}.json", self.test)), serde_json::to_string_pretty(&self.json).unwrap())
                .unwrap();
        }
    }
}

impl Report {
    /// Called when a check failed, before the test panics: the long suite's report shows
    /// what failed (the consistency suite's anomalies and their histories).
    pub fn failed(mut self, summary: &str) {
        self.json["result"] = "failed".into();
        self.json["summary"] = summary.into();
        self.json["finished_ms"] = now_ms().into();
        eprintln!("{}: FAILED: {summary}", self.test);
        if let Some(dir) = report_dir() {
            std::fs::write(dir.join(format!("{}.json", self.test)), serde_json::to_string_pretty(&self.json).unwrap())
                .unwrap();
        }
    }
}

fn report_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(std::env::var_os("STARGATE_REPORT_DIR")?);
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client of the lab through `stargate::<names>/kv.git` (node ids, or the floating
/// address with `stargate.transport = git`), with a clone in `c`.
pub fn stargate_client(lab: &Lab, names: &str) -> Client {
    let client = Client::new();
    let config = client.home.path().join(".gitconfig");
    let text =
        std::fs::read_to_string(&config).unwrap() + &lab.client_config(&["git"]) + "[stargate]\n\ttransport = git\n";
    std::fs::write(config, text).unwrap();
    ok(with_helper(client.git(".", &["clone", "-q", &format!("stargate::{names}/kv.git"), "c"])));
    client
}

pub fn kv(client: &Client, args: &[&str]) -> std::process::Output {
    run(with_helper(client.git("c", &[&["kv"], args].concat())))
}

pub fn other(lab: &Lab, node: &str) -> String {
    lab.nodes.iter().find(|n| *n != node).unwrap().clone()
}

pub fn stargate(lab: &Lab, node: &str, args: &[&str]) -> std::process::Output {
    run(lab.node_cmd(node, "git").arg("stargate").args(args))
}

pub fn value(lab: &Lab, node: &str, key: &str) -> Option<String> {
    let out = run(lab.git(node, &["show", &format!("refs/kv/default:{key}")]));
    out.status.success().then(|| stdout(&out))
}

/// The keys of `refs/kv/default` on `node`, read from its repository (no network).
pub fn keys(lab: &Lab, node: &str) -> std::collections::HashSet<String> {
    let out = run(lab.git(node, &["ls-tree", "-r", "--name-only", "refs/kv/default"]));
    stdout(&out).lines().map(str::to_owned).collect()
}

/// Every "set <key>" commit message of `refs/kv/default` on `node`, oldest first.
pub fn set_messages(lab: &Lab, node: &str) -> Vec<String> {
    let out = run(lab.git(node, &["log", "--reverse", "--format=%s", "refs/kv/default"]));
    stdout(&out).lines().map(str::to_owned).collect()
}

/// One write of a continuous writer: key index, acknowledged, exit code, when it ended.
#[derive(Clone, Debug)]
pub struct Write1 {
    pub i: usize,
    pub ok: bool,
    pub code: Option<i32>,
    pub end: Instant,
    pub end_ms: u64,
}

/// `git kv set w<i> <i>` through `stargate::` in a loop, one every `every`, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Write1>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn start(client: Client, every: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (Arc::clone(&stop), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            for i in 0.. {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let start = Instant::now();
                let out = kv(&client, &["set", &format!("w{i}"), &i.to_string()]);
                let end = Instant::now();
                log.lock().unwrap().push(Write1 {
                    i,
                    ok: out.status.success(),
                    code: out.status.code(),
                    end,
                    end_ms: now_ms(),
                });
                if let Some(rest) = every.checked_sub(end - start) {
                    std::thread::sleep(rest);
                }
            }
            drop(client);
        });
        Writer { stop, done, thread }
    }

    pub fn so_far(&self) -> Vec<Write1> {
        self.done.lock().unwrap().clone()
    }

    pub fn stop(self) -> Vec<Write1> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.done.lock().unwrap().clone()
    }
}

/// The longest time between the end of one acknowledged write and the end of the next.
pub fn longest_gap(done: &[Write1]) -> Duration {
    let acked: Vec<Instant> = done.iter().filter(|d| d.ok).map(|d| d.end).collect();
    acked.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Every write acknowledged is on `node` with its value, and committed exactly once there.
pub fn check_writes(lab: &Lab, node: &str, done: &[Write1]) {
    let present = keys(lab, node);
    let messages = set_messages(lab, node);
    let mut seen = std::collections::HashMap::new();
    for m in &messages {
        *seen.entry(m.as_str()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicate commits on {node}: {twice:?}");
    for w in done.iter().filter(|w| w.ok) {
        let key = format!("w{}", w.i);
        assert!(present.contains(&key), "acknowledged {key} missing on {node}");
        assert_eq!(seen.get(format!("set {key}").as_str()), Some(&1), "{key} committed once on {node}");
    }
    assert_eq!(value(lab, node, "w0").is_some(), done.first().is_some_and(|w| w.ok) || present.contains("w0"));
}

/// Replication lag as a client sees it, sampled from the replica's own repository (so it
/// works while the replica is cut off): at each sample, the age of the oldest acknowledged
/// write the replica does not hold yet (0 when it holds all), and when each key first appeared.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, f64, usize)>>,
}

impl Sampler {
    pub fn start(lab: Arc<Lab>, replica: String, writer: Arc<Mutex<Vec<Write1>>>, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut rows = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let at = now_ms();
                let present = keys(&lab, &replica);
                let acked: Vec<Write1> = writer.lock().unwrap().iter().filter(|w| w.ok).cloned().collect();
                let missing: Vec<&Write1> = acked.iter().filter(|w| !present.contains(&format!("w{}", w.i))).collect();
                let lag = missing.iter().map(|w| at.saturating_sub(w.end_ms)).max().unwrap_or(0) as f64 / 1000.0;
                rows.push((at, lag, missing.len()));
                std::thread::sleep(every);
            }
            rows
        });
        Sampler { stop, thread }
    }

    /// (time ms, lag s, writes missing) per sample.
    pub fn stop(self) -> Vec<(u64, f64, usize)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

impl Writer {
    pub fn shared(&self) -> Arc<Mutex<Vec<Write1>>> {
        Arc::clone(&self.done)
    }
}

/// Where the receivers below listen, for the nodes' config (`@NET@` is the lab's network;
/// each lab has a network of its own, so fixed ports cannot collide).
pub const ALERT_URL: &str = "http://@NET@.254:8090/v2/enqueue";
pub const STATSD: &str = "@NET@.254:8125";

/// A PagerDuty stand-in in the lab's hub at `ALERT_URL`: records every JSON body POSTed to
/// it, with the time it arrived, and answers 202. Undelivered alerts are retried by the
/// agent, so one sent before this listens is not lost.
pub fn alert_receiver(lab: &Lab) -> Posts {
    json_posts(TcpListener::bind(format!("{}:8090", lab.hub_ip())).unwrap())
}

/// A StatsD server in the lab's hub at `STATSD`: every line received, with its time.
pub fn statsd_receiver(lab: &Lab) -> Arc<Mutex<Vec<(u64, String)>>> {
    let socket = UdpSocket::bind(format!("{}:8125", lab.hub_ip())).unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&lines);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let at = now_ms();
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                store.lock().unwrap().push((at, line.to_owned()));
            }
        }
    });
    lines
}

/// The sum of a StatsD counter's increments received between two times.
pub fn counted(lines: &[(u64, String)], name: &str, from_ms: u64, to_ms: u64) -> u64 {
    lines
        .iter()
        .filter(|(at, _)| (from_ms..=to_ms).contains(at))
        .filter_map(|(_, l)| l.strip_prefix(&format!("{name}:"))?.split('|').next()?.parse::<u64>().ok())
        .sum()
}

/// The replica's judged lag windows (`git stargate lag --json`).
pub fn windows(lab: &Lab, node: &str) -> Vec<serde_json::Value> {
    let out = stargate(lab, node, &["lag", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
    json["windows"].as_array().cloned().unwrap_or_default()
}

/// `p`-th percentile (0..=100) of `values`, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}
