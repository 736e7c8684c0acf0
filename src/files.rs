//! Files that other processes read while they change: written whole, so that a reader sees
//! the old content or the new, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replace `path` with `bytes` (temporary file, then rename). `durable` also fsyncs the
/// file and its directory, for records that must survive a crash. Each call writes its own
/// temporary file, so concurrent writers of one path, in this process or another, never
/// write into each other's: the last rename wins, and a reader sees one whole version.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temporary(dir, path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A name beside `path` that no other call uses while this one runs: the process id tells
/// processes apart, a counter the calls of one process (whatever their thread).
fn temporary(dir: &Path, path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp.{}.{call}", std::process::id()));
    dir.join(name)
}

/// Append one line to `path` (created if missing). `O_APPEND` keeps the lines of
/// concurrent writers whole.
pub fn append_line(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    OpenOptions::new().append(true).create(true).open(path)?.write_all(&buf)
}

/// Whether every user of the host may create, replace or remove files in directory `dir`
/// (world-writable; the sticky bit does not help: a file that does not exist yet can be
/// created by anyone).
pub fn writable_by_everyone(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(dir)?.permissions().mode() & 0o002 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// Version `v` of the file: a header naming `v` and its length, then `v`'s byte repeated,
    /// long enough that a torn write would show.
    fn version(v: u8) -> Vec<u8> {
        let len = 16 * 1024 + usize::from(v) * 97;
        let mut bytes = format!("{v:03} {len:08}\n").into_bytes();
        bytes.resize(len, b'a' + v % 26);
        bytes
    }

    fn whole(bytes: &[u8]) -> bool {
        let Some(v) = std::str::from_utf8(&bytes[..3.min(bytes.len())]).ok().and_then(|v| v.parse::<u8>().ok()) else {
            return false;
        };
        bytes == version(v)
    }

    /// `replication.json` was written by concurrent syncs through one temporary name per
    /// process: renames failed ("No such file or directory") and readers saw torn files.
    #[test]
    fn concurrent_writers_of_one_path_never_collide_and_readers_never_see_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("replication.json"));
        write_atomic(&path, &version(0), 0o644, false).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done) = (Arc::clone(&path), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let bytes = std::fs::read(&*path).expect("the path always exists");
                    assert!(whole(&bytes), "a torn file of {} bytes: {:?}", bytes.len(), &bytes[..16.min(bytes.len())]);
                    reads += 1;
                }
                reads
            })
        };
        let writers: Vec<_> = (1..=16u8)
            .map(|t| {
                let path = Arc::clone(&path);
                std::thread::spawn(move || {
                    for i in 0..50u8 {
                        let v = t.wrapping_mul(50).wrapping_add(i);
                        write_atomic(&path, &version(v), 0o644, i % 10 == 0).expect("every write succeeds");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
        assert!(whole(&std::fs::read(&*path).unwrap()));
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("replication.json")]);
    }
}
