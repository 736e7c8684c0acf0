//! Files that other processes read while they change: written whole, so that a reader sees
//! the old content or the new, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Replace `path` with `bytes` (temporary file, then rename). `durable` also fsyncs the
/// file and its directory, for records that must survive a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
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
