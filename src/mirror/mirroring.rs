//! One mirroring of one repository from one node (stargate(7), Mirroring): read its journal
//! tip first and every other ref after, follow its journal from this node's position when
//! it can (O(k) for k new entries) and mirror everything when it cannot; plan, then apply as
//! one transaction. See `mirror` for the whole story.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use gix::ObjectId;

use super::apply::{self, apply};
use super::plan::{self, Plan};
use super::source::{Refs, Source};
use super::{Applied, Behind, Error, Lost, Mode, Report, Settings, Target};
use crate::journal::{
    self,
    stage::{STAGED, STAGING},
};
use crate::store::{Edit, Store};

/// A full mirror that changes more refs than this packs them (files) or writes them whole.
const PACK_AFTER: usize = 1000;

/// The most refs `likely` names: a bulk write's refs are not worth listing at every sync.
const LIKELY_AT_MOST: usize = 16;

/// The refs the newest journal entry this node holds names (the last write it mirrored),
/// with this node's values: the likeliest to move next (a branch pushed to, a `git kv`
/// namespace). None when that entry names more than `LIKELY_AT_MOST`.
fn likely(main: &Store, local: Option<(ObjectId, u64)>) -> Result<Refs, Error> {
    let Some((id, _)) = local else { return Ok(Refs::new()) };
    let Ok((entry, _)) = journal::read(main, id) else { return Ok(Refs::new()) };
    let names: HashSet<&String> =
        entry.updates.iter().map(|(_, u)| &u.refname).filter(|name| journal::journaled(name)).collect();
    if names.len() > LIKELY_AT_MOST {
        return Ok(Refs::new());
    }
    plan::current_refs(main, names.into_iter())
}

/// One mirroring of repository `name` (this node's copy at `path`) from `target`, due by
/// `settings.timeout` from its start.
pub(super) struct Mirroring<'a> {
    path: &'a Path,
    name: &'a str,
    target: &'a Target,
    settings: &'a Settings,
    deadline: Instant,
    started: Instant,
}

impl<'a> Mirroring<'a> {
    pub(super) fn new(path: &'a Path, name: &'a str, target: &'a Target, settings: &'a Settings) -> Mirroring<'a> {
        let started = Instant::now();
        Mirroring { path, name, target, settings, deadline: started + settings.timeout, started }
    }

    /// A session with the leader, given up as soon as the lease names another: a sync from
    /// a leader whose machine is gone would otherwise hold this repository's sync lock
    /// until its deadline, and in quorum mode keep this node from staging the next
    /// leader's first write.
    fn connect(&self) -> Result<Source<'a>, Error> {
        let mut source =
            Source::open_same_format(self.path, self.name, &self.target.base_url, self.settings, self.deadline)?;
        if !self.target.peer {
            let (settings, target) = (self.settings.clone(), self.target.clone());
            source.abandon_when(Box::new(move || {
                matches!(apply::still_following(&settings, &target), Err(Error::Overtaken))
            }));
        }
        Ok(source)
    }

    /// Whether this node's journal holds entry `id` (fetched, so readable here).
    fn holds(&self, main: &Store, id: ObjectId) -> bool {
        let Ok((entry, _)) = journal::read(main, id) else { return false };
        let at = journal::position::Position { epoch: entry.epoch, seq: entry.seq, id };
        matches!(journal::position::applied(self.path, &at, None), Ok(journal::position::Applied::Yes))
    }

    fn following(&self) -> impl FnOnce() -> Result<(), Error> + '_ {
        || apply::still_following(self.settings, self.target)
    }

    pub(super) fn sync(&self) -> Result<Report, Error> {
        let main = journal::open(self.path)?;
        let local = journal::tip(&main)?;
        let mut source = self.connect()?;
        // The journal tip first, every other ref after: whatever an entry up to this tip
        // says the leader committed, the values read next already hold (or newer ones).
        let likely = if source.is_commands() || self.settings.full { Refs::new() } else { likely(&main, local)? };
        let names: Vec<&str> = [journal::REF].into_iter().chain(likely.keys().map(String::as_str)).collect();
        let listed = source.ls(&names)?;
        log::debug!("{}: journal tip asked after {:?}", self.path.display(), self.started.elapsed());
        let idle = |seq| Report { leader_seq: seq, replica_seq: seq, ..Report::default() };
        if let (Some(tip), Some((id, seq)), false) = (listed.get(journal::REF), local, self.settings.full)
            && *tip == id
        {
            return Ok(idle(seq));
        }
        // With the journal's new entries, the new objects of the refs the last write moved,
        // when they moved again: one pack, where the entries' refs would take a second. Only
        // objects: what to apply is still what the entries say, listed after the tip.
        let mut tips: Refs = listed.get_key_value(journal::REF).map(|(n, v)| (n.clone(), *v)).into_iter().collect();
        if !tips.is_empty() {
            tips.extend(
                (listed.iter())
                    .filter(|(name, oid)| likely.get(*name).is_some_and(|ours| ours != *oid))
                    .filter(|(_, oid)| !main.repo().has_object(*oid))
                    .map(|(name, oid)| (name.clone(), *oid)),
            );
        }
        let mut ours = likely;
        ours.extend(local.map(|(id, _)| (journal::REF.to_owned(), id)));
        let fetched = if tips.is_empty() { None } else { source.fetch(&main, &tips, &ours)? };
        log::debug!("{}: journal fetched after {:?}", self.path.display(), self.started.elapsed());
        let Some(&leader_tip) = fetched.as_ref().and_then(|f| f.get(journal::REF)) else {
            return self.full(&main, &mut source, "the leader has no journal yet", None);
        };
        if self.settings.full {
            return self.full(&main, &mut source, "asked for (git stargate sync --full)", Some(leader_tip));
        }
        if let Some((_, seq)) = local.filter(|(id, _)| *id == leader_tip) {
            return Ok(idle(seq));
        }
        if let (Some(_), Some((_, seq))) = (&self.target.via, local)
            && self.holds(&main, leader_tip)
        {
            // An upstream behind this node (it mirrored from the leader meanwhile).
            return Ok(idle(seq));
        }
        let since = local.map(|(id, _)| id);
        match self.walk(&mut source, &main, leader_tip, since)? {
            Some(entries) => self.incremental(&main, &mut source, (since, leader_tip), &entries),
            None if local.is_none() => {
                self.full(&main, &mut source, "this replica has no journal yet", Some(leader_tip))
            }
            None => self.full(
                &main,
                &mut source,
                "this replica's journal position is not in the leader's journal (or older than it keeps)",
                Some(leader_tip),
            ),
        }
    }

    /// The journal entries after `since` up to `tip` (fetched already), oldest first,
    /// fetching the other node's previous generation when the walk crosses a checkpoint;
    /// `None` when `since` is not there.
    fn walk(
        &self,
        source: &mut Source<'_>,
        main: &Store,
        tip: ObjectId,
        since: Option<ObjectId>,
    ) -> Result<Option<journal::Entries>, Error> {
        let (newer, previous) = match journal::range(main, tip, since)? {
            journal::Range::Found(entries) => return Ok(Some(entries)),
            journal::Range::NotFound => return Ok(None),
            journal::Range::Checkpoint { entries, previous } => (entries, previous),
        };
        let listed = source.ls(&[journal::PREVIOUS])?;
        if listed.get(journal::PREVIOUS) != Some(&previous) {
            return Ok(None);
        }
        let ours: Refs = since.map(|id| (journal::PREVIOUS.to_owned(), id)).into_iter().collect();
        if source.fetch(main, &listed, &ours)?.is_none() {
            return Ok(None);
        }
        match journal::range(main, previous, since)? {
            journal::Range::Found(mut older) => {
                older.extend(newer);
                Ok(Some(older))
            }
            _ => Ok(None),
        }
    }

    pub(super) fn behind(&self) -> Result<Behind, Error> {
        let main = journal::open(self.path)?;
        let local = journal::tip(&main)?;
        let mut source = self.connect()?;
        let tips = source.ls(&[journal::REF])?;
        let replica_seq = local.map_or(0, |(_, seq)| seq);
        let Some(&tip) = tips.get(journal::REF) else {
            return Ok(Behind { replica_seq, unknown_position: true, ..Behind::default() });
        };
        if local.is_some_and(|(id, _)| id == tip) {
            return Ok(Behind { leader_seq: replica_seq, replica_seq, ..Behind::default() });
        }
        let ours: Refs = local.map(|(id, _)| (journal::REF.to_owned(), id)).into_iter().collect();
        let fetched = source.fetch(&main, &tips, &ours)?;
        let Some(&tip) = fetched.as_ref().and_then(|f| f.get(journal::REF)) else {
            return Ok(Behind { replica_seq, unknown_position: true, ..Behind::default() });
        };
        let leader_seq = journal::read(&main, tip)?.0.seq;
        match self.walk(&mut source, &main, tip, local.map(|(id, _)| id))? {
            Some(entries) => Ok(Behind {
                leader_seq,
                replica_seq,
                updates: entries.iter().map(|(_, e)| e.applied().len() as u64).sum(),
                oldest_ms: entries.iter().filter(|(_, e)| !e.applied().is_empty()).map(|(_, e)| e.time_ms).min(),
                unknown_position: false,
            }),
            None => Ok(Behind { leader_seq, replica_seq, unknown_position: true, ..Behind::default() }),
        }
    }

    /// Follow the journal: `position` is (this node's, the other's) journal tip.
    fn incremental(
        &self,
        main: &Store,
        source: &mut Source<'_>,
        position: (Option<ObjectId>, ObjectId),
        entries: &journal::Entries,
    ) -> Result<Report, Error> {
        // The journal says which refs a committed write changed; the other node says what
        // they hold now (that write's value or a later one's).
        let walked = journal::walk(entries);
        let current = plan::current_refs(main, walked.refs.keys())?;
        let names: Vec<&str> = walked.refs.keys().map(String::as_str).collect();
        let present = if names.is_empty() { Refs::new() } else { source.ls(&names)? };
        let Some(values) = source.fetch(main, &present, &current)? else {
            return self.full(main, source, "a journaled ref was deleted on the leader since", Some(position.1));
        };
        let mut plan = Plan::incremental(main, self.target.epoch, &walked, &current, &values, entries, position)?;
        plan.staging = self.staging(main, source, &walked.opened, &walked.closed)?;
        // Each update once, as the walk applies it: a prepare's second outcome adds none.
        let mut seen = HashSet::new();
        let updates: Vec<(u64, journal::Update)> = (entries.iter())
            .flat_map(|(_, e)| e.applied().iter().cloned())
            .filter(|(seq, _)| seen.insert(*seq))
            .collect();
        let newest = entries.last().map_or(0, |(_, e)| e.seq);
        plan.retained = journal::retain::edits(main, &updates, newest, self.settings.journal_keep);
        log::debug!("{}: {} refs fetched after {:?}", self.path.display(), values.len(), self.started.elapsed());
        let exposed_ms = apply(main, &plan.edits(main)?, self.following())?;
        log::debug!("{}: applied after {:?}", self.path.display(), self.started.elapsed());
        let leader_seq = entries.last().map_or(0, |(_, e)| e.seq);
        let applied = (walked.applied.into_iter())
            .map(|(seq, refname, accept_ms)| Applied { seq, refname, accept_ms, exposed_ms })
            .collect();
        Ok(Report {
            mode: Mode::Incremental,
            fallback: None,
            refs_changed: plan.refs_changed(),
            leader_seq,
            replica_seq: leader_seq,
            applied,
            lost: plan.lost,
        })
    }

    /// Quorum mode: the anchors this mirroring adds and drops (`refs/stargate/local/staged/
    /// <seq>`): the new values of the prepared writes it walks past with their outcome still
    /// to come, fetched from where the other node keeps them staged, so that this node holds
    /// every write at or before its journal position, applied or staged; and the anchors of
    /// writes whose outcome came (`closed`). Only the lease's epoch is staged from the
    /// leader: a deposed leader gathers no quorum.
    fn staging(
        &self,
        main: &Store,
        source: &mut Source<'_>,
        opened: &journal::Entries,
        closed: &[u64],
    ) -> Result<Vec<Edit>, Error> {
        use crate::journal::stage::{STAGED, STAGING};
        if !self.settings.quorum {
            return Ok(Vec::new());
        }
        let anchored: HashSet<String> = main.prefixed(STAGED)?.into_iter().map(|(r, _)| r).collect();
        let mut edits: Vec<Edit> = (closed.iter())
            .map(|seq| format!("{STAGED}{seq}"))
            .filter(|anchor| anchored.contains(anchor))
            .map(|anchor| Edit::delete(&anchor))
            .collect();
        if opened.is_empty() {
            return Ok(edits);
        }
        // The leader's own writes in flight only: one of an earlier epoch it left open (it
        // settles them before it leads) has no anchor of its to fetch.
        let opened: Vec<&(ObjectId, journal::Entry)> =
            opened.iter().filter(|(_, e)| self.settings.catch_up || e.epoch == self.target.epoch).collect();
        let prefix = if self.target.peer { STAGED } else { STAGING };
        let values: Vec<(u64, ObjectId)> = (opened.into_iter())
            .flat_map(|(_, e)| e.updates.iter())
            .filter(|(_, u)| journal::journaled(&u.refname) && !u.new.is_null())
            .map(|(seq, u)| (*seq, u.new))
            .collect();
        let wanted: Refs = (values.iter())
            .filter(|(_, oid)| !main.repo().has_object(oid))
            .map(|(seq, oid)| (format!("{prefix}{seq}"), *oid))
            .collect();
        if !wanted.is_empty() {
            let gone = |why: String| Error::Gone(format!("cannot stage the prepared writes' values: {why}"));
            match source.fetch(main, &wanted, &Refs::new()) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(gone("their anchors are gone".into())),
                Err(e) => return Err(gone(e.to_string())),
            }
        }
        edits.extend(values.iter().map(|(seq, oid)| Edit::set(&format!("{STAGED}{seq}"), *oid)));
        Ok(edits)
    }

    /// Mirror everything: keep whatever may be lost first, fetch, make every ref the other
    /// node's, then drop the kept values that turned out to be there after all.
    /// `journal_tip`: the other node's journal as read before anything else, which becomes
    /// this node's position (the listing of every ref comes after it; see `sync`).
    fn full(
        &self,
        main: &Store,
        source: &mut Source<'_>,
        why: &str,
        journal_tip: Option<ObjectId>,
    ) -> Result<Report, Error> {
        if let Some(via) = &self.target.via {
            // Only the leader's journal decides what a replica keeps as lost.
            return Err(Error::NotFromUpstream { via: via.clone(), why: why.to_owned() });
        }
        log::info!("{}: full mirror: {why}", self.path.display());
        // Measure what is new since this replica's own journal position, or since the agent began.
        let local_time = match journal::tip(main)? {
            Some((id, _)) => journal::read(main, id)?.0.time_ms,
            None => 0,
        };
        let since_ms = local_time.max(self.settings.measure_since_ms);
        let listed = source.ls(&[])?;
        let leader: Refs = (listed.iter())
            .filter(|(r, _)| journal::journaled(r) || *r == journal::REF)
            .map(|(r, oid)| (r.clone(), *oid))
            .collect();
        let local = plan::all_refs(main)?;
        let suspects = self.keep_suspects(main, source, &local, &leader)?;
        if let Some(tip) = journal_tip {
            self.stage_open(main, source, tip)?;
        }
        let refs_changed = leader.iter().filter(|(r, oid)| local.get(*r) != Some(oid)).count()
            + local.keys().filter(|r| !leader.contains_key(*r)).count();
        if refs_changed > PACK_AFTER && !source.is_commands() {
            self.replace_all(main, source, listed, &local, journal_tip)?;
        } else {
            self.fetch_all(main, source, journal_tip, refs_changed)?;
        }
        let lost = self.confirm(main, suspects)?;
        let tip = journal::tip(main)?;
        let applied = match tip {
            Some((id, _)) => self.newly_exposed(main, id, since_ms)?,
            None => Vec::new(),
        };
        let seq = tip.map_or(0, |(_, s)| s);
        Ok(Report {
            mode: Mode::Full,
            fallback: Some(why.to_owned()),
            refs_changed,
            leader_seq: seq,
            replica_seq: seq,
            applied,
            lost,
        })
    }

    /// A full mirror's first step: the values of this node's own the leader does not have
    /// (a ref the leader only advanced is no suspect: its new value is fetched first, so
    /// that ancestry is judged, not guessed), kept under `refs/stargate/local/lost/`.
    fn keep_suspects(
        &self,
        main: &Store,
        source: &mut Source<'_>,
        local: &Refs,
        leader: &Refs,
    ) -> Result<Vec<Lost>, Error> {
        let values: HashSet<ObjectId> = leader.values().copied().collect();
        let (missing, ours): (Refs, Refs) = (local.iter())
            .filter(|(r, old)| *r != journal::REF && !values.contains(*old))
            .filter_map(|(r, old)| {
                let new = leader.get(r).copied().filter(|n| !main.repo().has_object(n))?;
                Some(((r.clone(), new), (r.clone(), *old)))
            })
            .unzip();
        if !missing.is_empty() {
            source.fetch(main, &missing, &ours)?;
        }
        let suspects = plan::suspects(main, self.target.epoch, local, leader)?;
        let kept = Plan { lost: suspects.clone(), ..Plan::default() };
        apply(main, &kept.edits(main)?, self.following())?;
        Ok(suspects)
    }

    /// Quorum mode: the values of the writes open at the journal position `tip`, staged
    /// before any ref moves.
    fn stage_open(&self, main: &Store, source: &mut Source<'_>, tip: ObjectId) -> Result<(), Error> {
        let open = journal::open_prepares(main, tip)?;
        let open_seqs: HashSet<u64> = open.iter().flat_map(|(_, e)| e.updates.iter().map(|(s, _)| *s)).collect();
        let anchored: Vec<u64> = (main.prefixed(STAGED)?.into_iter())
            .filter_map(|(r, _)| r.strip_prefix(STAGED)?.parse().ok())
            .filter(|seq| !open_seqs.contains(seq))
            .collect();
        let staging = self.staging(main, source, &open, &anchored)?;
        apply(main, &staging, self.following())?;
        Ok(())
    }

    /// Many refs changed: as `git clone` does, objects first, then every ref (the journal's
    /// at the position read before the listing) in one replacement.
    fn replace_all(
        &self,
        main: &Store,
        source: &mut Source<'_>,
        listed: Refs,
        local: &Refs,
        journal_tip: Option<ObjectId>,
    ) -> Result<(), Error> {
        let keep = [journal::LOCAL, STAGING];
        let mut everything: Refs = listed.into_iter().filter(|(r, _)| !keep.iter().any(|k| r.starts_with(k))).collect();
        match journal_tip {
            Some(tip) => everything.insert(journal::REF.to_owned(), tip),
            None => everything.remove(journal::REF),
        };
        log::debug!("{}: {} refs listed after {:?}", self.path.display(), everything.len(), self.started.elapsed());
        if source.fetch(main, &everything, local)?.is_none() {
            return Err(Error::Moved);
        }
        log::debug!("{}: objects fetched after {:?}", self.path.display(), self.started.elapsed());
        let current: Refs =
            (main.prefixed("refs/")?.into_iter()).filter(|(r, _)| !keep.iter().any(|k| r.starts_with(k))).collect();
        let prepared = main.prepare_replace(&everything, &current, &keep, self.deadline)?;
        apply::commit_following(prepared, self.following())?;
        log::debug!("{}: refs written after {:?}", self.path.display(), self.started.elapsed());
        Ok(())
    }

    /// Few refs changed: git's own mirroring fetch of every ref but the journal's, then the
    /// journal position read before the listing (its objects came with that fetch).
    fn fetch_all(
        &self,
        main: &Store,
        source: &mut Source<'_>,
        journal_tip: Option<ObjectId>,
        refs_changed: usize,
    ) -> Result<(), Error> {
        source.fetch_all_but_journal()?;
        let position = match journal_tip {
            Some(tip) => vec![Edit::set(journal::REF, tip)],
            None if main.find(journal::REF)?.is_some() => vec![Edit::delete(journal::REF)],
            None => Vec::new(),
        };
        apply(main, &position, self.following())?;
        if refs_changed > PACK_AFTER && !main.is_reftable() {
            // The fetch left that many loose refs; a later `git gc` would prune them one
            // transaction, and two hook runs, each. Packing only moves storage: no hooks.
            crate::wire::git::pack_refs(self.path, self.deadline)?;
        }
        Ok(())
    }

    /// Of the values a full mirror kept before it moved refs, those no ref reaches now
    /// (lost indeed); the others' kept refs are dropped again.
    fn confirm(&self, main: &Store, suspects: Vec<Lost>) -> Result<Vec<Lost>, Error> {
        if suspects.is_empty() {
            return Ok(suspects);
        }
        let oids: Vec<String> = suspects.iter().map(|s| s.oid.clone()).collect();
        let unreachable = crate::wire::git::unreachable(self.path, &oids, "refs/stargate/local/*")?;
        let (lost, reached): (Vec<Lost>, Vec<Lost>) = suspects.into_iter().partition(|s| unreachable.contains(&s.oid));
        let drop: Vec<Edit> = reached.iter().map(|s| Edit::delete(&s.kept_as)).collect();
        main.edit(&drop)?;
        Ok(lost)
    }

    /// Updates a full mirror just exposed: the entries accepted after `since_ms` that
    /// applied, newest back, at most `journal::MAX_WALK`.
    fn newly_exposed(&self, main: &Store, tip: ObjectId, since_ms: u64) -> Result<Vec<Applied>, Error> {
        let exposed_ms = crate::clock::now_ms();
        let mut applied = Vec::new();
        let mut at = Some(tip);
        while let Some(id) = at {
            let (entry, parent) = journal::read(main, id)?;
            if entry.time_ms <= since_ms || applied.len() >= journal::MAX_WALK {
                break;
            }
            for (seq, u) in entry.applied().iter().rev().filter(|(_, u)| journal::journaled(&u.refname)) {
                applied.push(Applied { seq: *seq, refname: u.refname.clone(), accept_ms: entry.time_ms, exposed_ms });
            }
            at = parent;
        }
        applied.reverse();
        Ok(applied)
    }
}
