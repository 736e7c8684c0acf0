//! What keeps the values the journal names reachable (stargate(7), Journal): a forced move
//! or a deletion leaves its old value unreachable from every ref, and `git gc` would prune
//! it, so `git stargate restore` could not bring it back. Each node that applies such an
//! update (the leader once it committed, a replica in the mirroring that applies it)
//! anchors the old value as `refs/stargate/local/retained/<seq>`: a ref of that node only,
//! neither journaled nor mirrored. An anchor goes once `2 × stargate.journal.keep` later
//! updates are journaled: the two generations of the journal that anyone can read.

use gix::ObjectId;

use super::Update;
use crate::store::{Edit, Store};

pub const PREFIX: &str = "refs/stargate/local/retained/";

/// The anchors to add for the applied updates `updates` (numbered), and to drop: those
/// numbered more than `2 × keep` below `newest`, the journal's sequence number now.
pub fn edits(store: &Store, updates: &[(u64, Update)], newest: u64, keep: u64) -> Vec<Edit> {
    let mut edits: Vec<Edit> = (updates.iter())
        .filter(|(_, u)| !u.old.is_null() && store.repo().has_object(u.old))
        .filter(|(_, u)| u.new.is_null() || !store.is_ancestor(u.old, u.new))
        .map(|(seq, u)| Edit::set(&format!("{PREFIX}{seq}"), u.old))
        .collect();
    let oldest = newest.saturating_sub(2 * keep.max(1));
    let stale = |name: &str| name.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s < oldest);
    if let Ok(anchors) = store.prefixed(PREFIX) {
        edits.extend(anchors.iter().filter(|(name, _)| stale(name)).map(|(name, _)| Edit::delete(name)));
    }
    edits
}

/// Whether `oid` is anchored here.
pub fn holds(store: &Store, oid: ObjectId) -> bool {
    store.prefixed(PREFIX).is_ok_and(|a| a.iter().any(|(_, o)| *o == oid))
}
