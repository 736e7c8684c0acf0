//! Quorum mode: while this node leads, ask every peer's `/readyz` each lease interval
//! whether it follows this node at this epoch, and write what was heard for `/readyz`
//! (`lead::heard`). A quorum lost or found again is logged once each way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lead::heard::{self, Heard};
use crate::lead::node::Quorum;

/// How long each peer has to answer: within `stargate.lease.staleAfter`, which is how old
/// what was heard may be before `/readyz` stops trusting it.
fn answer_timeout(stale_after: Duration) -> Duration {
    (stale_after / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The asking thread; `lead` tells it the epoch this node leads (0: it does not).
pub(super) struct Watch {
    leading: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Watch {
    pub(super) fn start(
        me: String,
        quorum: Quorum,
        state_dir: std::path::PathBuf,
        interval: Duration,
        stale_after: Duration,
    ) -> Watch {
        let leading = Arc::new(AtomicU64::new(0));
        let epoch = Arc::clone(&leading);
        let thread = std::thread::spawn(move || {
            let mut had: Option<bool> = None;
            loop {
                let epoch = epoch.load(Ordering::SeqCst);
                if epoch == 0 {
                    had = None;
                    std::thread::park_timeout(interval);
                    continue;
                }
                let started = Instant::now();
                let heard = ask(&me, epoch, &quorum, answer_timeout(stale_after));
                let has = heard.count() >= quorum.needed;
                if had != Some(has) {
                    report(&heard, has, had.is_none(), &quorum);
                    had = Some(has);
                }
                if let Err(e) = heard::write(&state_dir, &heard) {
                    log::error!("cannot write {}: {e}", heard::path(&state_dir).display());
                }
                std::thread::park_timeout(interval.saturating_sub(started.elapsed()));
            }
        });
        Watch { leading, thread }
    }

    /// This node leads at `epoch`, or does not (None): ask at once when that changes.
    pub(super) fn lead(&self, epoch: Option<u64>) {
        let epoch = epoch.unwrap_or(0);
        if self.leading.swap(epoch, Ordering::SeqCst) != epoch {
            self.thread.thread().unpark();
        }
    }
}

/// Every peer's word, asked in parallel.
fn ask(me: &str, epoch: u64, quorum: &Quorum, timeout: Duration) -> Heard {
    let answers: Vec<(String, Option<String>)> = std::thread::scope(|s| {
        let asks: Vec<_> = (quorum.peers.iter())
            .map(|peer| {
                s.spawn(move || {
                    let answer = crate::wire::http::get(&peer.health, "/readyz", Instant::now() + timeout, timeout);
                    let why_not = match answer {
                        Ok((code, body)) => heard::judge(code, &body, me, epoch),
                        Err(e) => Some(format!("unreachable ({e})")),
                    };
                    (peer.node.clone(), why_not)
                })
            })
            .collect();
        asks.into_iter().filter_map(|t| t.join().ok()).collect()
    });
    let (mut counting, mut missing) = (Vec::new(), Vec::new());
    for (node, why_not) in answers {
        match why_not {
            None => counting.push(node),
            Some(why) => missing.push((node, why)),
        }
    }
    Heard { epoch, boot_ms: crate::clock::boot_ms(), counting, missing }
}

fn report(heard: &Heard, has: bool, first: bool, quorum: &Quorum) {
    let count = heard.count();
    let missing: Vec<String> = heard.missing.iter().map(|(n, why)| format!("{n}: {why}")).collect();
    match (has, first) {
        (true, true) => {}
        (true, false) => {
            log::info!("a quorum follows epoch {} again ({count} of {} needed)", heard.epoch, quorum.needed)
        }
        (false, _) => log::warn!(
            "no quorum follows epoch {} ({count} of {} needed; {}): not ready for writes (/readyz 503)",
            heard.epoch,
            quorum.needed,
            missing.join(", ")
        ),
    }
}
