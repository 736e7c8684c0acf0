//! What a mirroring will change, computed from what it read and before anything is
//! written: the refs that move (to the values the other node holds now), the values here
//! that node does not contain (kept under `refs/stargate/local/lost/<epoch>/` before they
//! move: mirroring never silently destroys history), the quorum anchors, and the journal
//! position. Reads this node's copy; writes nothing.

use std::collections::HashMap;

use gix::ObjectId;

use super::source::Refs;
use super::{Error, Lost};
use crate::journal::{self, Walked};
use crate::store::{Edit, Store};

/// A ref move: name, the value here now, the value to take (`None`: deleted).
pub(super) type Move = (String, Option<ObjectId>, Option<ObjectId>);

#[derive(Debug, Default)]
pub(super) struct Plan {
    pub moves: Vec<Move>,
    /// Values here the other node does not contain, kept before they move.
    pub lost: Vec<Lost>,
    /// Quorum mode: anchors of staged values, added and dropped.
    pub staging: Vec<Edit>,
    /// The journal position: from, to.
    pub journal: Option<(Option<ObjectId>, ObjectId)>,
    /// Anchors of the values forced moves and deletions replace, added and dropped
    /// (`journal::retain`).
    pub retained: Vec<Edit>,
}

impl Plan {
    /// From a walk of the journal after this node's position: the refs that applying
    /// outcomes name move to `values`, the other node's values read after its journal tip
    /// (that write's value or a later one); a crossed checkpoint moves the previous
    /// generation's ref as the leader moved it. `epoch`: under which kept values are named.
    /// `current`: those refs' values here, read once by the sync (the transaction checks
    /// them again under its locks).
    pub fn incremental(
        main: &Store,
        epoch: u64,
        walked: &Walked,
        current: &Refs,
        values: &Refs,
        entries: &journal::Entries,
        journal: (Option<ObjectId>, ObjectId),
    ) -> Result<Plan, Error> {
        let mut moves: Vec<Move> =
            walked.refs.keys().map(|r| (r.clone(), current.get(r).copied(), values.get(r).copied())).collect();
        let known = |r: &str, oid: ObjectId| walked.refs.get(r).is_some_and(|k| k.contains(&oid));
        let lost = losses(main, epoch, &moves, known)?;
        // Never a loss: the generations are the journal's own.
        if let Some(previous) = entries.iter().rev().find_map(|(_, e)| e.previous) {
            let here = main.find(journal::PREVIOUS)?;
            moves.push((journal::PREVIOUS.to_owned(), here, Some(previous)));
        }
        Ok(Plan { moves, lost, staging: Vec::new(), journal: Some(journal), retained: Vec::new() })
    }

    /// Every edit, as one transaction: kept values (those not kept already), moves, anchors,
    /// the journal position last.
    pub fn edits(&self, main: &Store) -> Result<Vec<Edit>, Error> {
        let mut edits = Vec::new();
        for l in &self.lost {
            let oid = ObjectId::from_hex(l.oid.as_bytes()).map_err(|_| Error::Malformed(l.oid.clone()))?;
            if main.find(&l.kept_as)?.is_none() {
                edits.push(Edit::update(&l.kept_as, None, Some(oid)));
            }
        }
        edits.extend(
            self.moves.iter().filter(|(_, old, new)| old != new).map(|(r, old, new)| Edit::update(r, *old, *new)),
        );
        edits.extend(self.staging.iter().cloned());
        edits.extend(self.retained.iter().cloned());
        if let Some((old, new)) = self.journal {
            edits.push(Edit::update(journal::REF, old, Some(new)));
        }
        Ok(edits)
    }

    /// Refs whose value changes.
    pub fn refs_changed(&self) -> usize {
        self.moves.iter().filter(|(_, old, new)| old != new).count()
    }
}

/// Values of the moves' refs here that the other node does not contain: neither `known`
/// to the journal nor an ancestor of the ref's new value. Each with where it will be kept.
pub(super) fn losses(
    main: &Store,
    epoch: u64,
    moves: &[Move],
    known: impl Fn(&str, ObjectId) -> bool,
) -> Result<Vec<Lost>, Error> {
    let mut lost = Vec::new();
    for (r, old, new) in moves {
        let Some(old) = old else { continue };
        if Some(*old) == *new || known(r, *old) {
            continue;
        }
        if let Some(new) = new
            && main.is_ancestor(*old, *new)
        {
            continue;
        }
        lost.push(keep(main, epoch, r, *old)?);
    }
    Ok(lost)
}

/// A full mirror's suspects: the refs here whose value the other node (`leader`, every
/// ref it listed) holds nowhere, unless it only advanced the ref (the value is an ancestor
/// of the ref's new value there, whose objects must then be here already).
pub(super) fn suspects(main: &Store, epoch: u64, local: &Refs, leader: &Refs) -> Result<Vec<Lost>, Error> {
    let values: std::collections::HashSet<ObjectId> = leader.values().copied().collect();
    let mut kept = Vec::new();
    for (r, old) in local.iter().filter(|(r, old)| *r != journal::REF && !values.contains(*old)) {
        let new = leader.get(r).copied();
        if new.is_some_and(|n| main.repo().has_object(n) && main.is_ancestor(*old, n)) {
            continue;
        }
        kept.push(keep(main, epoch, r, *old)?);
    }
    Ok(kept)
}

/// Where `oid`, the value of `refname` the other node lacks, is kept:
/// `refs/stargate/local/lost/<epoch>/<ref>`, or `lost/<epoch>.<n>/<ref>` when that name
/// already keeps another value (the same ref lost twice under one epoch).
pub(super) fn keep(main: &Store, epoch: u64, refname: &str, oid: ObjectId) -> Result<Lost, Error> {
    for n in 1..1000 {
        let dir = if n == 1 { epoch.to_string() } else { format!("{epoch}.{n}") };
        let kept_as = format!("refs/stargate/local/lost/{dir}/{refname}");
        match main.find(&kept_as)? {
            Some(kept) if kept != oid => continue,
            _ => return Ok(Lost { refname: refname.to_owned(), oid: oid.to_string(), kept_as }),
        }
    }
    Err(Error::TooManyKept { refname: refname.to_owned(), epoch })
}

pub(super) fn current_refs<'a>(
    main: &Store,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<String, ObjectId>, Error> {
    Ok(main.find_many(names.map(String::as_str))?)
}

/// Every ref a mirror manages (all but `refs/stargate/local/*`), with its object id.
pub(super) fn all_refs(main: &Store) -> Result<HashMap<String, ObjectId>, Error> {
    Ok((main.prefixed("refs/")?.into_iter())
        .filter(|(name, _)| journal::journaled(name) || name == journal::REF)
        .collect())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::journal::{Entry, Kind, Outcome, Update};

    /// A repository with commits `base` and `ahead` (a child of base) and `other` (not
    /// related), on `format` ref storage.
    pub(in crate::mirror) fn repo(dir: &std::path::Path, format: &str) -> (Store, [ObjectId; 3]) {
        let out = std::process::Command::new("git")
            .args(["init", "-q", "--bare", &format!("--ref-format={format}")])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let store = Store::open(dir).unwrap();
        let tree = store.write_object(gix::objs::Tree::empty()).unwrap();
        let commit = |m: &str, parents: Vec<ObjectId>| {
            let sig = gix::actor::Signature { name: "t".into(), email: "t@t".into(), time: gix::date::Time::new(1, 0) };
            store
                .write_object(gix::objs::Commit {
                    message: m.into(),
                    tree,
                    author: sig.clone(),
                    committer: sig,
                    encoding: None,
                    parents: parents.into(),
                    extra_headers: Vec::new(),
                })
                .unwrap()
        };
        let base = commit("base", vec![]);
        let ahead = commit("ahead", vec![base]);
        let other = commit("other", vec![]);
        (store, [base, ahead, other])
    }

    fn outcome(seq: u64, refname: &str, old: ObjectId, new: ObjectId) -> (ObjectId, Entry) {
        let id = ObjectId::from_bytes_or_panic(&[seq as u8; 20]);
        let update = Update { old, new, refname: refname.into() };
        let kind = Kind::Outcome { of: id, outcome: Outcome::Committed };
        let e = Entry {
            kind,
            seq,
            epoch: 2,
            node: "a".into(),
            time_ms: 1,
            updates: vec![(seq, update)],
            depth: 0,
            previous: None,
            open: Vec::new(),
        };
        (id, e)
    }

    /// An advanced ref moves and keeps nothing; a ref the leader rewound to a value it
    /// knew keeps nothing; a ref whose value here the leader never had is kept under the
    /// epoch, twice under two names; the journal moves last. On both ref storages.
    #[test]
    fn an_incremental_plan_keeps_only_what_the_leader_lacks() {
        let dir = tempfile::tempdir().unwrap();
        for format in ["files", "reftable"] {
            let (store, [base, ahead, other]) = repo(&dir.path().join(format), format);
            store
                .edit(&[
                    Edit::set("refs/heads/advanced", base),
                    Edit::set("refs/heads/diverged", other),
                    Edit::set("refs/heads/known", ahead),
                ])
                .unwrap();
            let entries = vec![
                outcome(1, "refs/heads/advanced", base, ahead),
                outcome(2, "refs/heads/diverged", base, ahead),
                outcome(3, "refs/heads/known", ahead, base),
            ];
            let walked = journal::walk(&entries);
            let values: Refs = [
                ("refs/heads/advanced".to_owned(), ahead),
                ("refs/heads/diverged".to_owned(), ahead),
                ("refs/heads/known".to_owned(), base),
            ]
            .into_iter()
            .collect();
            let tip = ObjectId::from_bytes_or_panic(&[9; 20]);
            let plan = Plan::incremental(
                &store,
                2,
                &walked,
                &current_refs(&store, walked.refs.keys()).unwrap(),
                &values,
                &entries,
                (None, tip),
            )
            .unwrap();
            assert_eq!(plan.refs_changed(), 3, "{format}");
            let kept: Vec<(&str, &str)> = plan.lost.iter().map(|l| (l.refname.as_str(), l.kept_as.as_str())).collect();
            assert_eq!(
                kept,
                vec![("refs/heads/diverged", "refs/stargate/local/lost/2/refs/heads/diverged")],
                "{format}"
            );
            let edits = plan.edits(&store).unwrap();
            assert_eq!(edits.first().map(|e| e.name.as_str()), Some("refs/stargate/local/lost/2/refs/heads/diverged"));
            assert_eq!(edits.last().map(|e| e.name.as_str()), Some(journal::REF), "{format}: the position last");
            // Kept already under that name with another value: the next name.
            store.edit(&[Edit::set("refs/stargate/local/lost/2/refs/heads/diverged", base)]).unwrap();
            assert_eq!(
                keep(&store, 2, "refs/heads/diverged", other).unwrap().kept_as,
                "refs/stargate/local/lost/2.2/refs/heads/diverged"
            );
            // A full mirror's suspects: the same judgement from listings alone.
            let local: Refs =
                all_refs(&store).unwrap().into_iter().filter(|(r, _)| r.starts_with("refs/heads/")).collect();
            let leader: Refs = values.clone();
            let suspects: Vec<String> =
                suspects(&store, 3, &local, &leader).unwrap().into_iter().map(|l| l.refname).collect();
            assert_eq!(suspects, vec!["refs/heads/diverged".to_owned()], "{format}");
        }
    }
}
