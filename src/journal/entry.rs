//! What one journal entry says (docs/ARCHITECTURE.md, The journal): its kind (a start, a
//! prepared transaction, or the outcome of one), its numbered updates, and how it is
//! written as, and read from, a commit message; and what a walk over entries asks of a
//! replica.

use std::collections::{BTreeMap, HashSet};

use gix::ObjectId;

use super::{Entries, Error};

/// One ref update, as `reference-transaction` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub old: ObjectId,
    pub new: ObjectId,
    pub refname: String,
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first entry of a journal: no updates.
    Start,
    /// A transaction git has prepared: what it will do, not yet done.
    Prepare,
    /// How the transaction of prepare entry `of` ended.
    Outcome { of: ObjectId, outcome: Outcome },
    /// Written before the journal had outcomes: its updates are read as done when walked.
    Legacy,
}

/// How a prepared transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// git committed it (its `committed` hook).
    Committed,
    /// git aborted it (its `aborted` hook).
    Aborted,
    /// Its git process ended without a word: it is over, and the leader's refs hold what
    /// it did.
    Ended,
    /// A new leader applied it (quorum mode: it was staged on a node the election heard).
    TakenOver,
    /// A new leader did not apply it: its values were not to be had here (async mode), or
    /// its refs had moved on.
    Dropped,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Committed, Outcome::Aborted, Outcome::Ended, Outcome::TakenOver, Outcome::Dropped];

    pub fn word(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Aborted => "aborted",
            Outcome::Ended => "ended",
            Outcome::TakenOver => "taken-over",
            Outcome::Dropped => "dropped",
        }
    }

    /// Whether the leader's refs may have moved: a replica then reads and applies them.
    pub fn applies(self) -> bool {
        matches!(self, Outcome::Committed | Outcome::Ended | Outcome::TakenOver)
    }
}

/// One journal commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// The journal's sequence number at this entry: the last one given out at or before it.
    pub seq: u64,
    pub epoch: u64,
    pub node: String,
    pub time_ms: u64,
    /// A prepare's updates, numbered; an outcome that applies repeats them.
    pub updates: Vec<(u64, Update)>,
    /// Entries before this one in its generation (0 for a checkpoint or the first entry).
    pub depth: u64,
    /// A checkpoint: the last entry of the previous generation.
    pub previous: Option<ObjectId>,
    /// A checkpoint: the prepares of earlier generations still without an outcome.
    pub open: Vec<ObjectId>,
}

impl Entry {
    /// The updates this entry makes a replica apply: an applying outcome's, a legacy
    /// entry's; none for a prepare (not done yet), an abort or a start.
    pub fn applied(&self) -> &[(u64, Update)] {
        match self.kind {
            Kind::Outcome { outcome, .. } if outcome.applies() => &self.updates,
            Kind::Legacy => &self.updates,
            _ => &[],
        }
    }

    pub(super) fn message(&self) -> String {
        let mut m = format!("stargate journal {}\n\n", self.seq);
        // Format 1 says nothing, as 0.1.0 wrote it (docs/ARCHITECTURE.md, Formats and versions).
        let format = crate::format::JOURNAL_ENTRY.writes;
        if format > 1 {
            m += &format!("format {format}\n");
        }
        m += &format!("epoch {}\nnode {}\ntime {}\ndepth {}\n", self.epoch, self.node, self.time_ms, self.depth);
        match self.kind {
            Kind::Start => m += "state start\n",
            Kind::Prepare => m += "state prepared\n",
            Kind::Outcome { of, outcome } => m += &format!("state {} {of}\n", outcome.word()),
            Kind::Legacy => {}
        }
        if let Some(previous) = self.previous {
            m += &format!("previous {previous}\n");
        }
        for open in &self.open {
            m += &format!("open {open}\n");
        }
        for (seq, u) in &self.updates {
            m += &format!("{seq} {} {} {}\n", u.old, u.new, u.refname);
        }
        m
    }

    pub(super) fn parse(id: ObjectId, message: &str) -> Result<Entry, Error> {
        let bad = || Error::Malformed(id);
        let mut lines = message.lines();
        let seq = lines.next().and_then(|l| l.strip_prefix("stargate journal ")).ok_or_else(bad)?;
        let mut entry = Entry {
            kind: Kind::Legacy,
            seq: seq.parse().map_err(|_| bad())?,
            epoch: 0,
            node: String::new(),
            time_ms: 0,
            updates: Vec::new(),
            depth: 0,
            previous: None,
            open: Vec::new(),
        };
        // A later format says so (format 1 says nothing): refused before anything else in
        // the entry is believed, never misread.
        if let Some(found) = message.lines().find_map(|l| l.strip_prefix("format ")) {
            let found = found.parse().map_err(|_| bad())?;
            crate::format::JOURNAL_ENTRY.check(format_args!("journal entry {id}"), found)?;
        }
        let oid = |hex: &str| ObjectId::from_hex(hex.as_bytes()).map_err(|_| bad());
        for line in lines.filter(|l| !l.is_empty()) {
            let (key, rest) = line.split_once(' ').ok_or_else(bad)?;
            match key {
                "format" => {}
                "epoch" => entry.epoch = rest.parse().map_err(|_| bad())?,
                "node" => entry.node = rest.to_owned(),
                "time" => entry.time_ms = rest.parse().map_err(|_| bad())?,
                "depth" => entry.depth = rest.parse().map_err(|_| bad())?,
                "previous" => entry.previous = Some(oid(rest)?),
                "open" => entry.open.push(oid(rest)?),
                "state" => {
                    entry.kind = match rest.split_once(' ') {
                        None if rest == "start" => Kind::Start,
                        None if rest == "prepared" => Kind::Prepare,
                        Some((word, of)) => {
                            let outcome = Outcome::ALL.into_iter().find(|o| o.word() == word).ok_or_else(bad)?;
                            Kind::Outcome { of: oid(of)?, outcome }
                        }
                        None => return Err(bad()),
                    }
                }
                seq => {
                    let seq: u64 = seq.parse().map_err(|_| bad())?;
                    let mut f = rest.splitn(3, ' ');
                    let (Some(old), Some(new), Some(refname)) = (f.next(), f.next(), f.next()) else {
                        return Err(bad());
                    };
                    entry.updates.push((seq, Update { old: oid(old)?, new: oid(new)?, refname: refname.to_owned() }));
                }
            }
        }
        Ok(entry)
    }
}

/// Parse `reference-transaction` stdin: `<old> <new> <ref>` per line. Symbolic updates
/// (`ref:<target>` values) are not journaled: mirroring copies refs, not symrefs.
pub fn parse_updates(input: &str) -> Vec<Update> {
    input
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ' ');
            let old = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
            let new = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
            Some(Update { old, new, refname: f.next()?.to_owned() })
        })
        .collect()
}

/// Each node's own refs, never mirrored: `refs/stargate/local/lost/...` keeps lost commits.
pub const LOCAL: &str = "refs/stargate/local/";

/// Refs the journal records: everything a mirror copies, except itself and node-local refs.
pub fn journaled(refname: &str) -> bool {
    refname.starts_with("refs/") && !refname.starts_with("refs/stargate/")
}

/// What a replica learns from the entries after its position (`walk`).
#[derive(Debug, Default)]
pub struct Walked {
    /// The refs whose leader value to read and apply, each with every value the journal
    /// says the leader's ref held (old or new of any of its updates): none of those is a
    /// loss.
    pub refs: BTreeMap<String, HashSet<ObjectId>>,
    /// The updates applied, for lag: sequence number, ref, the leader's time of the entry
    /// that applied it.
    pub applied: Vec<(u64, String, u64)>,
    /// Prepares walked past whose outcome is not among the entries: open after the walk.
    pub opened: Entries,
    /// The sequence numbers of every outcome among the entries: no longer open.
    pub closed: Vec<u64>,
}

/// What entries after a position (oldest first) ask of a replica. A prepare ends once: a
/// second outcome of it (journaled by an earlier release, whose new leader could settle a
/// write its live git then ended too) is walked past, as the first one decided.
pub fn walk(entries: &[(ObjectId, Entry)]) -> Walked {
    let mut walked = Walked::default();
    let outcomes: HashSet<ObjectId> = (entries.iter())
        .filter_map(|(_, e)| match e.kind {
            Kind::Outcome { of, .. } => Some(of),
            _ => None,
        })
        .collect();
    let mut ended = HashSet::new();
    for (id, entry) in entries {
        if let Kind::Outcome { of, .. } = entry.kind
            && !ended.insert(of)
        {
            continue;
        }
        for (_, u) in entry.updates.iter().filter(|(_, u)| journaled(&u.refname)) {
            walked.refs.entry(u.refname.clone()).or_default().extend([u.old, u.new]);
        }
        match entry.kind {
            Kind::Prepare if !outcomes.contains(id) => walked.opened.push((*id, entry.clone())),
            Kind::Outcome { .. } => walked.closed.extend(entry.updates.iter().map(|(seq, _)| *seq)),
            _ => {}
        }
        for (seq, u) in entry.applied().iter().filter(|(_, u)| journaled(&u.refname)) {
            walked.applied.push((*seq, u.refname.clone(), entry.time_ms));
        }
    }
    // Only what some entry applies is read from the leader; the rest were known values.
    let applying: HashSet<&str> = walked.applied.iter().map(|(_, r, _)| r.as_str()).collect();
    walked.refs.retain(|r, _| applying.contains(r.as_str()));
    walked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_message() {
        let a = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let z = ObjectId::null(gix::hash::Kind::Sha1);
        let updates = vec![
            (7, Update { old: z, new: a, refname: "refs/heads/main".into() }),
            (8, Update { old: a, new: z, refname: "refs/kv/x y".into() }),
        ];
        let mut entry = Entry {
            kind: Kind::Prepare,
            seq: 8,
            epoch: 3,
            node: "a".into(),
            time_ms: 1_700_000_000_123,
            updates,
            depth: 4,
            previous: Some(a),
            open: vec![a, a],
        };
        assert_eq!(Entry::parse(a, &entry.message()).unwrap(), entry);
        for outcome in Outcome::ALL {
            entry.kind = Kind::Outcome { of: a, outcome };
            assert_eq!(Entry::parse(a, &entry.message()).unwrap(), entry);
        }
        entry.kind = Kind::Start;
        assert_eq!(Entry::parse(a, &entry.message()).unwrap(), entry);
        // What a leader without outcomes wrote: read as legacy, its updates applied when walked.
        let legacy = format!("stargate journal 8\n\nepoch 3\nnode a\ntime 1\ndepth 0\n8 {z} {a} refs/heads/main\n");
        let parsed = Entry::parse(a, &legacy).unwrap();
        assert_eq!((parsed.kind, parsed.seq, parsed.applied().len()), (Kind::Legacy, 8, 1));
        assert!(Entry::parse(a, "not a journal\n").is_err());
        assert!(Entry::parse(a, "stargate journal 1\n\nepoch x\n").is_err());
        assert!(Entry::parse(a, "stargate journal 1\n\nstate won 1111\n").is_err());
        // The format this build writes (none said) and format 1 said aloud are read; a later
        // one is refused by name, whatever else it says.
        let said = legacy.replacen("\n\n", "\n\nformat 1\n", 1);
        assert_eq!(Entry::parse(a, &said).unwrap(), parsed);
        let newer = legacy.replacen("\n\n", "\n\nwhatever new\nformat 2\n", 1);
        let err = Entry::parse(a, &newer).unwrap_err().to_string();
        assert!(err.starts_with(&format!("journal entry {a}: journal entry format 2, and this build (")), "{err}");
        assert!(!entry.message().contains("format"), "format 1 is written as 0.1.0 wrote it");
    }

    /// A prepare is not a write: walking past it moves nothing, and its outcome, whenever it
    /// comes, applies it (committed, ended, taken over) or closes it (aborted, dropped).
    #[test]
    fn a_walk_applies_outcomes_not_prepares() {
        let z = ObjectId::null(gix::hash::Kind::Sha1);
        let id = |n: u8| ObjectId::from_bytes_or_panic(&[n; 20]);
        let prepare = |seq: u64, refname: &str| Entry {
            kind: Kind::Prepare,
            seq,
            epoch: 1,
            node: "a".into(),
            time_ms: seq * 10,
            updates: vec![(seq, Update { old: z, new: id(seq as u8), refname: refname.into() })],
            depth: 0,
            previous: None,
            open: Vec::new(),
        };
        let outcome = |of: u8, p: &Entry, outcome: Outcome| Entry {
            kind: Kind::Outcome { of: id(of), outcome },
            time_ms: p.time_ms + 5,
            ..p.clone()
        };
        let (p1, p2, p3) = (prepare(1, "refs/heads/a"), prepare(2, "refs/heads/b"), prepare(3, "refs/heads/c"));
        // Caught between prepared and commit: nothing to apply, the prepare stays open.
        let walked = walk(&[(id(1), p1.clone())]);
        assert!(walked.refs.is_empty() && walked.applied.is_empty());
        assert_eq!(walked.opened.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![id(1)]);
        // Its outcome in a later walk applies it, from the leader's value at that time.
        let walked = walk(&[(id(2), p2.clone()), (id(11), outcome(1, &p1, Outcome::Committed))]);
        assert_eq!(walked.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/a"]);
        assert_eq!(walked.applied, vec![(1, "refs/heads/a".to_owned(), 15)]);
        assert_eq!(walked.opened.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![id(2)]);
        assert_eq!(walked.closed, vec![1]);
        // Aborted and dropped close without applying; ended and taken over apply.
        let walked = walk(&[
            (id(12), outcome(2, &p2, Outcome::Aborted)),
            (id(3), p3.clone()),
            (id(13), outcome(3, &p3, Outcome::Ended)),
        ]);
        assert_eq!(walked.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/c"]);
        assert!(walked.opened.is_empty());
        assert_eq!(walked.closed, vec![2, 3]);
        let walked =
            walk(&[(id(13), outcome(3, &p3, Outcome::Dropped)), (id(14), outcome(1, &p1, Outcome::TakenOver))]);
        assert_eq!(walked.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/a"]);
        // A second outcome of one prepare (taken over by a new leader, then aborted by the
        // git that still ran) is walked past: closed once, applied as the first one said.
        // Twice, a replica's staging anchor was deleted twice in one transaction, which git
        // refuses, at every sync after.
        let walked = walk(&[
            (id(1), p1.clone()),
            (id(14), outcome(1, &p1, Outcome::TakenOver)),
            (id(15), outcome(1, &p1, Outcome::Aborted)),
            (id(16), outcome(1, &p1, Outcome::Committed)),
        ]);
        assert_eq!(walked.closed, vec![1]);
        assert_eq!(walked.applied, vec![(1, "refs/heads/a".to_owned(), 15)]);
        assert!(walked.opened.is_empty());
        let walked =
            walk(&[(id(15), outcome(1, &p1, Outcome::Aborted)), (id(16), outcome(1, &p1, Outcome::Committed))]);
        assert_eq!((walked.closed, walked.applied), (vec![1], Vec::new()));
    }

    #[test]
    fn transaction_input_is_parsed_and_filtered() {
        let input = "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/main\nref:refs/heads/a ref:refs/heads/b HEAD\ngarbage\n";
        let updates = parse_updates(input);
        assert_eq!(updates.len(), 1);
        assert!(journaled("refs/heads/main") && journaled("refs/kv/default"));
        assert!(
            !journaled(crate::journal::REF)
                && !journaled("refs/stargate/local/lost/1/refs/heads/x")
                && !journaled("HEAD")
        );
    }
}
