//! The consistency suite (docs/CONSISTENCY.md), in the manner of Jepsen and of etcd's
//! robustness tests: five clients run `git kv set` and `git kv get --from-leader` through
//! `stargate::a,b,c/kv.git` while a nemesis (nemesis.rs) injects one kind of fault on a
//! schedule. Every operation is recorded (invoke and return on one monotonic clock, outcome,
//! the leader at the time); after the faults heal, each key's history is checked for
//! linearizability (checker.rs) and the nodes for what a history cannot show: convergence,
//! no invented value, no refused write applied, epochs that never go backwards, and every
//! acknowledged write kept (async mode: or lost only as stargate(7) allows, reported and kept).
//!
//! The default suite runs each nemesis briefly in both modes; `contrib/lab/long-suite
//! jepsen::` runs each for ten minutes and writes the report (`STARGATE_ACCEPTANCE=long`).

mod checker;
mod nemesis;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use checker::{Call, Op, Ret, Verdict};
use nemesis::{Nemesis, Window};

use crate::acceptance::{Plan, Report, now_ms, stargate, stargate_client, stdout};
use crate::support::*;

/// Clients, each with its own clone and its own `git kv` process at a time.
const CLIENTS: usize = 5;
/// Keys written at once, and operations invoked on each before it is retired: the checker's
/// search is exponential in the worst case, so no key's history grows without bound.
const ACTIVE_KEYS: u64 = 6;
const OPS_PER_KEY: u64 = 40;
/// Namespaces the keys are spread over (`refs/kv/j0`...): writers to one namespace race for
/// its ref, which `git kv` retries; writers to different ones do not.
const NAMESPACES: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The default: a write is acknowledged once the leader has it.
    Async,
    /// stargate(7), Quorum replication: acknowledged once two of the three nodes hold it.
    Quorum,
    /// Async, every write a plain push of its namespace's ref (`git kv`'s lease way: no
    /// repository hands `refs/for/kv/` to `proc-receive`), so that each one is journaled by
    /// the leader's agent for its hooks (the prepare asked at `pre-receive`, waited for at
    /// `prepared`), where `proc-receive`'s transactions journal themselves in the hooks.
    Pushes,
}

impl Mode {
    fn config(self) -> &'static str {
        match self {
            Mode::Async => "",
            Mode::Quorum => "[stargate \"replication\"]\n\tmode = quorum\n\tquorum = 2\n",
            // Counters published every second, to see the agent's journaling before the end.
            Mode::Pushes => "[stargate \"metrics\"]\n\tinterval = 1s\n",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Quorum => "quorum",
            Mode::Pushes => "pushes",
        }
    }
}

/// How long things last in this suite (short by default, ten minutes per test in the long
/// suite). `STARGATE_JEPSEN_SECONDS` overrides the run's length, to hunt for a rare anomaly.
#[derive(Clone, Debug)]
pub struct Timing {
    pub run: Duration,
    /// Healthy time between two faults, and how long a fault lasts.
    pub quiet: Duration,
    pub fault: Duration,
    /// A client's operation not answered by then is killed: its outcome is unknown.
    pub op_timeout: Duration,
    /// A client's pause between two operations.
    pub think: Duration,
    /// The checker's time for one key's history.
    pub check_budget: Duration,
}

impl Timing {
    fn get(plan: &Plan) -> Timing {
        let s = Duration::from_secs;
        let mut t = if plan.long {
            Timing {
                run: s(600),
                quiet: s(8),
                fault: s(12),
                op_timeout: s(20),
                think: Duration::from_millis(100),
                check_budget: s(60),
            }
        } else {
            Timing {
                run: s(20),
                quiet: s(3),
                fault: s(5),
                op_timeout: s(10),
                think: Duration::from_millis(50),
                check_budget: s(10),
            }
        };
        if let Some(secs) = std::env::var("STARGATE_JEPSEN_SECONDS").ok().and_then(|v| v.parse().ok()) {
            t.run = s(secs);
        }
        t
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Definitely without effect: a write refused with exit 9, a read that failed.
    Fail,
    /// Maybe applied, maybe not, at any time after the invocation.
    Unknown,
}

/// One operation of the history, as recorded.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    pub client: usize,
    /// The client's thread in the checker's sense: a client whose operation's outcome is
    /// unknown goes on under a new one (Jepsen's "info" operations).
    pub thread: u64,
    pub ns: String,
    pub key: String,
    pub op: Op,
    pub invoke_ns: u64,
    pub return_ns: Option<u64>,
    pub invoke_ms: u64,
    pub return_ms: Option<u64>,
    pub outcome: Outcome,
    pub ret: Option<Ret>,
    pub code: Option<i32>,
    /// The leader in the leader record when the operation started (file lease only).
    pub node: Option<String>,
    /// Why it failed or is unknown: the last line of its standard error.
    pub why: String,
}

impl Record {
    fn value(&self) -> Option<&str> {
        match &self.op {
            Op::Set(v) => Some(v),
            Op::Get => None,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.ns, self.key)
    }
}

/// What every client shares: the clock, the sequence that names keys and values, thread ids.
struct Shared {
    start: Instant,
    /// The wall clock at `start`, to place the faults' windows on the history's clock.
    start_ms: u64,
    seq: AtomicU64,
    threads: AtomicU64,
    timing: Timing,
    record_file: std::path::PathBuf,
}

impl Shared {
    fn ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn leader(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.record_file).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["node"].as_str().map(str::to_owned)
    }
}

/// The `n`th operation's key: `ACTIVE_KEYS` keys at a time, each retired after
/// `OPS_PER_KEY` operations.
fn key_of(n: u64) -> (String, String) {
    let k = n / (ACTIVE_KEYS * OPS_PER_KEY) * ACTIVE_KEYS + n % ACTIVE_KEYS;
    (format!("j{}", k % NAMESPACES), format!("k{k}"))
}

/// `git kv` in `client`'s clone, killed with everything it started after `timeout`:
/// (exit code, None when killed; stdout; stderr).
fn kv_bounded(client: &Client, args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let out_path = client.home.path().join("op.out");
    let err_path = client.home.path().join("op.err");
    let mut c = with_helper(client.git("c", &[&["kv"], args].concat()));
    c.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(std::process::Stdio::null())
        .process_group(0);
    let mut child = c.spawn().expect("git kv");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > timeout {
            // SAFETY: kill(2) of the process group this child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (code, read(&out_path), read(&err_path))
}

fn last_line(text: &str) -> String {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned()
}

/// One operation by `client` under `thread`: invoked, classified, recorded.
fn operate(shared: &Shared, client: usize, c: &Client, thread: u64, ns: &str, key: &str, op: Op) -> Record {
    let node = shared.leader();
    let (invoke_ms, invoke_ns) = (now_ms(), shared.ns());
    let (code, out, err) = match &op {
        Op::Set(v) => kv_bounded(c, &["-n", ns, "set", key, v], shared.timing.op_timeout),
        Op::Get => kv_bounded(c, &["-n", ns, "get", "--from-leader", key], shared.timing.op_timeout),
    };
    let (return_ms, return_ns) = (now_ms(), shared.ns());
    let (outcome, ret) = match (&op, code) {
        (Op::Set(_), Some(0)) => (Outcome::Ok, Some(Ret::SetOk)),
        // "not leader": refused before anything moved (git-kv(1), EXIT STATUS).
        (Op::Set(_), Some(9)) => (Outcome::Fail, None),
        // Killed, fatal (a dropped connection, "no quorum"): undetermined.
        (Op::Set(_), _) => (Outcome::Unknown, None),
        (Op::Get, Some(0)) => {
            let value = out.strip_suffix('\n').unwrap_or(&out).to_owned();
            (Outcome::Ok, Some(Ret::Got(Some(value))))
        }
        (Op::Get, Some(1)) if err.contains("not found") => (Outcome::Ok, Some(Ret::Got(None))),
        // A read that failed changed nothing.
        (Op::Get, _) => (Outcome::Fail, None),
    };
    let why = if outcome == Outcome::Ok {
        String::new()
    } else if code.is_none() {
        format!("killed after {:?}", shared.timing.op_timeout)
    } else {
        last_line(&err)
    };
    Record {
        client,
        thread,
        ns: ns.to_owned(),
        key: key.to_owned(),
        op,
        invoke_ns,
        return_ns: (outcome != Outcome::Unknown).then_some(return_ns),
        invoke_ms,
        return_ms: Some(return_ms),
        outcome,
        ret,
        code,
        node,
        why,
    }
}

/// A client's loop until `stop`: half writes of fresh values, half reads from the leader.
fn client_loop(shared: &Shared, id: usize, c: &Client, stop: &AtomicBool) -> Vec<Record> {
    let mut history = Vec::new();
    let mut thread = shared.threads.fetch_add(1, Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        let n = shared.seq.fetch_add(1, Ordering::SeqCst);
        let (ns, key) = key_of(n);
        let op = if rand::random_bool(0.5) { Op::Set(format!("c{id}-{n}")) } else { Op::Get };
        let r = operate(shared, id, c, thread, &ns, &key, op);
        if r.outcome == Outcome::Unknown {
            thread = shared.threads.fetch_add(1, Ordering::SeqCst);
        }
        history.push(r);
        std::thread::sleep(shared.timing.think);
    }
    history
}

/// The epochs the leader record and every node's published state showed, sampled until
/// `stop`: what went backwards.
fn watch_epochs(lab: &Lab, stop: &AtomicBool) -> Vec<String> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut backwards = Vec::new();
    let record = lab.dir.path().join("shared/stargate.lock.leader");
    while !stop.load(Ordering::SeqCst) {
        let mut sources: Vec<(String, std::path::PathBuf)> = vec![("leader record".into(), record.clone())];
        for n in &lab.nodes {
            sources.push((format!("node {n}"), lab.dir.path().join(n).join("repos/.stargate/node.json")));
        }
        for (who, path) in sources {
            let Some(epoch) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|j| j["epoch"].as_u64())
            else {
                continue;
            };
            let last = seen.entry(who.clone()).or_insert(epoch);
            if epoch < *last {
                backwards.push(format!("{who}: epoch {epoch} after {last} at {}", now_ms()));
            }
            *last = epoch.max(*last);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    backwards
}

/// Sets every flag when dropped, panicking or not.
struct StopOnDrop<'a>(&'a [&'a AtomicBool]);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for flag in self.0 {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Something the suite found wrong.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Anomaly {
    pub kind: String,
    pub detail: String,
    /// A minimal failing history of the key, when the checker found it.
    pub history: Vec<Record>,
}

/// Blob ids of `values`, as git names them (values are stored byte for byte).
fn blob_id(value: &str) -> String {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, value.as_bytes()).unwrap().to_string()
}

/// Every blob reachable from `refs` on `node` (`--all` for every ref).
fn blobs(lab: &Lab, node: &str, refs: &[&str]) -> HashSet<String> {
    if refs.is_empty() {
        return HashSet::new();
    }
    let out = run(lab.git(node, &[&["rev-list", "--objects"], refs].concat()));
    stdout(&out).lines().filter_map(|l| l.split_once(' ').map(|(id, _)| id.to_owned())).collect()
}

/// The epoch a kept ref was kept under: `refs/stargate/local/lost/<epoch>[.<n>]/<ref>`.
fn kept_epoch(kept: &str) -> u64 {
    let dir = kept.trim_start_matches("refs/stargate/local/lost/").split('/').next().unwrap_or("");
    dir.split('.').next().and_then(|e| e.parse().ok()).unwrap_or(0)
}

fn refs_under(lab: &Lab, node: &str, prefix: &str) -> Vec<String> {
    let out = run(lab.git(node, &["for-each-ref", "--format=%(refname)", prefix]));
    stdout(&out).lines().map(str::to_owned).collect()
}

/// One test: `nemesis` in `mode`, on a lab of three nodes.
pub fn run_suite(mode: Mode, nemesis: Nemesis) {
    let plan = Plan::get();
    let timing = Timing::get(&plan);
    let test = Box::leak(format!("jepsen_{}_{}", mode.name(), nemesis.name()).into_boxed_str());
    let mut report = Report::new(
        test,
        "docs/CONSISTENCY.md",
        &format!(
            "{} clients, {} mode, {}: linearizable per key; converged; nothing invented, refused or lost",
            CLIENTS,
            mode.name(),
            nemesis.describe()
        ),
    );
    let extra = format!("{}{}", mode.config(), nemesis.config());
    let (lab, etcd) = nemesis::lab(nemesis, &extra, &plan);
    let leader = lab.wait_leader(None, Duration::from_secs(30));
    if mode == Mode::Pushes {
        for n in &lab.nodes {
            ok(lab.git(n, &["config", "--unset-all", "receive.procReceiveRefs", "^refs/for/kv/$"]));
        }
    }
    eprintln!("{test}: {} lab up, {leader} leads; running {:?}", mode.name(), timing.run);

    let clients: Vec<Client> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS).map(|_| s.spawn(|| stargate_client(&lab, "a,b,c"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let shared = Shared {
        start: Instant::now(),
        start_ms: now_ms(),
        seq: AtomicU64::new(0),
        threads: AtomicU64::new(0),
        timing: timing.clone(),
        record_file: lab.dir.path().join("shared/stargate.lock.leader"),
    };
    let stop = AtomicBool::new(false);
    let watching = AtomicBool::new(false);
    let run_started = Instant::now();
    let (mut history, windows, backwards) = std::thread::scope(|s| {
        // Whatever panics in here (a fault that could not be injected or healed), the
        // clients and the watcher stop, so that the scope can end and the test fail.
        let _stop = StopOnDrop(&[&stop, &watching]);
        let watcher = s.spawn(|| watch_epochs(&lab, &watching));
        let workers: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (shared, stop) = (&shared, &stop);
                s.spawn(move || client_loop(shared, i, c, stop))
            })
            .collect();
        let faults = s.spawn(|| nemesis.run(&lab, etcd.as_ref(), &timing, run_started + timing.run));
        let windows = faults.join().unwrap();
        // The nemesis ends healed; the clients stop when the run is over.
        if let Some(rest) = timing.run.checked_sub(run_started.elapsed()) {
            std::thread::sleep(rest);
        }
        stop.store(true, Ordering::SeqCst);
        let history: Vec<Record> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        nemesis::heal_all(&lab, etcd.as_ref());
        let settled = settle(&lab);
        watching.store(true, Ordering::SeqCst);
        let backwards = watcher.join().unwrap();
        (history, (windows, settled), backwards)
    });
    let (windows, settled) = windows;
    let run_s = run_started.elapsed().as_secs_f64();

    let mut anomalies: Vec<Anomaly> = Vec::new();
    let anomaly = |kind: &str, detail: String| Anomaly { kind: kind.into(), detail, history: Vec::new() };
    if mode == Mode::Pushes && lab.nodes.iter().all(|n| journaled_by_agent(&lab, n) == 0) {
        anomalies.push(anomaly("not-by-the-agent", "no node's agent journaled a push: the mode tested nothing".into()));
    }
    for b in &backwards {
        anomalies.push(anomaly("epoch-backwards", b.clone()));
    }
    let final_leader = match &settled {
        Ok(l) => l.clone(),
        Err(why) => {
            anomalies.push(anomaly("no-convergence", why.clone()));
            lab.ready().first().cloned().unwrap_or_else(|| lab.nodes[0].clone())
        }
    };

    // Final reads of every key from the leader, after everything else returned.
    let keys: BTreeMap<String, (String, String)> =
        history.iter().map(|r| (r.label(), (r.ns.clone(), r.key.clone()))).collect();
    let reader = shared.threads.fetch_add(1, Ordering::SeqCst);
    for (label, (ns, key)) in &keys {
        let mut done = false;
        for _ in 0..if settled.is_ok() { 5 } else { 1 } {
            let r = operate(&shared, CLIENTS, &clients[0], reader, ns, key, Op::Get);
            let ok = r.outcome == Outcome::Ok;
            if ok {
                history.push(r);
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if !done {
            anomalies.push(anomaly("final-read-failed", format!("{label}: no read from the leader succeeded")));
        }
    }

    // Epochs in the audit log never go backwards, and no epoch is elected twice.
    let mut last = 0;
    let mut elected: HashMap<u64, String> = HashMap::new();
    for e in lab.audit() {
        let (Some(epoch), Some(event)) = (e["epoch"].as_u64(), e["event"].as_str()) else { continue };
        if !matches!(event, "elected" | "promoted" | "forced-promotion") {
            continue;
        }
        if epoch < last {
            anomalies
                .push(anomaly("epoch-backwards", format!("audit: {event} of epoch {epoch} after epoch {last}: {e}")));
        }
        last = last.max(epoch);
        let node = e["node"].as_str().unwrap_or("?").to_owned();
        if event == "elected"
            && let Some(other) = elected.insert(epoch, node.clone())
            && other != node
        {
            anomalies.push(anomaly("two-leaders", format!("epoch {epoch} elected by {other} and by {node}")));
        }
    }

    // Values: every one read was written by someone; no refused one is on any node.
    let invoked: HashMap<&str, &Record> = history.iter().filter_map(|r| Some((r.value()?, r))).collect();
    for r in &history {
        if let Some(Ret::Got(Some(v))) = &r.ret {
            match invoked.get(v.as_str()) {
                None => {
                    anomalies.push(anomaly("invented-value", format!("{} read {v:?}, which nobody wrote", r.label())))
                }
                Some(w) if w.outcome == Outcome::Fail => anomalies.push(anomaly(
                    "refused-write-applied",
                    format!("{} read {v:?}, written by a write refused with exit {:?}", r.label(), w.code),
                )),
                Some(_) => {}
            }
        }
    }
    let refused: Vec<&Record> = history.iter().filter(|r| r.value().is_some() && r.outcome == Outcome::Fail).collect();
    // A value kept as lost, and the first epoch it was kept under.
    let mut lost_blobs: HashMap<String, u64> = HashMap::new();
    for n in &lab.nodes {
        let everything = blobs(&lab, n, &["--all"]);
        for r in &refused {
            if everything.contains(&blob_id(r.value().unwrap())) {
                anomalies.push(anomaly(
                    "refused-write-applied",
                    format!(
                        "{}={} refused with exit {:?} ({}) is on {n}",
                        r.label(),
                        r.value().unwrap(),
                        r.code,
                        r.why
                    ),
                ));
            }
        }
        // Per kept ref, under the epoch whose leader the node mirrored when it kept it.
        for kept in refs_under(&lab, n, "refs/stargate/local/lost/") {
            let epoch = kept_epoch(&kept);
            for blob in blobs(&lab, n, &[kept.as_str()]) {
                let at = lost_blobs.entry(blob).or_insert(epoch);
                *at = (*at).min(epoch);
            }
        }
    }
    // When each epoch began (its election or promotion, in the audit log).
    let mut began: HashMap<u64, u64> = HashMap::new();
    for e in
        lab.audit().iter().filter(|e| matches!(e["event"].as_str(), Some("elected" | "promoted" | "forced-promotion")))
    {
        if let (Some(epoch), Some(t)) = (e["epoch"].as_u64(), e["time_ms"].as_u64()) {
            began.entry(epoch).or_insert(t);
        }
    }

    // Acknowledged writes missing from the final history: allowed in async mode only when
    // acknowledged just before a forced promotion or the loss of the leader's machine, and
    // kept (or, the machine's storage gone, reported as a catch-up shortfall).
    let namespaces = refs_under(&lab, &final_leader, "refs/kv/");
    let present = blobs(&lab, &final_leader, &namespaces.iter().map(String::as_str).collect::<Vec<_>>());
    let shortfalls: Vec<u64> = lab
        .audit()
        .iter()
        .filter(|e| e["event"] == "catch-up-shortfall")
        .filter_map(|e| e["time_ms"].as_u64())
        .collect();
    let mut allowed: Vec<serde_json::Value> = Vec::new();
    // Lost value -> when its fault ended, on the history's clock.
    let mut allowed_values: HashMap<String, u64> = HashMap::new();
    for r in history.iter().filter(|r| r.outcome == Outcome::Ok && r.value().is_some()) {
        let v = r.value().unwrap();
        if present.contains(&blob_id(v)) {
            continue;
        }
        let acked = r.return_ms.unwrap_or(0);
        // The fault that lost it: the forced promotion or machine loss that began the epoch
        // it was first kept under (the write may have survived earlier faults, the promoted
        // node lagging by more than the usual window); else, its storage gone, the fault in
        // whose window it was applied (a leader cut off answers once the cut heals).
        let kept_at = lost_blobs.get(&blob_id(v)).and_then(|epoch| began.get(epoch)).copied();
        let within = |w: &&Window| w.loss.is_some_and(|(from, to)| r.invoke_ms <= to && acked >= from);
        let event = match kept_at {
            Some(t) => windows
                .iter()
                .filter(|w| w.loss.is_some() && w.start_ms <= t + 1_000)
                .max_by_key(|w| w.start_ms)
                .filter(within),
            None => windows.iter().find(within),
        };
        let kept = lost_blobs.contains_key(&blob_id(v));
        let reported = event.is_some_and(|w| w.wiped && shortfalls.iter().any(|t| *t >= w.start_ms));
        match event {
            Some(w) if mode == Mode::Async && (kept || reported) => {
                let until = w.loss.map_or(0, |(_, to)| to.saturating_sub(shared.start_ms) * 1_000_000);
                allowed_values.insert(v.to_owned(), until);
                allowed.push(serde_json::json!({
                    "key": r.label(), "value": v, "acknowledged_ms": acked, "event": w.what, "event_ms": w.start_ms,
                    "kept": if kept { "refs/stargate/local/lost/" } else { "reported (catch-up-shortfall): the machine's storage is gone" },
                }));
            }
            _ => anomalies.push(anomaly(
                "acknowledged-write-lost",
                format!(
                    "{}={v} acknowledged at {acked} by client {} (leader {:?}) is not in {final_leader}'s refs/kv/*{}{}",
                    r.label(),
                    r.client,
                    r.node,
                    if kept { "; kept as lost" } else { "; not kept under refs/stargate/local/lost/ anywhere" },
                    match event {
                        Some(w) => format!("; {} mode, during {} at {}", mode.name(), w.what, w.start_ms),
                        None => "; no forced promotion or machine loss just before".into(),
                    }
                ),
            )),
        }
    }

    // A lost value must stay lost: read by a read asked after its fault ended, it was
    // served again. (One asked before may be answered by the old leader once it is thawed
    // or healed: it saw the state the fault rolled back.)
    for r in &history {
        if let Some(Ret::Got(Some(v))) = &r.ret
            && allowed_values.get(v).is_some_and(|until| r.invoke_ns > *until)
        {
            anomalies.push(anomaly("lost-value-served-again", format!("{} read {v:?} after it was lost", r.label())));
        }
    }

    // Linearizability, key by key.
    let check_started = Instant::now();
    let mut next_thread = 1 << 32;
    let mut per_key = Vec::new();
    let (mut checked_ops, mut unchecked, mut lost_reads) = (0, 0, 0);
    for label in keys.keys() {
        let records: Vec<&Record> =
            history.iter().filter(|r| &r.label() == label && r.outcome != Outcome::Fail).collect();
        let mut calls: Vec<Call> = records
            .iter()
            .map(|r| Call {
                thread: r.thread,
                op: r.op.clone(),
                invoke: r.invoke_ns,
                ret: match (r.outcome, &r.ret, r.return_ns) {
                    (Outcome::Ok, Some(ret), Some(at)) => Some((at, ret.clone())),
                    _ => None,
                },
            })
            .collect();
        let (_, dropped) = checker::allow_losses(&mut calls, &allowed_values, &mut next_thread);
        lost_reads += dropped;
        let verdict = checker::check(&calls, timing.check_budget);
        per_key.push(serde_json::json!({"key": label, "ops": calls.len(), "verdict": format!("{verdict:?}")}));
        match verdict {
            Verdict::Linearizable => checked_ops += calls.len(),
            Verdict::Unchecked => unchecked += 1,
            Verdict::NotLinearizable => {
                checked_ops += calls.len();
                let small = checker::shrink(&calls, timing.check_budget, timing.check_budget * 3);
                let shown: Vec<Record> = small
                    .iter()
                    .filter_map(|c| {
                        records.iter().find(|r| r.invoke_ns == c.invoke && r.op == c.op).map(|r| (*r).clone())
                    })
                    .collect();
                eprintln!("{test}: {label} is not linearizable; a minimal failing history:");
                for r in &shown {
                    eprintln!(
                        "  client {} thread {} {:?} -> {:?} [{} .. {:?}] ms, {:?} (leader {:?}) {}",
                        r.client, r.thread, r.op, r.ret, r.invoke_ms, r.return_ms, r.outcome, r.node, r.why
                    );
                }
                anomalies.push(Anomaly {
                    kind: "not-linearizable".into(),
                    detail: format!("{label}: {} operations; minimal failing history of {}", calls.len(), shown.len()),
                    history: shown,
                });
            }
            Verdict::Malformed(why) => anomalies.push(anomaly("malformed-history", format!("{label}: {why}"))),
        }
    }
    let check_s = check_started.elapsed().as_secs_f64();

    // The numbers, in every run.
    let count =
        |o: Outcome, write: bool| history.iter().filter(|r| r.outcome == o && r.value().is_some() == write).count();
    let ok_ops = history.iter().filter(|r| r.outcome == Outcome::Ok).count();
    report.measure("mode", mode.name());
    report.measure("nemesis", nemesis.name());
    report.measure("run_s", (run_s * 10.0).round() / 10.0);
    report.measure("operations", history.len());
    report.measure(
        "writes",
        serde_json::json!({"ok": count(Outcome::Ok, true), "refused": count(Outcome::Fail, true), "unknown": count(Outcome::Unknown, true)}),
    );
    report
        .measure("reads", serde_json::json!({"ok": count(Outcome::Ok, false), "failed": count(Outcome::Fail, false)}));
    report.measure("keys", keys.len());
    report.measure("operations_checked", checked_ops);
    report.measure("keys_unchecked", unchecked);
    report.measure("check_s", (check_s * 100.0).round() / 100.0);
    report.measure("allowed_losses", allowed.len());
    report.measure("reads_of_lost_values_before_their_fault_ended", lost_reads);
    report.measure("anomalies", anomalies.len());
    report.measure("nemesis_events", windows.len());
    report.json["measured"]["per_key"] = serde_json::to_value(&per_key).unwrap();
    report.json["measured"]["allowed_loss_list"] = serde_json::to_value(&allowed).unwrap();
    report.json["measured"]["anomaly_list"] = serde_json::to_value(&anomalies).unwrap();
    report.json["measured"]["nemesis_windows"] = serde_json::to_value(&windows).unwrap();
    report.json["measured"]["audit"] = serde_json::to_value(lab.audit()).unwrap();
    for w in &windows {
        eprintln!("{test}: nemesis {} on {} [{} .. {}] {}", w.what, w.node, w.start_ms, w.end_ms, w.note);
    }
    for a in &anomalies {
        eprintln!("{test}: ANOMALY {}: {}", a.kind, a.detail);
    }
    let mut rows: Vec<String> = history
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{},{},{},{},{},{},{}",
                r.client,
                r.thread,
                r.label(),
                if r.value().is_some() { "set" } else { "get" },
                r.value().unwrap_or(""),
                r.invoke_ms,
                r.return_ms.map(|t| t.to_string()).unwrap_or_default(),
                serde_json::to_value(r.outcome).unwrap().as_str().unwrap_or(""),
                r.code.map(|c| c.to_string()).unwrap_or_default(),
                r.node.as_deref().unwrap_or("")
            )
        })
        .collect();
    rows.sort_by_key(|r| r.split(',').nth(5).and_then(|t| t.parse::<u64>().ok()));
    report.series("ops", "client,thread,key,op,value,invoke_ms,return_ms,outcome,code,leader", &rows);
    let nemesis_rows: Vec<String> = windows
        .iter()
        .map(|w| format!("{},{},{},{},{}", w.start_ms, w.end_ms, w.what, w.node, w.note.replace(',', ";")))
        .collect();
    report.series("nemesis", "start_ms,end_ms,what,node,note", &nemesis_rows);

    let summary = format!(
        "{} operations ({ok_ops} ok) on {} keys in {run_s:.0} s, {checked_ops} checked ({unchecked} keys unchecked), {} nemesis events, {} allowed losses, {} anomalies",
        history.len(),
        keys.len(),
        windows.len(),
        allowed.len(),
        anomalies.len()
    );
    // A run without traffic or faults proves nothing.
    let idle = ok_ops < 20 || windows.is_empty();
    if !anomalies.is_empty() || unchecked > 0 || idle {
        let why: Vec<String> = anomalies.iter().map(|a| format!("{}: {}", a.kind, a.detail)).collect();
        eprintln!("{test}: the audit log:");
        for e in lab.audit() {
            eprintln!("  {e}");
        }
        eprintln!("{test}: the lab's logs:{}", lab.logs());
        // Whole, beside the report: the tails above rarely reach back to the anomaly.
        if let Some(dir) = std::env::var_os("STARGATE_REPORT_DIR") {
            let logs = std::path::Path::new(&dir).join(format!("{test}.logs"));
            let _ = std::fs::create_dir_all(&logs);
            for n in &lab.nodes {
                for what in ["agent", "health", "daemon"] {
                    let _ = std::fs::copy(
                        lab.dir.path().join(n).join(format!("{what}.log")),
                        logs.join(format!("{n}-{what}.log")),
                    );
                }
            }
            let _ = std::fs::copy(lab.dir.path().join("shared/stargate.lock.audit"), logs.join("audit.jsonl"));
        }
        report.failed(&summary);
        panic!(
            "{summary}{}{}\n{}",
            if unchecked > 0 {
                "\nkeys over the checker's budget count as failures: fewer operations per key"
            } else {
                ""
            },
            if idle { "\ntoo little traffic, or no fault injected: the run proves nothing" } else { "" },
            why.join("\n")
        );
    }
    report.passed(&summary);
    drop(etcd);
}

/// After the faults: a leader, every node holding the leader's `refs/kv/*`, and `git
/// stargate verify` content; the leader, or why not.
fn settle(lab: &Lab) -> Result<String, String> {
    let start = Instant::now();
    let limit = Duration::from_secs(60);
    let mut why = String::new();
    while start.elapsed() < limit {
        let ready = lab.ready();
        let [leader] = &ready[..] else {
            why = format!("ready: {ready:?}");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let kv = |n: &str| refs_with_values(lab, n);
        let mine = kv(leader);
        let behind: Vec<&String> = lab.nodes.iter().filter(|n| kv(n) != mine).collect();
        if !behind.is_empty() {
            why = format!("{behind:?} differ from {leader} in refs/kv/*");
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        let out = stargate(lab, leader, &["verify", "--wait", "5s"]);
        if out.status.success() {
            return Ok(leader.clone());
        }
        why = format!("git stargate verify on {leader}: {}{}", stdout(&out), stderr(&out));
        std::thread::sleep(Duration::from_millis(500));
    }
    // What verify says of each node: "diverged" (its journal at the leader's, its refs not)
    // is a write a replica skipped for good; "behind", one still catching up.
    let verdict = match &lab.ready()[..] {
        [leader] => stdout(&stargate(lab, leader, &["verify", "--json", "--wait", "5s"])),
        _ => String::new(),
    };
    Err(format!(
        "not converged {limit:?} after the faults healed: {why}; git stargate verify --json: {}",
        verdict.trim()
    ))
}

/// `stargate_journal_served_total` as node `node` exports it (0 when it does not answer).
fn journaled_by_agent(lab: &Lab, node: &str) -> u64 {
    exported(&lab.http(node, "/metrics").1, node, "stargate_journal_served_total")
}

fn refs_with_values(lab: &Lab, node: &str) -> String {
    stdout(&run(lab.git(node, &["for-each-ref", "--format=%(objectname) %(refname)", "refs/kv/"])))
}

macro_rules! suite {
    ($($(#[$attr:meta])* $name:ident: $mode:ident, $nemesis:ident;)*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                run_suite(Mode::$mode, Nemesis::$nemesis);
            }
        )*
    };
}

// Every nemesis but etcd's runs on a --netns lab (nemesis::lab), which needs root.
suite! {
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_agent_kills: Async, AgentKill;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_agent_kills: Quorum, AgentKill;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_freezes: Async, Freeze;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_freezes: Quorum, Freeze;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_machine_loss: Async, MachineLoss;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_machine_loss: Quorum, MachineLoss;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_partitions: Async, Partition;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_partitions: Quorum, Partition;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_planned_promotions: Async, PlannedPromotion;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_planned_promotions: Quorum, PlannedPromotion;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_forced_promotions: Async, ForcedPromotion;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_forced_promotions: Quorum, ForcedPromotion;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_failbacks: Async, Failback;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_failbacks: Quorum, Failback;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    async_under_clock_skew: Async, ClockSkew;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    quorum_under_clock_skew: Quorum, ClockSkew;
    async_under_etcd_member_loss: Async, EtcdMemberLoss;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    pushes_under_freezes: Pushes, Freeze;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    pushes_under_planned_promotions: Pushes, PlannedPromotion;
    #[ignore = "needs root: network namespaces (a --netns lab)"]
    pushes_under_partitions: Pushes, Partition;
    quorum_under_etcd_member_loss: Quorum, EtcdMemberLoss;
}
