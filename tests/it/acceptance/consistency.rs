//! DISC-012, testing strategy: failover consistency. After convergence the passive is
//! promoted and traffic switches (the clients name the group, `stargate::a,b`, and follow
//! `/readyz`); reads and writes run before, during and after, and again through failback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// One read: when it started, the tip it saw, the keys it saw (None when it failed).
struct Read1 {
    start_ms: u64,
    tip: Option<String>,
    keys: std::collections::HashSet<String>,
}

#[test]
#[ignore = "needs root: network namespaces (a --netns lab)"]
fn disc_012_failover_consistency_through_promotion_and_failback() {
    let plan = Plan::get();
    let mut report = Report::new(
        "disc_012_failover_consistency",
        "DISC-012 testing strategy",
        "after convergence, promote the passive and switch traffic; reads and writes consistent before, during and after; every acknowledged key present; every ref history a fast-forward of what clients saw",
    );
    // The shipped settings, but for the promotion cooldown (1 min): the plan fails back
    // right after its promotion, which the cooldown exists to refuse.
    let extra = "[stargate \"promote\"]\n\tcooldown = 0s\n";
    let lab = Lab::up_netns(2, extra, plan.net(false, false));
    let a = lab.wait_leader(None, Duration::from_secs(10));
    let b = other(&lab, &a);
    let group = lab.nodes.join(",");
    let writer = Writer::start(stargate_client(&lab, &group), plan.write_every);
    let acked = writer.shared();
    let reader = stargate_client(&lab, &group);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Vec::<Read1>::new()));
    let thread = {
        let (stop, reads) = (Arc::clone(&stop), Arc::clone(&reads));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let start_ms = now_ms();
                let out = kv(&reader, &["list"]);
                let read = if out.status.success() {
                    let tip = run(reader.git("c", &["rev-parse", "--verify", "-q", "refs/kv/default"]));
                    let names = run(reader.git("c", &["ls-tree", "-r", "--name-only", "refs/kv/default"]));
                    Read1 {
                        start_ms,
                        tip: tip.status.success().then(|| stdout(&tip).trim().to_owned()),
                        keys: stdout(&names).lines().map(str::to_owned).collect(),
                    }
                } else {
                    Read1 { start_ms, tip: None, keys: Default::default() }
                };
                reads.lock().unwrap().push(read);
                std::thread::sleep(Duration::from_millis(100));
            }
            reader
        })
    };
    let mut marks = vec![("start", now_ms())];
    std::thread::sleep(plan.phase);
    lab.wait_parity(&a, &b, Duration::from_secs(30));
    marks.push(("promote", now_ms()));
    let start = Instant::now();
    let out = stargate(&lab, &b, &["promote", "--yes"]);
    assert!(out.status.success(), "{}{}{}", stdout(&out), stderr(&out), lab.logs());
    let promote = start.elapsed();
    assert_eq!(lab.wait_leader(None, Duration::from_secs(10)), b);
    marks.push(("promoted", now_ms()));
    std::thread::sleep(plan.phase);
    lab.wait_parity(&b, &a, Duration::from_secs(30));
    marks.push(("failback", now_ms()));
    let start = Instant::now();
    let out = stargate(&lab, &a, &["failback", "--yes"]);
    assert!(out.status.success(), "{}{}{}", stdout(&out), stderr(&out), lab.logs());
    let failback = start.elapsed();
    assert_eq!(lab.wait_leader(None, Duration::from_secs(10)), a);
    marks.push(("failed-back", now_ms()));
    std::thread::sleep(plan.phase);
    marks.push(("end", now_ms()));
    let done = writer.stop();
    stop.store(true, Ordering::SeqCst);
    let reader = thread.join().unwrap();
    let reads = std::mem::take(&mut *reads.lock().unwrap());
    drop(acked);

    // Every acknowledged write on both nodes, committed once.
    lab.wait_parity(&a, &b, Duration::from_secs(30));
    for node in [&a, &b] {
        check_writes(&lab, node, &done);
    }
    // Reads: each saw every write acknowledged before it started (they read the leader).
    let ok_reads: Vec<&Read1> = reads.iter().filter(|r| r.tip.is_some()).collect();
    assert!(ok_reads.len() >= 10, "the reader kept reading: {} of {}", ok_reads.len(), reads.len());
    for r in &ok_reads {
        for w in done.iter().filter(|w| w.ok && w.end_ms < r.start_ms) {
            assert!(
                r.keys.contains(&format!("w{}", w.i)),
                "a read at {} missed w{}, acknowledged at {}",
                r.start_ms,
                w.i,
                w.end_ms
            );
        }
    }
    // Histories: every tip a client saw is an ancestor of the next one and of the final tip.
    let final_tip = lab.rev(&a, "refs/kv/default").unwrap();
    assert!(kv(&reader, &["list"]).status.success());
    let mut tips: Vec<&str> = ok_reads.iter().filter_map(|r| r.tip.as_deref()).collect();
    tips.dedup();
    for pair in tips.windows(2) {
        let out = run(reader.git("c", &["merge-base", "--is-ancestor", pair[0], pair[1]]));
        assert!(out.status.success(), "the reader saw {} then {}: not a fast-forward", pair[0], pair[1]);
    }
    for tip in &tips {
        let out = run(reader.git("c", &["merge-base", "--is-ancestor", tip, &final_tip]));
        assert!(out.status.success(), "{tip} seen by a client is not in the final history");
    }
    let in_phase = |from: u64, to: u64| {
        let w = done.iter().filter(|w| (from..to).contains(&w.end_ms));
        let r = reads.iter().filter(|r| (from..to).contains(&r.start_ms));
        let (wn, wok) = (w.clone().count(), w.filter(|w| w.ok).count());
        let (rn, rok) = (r.clone().count(), r.filter(|r| r.tip.is_some()).count());
        serde_json::json!({"writes": wn, "writes_acknowledged": wok, "reads": rn, "reads_ok": rok})
    };
    let mut phases = serde_json::Map::new();
    for pair in marks.windows(2) {
        phases.insert(format!("{}..{}", pair[0].0, pair[1].0), in_phase(pair[0].1, pair[1].1));
    }
    let windows: Vec<u64> = lab
        .audit()
        .iter()
        .filter(|e| e["event"] == "draining")
        .filter_map(|d| {
            let t = d["time_ms"].as_u64()?;
            let p = lab.audit().into_iter().find(|e| e["event"] == "promoted" && e["time_ms"].as_u64() >= Some(t))?;
            Some(p["time_ms"].as_u64()? - t)
        })
        .collect();
    let acked_n = done.iter().filter(|w| w.ok).count();
    let refused: Vec<Option<i32>> = done.iter().filter(|w| !w.ok).map(|w| w.code).collect();
    report.measure("phases", &phases);
    report.measure("promote_command_s", secs(promote));
    report.measure("failback_command_s", secs(failback));
    report.measure("writes_refused_window_ms", &windows);
    report.measure("longest_gap_between_acknowledged_writes_s", secs(longest_gap(&done)));
    report.measure("writes_acknowledged", acked_n);
    report.measure("writes_not_acknowledged_exit_codes", &refused);
    report.measure("reads_ok", ok_reads.len());
    report.measure("distinct_tips_seen", tips.len());
    report.passed(&format!(
        "{acked_n} acknowledged writes all present on both nodes, once; {} reads each saw every earlier acknowledged write; {} tips seen, each a fast-forward of the last; writes refused for {:?} ms per handover; longest gap between acknowledged writes {:.2} s",
        ok_reads.len(),
        tips.len(),
        windows,
        longest_gap(&done).as_secs_f64()
    ));
}
