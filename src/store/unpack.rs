//! A small pack's objects stored loose by this process, what `git unpack-objects` does for
//! a fetch of few objects, without starting it: a replica receives two such packs for
//! every write it mirrors (the journal's entry, then the objects the write brought), and the
//! two git processes were half of its CPU per write (docs/BENCHMARKS.md). gix-pack decodes
//! the entries (deltas against objects of the pack, and against objects this repository
//! has, which a thin pack leaves out); each object is written the way `write_loose` writes
//! it, and one larger than a file system block compressed, as git would.

use std::cell::RefCell;
use std::collections::HashMap;

use gix::ObjectId;
use gix::odb::pack::{self, data::decode::entry::ResolvedBase};

use super::{ObjectError, Store};

/// Why a pack was not stored here; the caller leaves it to git, which says why in its words.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read the pack: {0}")]
    Pack(String),
    #[error(transparent)]
    Object(#[from] ObjectError),
}

fn bad(e: impl std::fmt::Display) -> UnpackError {
    UnpackError::Pack(e.to_string())
}

/// An object up to this size takes one block on disk compressed or not: written without
/// a compressor (`write_loose`). A larger one is compressed.
const UNCOMPRESSED_UP_TO: usize = 4096;

/// The most memory one object's decoding may take: a pack names the sizes it inflates to,
/// and a pack is what another node sent.
const ALLOC_LIMIT: usize = 64 << 20;

impl Store {
    /// Store every object of the whole pack `data` (header, entries, trailer) loose.
    /// Returns how many objects it held.
    pub fn unpack(&self, data: &[u8]) -> Result<usize, UnpackError> {
        let hash = self.repo.object_hash();
        let file = pack::data::File::from_data(data, "received pack".into(), hash)
            .map_err(bad)?
            .with_alloc_limit_bytes(Some(ALLOC_LIMIT));
        let entries = pack::data::input::BytesToEntriesIter::new_from_header(
            data,
            pack::data::input::Mode::Verify,
            pack::data::input::EntryDataMode::Ignore,
            hash,
        )
        .map_err(bad)?;
        // Objects of this pack by id, for a delta that names its base by id.
        let here: RefCell<HashMap<ObjectId, u64>> = RefCell::default();
        let (mut inflate, mut out, mut count) = (gix::zlib::Inflate::default(), Vec::new(), 0);
        for entry in entries {
            let offset = entry.map_err(bad)?.pack_offset;
            let entry = file.entry(offset).map_err(bad)?;
            let resolve = |id: &gix::oid, buf: &mut Vec<u8>| {
                if let Some(&at) = here.borrow().get(id) {
                    return Ok(file.entry(at).ok().map(ResolvedBase::InPack));
                }
                Ok(match gix::objs::Find::try_find(&self.repo.objects, id, buf) {
                    Ok(Some(object)) => Some(ResolvedBase::OutOfPack { kind: object.kind, end: object.data.len() }),
                    _ => None,
                })
            };
            let decoded =
                file.decode_entry(entry, &mut out, &mut inflate, &resolve, &mut pack::cache::Never).map_err(bad)?;
            let id = match out.len() <= UNCOMPRESSED_UP_TO {
                true => self.write_loose_raw(decoded.kind, &out)?,
                false => gix::objs::Write::write_buf(&self.repo.objects, decoded.kind, &out)
                    .map_err(|e| ObjectError::Write(Box::new(e)))?,
            };
            here.borrow_mut().insert(id, offset);
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;
    use std::process::{Command, Stdio};

    fn git(dir: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn commit(dir: &Path, files: &[(&str, String)]) -> String {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        git(dir, &["add", "-A"], b"");
        git(dir, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], b"");
        String::from_utf8(git(dir, &["rev-parse", "HEAD"], b"")).unwrap().trim().to_owned()
    }

    /// Text that deltas well against itself with `change` in the middle, `lines` long.
    fn text(lines: usize, change: &str) -> String {
        (0..lines).map(|i| if i == lines / 2 { format!("{change}\n") } else { format!("line {i}\n") }).collect()
    }

    /// A work tree with two commits, the second changing a small file and a large one.
    fn history(format: &str) -> (tempfile::TempDir, String, String) {
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "-q", &format!("--object-format={format}")], b"");
        let first = commit(work.path(), &[("small", text(20, "a")), ("large", text(3000, "a"))]);
        let second = commit(work.path(), &[("small", text(20, "b")), ("large", text(3000, "b"))]);
        (work, first, second)
    }

    fn pack(work: &Path, args: &[&str], revs: &str) -> Vec<u8> {
        let mut all = vec!["pack-objects", "--stdout", "--revs", "-q"];
        all.extend(args);
        git(work, &all, revs.as_bytes())
    }

    fn bare(format: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::wire::git::init_bare_as(dir.path(), Some(format)).unwrap();
        dir
    }

    /// git finds every object `tip` reaches, and each reads back intact.
    fn assert_complete(repo: &Path, tip: &str) {
        git(repo, &["rev-list", "--objects", tip], b"");
        git(repo, &["fsck", "--strict", "--no-dangling", "--unreachable"], b"");
    }

    #[test]
    fn a_pack_of_deltas_by_offset_and_by_id_is_stored_as_git_reads_it() {
        for format in ["sha1", "sha256"] {
            let (work, _, second) = history(format);
            for style in [&["--delta-base-offset"][..], &[]] {
                let repo = bare(format);
                let data = pack(work.path(), style, &format!("{second}\n"));
                let store = Store::open(repo.path()).unwrap();
                assert_eq!(store.unpack(&data).unwrap(), 8, "{format} {style:?}: every object of two commits");
                assert_complete(repo.path(), &second);
                let large =
                    String::from_utf8(git(repo.path(), &["rev-parse", &format!("{second}:large")], b"")).unwrap();
                let read = git(repo.path(), &["cat-file", "blob", large.trim()], b"");
                assert!(read == text(3000, "b").into_bytes(), "{format} {style:?}: the large blob reads back");
            }
        }
    }

    /// A thin pack, what a fetch with haves brings: deltas against objects only this
    /// repository has.
    #[test]
    fn a_thin_pack_is_completed_from_the_objects_the_repository_has() {
        let (work, first, second) = history("sha1");
        let repo = bare("sha1");
        let store = Store::open(repo.path()).unwrap();
        store.unpack(&pack(work.path(), &[], &format!("{first}\n"))).unwrap();
        let thin = pack(work.path(), &["--thin", "--delta-base-offset"], &format!("{second}\n^{first}\n"));
        let thick = pack(work.path(), &["--delta-base-offset"], &format!("{second}\n^{first}\n"));
        assert!(thin.len() < thick.len(), "the thin pack leaves its bases out");
        assert_eq!(store.unpack(&thin).unwrap(), 4);
        assert_complete(repo.path(), &second);
    }

    #[test]
    fn a_damaged_or_truncated_pack_is_refused() {
        let (work, _, second) = history("sha1");
        let data = pack(work.path(), &["--delta-base-offset"], &format!("{second}\n"));
        let repo = bare("sha1");
        let store = Store::open(repo.path()).unwrap();
        let mut damaged = data.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(store.unpack(&damaged), Err(UnpackError::Pack(_))), "the trailer's checksum");
        assert!(matches!(store.unpack(&data[..data.len() / 2]), Err(UnpackError::Pack(_))), "truncated");
        assert!(matches!(store.unpack(b"PACK\0\0\0\x02"), Err(UnpackError::Pack(_))), "a header alone");
        let thin = pack(work.path(), &["--thin"], &format!("{second}\n^{second}~1\n"));
        assert!(matches!(store.unpack(&thin), Err(UnpackError::Pack(_))), "a thin pack without its bases");
    }
}
