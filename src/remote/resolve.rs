//! Finding the node to talk to: every name's health responder is asked in parallel, with
//! one deadline for all (`stargate.probeTimeout`), like libpq's multi-host connection
//! strings picking the writable server. Writes need the leader (`/readyz` = 200); reads
//! follow `stargate.readFrom`, judging replicas by their `/status` lag.
//!
//! Every answer names an epoch: the one a leader leads, or the newest one a passive node
//! knows of. A node answering 200 for an epoch older than another answer names (a deposed
//! leader whose responder still says 200) is not the leader, and the leader is the node
//! claiming the newest epoch. So a leader's answer settles it only once it is confirmed:
//! every node has answered, or another node names the same epoch; otherwise the helper
//! waits for the others until the deadline.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::ReadFrom;
use crate::lead::lease::Record;

use super::Error;
use super::url::Node;

/// What the connection will do on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub read_from: ReadFrom,
    pub max_lag: Option<Duration>,
    pub timeout: Duration,
}

impl Policy {
    /// Only the leader will do (`/readyz` is enough).
    fn leader_only(&self, op: Op) -> bool {
        op == Op::Write || self.read_from == ReadFrom::Leader
    }
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Leads the current epoch and accepts writes.
    Leader { epoch: Option<u64>, note: Option<String> },
    /// Up, but not the leader: why, and (from `/status`) whether its agent is alive and
    /// its replication lag in seconds, when it publishes one; the newest epoch it knows of.
    Passive { why: String, alive: bool, lag_seconds: Option<f64>, epoch: Option<u64> },
    /// No usable answer.
    Failed(String),
}

/// The node picked, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub node: usize,
    pub leader: bool,
    pub epoch: Option<u64>,
    pub elapsed: Duration,
    /// For `-v`: what the node answered.
    pub why: String,
}

/// Pick the node for `op` among `nodes`. A single name is used as is, without a probe (a
/// floating address or DNS name that follows the leader).
pub fn resolve(nodes: &[Node], op: Op, policy: &Policy, record: Option<&Record>) -> Result<Choice, Error> {
    let start = Instant::now();
    if nodes.len() == 1 {
        return Ok(Choice {
            node: 0,
            leader: op == Op::Write,
            epoch: None,
            elapsed: start.elapsed(),
            why: "the only name given".into(),
        });
    }
    let path = if policy.leader_only(op) { "/readyz" } else { "/status" };
    let (deadline, timeout) = (start + policy.timeout, policy.timeout);
    let (tx, rx) = mpsc::channel();
    let mut answers: Vec<Option<Answer>> = vec![None; nodes.len()];
    let mut pending = 0;
    for (i, node) in nodes.iter().enumerate() {
        match &node.health {
            Some(addr) => {
                let (tx, addr) = (tx.clone(), addr.clone());
                pending += 1;
                // Detached on purpose: a node that never answers is left behind at the deadline.
                std::thread::spawn(move || {
                    let _ = tx.send((i, probe(&addr, path, deadline, timeout)));
                });
            }
            None => answers[i] = Some(Answer::Failed(format!("no stargate.{}.health to ask (stargate(7))", node.name))),
        }
    }
    drop(tx);
    while pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((i, answer)) = rx.recv_timeout(left) else { break };
        pending -= 1;
        answers[i] = Some(answer);
        let judged = judge(nodes, &answers, record);
        if let Some(i) = decisive(&judged, op, policy, record) {
            return Ok(choice(i, &judged[i], policy, start));
        }
    }
    let judged = judge(nodes, &answers, record);
    match settle(&judged, op, policy) {
        Some(i) => Ok(choice(i, &judged[i], policy, start)),
        None => Err(no_target(nodes, &judged, op, policy)),
    }
}

fn choice(i: usize, answer: &Option<Answer>, policy: &Policy, start: Instant) -> Choice {
    let (leader, epoch) = match answer {
        Some(Answer::Leader { epoch, .. }) => (true, *epoch),
        _ => (false, None),
    };
    Choice { node: i, leader, epoch, elapsed: start.elapsed(), why: describe(answer, policy) }
}

impl Answer {
    /// The epoch this answer names: led, or the newest known.
    fn epoch(&self) -> Option<u64> {
        match self {
            Answer::Leader { epoch, .. } | Answer::Passive { epoch, .. } => *epoch,
            Answer::Failed(_) => None,
        }
    }
}

/// The answers as the leader record (when this machine can read one) and each other
/// correct them: the node the record names is taken as the leader when its health
/// responder did not answer at all; a node claiming to lead an epoch older than the record's
/// or than one another node named is not the leader (a deposed leader still answering 200).
pub fn judge(nodes: &[Node], answers: &[Option<Answer>], record: Option<&Record>) -> Vec<Option<Answer>> {
    let mut judged = answers.to_vec();
    let mut newest: Option<(u64, String)> = record.map(|r| (r.epoch, "the leader record".to_owned()));
    for (node, answer) in nodes.iter().zip(answers) {
        if let Some(e) = answer.as_ref().and_then(Answer::epoch)
            && newest.as_ref().is_none_or(|(n, _)| e > *n)
        {
            newest = Some((e, node.name.clone()));
        }
    }
    for (node, answer) in nodes.iter().zip(judged.iter_mut()) {
        if let (Some(record), Some(Answer::Failed(why))) = (record, &answer)
            && node.configured
            && node.name == record.node
        {
            let note = format!("by the leader record (epoch {}); its health responder: {why}", record.epoch);
            *answer = Some(Answer::Leader { epoch: Some(record.epoch), note: Some(note) });
        }
        if let (Some(Answer::Leader { epoch: Some(e), .. }), Some((n, by))) = (&answer, &newest)
            && e < n
        {
            let why = match record.filter(|r| r.epoch == *n) {
                Some(r) => format!("its epoch {e} is behind the leader record's {}", r.epoch),
                None => format!("its epoch {e} is behind epoch {n}, which {by} named"),
            };
            *answer = Some(Answer::Passive { why, alive: true, lag_seconds: None, epoch: Some(*e) });
        }
    }
    judged
}

/// Why a read does not go to a node.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("not a replica")]
    NotReplica,
    #[error("its agent is not running")]
    AgentDown,
    #[error("lag {lag:.1} s is above stargate.maxReadLag ({} ms)", .max.as_millis())]
    Lagging { lag: f64, max: Duration },
    #[error("its lag is unknown and stargate.maxReadLag is set")]
    LagUnknown,
}

/// May a read go to this passive node? Its lag if so (unknown counts as the most).
fn readable(answer: &Answer, policy: &Policy) -> Result<f64, Unreadable> {
    let Answer::Passive { alive, lag_seconds, .. } = answer else { return Err(Unreadable::NotReplica) };
    if !alive {
        return Err(Unreadable::AgentDown);
    }
    match (policy.max_lag, lag_seconds) {
        (None, lag) => Ok(lag.unwrap_or(f64::MAX)),
        (Some(max), Some(lag)) if *lag <= max.as_secs_f64() => Ok(*lag),
        (Some(max), Some(lag)) => Err(Unreadable::Lagging { lag: *lag, max }),
        (Some(_), None) => Err(Unreadable::LagUnknown),
    }
}

/// The node to use right away, before every answer is in (`answers` as `judge` made them).
/// Where the leader is needed: the one claiming the newest epoch, once every node answered
/// or another node (or the leader record) names that same epoch.
pub fn decisive(answers: &[Option<Answer>], op: Op, policy: &Policy, record: Option<&Record>) -> Option<usize> {
    if policy.leader_only(op) {
        let i = newest_leader(answers)?;
        let epoch = answers[i].as_ref().and_then(Answer::epoch);
        let everyone = answers.iter().all(Option::is_some);
        let named_elsewhere = epoch.is_some()
            && (record.is_some_and(|r| Some(r.epoch) == epoch)
                || (answers.iter().enumerate())
                    .any(|(j, a)| j != i && matches!(a, Some(p @ Answer::Passive { .. }) if p.epoch() == epoch)));
        return (everyone || named_elsewhere).then_some(i);
    }
    answers.iter().position(|a| match a {
        Some(Answer::Leader { .. }) => policy.read_from == ReadFrom::Any,
        Some(a @ Answer::Passive { .. }) => readable(a, policy).is_ok(),
        _ => false,
    })
}

/// The node claiming to lead the newest epoch (the first named, between equals).
fn newest_leader(answers: &[Option<Answer>]) -> Option<usize> {
    (answers.iter().enumerate())
        .filter_map(|(i, a)| match a {
            Some(Answer::Leader { epoch, .. }) => Some((i, epoch.unwrap_or(0))),
            _ => None,
        })
        .max_by_key(|&(i, epoch)| (epoch, std::cmp::Reverse(i)))
        .map(|(i, _)| i)
}

/// The node to use once every answer is in (or the deadline passed).
pub fn settle(answers: &[Option<Answer>], op: Op, policy: &Policy) -> Option<usize> {
    let leader = newest_leader(answers);
    if policy.leader_only(op) {
        return leader;
    }
    let replica = (answers.iter().enumerate())
        .filter_map(|(i, a)| Some((i, readable(a.as_ref()?, policy).ok()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    replica.or(leader)
}

fn describe(answer: &Option<Answer>, policy: &Policy) -> String {
    match answer {
        None => format!("no answer within {} ms", policy.timeout.as_millis()),
        Some(Answer::Leader { epoch, note }) => {
            let mut s = match epoch {
                Some(e) => format!("leader, epoch {e}"),
                None => "leader".to_owned(),
            };
            if let Some(note) = note {
                s += &format!(" ({note})");
            }
            s
        }
        Some(a @ Answer::Passive { why, lag_seconds, .. }) => {
            let mut s = format!("not leader: {why}");
            if let Some(lag) = lag_seconds {
                s += &format!(", lag {lag:.1} s");
            }
            if !policy.leader_only(Op::Read)
                && let Err(skip) = readable(a, policy)
            {
                s += &format!("; not read from: {skip}");
            }
            s
        }
        Some(Answer::Failed(why)) => why.clone(),
    }
}

fn no_target(nodes: &[Node], answers: &[Option<Answer>], op: Op, policy: &Policy) -> Error {
    let mut list = String::new();
    for (node, answer) in nodes.iter().zip(answers) {
        let health = node.health.as_deref().map(|h| format!(" (http://{h})")).unwrap_or_default();
        let what = if policy.leader_only(op) {
            describe(answer, policy)
        } else {
            describe(answer, &Policy { read_from: ReadFrom::Replica, ..*policy })
        };
        list += &format!("\n  {}{health}: {}", node.name, crate::wire::sanitize::text(&what));
    }
    let names = nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(",");
    if policy.leader_only(op) {
        Error::NoLeader(format!("no leader among {names}:{list}"))
    } else {
        Error::NoLeader(format!("no node to read from among {names}:{list}"))
    }
}

/// Ask one health responder. Never outlives `deadline` by more than one system call.
fn probe(addr: &str, path: &str, deadline: Instant, timeout: Duration) -> Answer {
    match crate::wire::http::get(addr, path, deadline, timeout) {
        Err(why) => Answer::Failed(why.to_string()),
        // A responder serving the probes only on this address (`--public`): judge the
        // node by `/readyz`; its lag is then unknown.
        Ok((404, _)) if path == "/status" => probe(addr, "/readyz", deadline, timeout),
        Ok((code, body)) => parse_answer(path, code, &body),
    }
}

/// A health answer, from `/readyz` or `/status`.
pub fn parse_answer(path: &str, code: u16, body: &str) -> Answer {
    let first_line =
        || crate::wire::sanitize::text(body.lines().next().unwrap_or("").trim()).chars().take(200).collect::<String>();
    if path == "/readyz" {
        return match code {
            200 => {
                let epoch = body.lines().next().and_then(|l| l.trim().rsplit(' ').next()?.parse().ok());
                Answer::Leader { epoch, note: None }
            }
            // `not leader: <why>`, then `leader <node>, epoch <n>` when the node knows one.
            503 => {
                let line = first_line();
                let why = line.strip_prefix("not leader: ").unwrap_or(&line).to_owned();
                let epoch = (body.lines().nth(1))
                    .filter(|l| l.starts_with("leader "))
                    .and_then(|l| l.trim().rsplit_once(", epoch ")?.1.parse().ok());
                Answer::Passive { why, alive: true, lag_seconds: None, epoch }
            }
            _ => Answer::Failed(format!("HTTP {code}: {}", first_line())),
        };
    }
    if code != 200 {
        return Answer::Failed(format!("HTTP {code}: {}", first_line()));
    }
    let Ok(status) = serde_json::from_str::<serde_json::Value>(body) else {
        return Answer::Failed("/status is not JSON".into());
    };
    let epoch = status["epoch"].as_u64();
    if status["accepts_writes"].as_bool() == Some(true) {
        return Answer::Leader { epoch, note: None };
    }
    let why = status["refusal"].as_str().map_or_else(|| "passive".to_owned(), crate::wire::sanitize::text);
    let alive = status["agent"]["alive"].as_bool() == Some(true);
    let lag_seconds = status["lag_seconds"].as_f64().filter(|l| l.is_finite() && *l >= 0.0);
    // The newest epoch it knows of: the record's, or the one its agent has seen.
    let epoch = [&status["leader"]["epoch"], &status["seen"]["epoch"]].iter().filter_map(|e| e.as_u64()).max();
    Answer::Passive { why, alive, lag_seconds, epoch }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::url::Node;
    use crate::wire::endpoint::Endpoint;

    fn policy(read_from: ReadFrom, max_lag: Option<u64>) -> Policy {
        Policy { read_from, max_lag: max_lag.map(Duration::from_secs), timeout: Duration::from_millis(500) }
    }
    fn leader(e: u64) -> Option<Answer> {
        Some(Answer::Leader { epoch: Some(e), note: None })
    }
    fn replica(lag: Option<f64>) -> Option<Answer> {
        Some(Answer::Passive { why: "passive".into(), alive: true, lag_seconds: lag, epoch: None })
    }
    /// A passive node that names the newest epoch it knows of.
    fn passive(e: u64) -> Option<Answer> {
        Some(Answer::Passive { why: "passive".into(), alive: true, lag_seconds: None, epoch: Some(e) })
    }
    fn down() -> Option<Answer> {
        Some(Answer::Failed("connection refused".into()))
    }
    /// What `resolve` does with the answers in so far: the node to use now, if any.
    fn now(answers: &[Option<Answer>], record: Option<&Record>) -> Option<usize> {
        let names: Vec<Node> = (0..answers.len()).map(|i| node(&format!("n{i}"))).collect();
        decisive(&judge(&names, answers, record), Op::Write, &policy(ReadFrom::Leader, None), record)
    }
    /// What `resolve` does at the deadline.
    fn at_deadline(answers: &[Option<Answer>]) -> Option<usize> {
        let names: Vec<Node> = (0..answers.len()).map(|i| node(&format!("n{i}"))).collect();
        settle(&judge(&names, answers, None), Op::Write, &policy(ReadFrom::Leader, None))
    }
    fn node(name: &str) -> Node {
        Node { name: name.into(), endpoint: Endpoint::Local("/x".into()), health: None, configured: true }
    }

    #[test]
    fn why_a_replica_is_not_read_from() {
        let p = policy(ReadFrom::Replica, Some(1));
        let why = |a: Option<Answer>| readable(&a.unwrap(), &p).map_err(|e| e.to_string());
        assert_eq!(why(replica(Some(0.5))), Ok(0.5));
        assert_eq!(why(replica(Some(2.5))), Err("lag 2.5 s is above stargate.maxReadLag (1000 ms)".into()));
        assert_eq!(why(replica(None)), Err("its lag is unknown and stargate.maxReadLag is set".into()));
        assert_eq!(why(leader(1)), Err("not a replica".into()));
        let dead = Answer::Passive { why: "passive".into(), alive: false, lag_seconds: Some(0.0), epoch: None };
        assert!(matches!(readable(&dead, &p), Err(Unreadable::AgentDown)));
    }

    #[test]
    fn writes_need_the_leader() {
        let p = policy(ReadFrom::Any, None);
        let answers = [replica(Some(0.0)), leader(3), Some(Answer::Failed("refused".into()))];
        assert_eq!(decisive(&answers, Op::Write, &p, None), Some(1));
        assert_eq!(settle(&[replica(None), None], Op::Write, &p), None);
        // Two nodes claiming leadership: the newer epoch wins.
        assert_eq!(settle(&[leader(3), leader(4)], Op::Write, &p), Some(1));
    }

    /// The helper used to push to the first node answering 200, which could be a deposed
    /// leader whose responder still said so.
    #[test]
    fn a_push_goes_to_the_newest_epoch_never_to_one_another_node_named_newer() {
        // The common case: the leader, confirmed by a passive node naming its epoch, or with
        // every other node down, settles it at once.
        assert_eq!(now(&[leader(7), passive(7), None], None), Some(0));
        assert_eq!(now(&[passive(7), None, leader(7)], None), Some(2));
        assert_eq!(now(&[leader(7), down(), down()], None), Some(0));
        assert_eq!(now(&[leader(7), None], Some(&record(7, "n0"))), Some(0), "the leader record confirms it");
        // Unconfirmed while a node has not answered: it may name a newer epoch.
        assert_eq!(now(&[leader(7), None], None), None);
        assert_eq!(now(&[leader(7), passive(6), None], None), None, "a passive node behind confirms nothing");
        // Two claims: the older one is a deposed leader, whoever answered first.
        assert_eq!(now(&[leader(3), None], None), None);
        assert_eq!(now(&[leader(3), leader(5)], None), Some(1));
        assert_eq!(now(&[leader(3), passive(5), None], None), None, "waits for the leader of epoch 5");
        assert_eq!(now(&[leader(3), passive(5), leader(5)], None), Some(2));
        // At the deadline: the newest claim among those in, and never one older than an
        // epoch another node named.
        assert_eq!(at_deadline(&[leader(7), None]), Some(0));
        assert_eq!(at_deadline(&[leader(3), passive(5), None]), None);
        assert_eq!(at_deadline(&[leader(3), passive(5), down()]), None);
        let names = [node("x"), node("a")];
        let judged = judge(&names, &[leader(3), passive(5)], None);
        assert!(
            matches!(&judged[0], Some(Answer::Passive { why, .. }) if why == "its epoch 3 is behind epoch 5, which a named"),
            "{judged:?}"
        );
        // An answer without an epoch (an older responder) is not demoted, and ranks last.
        let unknown = Some(Answer::Leader { epoch: None, note: None });
        assert_eq!(now(&[unknown.clone(), leader(2)], None), Some(1));
        assert_eq!(at_deadline(&[unknown, passive(2)]), Some(0));
    }

    fn record(epoch: u64, node: &str) -> Record {
        Record { epoch, node: node.into(), url: None, health: None, since_ms: 0 }
    }

    #[test]
    fn reads_follow_read_from_and_max_lag() {
        let answers = [leader(2), replica(Some(9.0)), replica(Some(1.0)), replica(None)];
        assert_eq!(settle(&answers, Op::Read, &policy(ReadFrom::Leader, None)), Some(0));
        assert_eq!(settle(&answers, Op::Read, &policy(ReadFrom::Replica, None)), Some(2), "lowest lag");
        assert_eq!(settle(&answers, Op::Read, &policy(ReadFrom::Replica, Some(5))), Some(2));
        // Lag above the limit or unknown: skipped, and the leader serves the read.
        let slow = [leader(2), replica(Some(9.0)), replica(None)];
        assert_eq!(settle(&slow, Op::Read, &policy(ReadFrom::Replica, Some(5))), Some(0));
        assert_eq!(decisive(&slow, Op::Read, &policy(ReadFrom::Replica, Some(5)), None), None, "waits for a replica");
        assert_eq!(decisive(&slow, Op::Read, &policy(ReadFrom::Any, Some(5)), None), Some(0));
        let dead = [Some(Answer::Passive { why: "x".into(), alive: false, lag_seconds: Some(0.0), epoch: None })];
        assert_eq!(settle(&dead, Op::Read, &policy(ReadFrom::Any, None)), None);
    }

    #[test]
    fn the_leader_record_corrects_answers() {
        let record = Record { epoch: 5, node: "b".into(), url: None, health: None, since_ms: 0 };
        let nodes = [node("a"), node("b")];
        let judged = judge(&nodes, &[leader(4), Some(Answer::Failed("timed out".into()))], Some(&record));
        assert!(matches!(judged[0], Some(Answer::Passive { .. })), "stale epoch: {judged:?}");
        assert!(matches!(judged[1], Some(Answer::Leader { epoch: Some(5), .. })), "{judged:?}");
        // A 503 is an answer: the record does not overrule it.
        let judged = judge(&nodes, &[None, replica(None)], Some(&record));
        assert!(matches!(judged[1], Some(Answer::Passive { .. })));
    }

    #[test]
    fn parses_health_answers() {
        assert_eq!(parse_answer("/readyz", 200, "leader, epoch 7\n"), Answer::Leader { epoch: Some(7), note: None });
        assert!(matches!(parse_answer("/readyz", 503, "not leader: agent \u{1b}[31mdead\n"),
            Answer::Passive { ref why, .. } if why == "agent dead"));
        assert!(matches!(parse_answer("/readyz", 404, "x"), Answer::Failed(_)));
        assert_eq!(
            parse_answer("/readyz", 503, "not leader: this node is passive\nleader b, epoch 9\n"),
            Answer::Passive { why: "this node is passive".into(), alive: true, lag_seconds: None, epoch: Some(9) }
        );
        assert!(matches!(
            parse_answer("/readyz", 503, "not leader: x\nleader b, epoch z\n"),
            Answer::Passive { epoch: None, .. }
        ));
        let status = r#"{"accepts_writes":false,"epoch":0,"leader":null,"seen":{"epoch":4,"node":"a"}}"#;
        assert!(matches!(parse_answer("/status", 200, status), Answer::Passive { epoch: Some(4), .. }));
        let status = r#"{"accepts_writes":false,"refusal":"passive","agent":{"alive":true},"lag_seconds":1.5}"#;
        assert_eq!(
            parse_answer("/status", 200, status),
            Answer::Passive { why: "passive".into(), alive: true, lag_seconds: Some(1.5), epoch: None }
        );
        let status = r#"{"accepts_writes":false,"agent":{"alive":true},"lag_seconds":null}"#;
        assert!(matches!(parse_answer("/status", 200, status), Answer::Passive { lag_seconds: None, .. }));
        assert!(matches!(parse_answer("/status", 200, "{"), Answer::Failed(_)));
    }
}
