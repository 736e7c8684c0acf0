//! The consistency suite's checker: one key's history of `git kv` operations judged against
//! a register, by stateright's `LinearizabilityTester` (docs/CONSISTENCY.md).
//!
//! Why stateright: it is maintained, written in Rust and runs in this test process (no JVM
//! for Knossos, no Go toolchain for Porcupine), and its tester takes exactly what the suite
//! records, invocations and returns in real-time order, with never-returning operations
//! allowed. Its search is a depth-first walk without memoisation, exponential in the worst
//! case, so the suite bounds the operations per key, runs each check in a thread of its own
//! with a large stack and a time budget, and counts a key over budget as unchecked, never as
//! passed. The sequential model is stateright's `Register`; nothing here decides
//! linearizability by itself.
//!
//! Also here: shrinking a failing history to a minimal one, and turning the writes async
//! mode may lose (docs/CONSISTENCY.md, "Allowed losses") into unknown outcomes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

/// An operation on one key. A compare-and-set (`Cas { expect, new }` answered by
/// `Ret::Cas(bool)`) fits here once `git kv` has one: a read of the register, then a write
/// when it held `expect`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Op {
    /// `git kv set <key> <value>`; values are unique in a run.
    Set(String),
    /// `git kv get --from-leader <key>`.
    Get,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Ret {
    SetOk,
    /// The value read; None: the key is absent.
    Got(Option<String>),
}

/// One operation as the checker sees it. `ret` None: the outcome is unknown (the client
/// timed out, was killed or lost its connection), so it may have taken effect at any time
/// after `invoke`; the thread does nothing after it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Call {
    pub thread: u64,
    pub op: Op,
    /// Nanoseconds on the run's one monotonic clock.
    pub invoke: u64,
    pub ret: Option<(u64, Ret)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search ran out of its time budget: neither passed nor failed.
    Unchecked,
    /// Not a history a client could produce (two operations in flight on one thread).
    Malformed(String),
}

/// The search's deadline, checked at every step of the model.
struct Budget {
    deadline: Instant,
}

/// Unwinds the checking thread once the budget is spent: stateright's search cannot be
/// interrupted otherwise. `resume_unwind` skips the panic hook, so nothing is printed.
struct OutOfTime;

impl Budget {
    fn check(&self) {
        if Instant::now() > self.deadline {
            std::panic::resume_unwind(Box::new(OutOfTime));
        }
    }
}

/// The register of one key, as stateright's `Register<Option<String>>`, with the budget.
#[derive(Clone)]
struct Key {
    register: Register<Option<String>>,
    budget: Arc<Budget>,
}

impl SequentialSpec for Key {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        self.budget.check();
        match op {
            Op::Set(v) => {
                self.register.invoke(&RegisterOp::Write(Some(v.clone())));
                Ret::SetOk
            }
            Op::Get => match self.register.invoke(&RegisterOp::Read) {
                RegisterRet::ReadOk(v) => Ret::Got(v),
                RegisterRet::WriteOk => unreachable!("a read answers a value"),
            },
        }
    }

    fn is_valid_step(&mut self, op: &Op, ret: &Ret) -> bool {
        self.budget.check();
        match (op, ret) {
            (Op::Set(v), Ret::SetOk) => {
                self.register.is_valid_step(&RegisterOp::Write(Some(v.clone())), &RegisterRet::WriteOk)
            }
            (Op::Get, Ret::Got(v)) => self.register.is_valid_step(&RegisterOp::Read, &RegisterRet::ReadOk(v.clone())),
            _ => false,
        }
    }
}

/// Is this one key's history linearizable against a register that starts absent?
/// Invocations and returns are fed in real-time order; at equal times the invocation first,
/// so that operations touching at an instant count as concurrent (the weaker claim).
pub fn check(calls: &[Call], budget: Duration) -> Verdict {
    let calls = prune(calls);
    let deadline = Instant::now() + budget;
    let search = std::thread::Builder::new()
        .name("linearizability".into())
        // The search recurses once per operation, cloning as it goes.
        .stack_size(256 << 20)
        .spawn(move || {
            let budget = Arc::new(Budget { deadline });
            let mut tester = LinearizabilityTester::new(Key { register: Register(None), budget });
            let mut events: Vec<(u64, u8, usize)> = Vec::new();
            for (i, c) in calls.iter().enumerate() {
                events.push((c.invoke, 0, i));
                if let Some((at, _)) = &c.ret {
                    events.push((*at, 1, i));
                }
            }
            events.sort();
            for (_, kind, i) in events {
                let c = &calls[i];
                let fed = match (kind, &c.ret) {
                    (0, _) => tester.on_invoke(c.thread, c.op.clone()).map(|_| ()),
                    (_, Some((_, ret))) => tester.on_return(c.thread, ret.clone()).map(|_| ()),
                    _ => Ok(()),
                };
                if let Err(e) = fed {
                    return Verdict::Malformed(e);
                }
            }
            if tester.is_consistent() { Verdict::Linearizable } else { Verdict::NotLinearizable }
        })
        .expect("a thread for the search");
    match search.join() {
        Ok(v) => v,
        Err(p) if p.is::<OutOfTime>() => Verdict::Unchecked,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The history without the writes of unknown outcome whose value nobody read: the tester
/// may always let an operation in flight never take effect, and a write of a value no read
/// returned is never needed to explain a read, so the history is linearizable with it
/// exactly when it is without it. Such writes are most of those a fault leaves unknown, and
/// each one left in multiplies the orders the search may try.
pub fn prune(calls: &[Call]) -> Vec<Call> {
    let read: HashSet<&str> = calls
        .iter()
        .filter_map(|c| match &c.ret {
            Some((_, Ret::Got(Some(v)))) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    calls
        .iter()
        .filter(|c| c.ret.is_some() || matches!(&c.op, Op::Set(v) if read.contains(v.as_str())))
        .cloned()
        .collect()
}

/// A smallest failing history: drops one operation at a time while the rest stays not
/// linearizable, keeping every write whose value a remaining read returns (so that a stale
/// read shrinks to the writes it straddles, not to a read of a value nobody wrote). Stops
/// early, with what it has, after `budget`; each try gets `per_try`.
pub fn shrink(calls: &[Call], per_try: Duration, budget: Duration) -> Vec<Call> {
    let start = Instant::now();
    let mut current = calls.to_vec();
    let mut i = 0;
    while i < current.len() && start.elapsed() < budget {
        let read: HashSet<&str> = current
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, c)| match &c.ret {
                Some((_, Ret::Got(Some(v)))) => Some(v.as_str()),
                _ => None,
            })
            .collect();
        let needed = matches!(&current[i].op, Op::Set(v) if read.contains(v.as_str()));
        if !needed {
            let mut fewer = current.clone();
            fewer.remove(i);
            if check(&fewer, per_try) == Verdict::NotLinearizable {
                current = fewer;
                continue;
            }
        }
        i += 1;
    }
    current
}

/// Encodes the writes async mode was allowed to lose (docs/CONSISTENCY.md, "Allowed
/// losses"): `lost` maps each such value to the time its forced promotion or machine loss
/// ended. Its acknowledged write becomes a write of unknown outcome (it may or may not have
/// taken effect), and a read invoked before that time that returned it is left out: it saw
/// the old leader's state, which the fault rolled back (a read asked of the old leader
/// before it was deposed may be answered after, once it is thawed or healed). A read of it
/// invoked after that time stays (the suite reports it as a lost value served again: to the
/// register it could be a late effect of the unknown write). An unknown operation is the last of its
/// thread, so the operations its thread went on with move to a fresh thread, as a client
/// that timed out does. Returns how many writes were turned and reads left out.
pub fn allow_losses(calls: &mut Vec<Call>, lost: &HashMap<String, u64>, next_thread: &mut u64) -> (usize, usize) {
    let before = calls.len();
    calls.retain(|c| match &c.ret {
        Some((_, Ret::Got(Some(v)))) => lost.get(v).is_none_or(|end| c.invoke > *end),
        _ => true,
    });
    let dropped = before - calls.len();
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.sort_by_key(|&i| calls[i].invoke);
    // Recorded thread -> the id its operations go on under.
    let mut renamed: HashMap<u64, u64> = HashMap::new();
    let mut turned = 0;
    for i in order {
        let c = &mut calls[i];
        let recorded = c.thread;
        c.thread = renamed.get(&recorded).copied().unwrap_or(recorded);
        if matches!(&c.op, Op::Set(v) if lost.contains_key(v)) && c.ret.is_some() {
            c.ret = None;
            turned += 1;
            renamed.insert(recorded, *next_thread);
            *next_thread += 1;
        }
    }
    (turned, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(10);

    fn set(thread: u64, v: &str, invoke: u64, ret: Option<u64>) -> Call {
        Call { thread, op: Op::Set(v.into()), invoke, ret: ret.map(|t| (t, Ret::SetOk)) }
    }

    fn get(thread: u64, v: Option<&str>, invoke: u64, ret: u64) -> Call {
        Call { thread, op: Op::Get, invoke, ret: Some((ret, Ret::Got(v.map(str::to_owned)))) }
    }

    #[test]
    fn a_linearizable_history_passes() {
        let h = [
            get(1, None, 0, 5),
            set(1, "a", 10, Some(20)),
            set(2, "b", 15, Some(30)),
            // Concurrent with b: either value.
            get(3, Some("a"), 25, 26),
            get(3, Some("b"), 31, 40),
        ];
        assert_eq!(check(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_fails_and_shrinks_to_the_writes_it_straddles() {
        let h = [
            set(1, "a", 0, Some(10)),
            get(2, Some("a"), 2, 8),
            set(1, "b", 20, Some(30)),
            get(3, None, 31, 32),
            get(2, Some("b"), 35, 40),
            // After b was acknowledged, and after a read of b: a again.
            get(3, Some("a"), 41, 45),
        ];
        assert_eq!(check(&h, BUDGET), Verdict::NotLinearizable);
        let small = shrink(&h, BUDGET, BUDGET);
        assert_eq!(small.len(), 3, "{small:#?}");
        assert_eq!(check(&small, BUDGET), Verdict::NotLinearizable);
        assert!(small.contains(&h[0]) && small.contains(&h[2]) && small.contains(&h[5]), "{small:#?}");
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let h = [set(1, "a", 0, Some(10)), get(2, None, 20, 30)];
        assert_eq!(check(&h, BUDGET), Verdict::NotLinearizable);
        // Once async mode may lose it, the same history passes.
        let mut allowed = h.to_vec();
        let mut next = 100;
        assert_eq!(allow_losses(&mut allowed, &lost(&["a"], 15), &mut next), (1, 0));
        assert_eq!(check(&allowed, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_that_appears_later_passes_and_one_never_written_fails() {
        let h = [set(1, "a", 0, None), get(2, None, 5, 10), get(2, Some("a"), 100, 110), get(3, Some("a"), 120, 130)];
        assert_eq!(check(&h, BUDGET), Verdict::Linearizable);
        let invented = [get(2, Some("x"), 5, 10)];
        assert_eq!(check(&invented, BUDGET), Verdict::NotLinearizable);
        // It may take effect at most once: back to absent after it appeared is not allowed.
        let flicker = [set(1, "a", 0, None), get(2, Some("a"), 5, 10), get(2, None, 20, 30)];
        assert_eq!(check(&flicker, BUDGET), Verdict::NotLinearizable);
    }

    fn lost(values: &[&str], until: u64) -> HashMap<String, u64> {
        values.iter().map(|v| (v.to_string(), until)).collect()
    }

    #[test]
    fn allowed_losses_move_the_rest_of_the_thread_to_a_fresh_one() {
        let mut h = vec![set(1, "a", 0, Some(10)), set(1, "b", 20, Some(30)), get(1, Some("b"), 40, 50)];
        let mut next = 7;
        assert_eq!(allow_losses(&mut h, &lost(&["a"], 15), &mut next), (1, 0));
        assert_eq!((h[0].thread, h[0].ret.clone()), (1, None));
        assert_eq!((h[1].thread, h[2].thread, next), (7, 7, 8));
        assert_eq!(check(&h, BUDGET), Verdict::Linearizable);
        // Two turned on one thread: three threads in all, each unknown last on its own.
        let mut h = vec![set(1, "a", 0, Some(10)), set(1, "b", 20, Some(30)), get(1, Some("b"), 40, 50)];
        allow_losses(&mut h, &lost(&["a", "b"], 35), &mut next);
        assert_eq!(h.iter().map(|c| c.thread).collect::<Vec<_>>(), vec![1, 8, 9]);
        assert_eq!(check(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_lost_write_read_before_its_promotion_passes_and_served_after_it_fails() {
        // b is acknowledged and read on the old leader; a forced promotion ends at 50 and
        // the new leader never had b: reads there return a again.
        let h = vec![
            set(1, "a", 0, Some(10)),
            set(1, "b", 20, Some(30)),
            get(2, Some("b"), 32, 34),
            get(2, Some("a"), 60, 70),
        ];
        assert_eq!(check(&h, BUDGET), Verdict::NotLinearizable);
        let mut allowed = h.clone();
        assert_eq!(allow_losses(&mut allowed, &lost(&["b"], 50), &mut 100), (1, 1));
        assert_eq!(check(&allowed, BUDGET), Verdict::Linearizable);
        // b read again after the promotion stays in the history; the register cannot tell
        // it from a late effect of the now unknown write, so the suite judges such a read
        // itself (a lost value served again).
        let mut again = h.clone();
        again.push(get(2, Some("b"), 80, 90));
        assert_eq!(allow_losses(&mut again, &lost(&["b"], 50), &mut 100), (1, 1));
        assert!(again.iter().any(|c| c.ret == Some((90, Ret::Got(Some("b".into()))))));
        // Asked of the old leader before the promotion ended, answered after (it was
        // frozen): it saw the rolled-back state, as the read at 32 did.
        let mut late = h.clone();
        late.push(get(3, Some("b"), 45, 75));
        assert_eq!(allow_losses(&mut late, &lost(&["b"], 50), &mut 100), (1, 2));
        assert_eq!(check(&late, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_search_over_budget_is_unchecked_not_passed() {
        // Many concurrent unknown writes, each read once, and a read of a value nobody
        // wrote: the search must try every order of the writes before it can say no.
        let mut h: Vec<Call> = (0..14).map(|i| set(i, &format!("v{i}"), i, None)).collect();
        h.extend((0..14).map(|i| get(100 + i, Some(&format!("v{i}")), 20, 2000)));
        h.push(get(99, Some("nobody"), 1000, 1001));
        assert_eq!(check(&h, Duration::from_millis(200)), Verdict::Unchecked);
    }

    #[test]
    fn unknown_writes_nobody_read_are_pruned_without_changing_the_verdict() {
        let mut h: Vec<Call> = (0..30).map(|i| set(i, &format!("v{i}"), i, None)).collect();
        h.push(set(50, "a", 0, None));
        h.push(get(99, Some("a"), 100, 110));
        h.push(get(99, None, 120, 130));
        assert_eq!(prune(&h).len(), 3);
        // Without pruning this would be 30! orders; the verdict is the same either way.
        assert_eq!(check(&h, BUDGET), Verdict::NotLinearizable);
        h.pop();
        assert_eq!(check(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn two_operations_in_flight_on_one_thread_is_malformed() {
        let h = [set(1, "a", 0, None), set(1, "b", 5, Some(10)), get(2, Some("a"), 20, 30)];
        assert!(matches!(check(&h, BUDGET), Verdict::Malformed(_)));
    }
}
