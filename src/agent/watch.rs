//! On etcd, threads that watch the leader key, one on each member, and wake the agent's loop
//! the moment it is written or deleted (the leader's lease expired or was revoked), so that
//! a standby contends at once instead of at its next read (docs/ARCHITECTURE.md, The etcd
//! lease). One per member: a member that dies or is cut off without a word leaves the
//! others' watches to see the deletion. They only wake the loop: the loop reads the key and
//! contends as it would anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::control::Control;
use crate::lead::lease::{Lock, Watched};

/// How long one watch request stays open before it is made again.
const WINDOW: Duration = Duration::from_secs(10);

/// What the watches tell the agent's loop.
pub struct Watch {
    /// The key changed since the loop last asked.
    changed: AtomicBool,
    /// Per member: its last watch request was established (the member answered).
    established: Vec<AtomicBool>,
    /// How long a passive node goes without reading the key itself while a watch is
    /// established: the lease's TTL.
    fallback: Duration,
}

impl Watch {
    /// Start watching `lock`'s leader key on every member, a member that cannot be watched
    /// tried again every `retry`; `None` when the lease is not on etcd.
    pub fn start(lock: Lock, control: Arc<Control>, ttl: Duration, retry: Duration) -> Option<Arc<Watch>> {
        let members = lock.members();
        (members > 0).then_some(())?;
        let watch = Arc::new(Watch {
            changed: AtomicBool::new(false),
            established: (0..members).map(|_| AtomicBool::new(false)).collect(),
            fallback: ttl,
        });
        for member in 0..members {
            let (shared, lock, control) = (Arc::clone(&watch), lock.clone(), Arc::clone(&control));
            let spawned = std::thread::Builder::new()
                .name(format!("leader-watch-{member}"))
                .spawn(move || shared.run(member, &lock, &control, retry));
            if let Err(e) = spawned {
                log::error!("cannot start watching the leader key ({e}); reading it every interval");
                return None;
            }
        }
        Some(watch)
    }

    fn run(&self, member: usize, lock: &Lock, control: &Control, retry: Duration) {
        let mut since = None;
        loop {
            match lock.watch_leader(member, since, WINDOW) {
                None => return,
                Some(Ok((Watched::Changed(revision), _))) => {
                    log::debug!("the leader key changed at revision {revision}");
                    since = Some(revision);
                    self.established[member].store(true, Ordering::SeqCst);
                    self.changed.store(true, Ordering::SeqCst);
                    control.wake();
                }
                Some(Ok((Watched::Quiet, at))) => {
                    since = Some(at);
                    self.established[member].store(true, Ordering::SeqCst);
                }
                // Compacted past `since`, or the member lost its leader or cannot be
                // reached: read the key again, and let the loop read it too.
                Some(Ok((Watched::Ended, _))) | Some(Err(_)) => {
                    since = None;
                    if self.established[member].swap(false, Ordering::SeqCst) {
                        self.changed.store(true, Ordering::SeqCst);
                        control.wake();
                    }
                    std::thread::sleep(retry);
                }
            }
        }
    }

    /// Whether a passive node should read the key and contend now: the key changed, no
    /// watch is established, or it last read `last` more than a TTL ago.
    pub fn due(&self, last: Option<Instant>) -> bool {
        let changed = self.changed.swap(false, Ordering::SeqCst);
        let established = self.established.iter().any(|e| e.load(Ordering::SeqCst));
        changed || !established || last.is_none_or(|t| t.elapsed() >= self.fallback)
    }
}
