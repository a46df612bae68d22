//! wal-fetch's prefetch: segments after the one PostgreSQL asked for are downloaded,
//! verified and written (atomically) into a bounded directory beside PGDATA by a detached
//! worker process, so the next restore_command call is a local rename instead of a
//! download. A prefetched file is only ever used whole; anything else about recovery
//! (exit codes, "not found") is decided by the archive, never by this directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Repo;
use super::wal_fetch::fetch_object;
use super::wal_index::WalIndex;
use crate::error::IoContext;
use crate::wal::{self, WalFileName};
use crate::{Error, Result};

/// The prefetch directory of `repo` under `cache_dir`.
pub fn dir(cache_dir: &Path, repo: &Repo) -> PathBuf {
    let name = super::wal_index::cache_file_name(&repo.url, repo.layout.env());
    cache_dir.join(format!("prefetch-{}", name.trim_start_matches("wal-index-").trim_end_matches(".json")))
}

/// Move a prefetched `name` into `dest`; `None` if it was not prefetched.
///
/// # Errors
/// I/O errors naming the file (the caller then fetches from the archive instead).
pub fn take(dir: &Path, name: &str, dest: &Path) -> Result<Option<u64>> {
    let src = dir.join(name);
    let Ok(meta) = std::fs::metadata(&src) else { return Ok(None) };
    match std::fs::rename(&src, dest) {
        Ok(()) => {}
        // Another filesystem: copy through the durable-write helper.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            crate::fsutil::write_atomic_with(dest, true, |out| {
                let mut input = std::fs::File::open(&src).with_path(&src)?;
                std::io::copy(&mut input, out).with_path(dest)?;
                out.flush().with_path(dest)
            })?;
            let _ = std::fs::remove_file(&src);
        }
        Err(e) => return Err(Error::io(&src, e)),
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::fsutil::sync_dir(parent).with_path(parent)?;
    Ok(Some(meta.len()))
}

/// Segment size of a restored segment file, from its page header.
pub fn seg_size_of(path: &Path) -> Option<u64> {
    let mut head = vec![0u8; wal::header::LONG_HEADER_LEN];
    let mut f = std::fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    wal::parse_long_header(&head).ok().map(|h| u64::from(h.seg_size))
}

/// The worker: fill `dir` with up to `depth` segments following `name`, stopping at the
/// first one the archive does not hold yet. Older files in `dir` are removed. Only one
/// worker runs per directory (a lock file with its pid).
///
/// # Errors
/// Storage, key and corruption errors (the worker logs them; recovery is unaffected).
pub async fn fill(repo: &Repo, cache_dir: &Path, name: &str, depth: usize, seg_size: u64) -> Result<usize> {
    let dir = dir(cache_dir, repo);
    std::fs::create_dir_all(&dir).with_path(&dir)?;
    let Some(_lock) = Lock::acquire(&dir) else { return Ok(0) };
    let requested = WalFileName::parse(name)?;
    remove_older(&dir, &requested);
    let mut index = WalIndex::load(Some(cache_dir), repo);
    let mut next = requested.clone();
    let mut fetched = 0;
    for _ in 0..depth {
        let Some(n) = next.next_segment(seg_size) else { break };
        next = n;
        let file = next.to_string();
        let dest = dir.join(&file);
        if dest.exists() {
            continue;
        }
        let Some(found) = index.find(repo, &file, false).await? else { break };
        fetch_object(repo, &found.key, &next, &dest, None).await?;
        fetched += 1;
    }
    index.save();
    Ok(fetched)
}

/// Remove prefetched files that sort before `requested`: consumed or abandoned.
fn remove_older(dir: &Path, requested: &WalFileName) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let old = e
            .file_name()
            .to_str()
            .and_then(|f| WalFileName::parse(f).ok())
            .is_some_and(|w| w.sort_key() < requested.sort_key());
        let temp = e.file_name().to_str().is_some_and(|f| f.ends_with(".tmp"));
        if old || temp {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `dir/.lock` holding the worker's pid; a lock whose pid is gone is stale.
struct Lock(PathBuf);

impl Lock {
    fn acquire(dir: &Path) -> Option<Lock> {
        let path = dir.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Some(Lock(path));
                }
                Err(_) => {
                    let pid = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
                    if pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
                        return None;
                    }
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        None
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
