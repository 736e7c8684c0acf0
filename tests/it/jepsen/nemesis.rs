//! The consistency suite's faults (docs/CONSISTENCY.md, "Nemeses"): one kind per test, run in
//! a thread of its own on a schedule (healthy for a while, a fault for a while, healed,
//! again) until the run's end, always ending healed. Each fault is recorded as a window for
//! the report; a forced promotion and a machine loss also carry the window of writes async
//! mode may lose through them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;

use super::Timing;
use crate::acceptance::{Plan, now_ms, stargate};
use crate::support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    /// kill -9 of an agent (the leader's, mostly), started again after the fault.
    AgentKill,
    /// SIGSTOP of every process of the leader's node, or of its agent alone; SIGCONT.
    Freeze,
    /// A node powered off with its storage gone, back empty: it must catch up.
    MachineLoss,
    /// nft drop rules: the leader cut from its peers, or from everyone, or a replica cut off.
    Partition,
    /// `git stargate promote --yes` on a passive node.
    PlannedPromotion,
    /// `git stargate promote --force --yes` while the leader is frozen or cut off, often on a
    /// node that was cut from the leader first, so that it lags behind.
    ForcedPromotion,
    /// A planned promotion, then `git stargate failback --yes` on the previous leader.
    Failback,
    /// An agent restarted with its wall clock shifted (libfaketime), then restarted true.
    ClockSkew,
    /// The lease on a three-member etcd cluster: one member killed, restarted later; every
    /// other time the leader's agent killed while the member is down.
    EtcdMemberLoss,
}

/// One fault, as it happened.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Window {
    pub what: String,
    pub node: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub note: String,
    /// Async mode only: writes acknowledged in this window may be lost through this fault
    /// (a forced promotion, the loss of the leader's machine), if reported and kept.
    pub loss: Option<(u64, u64)>,
    /// The node's storage is gone: its writes cannot be kept, only reported.
    pub wiped: bool,
}

/// How much earlier than a forced promotion or a machine loss a write may have been
/// acknowledged and still not have reached the other nodes: the replication window. Writes
/// acknowledged while the promoted node was cut off count from the cut.
const REPLICATION_WINDOW: Duration = Duration::from_secs(2);

/// Since when `node` may lack the leader's writes: the start of its last successful sync
/// (`good_since_ms` in its `/status`), as it says just before it is promoted. A node whose
/// syncs kept failing (a fetch hung on a connection a partition broke) lags by more than
/// the usual window; one whose syncs succeeded lacks nothing accepted before them.
fn lagging_since(lab: &Lab, node: &str) -> Option<u64> {
    let (code, body) = lab.try_http(node, "/status")?;
    let status: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    status["replication"]["repos"]["kv.git"]["good_since_ms"].as_u64()
}

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::AgentKill => "agent_kills",
            Nemesis::Freeze => "freezes",
            Nemesis::MachineLoss => "machine_loss",
            Nemesis::Partition => "partitions",
            Nemesis::PlannedPromotion => "planned_promotions",
            Nemesis::ForcedPromotion => "forced_promotions",
            Nemesis::Failback => "failbacks",
            Nemesis::ClockSkew => "clock_skew",
            Nemesis::EtcdMemberLoss => "etcd_member_loss",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Nemesis::AgentKill => "kill -9 of agents",
            Nemesis::Freeze => "freezes of the leader (node or agent)",
            Nemesis::MachineLoss => "machines lost with their storage, restored empty",
            Nemesis::Partition => "network partitions (nft)",
            Nemesis::PlannedPromotion => "planned promotions",
            Nemesis::ForcedPromotion => "forced promotions away from a frozen or cut-off leader",
            Nemesis::Failback => "promotions and failbacks",
            Nemesis::ClockSkew => "agents with shifted wall clocks",
            Nemesis::EtcdMemberLoss => "etcd members killed and restarted (etcd lease)",
        }
    }

    /// Settings this nemesis needs beyond the shipped defaults, each with its reason.
    pub fn config(self) -> &'static str {
        match self {
            // Promotions repeat every few seconds: no cooldown between them (default 1m).
            Nemesis::PlannedPromotion | Nemesis::ForcedPromotion | Nemesis::Failback => {
                "[stargate \"promote\"]\n\tcooldown = 0s\n"
            }
            _ => "",
        }
    }

    /// The fault loop, until `until`; ends healed.
    pub fn run(self, lab: &Lab, etcd: Option<&Mutex<Etcd>>, timing: &Timing, until: Instant) -> Vec<Window> {
        let mut windows = Vec::new();
        let mut round = 0;
        loop {
            std::thread::sleep(timing.quiet);
            if Instant::now() + timing.fault >= until {
                break;
            }
            let window = match self {
                Nemesis::AgentKill => kill(lab, timing),
                Nemesis::Freeze => freeze(lab, timing, round),
                Nemesis::MachineLoss => machine_loss(lab, timing, round),
                Nemesis::Partition => partition(lab, timing, round),
                Nemesis::PlannedPromotion => promote(lab, timing),
                Nemesis::ForcedPromotion => forced(lab, timing, round),
                Nemesis::Failback => failback(lab, timing),
                Nemesis::ClockSkew => skew(lab, timing, round),
                Nemesis::EtcdMemberLoss => etcd_loss(lab, etcd.expect("an etcd cluster"), timing, round),
            };
            eprintln!("nemesis: {} on {}: {}", window.what, window.node, window.note);
            windows.push(window);
            round += 1;
        }
        windows
    }
}

/// The lab this nemesis needs: three nodes in network namespaces, or, for the etcd lease,
/// on loopback with a real three-member etcd cluster (started first: the nodes lease
/// through it from the start).
pub fn lab(nemesis: Nemesis, extra: &str, plan: &Plan) -> (Lab, Option<Mutex<Etcd>>) {
    if nemesis != Nemesis::EtcdMemberLoss {
        return (Lab::up_netns(3, extra, plan.net(false, false)), None);
    }
    let net = format!("127.{}.{}", 100 + std::process::id() % 100, rand_octet());
    let etcd = Etcd::start(&net, 3);
    let lock = format!("[stargate]\n\tlock = etcd://{}/stargate/leader\n", etcd.endpoints().join(","));
    (Lab::up_on(3, &net, &format!("{lock}{extra}")), Some(Mutex::new(etcd)))
}

/// The leader in the record (file lease), else the one node whose `/readyz` answers.
fn leader(lab: &Lab) -> Option<String> {
    let record = lab.dir.path().join("shared/stargate.lock.leader");
    if let Some(node) = std::fs::read_to_string(record)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| j["node"].as_str().map(str::to_owned))
    {
        return Some(node);
    }
    match &lab.ready()[..] {
        [one] => Some(one.clone()),
        _ => None,
    }
}

fn others(lab: &Lab, node: &str) -> Vec<String> {
    lab.nodes.iter().filter(|n| *n != node).cloned().collect()
}

fn any(nodes: &[String]) -> String {
    nodes.choose(&mut rand::rng()).expect("a node").clone()
}

/// The leader two times in three, any node the third.
fn target(lab: &Lab) -> String {
    match leader(lab) {
        Some(l) if rand::random_ratio(2, 3) => l,
        _ => any(&lab.nodes),
    }
}

fn window(what: &str, node: &str, start_ms: u64, note: String) -> Window {
    Window { what: what.into(), node: node.into(), start_ms, end_ms: now_ms(), note, loss: None, wiped: false }
}

fn kill(lab: &Lab, timing: &Timing) -> Window {
    let n = target(lab);
    let start = now_ms();
    lab.kill(&n, "agent", "KILL");
    std::thread::sleep(timing.fault);
    lab.start(&n, "agent");
    window("agent-kill", &n, start, "kill -9, started again".into())
}

fn freeze(lab: &Lab, timing: &Timing, round: usize) -> Window {
    let n = leader(lab).unwrap_or_else(|| any(&lab.nodes));
    let start = now_ms();
    let whole = round.is_multiple_of(2);
    if whole {
        ok(lab.script("freeze").arg(&n));
    } else {
        lab.kill(&n, "agent", "STOP");
    }
    std::thread::sleep(timing.fault);
    if whole {
        ok(lab.script("thaw").arg(&n));
    } else {
        lab.kill(&n, "agent", "CONT");
    }
    window("freeze", &n, start, if whole { "every process of the node".into() } else { "the agent".into() })
}

fn machine_loss(lab: &Lab, timing: &Timing, round: usize) -> Window {
    // The leader's machine every other time: the interesting loss.
    let n = match leader(lab) {
        Some(l) if round.is_multiple_of(2) => l,
        _ => any(&lab.nodes),
    };
    let was_leader = leader(lab).as_deref() == Some(n.as_str());
    // The next leader is one of the others: the furthest behind of them bounds what is lost.
    let lagging = others(lab, &n).iter().filter_map(|o| lagging_since(lab, o)).min();
    let start = now_ms();
    lab.stop_node(&n);
    // A write may still be acknowledged while the power goes: until every process is dead.
    let dead = now_ms();
    // The storage gone: repositories and the node's state; a new machine gets an empty
    // repository, as an operator restoring it would create.
    let repos = lab.dir.path().join(&n).join("repos");
    std::fs::remove_dir_all(&repos).unwrap();
    std::fs::create_dir_all(&repos).unwrap();
    ok(lab.node_cmd(&n, "git").args(["init", "-q", "--bare"]).arg(repos.join("kv.git")));
    std::thread::sleep(timing.fault);
    lab.restart(&n);
    let mut w = window(
        "machine-loss",
        &n,
        start,
        format!("{} powered off, storage wiped, back empty", if was_leader { "the leader" } else { "a replica" }),
    );
    w.wiped = true;
    if was_leader {
        let from = (start - REPLICATION_WINDOW.as_millis() as u64).min(lagging.unwrap_or(u64::MAX));
        w.loss = Some((from, dead));
    }
    w
}

fn partition(lab: &Lab, timing: &Timing, round: usize) -> Window {
    let l = leader(lab).unwrap_or_else(|| any(&lab.nodes));
    let start = now_ms();
    let (n, note) = match round % 3 {
        0 => {
            let peers = others(lab, &l);
            lab.cut(&l, &peers.iter().map(String::as_str).collect::<Vec<_>>());
            (l, "the leader cut from its peers (clients still reach it)")
        }
        1 => {
            lab.cut(&l, &[]);
            (l, "the leader cut from everyone")
        }
        _ => {
            let r = any(&others(lab, &l));
            lab.cut(&r, &[]);
            (r, "a replica cut from everyone")
        }
    };
    std::thread::sleep(timing.fault);
    lab.heal(&n);
    window("partition", &n, start, note.into())
}

/// `git stargate <args>` on `node`: exit code and the last line it printed.
fn operator(lab: &Lab, node: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = stargate(lab, node, args);
    let text = format!("{}{}", crate::acceptance::stdout(&out), stderr(&out));
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
    (out.status.code(), last)
}

fn promote(lab: &Lab, timing: &Timing) -> Window {
    let l = leader(lab).unwrap_or_else(|| any(&lab.nodes));
    let n = any(&others(lab, &l));
    let start = now_ms();
    let (code, last) = operator(lab, &n, &["promote", "--yes"]);
    let w = window("promote", &n, start, format!("from {l}: exit {code:?}: {last}"));
    std::thread::sleep(timing.fault);
    w
}

fn failback(lab: &Lab, timing: &Timing) -> Window {
    let l = leader(lab).unwrap_or_else(|| any(&lab.nodes));
    let n = any(&others(lab, &l));
    let start = now_ms();
    let (code, last) = operator(lab, &n, &["promote", "--yes"]);
    let mut note = format!("promote {n} from {l}: exit {code:?}: {last}");
    if code == Some(0) {
        std::thread::sleep(timing.fault);
        let (code, last) = operator(lab, &l, &["failback", "--yes"]);
        note += &format!("; failback on {l}: exit {code:?}: {last}");
    }
    window("failback", &l, start, note)
}

/// The leader isolated (frozen, or cut off), and a forced promotion elsewhere; half the
/// time the promoted node was first cut from the leader, so it lags behind the third node.
/// A refused promotion (exit 1) changed nothing.
fn forced(lab: &Lab, timing: &Timing, round: usize) -> Window {
    let l = leader(lab).unwrap_or_else(|| any(&lab.nodes));
    let x = any(&others(lab, &l));
    let start = now_ms();
    let lagging = rand::random_bool(0.5);
    if lagging {
        lab.cut(&x, &[&l]);
        std::thread::sleep(timing.fault / 2);
    }
    let frozen = round.is_multiple_of(2);
    if frozen {
        ok(lab.script("freeze").arg(&l));
    } else {
        lab.cut(&l, &[]);
    }
    let lagging_since = lagging_since(lab, &x);
    let (code, last) = operator(lab, &x, &["promote", "--force", "--yes"]);
    let promoted = now_ms();
    std::thread::sleep(timing.fault / 2);
    if frozen {
        ok(lab.script("thaw").arg(&l));
    } else {
        lab.heal(&l);
    }
    lab.heal(&x);
    let how = if frozen { "frozen" } else { "cut off" };
    let lag = if lagging { ", cut from the leader first" } else { "" };
    let mut w =
        window("forced-promotion", &x, start, format!("{l} {how}; promote --force on {x}{lag}: exit {code:?}: {last}"));
    if code == Some(0) {
        let from = (start - REPLICATION_WINDOW.as_millis() as u64).min(lagging_since.unwrap_or(u64::MAX));
        w.loss = Some((from, promoted));
    }
    w
}

fn skew(lab: &Lab, timing: &Timing, round: usize) -> Window {
    let n = target(lab);
    let by = ["+45s", "-45s", "+10m", "-10m"][round % 4];
    let start = now_ms();
    lab.kill(&n, "agent", "KILL");
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(lab.dir.path().join(&n).join("agent.log")).unwrap();
    let mut agent = shifted(lab.node_cmd(&n, HOOK), by);
    agent.args(["git-stargate", "agent"]).stdout(log.try_clone().unwrap()).stderr(log);
    let mut child = agent.spawn().expect("a shifted agent");
    // `lab kill` and `lab down` find it by its pid file, as any agent; reaped here.
    std::fs::write(lab.dir.path().join(&n).join("agent.pid"), child.id().to_string()).unwrap();
    std::thread::spawn(move || child.wait());
    std::thread::sleep(timing.fault);
    lab.kill(&n, "agent", "KILL");
    lab.start(&n, "agent");
    window("clock-skew", &n, start, format!("agent restarted {by}, then on the true clock"))
}

fn etcd_loss(lab: &Lab, etcd: &Mutex<Etcd>, timing: &Timing, round: usize) -> Window {
    let member = rand::random_range(0..3);
    let start = now_ms();
    etcd.lock().unwrap().kill(member);
    let mut note = format!("etcd member m{member} killed");
    let mut node = format!("m{member}");
    if round % 2 == 1 {
        std::thread::sleep(timing.fault / 3);
        if let Some(l) = leader(lab) {
            lab.kill(&l, "agent", "KILL");
            std::thread::sleep(timing.fault / 3);
            lab.start(&l, "agent");
            note += &format!("; the leader {l}'s agent killed meanwhile");
            node += &format!("+{l}");
        }
    } else {
        std::thread::sleep(timing.fault);
    }
    etcd.lock().unwrap().restart(member);
    window("etcd-member-loss", &node, start, note + ", restarted")
}

fn alive(lab: &Lab, node: &str, what: &str) -> bool {
    let Ok(pid) = std::fs::read_to_string(lab.dir.path().join(node).join(format!("{what}.pid"))) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    pid.trim().parse::<i32>().is_ok_and(|p| unsafe { libc::kill(p, 0) } == 0)
}

/// Whatever a fault left behind undone: every node thawed and healed, every process running.
pub fn heal_all(lab: &Lab, etcd: Option<&Mutex<Etcd>>) {
    let netns = etcd.is_none();
    for n in &lab.nodes {
        if netns {
            ok(lab.script("thaw").arg(n));
            lab.heal(n);
        }
        for what in ["daemon", "health", "agent"] {
            if !alive(lab, n, what) {
                lab.start(n, what);
            }
        }
    }
}
