//! Before a node leads: every prepared write its journal leaves open gets an outcome
//! (stargate(7), Journal): taken over where this node holds it staged (quorum mode),
//! dropped otherwise, so that no entry from before its leadership waits for one any more.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use gix::ObjectId;

use super::Error;
use crate::journal;
use crate::store::Edit;

/// What a node about to lead decided about the prepared writes its journal leaves open.
#[derive(Debug, Default)]
pub struct Settled {
    /// Applied and journaled as taken over: (first sequence number, refs).
    pub taken_over: Vec<(u64, Vec<String>)>,
    /// Journaled as dropped: (first sequence number, refs, why).
    pub dropped: Vec<(u64, Vec<String>, String)>,
}

/// A node about to lead settles every prepared write its journal leaves open (stargate(7),
/// Journal), so that no entry before its leadership waits for an outcome any more. With
/// `staged` (quorum mode) a write whose new values this node holds, and whose refs still
/// hold its old values (or its new ones), is applied and journaled as taken over: a quorum
/// may have acknowledged it. Every other one is journaled as dropped: its values are not
/// here (async mode), a later write to its refs superseded it, or its refs moved on. The
/// refs move first, so that a crash between the two leaves a write applied and still open,
/// which the next settlement finds applied and journals as taken over.
pub fn settle(
    path: &Path,
    epoch: u64,
    node: &str,
    keep: u64,
    staged: bool,
    agent_started_ms: u64,
) -> Result<Settled, Error> {
    // Almost always nothing is open: then no need to wait for a sync of the repository.
    if !has_open_writes(path)? {
        return Ok(Settled::default());
    }
    let _lock = super::lock(path)?;
    let main = journal::open(path)?;
    // A node about to lead writes its refs alone: a lock from before its agent started, or
    // older than a sync's watchdog, was left by a writer killed mid-transaction.
    for lock in main.clear_stale_locks(super::stale_before(agent_started_ms)) {
        log::warn!("{}: removed {}, left by a writer killed mid-transaction", path.display(), lock.display());
    }
    if main.is_reftable() {
        journal::publish(&main)?;
    }
    let Some((tip, _)) = journal::tip(&main)? else { return Ok(Settled::default()) };
    let open = journal::open_prepares(&main, tip)?;
    if open.is_empty() {
        return Ok(Settled::default());
    }
    let names: Vec<String> = (open.iter())
        .flat_map(|(_, e)| e.updates.iter().map(|(_, u)| u.refname.clone()))
        .filter(|r| journal::journaled(r))
        .collect();
    let mut current = super::plan::current_refs(&main, names.iter())?;
    let mut settled = Settled::default();
    let mut decisions = Vec::new();
    let mut edits = Vec::new();
    // A later open write to the same ref could only prepare once the earlier one had ended.
    let last_prepare: HashMap<&str, ObjectId> =
        (open.iter()).flat_map(|(id, e)| e.updates.iter().map(move |(_, u)| (u.refname.as_str(), *id))).collect();
    for (id, entry) in &open {
        let updates: Vec<&journal::Update> =
            entry.updates.iter().map(|(_, u)| u).filter(|u| journal::journaled(&u.refname)).collect();
        let refs: Vec<String> = updates.iter().map(|u| u.refname.clone()).collect();
        let first = entry.updates.first().map_or(entry.seq, |(seq, _)| *seq);
        let why = match staged {
            true => why_dropped(&main, id, &updates, &last_prepare, &current),
            false => Some("its values are only on the node that prepared it".to_owned()),
        };
        match why {
            Some(why) => {
                decisions.push((*id, journal::Outcome::Dropped));
                settled.dropped.push((first, refs, why));
            }
            None => {
                for u in updates {
                    let now = current.get(&u.refname).copied();
                    if now != value(u.new) {
                        edits.push(Edit::update(&u.refname, now, value(u.new)));
                        match value(u.new) {
                            Some(new) => current.insert(u.refname.clone(), new),
                            None => current.remove(&u.refname),
                        };
                    }
                }
                decisions.push((*id, journal::Outcome::TakenOver));
                settled.taken_over.push((first, refs));
            }
        }
    }
    edits.extend(anchors(&main, &open)?);
    main.edit(&edits)?;
    for (id, outcome) in decisions {
        journal::append_outcome(&main, epoch, node, id, outcome, keep)?;
    }
    if main.is_reftable() {
        journal::publish(&main)?;
    }
    Ok(settled)
}

/// The value a ref update names, `None` for the null id (the ref deleted, or not there).
fn value(oid: ObjectId) -> Option<ObjectId> {
    (!oid.is_null()).then_some(oid)
}

/// Quorum mode: why the open write `id` (its journaled `updates`) cannot be taken over, or
/// `None` when it can: a later write to one of its refs superseded it, one of its new values
/// is not here, or one of its refs holds neither its old value nor its new one.
fn why_dropped(
    main: &crate::store::Store,
    id: &ObjectId,
    updates: &[&journal::Update],
    last_prepare: &HashMap<&str, ObjectId>,
    current: &HashMap<String, ObjectId>,
) -> Option<String> {
    if let Some(u) = updates.iter().find(|u| last_prepare.get(u.refname.as_str()) != Some(id)) {
        return Some(format!("a later write to {} superseded it", u.refname));
    }
    if let Some(u) = updates.iter().find(|u| !u.new.is_null() && !main.repo().has_object(u.new)) {
        return Some(format!("the new value of {} is not here", u.refname));
    }
    let moved = updates.iter().find(|u| {
        let now = current.get(&u.refname).copied();
        now != value(u.old) && now != value(u.new)
    })?;
    Some(format!("{} moved on since", moved.refname))
}

/// The staging anchors of the `open` writes, deleted: once settled they are no longer open.
fn anchors(main: &crate::store::Store, open: &journal::Entries) -> Result<Vec<Edit>, Error> {
    use crate::journal::stage::STAGED;
    let anchored: HashSet<String> = main.prefixed(STAGED)?.into_iter().map(|(r, _)| r).collect();
    let seqs = open.iter().flat_map(|(_, entry)| entry.updates.iter().map(|(seq, _)| *seq));
    Ok(seqs.map(|seq| format!("{STAGED}{seq}")).filter(|a| anchored.contains(a)).map(|a| Edit::delete(&a)).collect())
}

/// Whether the journal of `path` leaves any prepared write without its outcome.
pub fn has_open_writes(path: &Path) -> Result<bool, Error> {
    let main = journal::open(path)?;
    Ok(match journal::head(&main)? {
        Some(head) => !journal::open_prepares(&main, head)?.is_empty(),
        None => false,
    })
}
