//! Files that other processes read while they change: written whole, so that a reader sees
//! the old content or the new, never a torn one; and read defensively, so that a state file
//! replaced by a symbolic link, a device, a FIFO or a huge file is refused at once, by name,
//! instead of read forever (docs/ARCHITECTURE.md, Threat model).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a state file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is a symbolic link; refused", .path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file ({kind}); refused", .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is larger than {max} bytes; refused", .path.display())]
    TooLarge { path: PathBuf, max: u64 },
}

impl ReadError {
    /// The file does not exist (which many state files may not, yet).
    pub fn is_missing(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Open `path` for reading only if it is a regular file: never through a symbolic link in
/// its last component (`O_NOFOLLOW`), and without waiting on a FIFO (`O_NONBLOCK`, which
/// changes nothing for a regular file).
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    open_regular_sized(path).map(|(file, _)| file)
}

/// `open_regular`, with the file's size when it was opened.
fn open_regular_sized(path: &Path) -> Result<(File, u64), ReadError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(ReadError::Symlink { path: path.to_owned() }),
        Err(source) => return Err(ReadError::Io { path: path.to_owned(), source }),
    };
    let meta = file.metadata().map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
    let kind = meta.file_type();
    let kind = match () {
        _ if kind.is_file() => return Ok((file, meta.len())),
        _ if kind.is_dir() => "a directory",
        _ if kind.is_fifo() => "a FIFO",
        _ if kind.is_socket() => "a socket",
        _ if kind.is_char_device() => "a character device",
        _ if kind.is_block_device() => "a block device",
        _ => "not a file",
    };
    Err(ReadError::NotRegular { path: path.to_owned(), kind })
}

/// The whole of the regular file `path` (`open_regular`), refused past `max` bytes, however
/// it grows while being read.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let (file, size) = open_regular_sized(path)?;
    // Sized from the file (plus one byte to see the end) so that a small file is one read,
    // not a series of growing ones: hooks read several per push.
    let size = size.min(max);
    let mut bytes = Vec::with_capacity(size as usize + 1);
    (file.take(max + 1).read_to_end(&mut bytes)).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { path: path.to_owned(), max });
    }
    Ok(bytes)
}

/// `/proc/<pid>/<name>` (`stat`, `comm`): small files the kernel reports as empty, read
/// into a buffer that holds them at once rather than in growing steps.
pub fn read_proc(pid: u32, name: &str) -> Option<String> {
    let mut text = String::with_capacity(1024);
    File::open(format!("/proc/{pid}/{name}")).ok()?.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses): the state first, then the parent's pid, and on (proc_pid_stat(5), from 3).
pub fn read_proc_stat(pid: u32) -> Option<String> {
    let stat = read_proc(pid, "stat")?;
    stat.rsplit_once(')').map(|(_, fields)| fields.to_owned())
}

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

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ok.json"), b"{}").unwrap();
        assert_eq!(read_regular(&path("ok.json"), 2).unwrap(), b"{}");

        std::os::unix::fs::symlink("/dev/zero", path("zero")).unwrap();
        std::os::unix::fs::symlink(path("ok.json"), path("link")).unwrap();
        std::fs::write(path("big"), vec![b' '; 4097]).unwrap();
        std::fs::create_dir(path("dir")).unwrap();
        let fifo = std::ffi::CString::new(path("fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let start = Instant::now();
        for (name, want) in [
            ("zero", "is a symbolic link; refused"),
            ("link", "is a symbolic link; refused"),
            ("big", "is larger than 4096 bytes; refused"),
            ("dir", "is not a regular file (a directory); refused"),
            ("fifo", "is not a regular file (a FIFO); refused"),
        ] {
            let e = read_regular(&path(name), 4096).unwrap_err();
            assert_eq!(e.to_string(), format!("{} {want}", path(name).display()));
            assert!(!e.is_missing());
        }
        assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
        assert!(read_regular(&path("none"), 10).unwrap_err().is_missing());
        // /dev/zero itself, not through a link: a device, refused without reading it.
        let e = read_regular(Path::new("/dev/zero"), 4096).unwrap_err();
        assert_eq!(e.to_string(), "/dev/zero is not a regular file (a character device); refused");
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
