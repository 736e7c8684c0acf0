//! A mirroring's changes applied as one store transaction, after checking, with every lock
//! of it held, that the leader record still names the node it read: a mirroring overtaken
//! by an election (of this node or another) applies nothing.

use super::{Error, Settings, Target};
use crate::store::{Edit, Prepared, Store};

/// Apply `edits` at once if `following` still holds; when the new values became visible.
pub(super) fn apply(main: &Store, edits: &[Edit], following: impl FnOnce() -> Result<(), Error>) -> Result<u64, Error> {
    if edits.is_empty() {
        return Ok(crate::clock::now_ms());
    }
    commit_following(main.prepare(edits)?, following)
}

/// Commit `prepared` if `following` still holds, its locks held meanwhile.
pub(super) fn commit_following(
    prepared: Prepared<'_>,
    following: impl FnOnce() -> Result<(), Error>,
) -> Result<u64, Error> {
    following()?;
    prepared.commit()?;
    Ok(crate::clock::now_ms())
}

/// Whether the leader record still names `target` (or, for a node catching up to lead,
/// this node): read again just before refs move.
pub(super) fn still_following(settings: &Settings, target: &Target) -> Result<(), Error> {
    match settings.lock.read_record() {
        Ok(Some(r)) if r.epoch == target.epoch && r.node == target.leader => Ok(()),
        Ok(Some(r)) if settings.catch_up && r.node == settings.me => Ok(()),
        _ => Err(Error::Overtaken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overtaken: nothing moved and every lock released (the same edits go through at
    /// once after). Following: every edit at once. On both ref storages.
    #[test]
    fn a_mirroring_overtaken_applies_nothing_and_one_following_applies_everything() {
        let dir = tempfile::tempdir().unwrap();
        for format in ["files", "reftable"] {
            let (store, [base, ahead, _]) = crate::mirror::plan::tests::repo(&dir.path().join(format), format);
            store.edit(&[Edit::set("refs/heads/a", base)]).unwrap();
            let edits =
                [Edit::update("refs/heads/a", Some(base), Some(ahead)), Edit::update("refs/heads/b", None, Some(base))];
            let overtaken = apply(&store, &edits, || Err(Error::Overtaken));
            assert!(matches!(overtaken, Err(Error::Overtaken)), "{format}");
            assert_eq!(store.find("refs/heads/a").unwrap(), Some(base), "{format}");
            assert_eq!(store.find("refs/heads/b").unwrap(), None, "{format}");
            apply(&store, &edits, || Ok(())).unwrap();
            assert_eq!(store.find("refs/heads/a").unwrap(), Some(ahead), "{format}");
            assert_eq!(store.find("refs/heads/b").unwrap(), Some(base), "{format}");
            // A stale expectation fails before anything is checked or moved.
            assert!(matches!(apply(&store, &edits, || Ok(())), Err(Error::Prepare(_))), "{format}");
        }
    }
}
