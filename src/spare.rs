//! Spare files: empty files the leader's agent makes ahead of time in
//! `<root>/.stargate/spare/`, which the hooks take instead of creating files of their own
//! (docs/ARCHITECTURE.md, Spare files). Creating a file is the dearest thing a hook does on
//! some filesystems (a network filesystem's round trip; 0.5 to 0.8 ms on the ext4 of the
//! machines this project is measured on, against 20 µs for a rename), and a write creates
//! five: the in-flight mark, and a loose object and a ref lock for each of its two journal
//! entries. Taking a spare is one rename, `RENAME_NOREPLACE` so that it fails as creating
//! with `O_EXCL` does when the name is there: a ref lock taken this way is a lock. Without a
//! spare to take (none left, another filesystem, a filesystem without `renameat2`) the
//! caller creates the file as before: spares change how fast, never what.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The pool, in the node's state directory.
pub const DIR: &str = "spare";
/// How many spares the agent keeps: 50 one-ref pushes' worth.
pub const POOL: usize = 256;
/// How many spare directories the agent keeps (`d0` to `d31`), for the fan-out directories
/// (`objects/xx`) the journal's loose objects need: a young repository lacks most of them,
/// and a pruned one those it emptied.
pub const DIRS: usize = 32;
/// How many names a taker tries before it creates its file itself.
const PROBES: usize = 8;

/// Move a spare of `pool` to `dest`, which must not exist, and open it for writing: an
/// empty regular file. `Ok(None)` when there is no spare to take (the caller creates the
/// file); `AlreadyExists` when `dest` exists, as `create_new` says it.
pub fn take(pool: &Path, dest: &Path) -> std::io::Result<Option<File>> {
    let start = rand::random_range(0..POOL);
    for probe in 0..PROBES {
        let spare = pool.join(((start + probe) % POOL).to_string());
        // Only a regular file is a spare: never a directory or a link moved into place.
        match std::fs::symlink_metadata(&spare) {
            Ok(m) if m.is_file() => {}
            Err(e) if e.kind() == ErrorKind::NotFound && probe == 0 && !pool.is_dir() => return Ok(None),
            _ => continue,
        }
        match rename_noreplace(&spare, dest) {
            Ok(()) => return Ok(opened(dest)),
            // Taken by another meanwhile: the next name.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(e),
            // No pool, another filesystem (EXDEV), no renameat2 there (EINVAL), …
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

/// `dest`, just taken, open for writing; removed and `None` if this process cannot write it
/// (the agent made it as another user) or it is not an empty regular file.
fn opened(dest: &Path) -> Option<File> {
    let file = OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(dest).ok();
    let file = file.filter(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() == 0));
    if file.is_none() {
        let _ = std::fs::remove_file(dest);
    }
    file
}

/// Move a spare directory of `pool` to `dest`, which must not exist, with the mode of the
/// directory it is moved into (as the fan-out directories git makes in `objects/`). `false`
/// when there is none to take, or `dest` exists by now: the caller makes its directory, or
/// finds it made.
pub fn take_dir(pool: &Path, dest: &Path) -> bool {
    let Some(mode) = dest.parent().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.permissions()) else {
        return false;
    };
    let start = rand::random_range(0..DIRS);
    for probe in 0..PROBES.min(DIRS) {
        let spare = pool.join(format!("d{}", (start + probe) % DIRS));
        match std::fs::symlink_metadata(&spare) {
            Ok(m) if m.is_dir() => {}
            _ => continue,
        }
        match rename_noreplace(&spare, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(_) => return false,
        }
        // Usable as made by this process, or not kept (made as another user).
        if std::fs::set_permissions(dest, mode.clone()).is_ok() && writable(dest) {
            return true;
        }
        let _ = std::fs::remove_dir(dest);
        return false;
    }
    false
}

fn writable(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| ErrorKind::InvalidInput);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two valid C strings, relative to the working directory. The system call, not
    // libc's wrapper: musl has none.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The agent: make the spares `pool` lacks, at most `most` of them (files, then
/// directories); how many it made.
pub fn refill(pool: &Path, most: usize) -> std::io::Result<usize> {
    std::fs::create_dir_all(pool)?;
    let (mut present, mut dirs) = (vec![false; POOL], vec![false; DIRS]);
    for entry in std::fs::read_dir(pool)?.flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        match name.strip_prefix('d').and_then(|n| n.parse::<usize>().ok()) {
            Some(i) if i < DIRS => dirs[i] = true,
            _ => {}
        }
        if let Some(i) = name.parse::<usize>().ok().filter(|i| *i < POOL) {
            present[i] = true;
        }
    }
    let mut made = 0;
    for (i, _) in present.iter().enumerate().filter(|(_, p)| !**p).take(most) {
        match OpenOptions::new().write(true).create_new(true).mode(0o644).open(pool.join(i.to_string())) {
            Ok(_) => made += 1,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    for (i, _) in dirs.iter().enumerate().filter(|(_, p)| !**p).take(most - made) {
        match std::fs::create_dir(pool.join(format!("d{i}"))) {
            Ok(()) => made += 1,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A spare moves to its name, empty and writable, and is gone from the pool; a name
    /// that exists is refused as `create_new` refuses it, the spares left as they were; an
    /// empty pool, or none, gives nothing and the caller creates its file.
    #[test]
    fn a_spare_is_taken_once_and_never_over_a_file_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join(DIR);
        assert!(take(&pool, &dir.path().join("x")).unwrap().is_none(), "no pool");
        assert_eq!(refill(&pool, 3).unwrap(), 3);
        assert_eq!(refill(&pool, POOL + DIRS).unwrap(), POOL + DIRS - 3);
        assert_eq!(refill(&pool, POOL).unwrap(), 0, "full");
        std::fs::read_dir(&pool).unwrap().flatten().filter(|e| e.path().is_dir()).for_each(|e| {
            std::fs::remove_dir(e.path()).unwrap();
        });
        let count = || std::fs::read_dir(&pool).unwrap().count();
        let lock = dir.path().join("journal.lock");
        let mut file = take(&pool, &lock).unwrap().expect("a spare");
        file.write_all(b"x\n").unwrap();
        assert_eq!(std::fs::read(&lock).unwrap(), b"x\n");
        assert_eq!(count(), POOL - 1);
        let held = take(&pool, &lock).unwrap_err();
        assert_eq!(held.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&lock).unwrap(), b"x\n", "the holder's lock untouched");
        assert_eq!(count(), POOL - 1, "no spare lost to a refusal");
        // Each taken once: the pool shrinks by one a spare.
        let taken = (0..16).filter(|i| take(&pool, &dir.path().join(format!("t{i}"))).unwrap().is_some()).count();
        assert_eq!(count(), POOL - 1 - taken);
        assert!(taken > 0);
        std::fs::read_dir(&pool).unwrap().for_each(|e| std::fs::remove_file(e.unwrap().path()).unwrap());
        assert!(take(&pool, &dir.path().join("y")).unwrap().is_none(), "an empty pool");
        assert!(!dir.path().join("y").exists());
    }

    /// A spare directory moves to its name with the mode of the directory it goes into,
    /// once; never over a directory that exists; none left, the caller makes its own.
    #[test]
    fn a_spare_directory_takes_the_mode_of_its_parent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join(DIR);
        let objects = dir.path().join("objects");
        std::fs::create_dir(&objects).unwrap();
        std::fs::set_permissions(&objects, std::fs::Permissions::from_mode(0o2775)).unwrap();
        assert!(!take_dir(&pool, &objects.join("ab")), "no pool");
        assert_eq!(refill(&pool, POOL + DIRS).unwrap(), POOL + DIRS);
        let dirs = || std::fs::read_dir(&pool).unwrap().flatten().filter(|e| e.path().is_dir()).count();
        assert!(take_dir(&pool, &objects.join("ab")));
        assert_eq!(std::fs::metadata(objects.join("ab")).unwrap().permissions().mode() & 0o7777, 0o2775);
        assert_eq!(dirs(), DIRS - 1);
        std::fs::write(objects.join("ab/kept"), "x").unwrap();
        assert!(!take_dir(&pool, &objects.join("ab")), "there already");
        assert_eq!(std::fs::read(objects.join("ab/kept")).unwrap(), b"x");
        assert_eq!(dirs(), DIRS - 1, "no spare lost to a refusal");
    }
}
