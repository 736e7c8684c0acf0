//! What keeps the values the journal names reachable (stargate(7), Journal): a forced move
//! or a deletion leaves its old value unreachable from every ref, and `git gc` would prune
//! it, so `git stargate restore` could not bring it back. Each node that applies such an
//! update (the leader once it committed, a replica in the mirroring that applies it)
//! anchors the old value as `refs/stargate/local/retained/<seq>`: a ref of that node only,
//! neither journaled nor mirrored. An anchor goes once `2 × stargate.journal.keep` later
//! updates are journaled (the two generations of the journal that anyone can read), at the
//! next sweep: when an applied write's numbers pass a multiple of `keep`. Listing every
//! anchor at each write cost each push of a forced move a read of up to `2 × keep` refs.

use gix::ObjectId;

use super::Update;
use crate::store::{Edit, Store};

pub const PREFIX: &str = "refs/stargate/local/retained/";

/// The anchors to add for the applied updates `updates` (numbered), and to drop: those
/// numbered more than `2 × keep` below `newest`, the journal's sequence number now, looked
/// for when the numbers from the first of `updates` to `newest` pass a multiple of `keep`.
pub fn edits(store: &Store, updates: &[(u64, Update)], newest: u64, keep: u64) -> Vec<Edit> {
    // Many refs of one push often make the same move (a branch and its copies, a bulk
    // rewrite): each pair is looked at once.
    let mut forced = std::collections::HashMap::new();
    let mut edits: Vec<Edit> = (updates.iter())
        .filter(|(_, u)| !u.old.is_null() && store.repo().has_object(u.old))
        .filter(|(_, u)| {
            u.new.is_null() || *forced.entry((u.old, u.new)).or_insert_with(|| !store.is_ancestor(u.old, u.new))
        })
        .map(|(seq, u)| Edit::set(&format!("{PREFIX}{seq}"), u.old))
        .collect();
    let keep = keep.max(1);
    let first = updates.iter().map(|(seq, _)| *seq).min().unwrap_or(newest);
    if newest / keep == first.saturating_sub(1) / keep {
        return edits;
    }
    let oldest = newest.saturating_sub(2 * keep);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Refs that make the same move are each anchored when it is forced, and none when
    /// it is not (each move is looked at once).
    #[test]
    fn the_same_move_of_many_refs_anchors_each_when_forced() {
        let dir = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let base = store.test_commit("base", &[]);
        let (ahead, aside) = (store.test_commit("ahead", &[base]), store.test_commit("aside", &[]));
        let moves = |new: ObjectId| -> Vec<(u64, Update)> {
            (1..=3).map(|seq| (seq, Update { old: base, new, refname: format!("refs/heads/b{seq}") })).collect()
        };
        assert!(edits(&store, &moves(ahead), 3, 100).is_empty(), "fast-forwards anchor nothing");
        let anchored: Vec<String> = edits(&store, &moves(aside), 3, 100).into_iter().map(|e| e.name).collect();
        assert_eq!(anchored, [1, 2, 3].map(|seq| format!("{PREFIX}{seq}")), "each forced move anchored");
    }

    /// A forced move anchors the value it replaced; anchors more than `2 × keep` updates
    /// old go when a write's numbers pass a multiple of `keep`, and only then.
    #[test]
    fn anchors_go_at_the_sweep_after_two_keeps() {
        let dir = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let commit = |m: &str| store.test_commit(m, &[]);
        let keep = 4;
        let mut old = commit("0");
        let anchors = || store.prefixed(PREFIX).unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        for seq in 1..=13 {
            let new = commit(&seq.to_string());
            let update = Update { old, new, refname: "refs/heads/main".into() };
            store.edit(&edits(&store, &[(seq, update)], seq, keep)).unwrap();
            old = new;
            let names = anchors();
            assert!(names.contains(&format!("{PREFIX}{seq}")), "a forced move is anchored");
            match seq {
                // 12 passes a multiple of 4: anchors below 12 - 8 go.
                12 | 13 => assert!(!names.contains(&format!("{PREFIX}3")) && names.contains(&format!("{PREFIX}4"))),
                // 9..11: 1 is stale, but no sweep ran since 8 (when nothing was).
                _ => assert!(names.contains(&format!("{PREFIX}1")), "{seq}: {names:?}"),
            }
        }
    }
}
