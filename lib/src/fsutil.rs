//! Durable local writes, in one helper: a temporary file in the destination directory,
//! written, fsynced, renamed into place, and the directory fsynced. A reader never sees a
//! half-written file under the final name, and a crash leaves at most a `.tmp` file behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::Result;
use crate::error::IoContext;

/// Write `path` atomically with the bytes produced by `fill`. With `durable`, the file and
/// its directory are fsynced (wal-fetch's `%p`, repository objects); without, only the
/// rename is atomic (caches). The file is created 0600, missing directories 0700.
///
/// # Errors
/// [`Error::Io`] naming the file for any failure to create, write, sync or rename;
/// `fill`'s own error. The temporary file is removed on every error.
pub fn write_atomic_with(path: &Path, durable: bool, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path);
    create_private_dir_all(&dir).with_path(&dir)?;
    let tmp = temp_name(path);
    // Errors name `path`, the file the caller asked for (wal-fetch's `%p`), not the
    // temporary name nobody knows.
    let mut file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&tmp).with_path(path)?;
    let result = fill(&mut file).and_then(|()| {
        file.flush().with_path(path)?;
        if durable {
            file.sync_all().with_path(path)?;
        }
        drop(file);
        std::fs::rename(&tmp, path).with_path(path)?;
        if durable {
            sync_dir(&dir).with_path(&dir)?;
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic_with`] for bytes already in memory.
///
/// # Errors
/// As [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    write_atomic_with(path, durable, |f| f.write_all(bytes).with_path(path))
}

/// Read a whole regular file of at most `limit` bytes, never blocking on what is not one: a
/// FIFO, a device such as `/dev/zero`, a socket or a directory is refused before it is read
/// (checked before opening, and again on the opened handle, opened with `O_NONBLOCK` so that
/// opening a FIFO cannot wait for a writer). Returns the bytes and the metadata of the handle.
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] saying what the file is instead, or that it is larger than
/// `limit`; the error of the failed open or read otherwise.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read;
    check_regular(&std::fs::metadata(path)?)?;
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let meta = file.metadata()?;
    check_regular(&meta)?;
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, format!("larger than {limit} bytes"));
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(too_large());
    }
    Ok((data, meta))
}

fn check_regular(meta: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({what})")))
}

/// Create `dir` and any missing parents 0700 whatever the umask (caches, spools, locks:
/// private to the user walvault runs as). Existing directories are left as they are.
///
/// # Errors
/// The directory cannot be created.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// fsync a directory so a rename or create in it survives a crash.
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.<name>.walvault.<pid>.<nanos>.tmp` in the same directory.
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    parent_dir(path).join(format!(".{name}.walvault.{}.{nanos}.tmp", std::process::id()))
}

/// A file naming the process that owns something (a worker's lock, a claim on one WAL file):
/// its pid and start time, so that a file left by a process that died -- or whose pid was
/// reused since -- is recognised as stale and taken over. Removed when dropped.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    /// Create `path` for this process, unless a live process holds it. A stale file is
    /// replaced.
    pub fn acquire(path: &Path) -> Option<PidFile> {
        // Written in full under a temporary name, then linked into place (link fails when the
        // name exists): the file is never seen empty, even if this process is killed midway.
        let me = std::process::id();
        let tmp = temp_name(path);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| write!(f, "{me} {}", start_time(me).unwrap_or_default()));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
        let mut acquired = None;
        for _ in 0..3 {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {
                    acquired = Some(PidFile(path.to_path_buf()));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if PidFile::held(path) {
                        break;
                    }
                    let _ = std::fs::remove_file(path);
                }
                Err(_) => break,
            }
        }
        let _ = std::fs::remove_file(&tmp);
        acquired
    }

    /// True when `path` exists and names a process that is still running.
    pub fn held(path: &Path) -> bool {
        let Ok(text) = std::fs::read_to_string(path) else { return false };
        let mut words = text.split_whitespace();
        // Always written whole (see `acquire`): anything else is not a live holder's.
        let Some(pid) = words.next().and_then(|p| p.parse::<u32>().ok()) else { return false };
        match (words.next().and_then(|t| t.parse::<u64>().ok()), start_time(pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            (None, Some(_)) => true,
            (_, None) => false,
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_exclusive_and_stale_ones_are_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let held = PidFile::acquire(&path).expect("first");
        assert!(PidFile::held(&path));
        assert!(PidFile::acquire(&path).is_none(), "held by a live process");
        drop(held);
        assert!(!path.exists(), "removed on drop");
        // A process that is gone (pid 2^22 + 1 is above pid_max's ceiling), or this pid with
        // another start time (a reused pid): stale.
        for stale in ["4194305 12".to_string(), format!("{} 1", std::process::id()), String::new()] {
            std::fs::write(&path, stale).expect("write");
            assert!(!PidFile::held(&path));
            let taken = PidFile::acquire(&path).expect("stale file taken over");
            drop(taken);
        }
    }

    #[test]
    fn writes_atomically_and_cleans_up_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/file");
        write_atomic(&path, b"hello", true).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello");
        let err = write_atomic_with(&path, true, |f| {
            f.write_all(b"partial").with_path("x")?;
            Err(crate::Error::Invalid("boom".into()))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"hello", "old content kept");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");
    }
}
