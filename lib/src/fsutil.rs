//! Durable local writes, in one helper: a temporary file in the destination directory,
//! written, fsynced, renamed into place, and the directory fsynced. A reader never sees a
//! half-written file under the final name, and a crash leaves at most a `.tmp` file behind.

pub mod cold_read;

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

/// A lock file owning something (a worker's lock, a claim on one WAL file): an exclusive
/// `flock` on the file ([`File::try_lock`]), which the kernel releases when the process
/// ends however it ends. A file left by a process that died -- killed before it wrote
/// anything, or after -- is therefore never mistaken for a live holder, and a reused pid
/// changes nothing. The holder's pid and start time are written into the file for people
/// reading it. Removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    // Holds the lock while open; closed (and unlocked) after the file is removed.
    file: File,
}

impl PidFile {
    /// Lock `path` (created 0600 if missing) for this process, unless another holder has it.
    pub fn acquire(path: &Path) -> Option<PidFile> {
        use std::os::unix::fs::MetadataExt;
        for _ in 0..3 {
            let file =
                OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path).ok()?;
            if !try_lock_briefly(&file) {
                return None;
            }
            // A holder that was removing the file as it released the lock leaves this handle
            // on a name that is gone: lock the file that is there now instead.
            let same = match (file.metadata(), std::fs::metadata(path)) {
                (Ok(mine), Ok(there)) => mine.dev() == there.dev() && mine.ino() == there.ino(),
                _ => false,
            };
            if same {
                let me = std::process::id();
                let mut f = &file;
                let _ = f.set_len(0).and_then(|()| write!(f, "{me} {}", start_time(me).unwrap_or_default()));
                return Some(PidFile { path: path.to_path_buf(), file });
            }
        }
        None
    }

    /// True when `path` exists and a live process holds its lock.
    pub fn held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else { return false };
        matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
    }
}

/// An exclusive lock on `file`, retried for a few milliseconds: [`PidFile::held`] takes a
/// shared lock for an instant to look, which must not turn a free lock into a refusal.
fn try_lock_briefly(file: &File) -> bool {
    for attempt in 0..5 {
        match file.try_lock() {
            Ok(()) => return true,
            Err(std::fs::TryLockError::WouldBlock) if attempt < 4 => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(_) => return false,
        }
    }
    false
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so that nobody locks a name about to disappear
        // without noticing (see `acquire`); the lock goes with the handle right after.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
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
        assert!(PidFile::acquire(&path).is_none(), "held by a live holder");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&format!("{} ", std::process::id())), "names its holder: {text:?}");
        drop(held);
        assert!(!path.exists(), "removed on drop");
        // Left by a process that is gone (pid 2^22 + 1 is above pid_max's ceiling), by this
        // pid with another start time (a reused pid), or empty (killed between create and
        // write): nobody holds its lock, so it is taken over.
        for stale in ["4194305 12".to_string(), format!("{} 1", std::process::id()), String::new()] {
            std::fs::write(&path, stale).expect("write");
            assert!(!PidFile::held(&path));
            let taken = PidFile::acquire(&path).expect("stale file taken over");
            drop(taken);
        }
    }

    /// A holder killed with SIGKILL releases its lock with its life: the file it leaves is
    /// taken over at once. (`flock(1)` takes the same lock as [`File::lock`].)
    #[test]
    fn a_killed_holder_releases_its_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let mut holder = std::process::Command::new("flock")
            .arg("--no-fork")
            .arg(&path)
            .args(["sleep", "60"])
            .spawn()
            .expect("flock(1) from util-linux");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !PidFile::held(&path) {
            assert!(std::time::Instant::now() < deadline, "flock(1) never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(PidFile::acquire(&path).is_none(), "held by the other process");
        holder.kill().expect("kill");
        holder.wait().expect("wait");
        // Reaped: the kernel has released the lock; the file is still there, naming nobody.
        assert!(path.exists() && !PidFile::held(&path));
        let taken = PidFile::acquire(&path).expect("taken over");
        assert!(PidFile::held(&path));
        drop(taken);
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
