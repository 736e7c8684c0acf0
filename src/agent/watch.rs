//! On etcd, a thread that watches the leader key and wakes the agent's loop the moment it
//! is written or deleted (the leader's lease expired or was revoked), so that a standby
//! contends at once instead of at its next read (docs/ARCHITECTURE.md, The etcd lease).
//! It only wakes the loop: the loop reads the key and contends as it would anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::control::Control;
use crate::lead::lease::{Lock, Watched};

/// How long one watch request stays open before it is made again. A connection that died
/// without a word (a member cut off from this node) is noticed by then at the latest; the
/// passive loop reads the key itself every `FALLBACK` meanwhile.
const WINDOW: Duration = Duration::from_secs(10);

/// What the watch tells the agent's loop.
pub struct Watch {
    /// The key changed since the loop last asked.
    changed: AtomicBool,
    /// The last watch request was established (its member answered).
    healthy: AtomicBool,
    /// How long a passive node goes without reading the key itself while the watch is
    /// healthy: the lease's TTL.
    fallback: Duration,
}

impl Watch {
    /// Start watching `lock`'s leader key; `None` when the lease is not on etcd.
    pub fn start(lock: Lock, control: Arc<Control>, ttl: Duration, retry: Duration) -> Option<Arc<Watch>> {
        lock.is_etcd().then_some(())?;
        let watch = Arc::new(Watch { changed: AtomicBool::new(false), healthy: AtomicBool::new(false), fallback: ttl });
        let shared = Arc::clone(&watch);
        let spawned = std::thread::Builder::new().name("leader-watch".into()).spawn(move || {
            let mut since = None;
            loop {
                match lock.watch_leader(since, WINDOW) {
                    None => return,
                    Some(Ok((Watched::Changed(revision), _))) => {
                        log::debug!("the leader key changed at revision {revision}");
                        since = Some(revision);
                        shared.healthy.store(true, Ordering::SeqCst);
                        shared.changed.store(true, Ordering::SeqCst);
                        control.wake();
                    }
                    Some(Ok((Watched::Quiet, at))) => {
                        since = Some(at);
                        shared.healthy.store(true, Ordering::SeqCst);
                    }
                    // Compacted past `since`, or the member lost its leader: read the key
                    // again, and let the loop read it too.
                    Some(Ok((Watched::Ended, _))) | Some(Err(_)) => {
                        since = None;
                        shared.healthy.store(false, Ordering::SeqCst);
                        shared.changed.store(true, Ordering::SeqCst);
                        control.wake();
                        std::thread::sleep(retry);
                    }
                }
            }
        });
        if let Err(e) = spawned {
            log::error!("cannot start watching the leader key ({e}); reading it every interval");
            return None;
        }
        Some(watch)
    }

    /// Whether a passive node should read the key and contend now: the key changed, the
    /// watch is not established, or it last read `last` more than a TTL ago.
    pub fn due(&self, last: Option<Instant>) -> bool {
        let changed = self.changed.swap(false, Ordering::SeqCst);
        changed || !self.healthy.load(Ordering::SeqCst) || last.is_none_or(|t| t.elapsed() >= self.fallback)
    }
}
