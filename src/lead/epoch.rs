//! The highest epoch this node has seen, and who led it (docs/ARCHITECTURE.md, Fencing):
//! `<root>/.stargate/epoch.json`, raised by every leader record and leader key the agent
//! reads, never lowered, written whole and fsynced.
//!
//! A record, handoff or key naming an older epoch, or naming another node at the epoch
//! seen, is refused (a handoff never raises it: its epoch is always a record's first): it can only come from a backup restored over the lease (or from an
//! etcd restored without a revision bump), and following it could make two nodes lead one
//! epoch. Taking the lease then writes an epoch after both the record's and the one seen.
//! The agent is the only writer; the hooks and the health responder read it (`read`) and
//! fail closed on a record it refuses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::handoff::Handoff;
use super::record::{Error, Record, io};
use crate::format::{EPOCH_SEEN, JsonError};

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("epoch.json")
}

/// What a refused claim was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The leader record (a file lease's record, or the leader key on etcd).
    Record,
    Handoff,
    /// etcd's revision, before the leader key is created: the epoch it would give.
    Revision,
}

/// A claim refused because this node has seen a newer epoch, or the same one led by
/// another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: Kind,
    pub epoch: u64,
    /// The node the claim names (none for etcd's revision).
    pub node: Option<String>,
    pub seen: u64,
    pub seen_node: String,
}

impl Refusal {
    fn of(kind: Kind, epoch: u64, node: &str, seen: &Record) -> Refusal {
        Refusal { kind, epoch, node: Some(node.to_owned()), seen: seen.epoch, seen_node: seen.node.clone() }
    }

    /// Why, without what was refused: for "cannot read the leader record: …".
    pub fn detail(&self) -> String {
        let (seen, by) = (self.seen, &self.seen_node);
        let why = match (self.kind, &self.node) {
            (Kind::Revision, _) => {
                return format!(
                    "etcd's revision is {}, not past epoch {seen} ({by}), which this node has seen; etcd restored \
                     from a backup without --bump-revision? (stargate(7), Epoch)",
                    self.epoch
                );
            }
            (_, Some(node)) if self.epoch == seen => {
                format!("it names {node} at epoch {seen}, which this node saw {by} lead")
            }
            (_, node) => format!(
                "its epoch {} ({}) is older than epoch {seen} ({by}), which this node has seen",
                self.epoch,
                node.as_deref().unwrap_or("?")
            ),
        };
        format!("{why}; restored from a backup? (stargate(7), Epoch)")
    }

    /// What makes two refusals the same incident, reported once: for etcd's revision,
    /// only the epoch seen (every refusal's own audit line moves the revision on).
    fn key(&self) -> (Kind, u64, Option<String>) {
        match self.kind {
            Kind::Revision => (self.kind, self.seen, None),
            _ => (self.kind, self.epoch, self.node.clone()),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            Kind::Record => "the leader record",
            Kind::Handoff => "the handoff record",
            Kind::Revision => "taking the leader key",
        };
        write!(f, "refused {what}: {}", self.detail())
    }
}

/// How `node` leading `epoch` compares with what was seen.
#[derive(Debug, PartialEq, Eq)]
enum Compared {
    Newer,
    Same,
    Refused,
}

fn compare(seen: Option<&Record>, epoch: u64, node: &str) -> Compared {
    match seen {
        None => Compared::Newer,
        Some(s) if epoch > s.epoch => Compared::Newer,
        Some(s) if epoch == s.epoch && node == s.node => Compared::Same,
        Some(_) => Compared::Refused,
    }
}

/// Whether `record` may be followed by a node that has seen `seen`; the refusal if not.
pub fn judge(seen: Option<&Record>, record: &Record) -> Result<(), Refusal> {
    match (compare(seen, record.epoch, &record.node), seen) {
        (Compared::Refused, Some(s)) => Err(Refusal::of(Kind::Record, record.epoch, &record.node, s)),
        _ => Ok(()),
    }
}

/// The leader before the next epoch: `record`, unless `seen` is newer (the record was
/// restored from a backup), which is then the one to catch up from.
pub fn newer(record: Option<Record>, seen: Option<Record>) -> Option<Record> {
    match (record, seen) {
        (Some(r), Some(s)) if s.epoch > r.epoch => Some(s),
        (None, s) => s,
        (r, _) => r,
    }
}

/// Why readers other than the agent cannot know what this node has seen.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the highest epoch seen, {}, is damaged: {source}", .path.display())]
    Damaged { path: PathBuf, source: serde_json::Error },
    /// Written by a newer agent (docs/ARCHITECTURE.md, Formats and versions).
    #[error("{0}")]
    Format(crate::format::Unknown),
    #[error("cannot read {}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A symbolic link, not a regular file, or too large.
    #[error("the highest epoch seen: {0}")]
    Unreadable(crate::files::ReadError),
}

/// The most `epoch.json` may hold; it is one record.
const MAX_SEEN: u64 = 64 * 1024;

/// What this node has seen, for readers other than the agent (hooks, health responder):
/// `Err` when the file cannot be read or parsed, and they then refuse.
pub fn read(state_dir: &Path) -> Result<Option<Record>, ReadError> {
    let path = path(state_dir);
    match crate::files::read_regular(&path, MAX_SEEN) {
        Ok(bytes) => match EPOCH_SEEN.from_json(path.display(), &bytes) {
            Ok(seen) => Ok(Some(seen)),
            Err(JsonError::Unknown(e)) => Err(ReadError::Format(e)),
            Err(JsonError::Json(source)) => Err(ReadError::Damaged { path, source }),
        },
        Err(e) if e.is_missing() => Ok(None),
        Err(crate::files::ReadError::Io { source, .. }) => Err(ReadError::Io { path, source }),
        Err(e) => Err(ReadError::Unreadable(e)),
    }
}

/// The lease's record as `read` reads it, checked against `highest`, the epoch seen
/// (`Highest::check_record`); as it is without one. Another of the agent's threads may raise
/// what was seen while this one reads (it read, or created, a newer record): a record older
/// than that is a stale read, not a restored lease, and is read again instead of refused.
/// Refused only when nothing was raised since its read began (or after `READS` reads each
/// overtaken).
pub fn read_checked(
    highest: Option<&Highest>,
    mut read: impl FnMut() -> Result<Option<Record>, Error>,
) -> Result<Option<Record>, Error> {
    let Some(highest) = highest else { return read() };
    for attempt in 1..=READS {
        let raises = highest.inner().raises;
        let record = read()?;
        let Some(r) = &record else { return Ok(record) };
        let mut inner = highest.inner();
        if attempt < READS && inner.raises != raises && judge(inner.seen.as_ref(), r).is_err() {
            continue;
        }
        highest.check_record_in(&mut inner, r)?;
        return Ok(record);
    }
    unreachable!("the last read returns")
}

/// How many reads, each overtaken by another thread's newer one, `read_checked` makes
/// before it judges the last as it is.
const READS: u32 = 8;

/// The agent's hold on `epoch.json`, shared by its threads (the lease loop, the replicator).
#[derive(Debug)]
pub struct Highest {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: Option<Record>,
    /// How many times `seen` was raised: tells a read overtaken by a newer one.
    raises: u64,
    /// The last refusal of each kind, until a claim of that kind is accepted again.
    refused: HashMap<Kind, (Kind, u64, Option<String>)>,
    unreported: Vec<Refusal>,
}

impl Highest {
    /// Open `<state_dir>/epoch.json`; none yet is epoch 0. A damaged file is an error: the
    /// agent does not start without knowing what it has seen.
    pub fn open(state_dir: &Path) -> Result<Highest, Error> {
        let path = path(state_dir);
        let seen = match crate::files::read_regular(&path, MAX_SEEN) {
            Ok(bytes) => Some(EPOCH_SEEN.from_json(path.display(), &bytes).map_err(|e| match e {
                JsonError::Unknown(e) => Error::Format(e),
                JsonError::Json(source) => Error::SeenDamaged { path: path.clone(), source },
            })?),
            Err(e) if e.is_missing() => None,
            Err(crate::files::ReadError::Io { source, .. }) => return Err(io(&path)(source)),
            Err(e) => return Err(e.into()),
        };
        Ok(Highest { path, inner: Mutex::new(Inner { seen, ..Inner::default() }) })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest record seen.
    pub fn seen(&self) -> Option<Record> {
        self.inner().seen.clone()
    }

    /// Check `record`, read from the lease: raise what was seen when it is newer, refuse it
    /// when it is older or names another node at the epoch seen.
    pub fn check_record(&self, record: &Record) -> Result<(), Error> {
        self.check_record_in(&mut self.inner(), record)
    }

    fn check_record_in(&self, inner: &mut Inner, record: &Record) -> Result<(), Error> {
        let seen = inner.seen.clone();
        match (compare(seen.as_ref(), record.epoch, &record.node), seen) {
            (Compared::Refused, Some(s)) => {
                return Err(inner.refuse(Refusal::of(Kind::Record, record.epoch, &record.node, &s)));
            }
            (Compared::Newer, _) => self.store(inner, record.clone())?,
            _ => {}
        }
        inner.refused.remove(&Kind::Record);
        Ok(())
    }

    /// Check `handoff` as the claim that its node leads its epoch: the leader asked to drain
    /// (planned), or the node that now leads (forced). It never raises what was seen: a
    /// handoff's epoch is always carried by a record first, and one for a future epoch must
    /// change nothing (docs/ARCHITECTURE.md, Threat model).
    pub fn check_handoff(&self, handoff: &Handoff) -> Result<(), Error> {
        let node = if handoff.forced { &handoff.to } else { &handoff.from };
        let mut inner = self.inner();
        let seen = inner.seen.clone();
        match (compare(seen.as_ref(), handoff.epoch, node), seen) {
            (Compared::Refused, Some(s)) => Err(inner.refuse(Refusal::of(Kind::Handoff, handoff.epoch, node, &s))),
            _ => {
                inner.refused.remove(&Kind::Handoff);
                Ok(())
            }
        }
    }

    /// etcd: a leader key created now gets at least `epoch`; refused unless it is after
    /// every epoch seen.
    pub fn check_revision(&self, epoch: u64) -> Result<(), Error> {
        let mut inner = self.inner();
        match inner.seen.clone() {
            Some(s) if epoch <= s.epoch => {
                let refusal = Refusal { kind: Kind::Revision, epoch, node: None, seen: s.epoch, seen_node: s.node };
                Err(inner.refuse(refusal))
            }
            _ => {
                inner.refused.remove(&Kind::Revision);
                Ok(())
            }
        }
    }

    /// etcd: `record`, the leader key this node just created, its epoch the key's create
    /// revision. Refused unless that is after every epoch seen; raises what was seen. The
    /// same epoch led by this node is its own key, already read by another of the agent's
    /// threads between the creation and this check, and accepted.
    pub fn check_created(&self, record: &Record) -> Result<(), Error> {
        let mut inner = self.inner();
        let seen = inner.seen.clone();
        match (compare(seen.as_ref(), record.epoch, &record.node), seen) {
            (Compared::Refused, Some(s)) => {
                let refusal =
                    Refusal { kind: Kind::Revision, epoch: record.epoch, node: None, seen: s.epoch, seen_node: s.node };
                return Err(inner.refuse(refusal));
            }
            (Compared::Newer, _) => self.store(&mut inner, record.clone())?,
            _ => {}
        }
        inner.refused.remove(&Kind::Revision);
        Ok(())
    }

    fn store(&self, inner: &mut Inner, record: Record) -> Result<(), Error> {
        let mut bytes =
            EPOCH_SEEN.to_json(&record).map_err(|source| Error::SeenDamaged { path: self.path.clone(), source })?;
        bytes.push(b'\n');
        crate::files::write_atomic(&self.path, &bytes, 0o644, true).map_err(io(&self.path))?;
        inner.seen = Some(record);
        inner.raises += 1;
        Ok(())
    }

    /// The epoch the next acquisition writes over `record`: after it and after every epoch
    /// seen, so that a restored record cannot make two nodes lead one epoch.
    pub fn next_epoch(&self, record: Option<&Record>) -> u64 {
        let seen = self.inner().seen.as_ref().map_or(0, |s| s.epoch);
        record.map_or(0, |r| r.epoch).max(seen) + 1
    }

    /// The leader before the next epoch: `record`, unless this node has seen a newer one
    /// (the record was restored from a backup), which is then the one to catch up from.
    pub fn previous(&self, record: Option<Record>) -> Option<Record> {
        newer(record, self.seen())
    }

    /// The refusals not reported yet: each incident once, however often it is read.
    pub fn take_refusals(&self) -> Vec<Refusal> {
        std::mem::take(&mut self.inner().unreported)
    }
}

impl Inner {
    fn refuse(&mut self, refusal: Refusal) -> Error {
        if self.refused.get(&refusal.kind) != Some(&refusal.key()) {
            self.refused.insert(refusal.kind, refusal.key());
            self.unreported.push(refusal.clone());
        }
        Error::Behind(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: u64, node: &str) -> Record {
        Record { epoch, node: node.into(), url: Some(format!("git://{node}/")), health: None, since_ms: 0 }
    }

    #[test]
    fn epochs_only_go_forward_and_one_epoch_has_one_leader() {
        let dir = tempfile::tempdir().unwrap();
        let h = Highest::open(dir.path()).unwrap();
        assert_eq!(h.next_epoch(None), 1);
        h.check_record(&record(3, "a")).unwrap();
        h.check_record(&record(3, "a")).unwrap();
        h.check_record(&record(7, "b")).unwrap();
        // Older, or the epoch seen naming another node: refused, the epoch seen kept.
        let older = h.check_record(&record(3, "c")).unwrap_err();
        assert!(matches!(&older, Error::Behind(r) if r.epoch == 3 && r.seen == 7), "{older}");
        assert!(older.to_string().contains("its epoch 3 (c) is older than epoch 7 (b)"), "{older}");
        let twin = h.check_record(&record(7, "c")).unwrap_err();
        assert!(twin.to_string().contains("it names c at epoch 7, which this node saw b lead"), "{twin}");
        assert_eq!(h.seen().unwrap().epoch, 7);
        // The next acquisition writes after both, and catches up from the newer leader.
        assert_eq!(h.next_epoch(Some(&record(3, "c"))), 8);
        assert_eq!(h.previous(Some(record(3, "c"))).unwrap().node, "b");
        assert_eq!(h.previous(Some(record(9, "c"))).unwrap().node, "c");
        // Persisted: another process (the hooks) and the next agent see it.
        assert_eq!(read(dir.path()).unwrap().unwrap(), record(7, "b"));
        assert_eq!(Highest::open(dir.path()).unwrap().seen().unwrap(), record(7, "b"));
        assert_eq!(judge(Some(&record(7, "b")), &record(6, "b")).unwrap_err().seen, 7);
        assert!(judge(Some(&record(7, "b")), &record(8, "c")).is_ok());
        assert!(judge(None, &record(1, "c")).is_ok());
    }

    #[test]
    fn each_refusal_is_reported_once_until_the_next_accepted_claim() {
        let dir = tempfile::tempdir().unwrap();
        let h = Highest::open(dir.path()).unwrap();
        h.check_record(&record(5, "a")).unwrap();
        for _ in 0..10 {
            let _ = h.check_record(&record(2, "c"));
        }
        assert_eq!(h.take_refusals().len(), 1);
        assert!(h.take_refusals().is_empty());
        // Another stale record is another incident; so is the same one after a good one.
        let _ = h.check_record(&record(3, "c"));
        h.check_record(&record(5, "a")).unwrap();
        let _ = h.check_record(&record(3, "c"));
        assert_eq!(h.take_refusals().len(), 2);
        // etcd: once per epoch seen, whatever the revision (the audit line moves it).
        for revision in 1..5 {
            assert!(h.check_revision(revision).is_err());
        }
        assert!(h.check_revision(5).is_err(), "epoch 5 was issued already");
        assert_eq!(h.take_refusals().len(), 1);
        h.check_revision(6).unwrap();
    }

    #[test]
    fn handoffs_are_refused_like_records_but_never_raise_the_epoch_seen() {
        let dir = tempfile::tempdir().unwrap();
        let h = Highest::open(dir.path()).unwrap();
        h.check_record(&record(4, "a")).unwrap();
        let handoff = |epoch, forced| Handoff {
            from: "a".into(),
            epoch,
            to: "b".into(),
            forced,
            user: "op".into(),
            requested_ms: 1,
            heartbeat_ms: 1,
        };
        h.check_handoff(&handoff(4, false)).unwrap();
        assert!(h.check_handoff(&handoff(3, false)).is_err());
        assert!(h.check_handoff(&handoff(4, true)).is_err(), "b at epoch 4 is not what was seen");
        // A future epoch is left to the leader, which refuses it; it does not depose anyone.
        h.check_handoff(&handoff(9, false)).unwrap();
        assert_eq!(h.seen().unwrap(), record(4, "a"));
        h.check_record(&record(4, "a")).unwrap();
        // Forced: the record of b at 5 comes first, then the handoff naming b at 5.
        h.check_record(&record(5, "b")).unwrap();
        h.check_handoff(&handoff(5, true)).unwrap();
        assert!(h.check_handoff(&handoff(5, false)).is_err(), "a at epoch 5 is not what was seen");
    }

    #[test]
    fn a_created_leader_key_already_read_by_another_thread_is_this_nodes_own() {
        let dir = tempfile::tempdir().unwrap();
        let h = Highest::open(dir.path()).unwrap();
        h.check_record(&record(11, "a")).unwrap();
        // b created the key at revision 12; its replicator read it before the lease's check.
        h.check_record(&record(12, "b")).unwrap();
        h.check_created(&record(12, "b")).unwrap();
        assert_eq!(h.seen().unwrap(), record(12, "b"));
        // Created at an epoch seen led by another node, or at an older one: etcd was restored.
        let twin = h.check_created(&record(12, "c")).unwrap_err();
        assert!(twin.to_string().contains("etcd's revision is 12, not past epoch 12 (b)"), "{twin}");
        assert!(h.check_created(&record(9, "b")).is_err());
        // A newer one is raised to at once, before anything else reads the key.
        h.check_created(&record(14, "b")).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), record(14, "b"));
        assert!(h.take_refusals().len() == 1, "one incident: the epoch seen did not change between them");
    }

    /// A thread's read of the record overtaken by another thread's newer one (which raised
    /// what was seen before the first was checked) is read again, not refused; a record still
    /// older once nothing raised it meanwhile is refused, as a restored lease.
    #[test]
    fn a_read_overtaken_by_a_newer_one_is_read_again_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = Highest::open(dir.path()).unwrap();
        h.check_record(&record(4, "b")).unwrap();
        let mut reads = 0;
        let got = read_checked(Some(&h), || {
            reads += 1;
            if reads == 1 {
                // Meanwhile, another thread reads (or this node creates) epoch 5.
                h.check_record(&record(5, "b")).unwrap();
                return Ok(Some(record(4, "b")));
            }
            Ok(Some(record(5, "b")))
        });
        assert_eq!(got.unwrap(), Some(record(5, "b")));
        assert_eq!(reads, 2);
        assert!(h.take_refusals().is_empty());

        // Restored: the older record again, nothing raised since the read began.
        let mut reads = 0;
        let got = read_checked(Some(&h), || {
            reads += 1;
            Ok(Some(record(3, "c")))
        });
        assert!(matches!(got, Err(Error::Behind(_))), "{got:?}");
        assert_eq!(reads, 1);
        assert_eq!(h.take_refusals().len(), 1);

        // Overtaken at every read: judged as it is after READS reads.
        let mut epoch = 5;
        let got = read_checked(Some(&h), || {
            epoch += 1;
            h.check_record(&record(epoch, "b")).unwrap();
            Ok(Some(record(epoch - 1, "b")))
        });
        assert!(matches!(got, Err(Error::Behind(_))), "{got:?}");
        assert_eq!(epoch, 5 + u64::from(READS));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_epoch_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{\"epoch\": 7, \"no").unwrap();
        assert!(Highest::open(dir.path()).is_err());
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(err, ReadError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("damaged"));
    }
}
