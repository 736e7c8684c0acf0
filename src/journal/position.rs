//! A write's place in a repository's journal, for read-your-writes (stargate(7), Reading
//! your own writes): `<epoch>:<seq>:<entry id>`, the leader's journal tip once the write was
//! accepted. A node has applied a position when its journal holds that entry: a replica's
//! journal ref moves in the same store transaction as the refs its entries name, so every
//! write at or before the entry is then visible there.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use gix::ObjectId;

use super::{Error, MAX_WALK, read, tip};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The epoch of the leader that wrote the entry.
    pub epoch: u64,
    /// The journal's sequence number at the entry.
    pub seq: u64,
    pub id: ObjectId,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.epoch, self.seq, self.id)
    }
}

/// A position that does not read as `<epoch>:<seq>:<entry id>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{}': expected a position <epoch>:<seq>:<entry id> (as a push prints it)", crate::wire::sanitize::text(.0))]
pub struct Malformed(pub String);

impl FromStr for Position {
    type Err = Malformed;

    fn from_str(s: &str) -> Result<Position, Malformed> {
        let bad = || Malformed(s.chars().take(200).collect());
        let mut parts = s.trim().splitn(3, ':');
        let (Some(epoch), Some(seq), Some(id)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        let number = |t: &str| t.parse::<u64>().ok().filter(|_| t.bytes().all(|b| b.is_ascii_digit()));
        let id = Some(id).filter(|i| i.bytes().all(|b| b.is_ascii_hexdigit()) && matches!(i.len(), 40 | 64));
        match (number(epoch), number(seq), id.and_then(|i| ObjectId::from_hex(i.as_bytes()).ok())) {
            (Some(epoch), Some(seq), Some(id)) => Ok(Position { epoch, seq, id }),
            _ => Err(bad()),
        }
    }
}

/// Whether a node's journal holds a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Every write at or before it is visible here.
    Yes,
    /// Not yet: this node's journal is at `at` (none: no journal yet).
    Behind { at: Option<Position> },
    /// Never will be: this node's journal went on at a later epoch without the entry (a
    /// write lost in a failover, or a position from before a journal this node cannot walk
    /// back to). Only the leader can answer a read that must see it.
    Superseded { at: Position },
}

/// This node's position in the repository at `git_dir`: its journal tip.
pub fn current(git_dir: &Path) -> Result<Option<Position>, Error> {
    let store = super::open(git_dir)?;
    let Some((id, seq)) = tip(&store)? else { return Ok(None) };
    Ok(Some(Position { epoch: read(&store, id)?.0.epoch, seq, id }))
}

/// Whether `position` is the journal's tip, as its loose ref says (one small file read; a
/// packed or reftable journal ref says no, and the caller reads the journal instead).
pub fn is_loose_tip(git_dir: &Path, position: &Position) -> bool {
    crate::store::read_loose(git_dir, super::REF) == Some(position.id)
}

/// Whether the repository at `git_dir` has applied `want`; `led`: the epoch this node led
/// last, when it did (a leader's journal is final for every older epoch, so an older
/// position it lacks is superseded even before its journal has an entry of its own epoch).
///
/// One leader writes one epoch's entries, in a line, and sequence numbers never go down
/// along it; an outcome entry takes the number of the tip it follows. So walking back from
/// the tip, an entry of `want`'s epoch numbered above it proves `want` is behind it; an
/// entry of an older epoch, or of `want`'s numbered below it, proves it is not.
pub fn applied(git_dir: &Path, want: &Position, led: Option<u64>) -> Result<Applied, Error> {
    let store = super::open(git_dir)?;
    let Some((tip_id, tip_seq)) = tip(&store)? else { return Ok(Applied::Behind { at: None }) };
    let (tip_entry, mut parent) = read(&store, tip_id)?;
    let at = Position { epoch: tip_entry.epoch, seq: tip_seq, id: tip_id };
    let (mut id, mut entry) = (tip_id, tip_entry);
    for _ in 0..MAX_WALK {
        if id == want.id || (entry.epoch == want.epoch && entry.seq > want.seq) {
            return Ok(Applied::Yes);
        }
        if entry.epoch < want.epoch || (entry.epoch == want.epoch && entry.seq < want.seq) {
            break;
        }
        let Some(next) = parent.or(entry.previous) else { break };
        id = next;
        match read(&store, id) {
            Ok((e, p)) => (entry, parent) = (e, p),
            // A generation no longer kept: too far back to tell.
            Err(_) => break,
        }
    }
    let newest = at.epoch.max(led.unwrap_or(0));
    Ok(if newest > want.epoch { Applied::Superseded { at } } else { Applied::Behind { at: Some(at) } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Body, Outcome, Update, append, append_outcome, genesis, open};

    #[test]
    fn positions_read_back_as_written_and_bad_ones_are_refused() {
        let id = ObjectId::from_hex(b"5e1f2a00000000000000000000000000000000aa").unwrap();
        let p = Position { epoch: 3, seq: 1042, id };
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        for bad in ["", "3:1042", "3:1042:xyz", "-3:1:5e1f2a00000000000000000000000000000000aa", "3:+1:5e1f", "a:b:c"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }

    fn update(store: &crate::store::Store) -> Body {
        let oid = store.write_object(gix::objs::Tree::empty()).unwrap();
        Body::Prepare(vec![Update {
            old: ObjectId::null(gix::hash::Kind::Sha1),
            new: oid,
            refname: "refs/heads/main".into(),
        }])
    }

    fn position(dir: &Path) -> Position {
        current(dir).unwrap().unwrap()
    }

    /// Applied once the journal holds the entry; behind before; superseded when a later
    /// epoch's journal went on without it; across a checkpoint too.
    #[test]
    fn a_position_is_applied_behind_or_superseded() {
        let leader = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(leader.path()).unwrap();
        let store = open(leader.path()).unwrap();
        genesis(&store, 1, "a").unwrap();
        let (p, _) = append(&store, 1, "a", update(&store), 3).unwrap();
        let before_outcome = position(leader.path());
        append_outcome(&store, 1, "a", p, Outcome::Committed, 3).unwrap();
        let write = position(leader.path());
        assert_eq!((write.seq, before_outcome.seq), (1, 1), "an outcome takes the tip's number");
        assert_eq!(applied(leader.path(), &write, None).unwrap(), Applied::Yes);
        assert_eq!(applied(leader.path(), &before_outcome, None).unwrap(), Applied::Yes);

        // A replica whose journal stopped at the prepare: same number, not the entry.
        let replica = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare(replica.path()).unwrap();
        assert_eq!(applied(replica.path(), &write, None).unwrap(), Applied::Behind { at: None });
        let copy = |to: &Path, id: ObjectId| {
            let out = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(to)
                .args(["fetch", "-q"])
                .arg(leader.path())
                .arg(format!("+{id}:{}", crate::journal::REF))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        copy(replica.path(), before_outcome.id);
        assert_eq!(applied(replica.path(), &write, None).unwrap(), Applied::Behind { at: Some(before_outcome) });

        // The leader goes on past a checkpoint (keep = 3): still applied there.
        for _ in 0..4 {
            let (p, _) = append(&store, 1, "a", update(&store), 3).unwrap();
            append_outcome(&store, 1, "a", p, Outcome::Committed, 3).unwrap();
        }
        assert_eq!(applied(leader.path(), &write, None).unwrap(), Applied::Yes);
        assert_eq!(applied(leader.path(), &position(leader.path()), None).unwrap(), Applied::Yes);

        // A new leader at epoch 2 went on from the replica's journal: the write is lost.
        let replica_store = open(replica.path()).unwrap();
        append(&replica_store, 2, "b", update(&replica_store), 3).unwrap();
        let at = position(replica.path());
        assert_eq!(applied(replica.path(), &write, None).unwrap(), Applied::Superseded { at });
        assert_eq!(applied(replica.path(), &before_outcome, None).unwrap(), Applied::Yes, "an epoch-1 entry it holds");
    }
}
