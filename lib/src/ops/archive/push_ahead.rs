//! Push-ahead: while PostgreSQL's archiver calls `wal-push` for one file at a time, a helper
//! process archives the rest of the `.ready` backlog in parallel, so that a backlog drains on
//! every core and the archiver's later calls return at once.
//!
//! The helper starts itself (a `wal-push` call that sees other `.ready` files spawns it,
//! detached) and stops when the backlog has been idle for [`IDLE_EXIT`]. Its state lives in
//! `<cache>/push-<repository hash>/`:
//!
//! - `.lock`: the helper's [`PidFile`]: one helper per repository and environment.
//! - `claim/NAME`: the [`PidFile`] of the process pushing NAME now (the helper or a wal-push
//!   call). Nobody pushes a claimed file; a claim left by a killed process is stale.
//! - `done/NAME`: NAME was durably stored (or an identical copy already was). It holds the
//!   identity of the file as it was read (device, inode, size, modification and change
//!   times). It is written only after storage acknowledged the object, before the claim is
//!   released; wal-push for NAME accepts it only while the file still has that identity, and
//!   removes it. PostgreSQL never changes a file it has marked `.ready`.
//!
//! A lost or stale marker costs a second push of the same file (an identical duplicate, which
//! wal-push accepts); a marker can never stand for content that was not stored.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::error::IoContext;
use crate::fsutil::PidFile;
use crate::ops::Repo;
use crate::ops::repo::wal_index::{WalIndex, cache_file_name};
use crate::wal::WalFileName;
use crate::{Error, Result};

/// The helper exits once no `.ready` file has been waiting for this long.
pub const IDLE_EXIT: Duration = Duration::from_secs(2);
/// How often the helper looks at `archive_status` while idle.
const POLL: Duration = Duration::from_millis(20);
/// How long a wal-push call waits for another process's claim on its file before pushing
/// the file itself (as pgBackRest's archive-timeout): a helper stuck in retries during an
/// outage shows up as archive_command failures within a minute.
const CLAIM_WAIT: Duration = Duration::from_secs(60);
/// The helper exits after this long even with work left; the next call starts a new one.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The push-ahead directory of a repository environment under `cache_dir`.
pub fn dir(cache_dir: &Path, url: &str, env: &str) -> PathBuf {
    let name = cache_file_name(url, env);
    cache_dir.join(format!("push-{}", name.trim_start_matches("wal-index-").trim_end_matches(".json")))
}

/// The identity of a file as read: a marker holds it.
fn file_identity(meta: &std::fs::Metadata) -> String {
    format!(
        "dev {} ino {} size {} mtime {}.{:09} ctime {}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// True (and the marker removed) when `path` was pushed ahead and has not changed since.
pub fn take_done(dir: &Path, path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    let marker = dir.join("done").join(name);
    let Ok(recorded) = std::fs::read_to_string(&marker) else { return false };
    let matches = std::fs::metadata(path).is_ok_and(|m| file_identity(&m) == recorded);
    let _ = std::fs::remove_file(&marker);
    matches
}

/// Record that `name`, with identity `meta` when it was read, is durably stored.
fn mark_done(dir: &Path, name: &str, meta: &std::fs::Metadata) -> Result<()> {
    crate::fsutil::write_atomic(&dir.join("done").join(name), file_identity(meta).as_bytes(), false)
}

/// True while a live helper holds `dir`'s lock.
pub fn helper_running(dir: &Path) -> bool {
    PidFile::held(&dir.join(".lock"))
}

/// The `.ready` files in `pg_wal/archive_status` other than `except`, oldest first.
pub fn ready_files(pg_wal: &Path, except: Option<&str>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pg_wal.join("archive_status")) else { return Vec::new() };
    let mut ready: Vec<(_, String)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|f| f.strip_suffix(".ready")).map(str::to_string))
        .filter(|f| Some(f.as_str()) != except)
        .filter_map(|f| WalFileName::parse(&f).ok().map(|w| (w.sort_key(), f)))
        .collect();
    ready.sort();
    ready.into_iter().map(|(_, f)| f).collect()
}

/// What a wal-push call may do about its file.
pub enum Turn {
    /// Pushed by another process since the call started: nothing to do.
    Done,
    /// This call holds the claim and pushes the file itself.
    Claimed(Claim),
    /// No claim could be had (the directory is unusable, or another process held the file
    /// past [`CLAIM_WAIT`]): push the file anyway; a duplicate is harmless.
    Unclaimed,
}

/// A claim on one file: nobody else pushes it while this is held.
pub struct Claim(#[allow(dead_code)] PidFile);

/// Claim `path` for this call, or wait while another live process pushes it. Bounded by
/// [`CLAIM_WAIT`].
pub async fn claim_or_wait(dir: &Path, path: &Path) -> Turn {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Turn::Unclaimed };
    let claims = dir.join("claim");
    if crate::fsutil::create_private_dir_all(&claims).is_err() {
        return Turn::Unclaimed;
    }
    let deadline = Instant::now() + CLAIM_WAIT;
    while Instant::now() < deadline {
        if take_done(dir, path) {
            return Turn::Done;
        }
        if let Some(c) = PidFile::acquire(&claims.join(name)) {
            // The holder may have finished between the two looks.
            if take_done(dir, path) {
                return Turn::Done;
            }
            return Turn::Claimed(Claim(c));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!("{name} was claimed by another process for {} s; pushing it anyway", CLAIM_WAIT.as_secs());
    Turn::Unclaimed
}

/// What one helper run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct HelperStats {
    pub pushed: u64,
    pub duplicates: u64,
    pub failed: u64,
}

/// The helper: push the `.ready` backlog of `pg_wal`, `parallel` files at a time, oldest
/// first, skipping files that are claimed or done, until the backlog has been idle for
/// [`IDLE_EXIT`]. Only one helper runs per directory; a second returns at once. Files of
/// another cluster than the repository's identity (as cached by an earlier wal-push call)
/// are left to PostgreSQL's own calls, which refuse them loudly.
///
/// # Errors
/// The push-ahead directory cannot be created. A file that fails is logged and left to
/// PostgreSQL's own call for it.
pub async fn run_helper(repo: &Repo, cache_dir: &Path, pg_wal: &Path, parallel: usize) -> Result<HelperStats> {
    let dir = dir(cache_dir, &repo.url, repo.layout.env());
    for sub in ["claim", "done"] {
        crate::fsutil::create_private_dir_all(&dir.join(sub)).with_path(dir.join(sub))?;
    }
    let mut stats = HelperStats::default();
    let Some(_lock) = PidFile::acquire(&dir.join(".lock")) else { return Ok(stats) };
    remove_stale_markers(&dir, pg_wal);
    // The identity the wal-push call that started this helper verifies (it may still be
    // doing so): wait for it in the cache, bounded.
    let started = Instant::now();
    let (mut index, expected) = loop {
        let index = WalIndex::load(Some(cache_dir), repo);
        if let Some(cluster) = crate::ops::archive::push::cached_cluster(repo, &index) {
            break (index, cluster);
        }
        if started.elapsed() >= IDLE_EXIT {
            tracing::debug!("no verified repository identity cached; the backlog is left to wal-push");
            return Ok(stats);
        }
        tokio::time::sleep(POLL).await;
    };
    let mut idle_since = Instant::now();
    let mut skip: HashSet<String> = HashSet::new();
    let mut inflight = FuturesUnordered::new();
    while started.elapsed() < MAX_LIFETIME {
        if inflight.len() < parallel.max(1) {
            for name in ready_files(pg_wal, None) {
                if inflight.len() >= parallel.max(1) {
                    break;
                }
                if skip.contains(&name) || dir.join("done").join(&name).exists() {
                    continue;
                }
                let Some(claim) = PidFile::acquire(&dir.join("claim").join(&name)) else { continue };
                let found = match index.find(repo, &name, true).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!("{name}: {e}");
                        stats.failed += 1;
                        skip.insert(name);
                        continue;
                    }
                };
                skip.insert(name.clone());
                let path = pg_wal.join(&name);
                let dir = &dir;
                inflight.push(async move {
                    let result = push_claimed(repo, dir, &path, &name, found, expected).await;
                    drop(claim);
                    (name, result)
                });
            }
        }
        let Some((name, result)) = (if inflight.is_empty() { None } else { inflight.next().await }) else {
            if idle_since.elapsed() >= IDLE_EXIT {
                break;
            }
            tokio::time::sleep(POLL).await;
            continue;
        };
        idle_since = Instant::now();
        match result {
            Ok(pushed) => {
                if let Some((day, ext)) = &pushed.stored_at {
                    index.record(*day, &name, ext);
                    stats.pushed += 1;
                } else {
                    stats.duplicates += 1;
                }
                tracing::info!(
                    "archived {name} ahead ({} -> {} bytes{})",
                    pushed.outcome.bytes_in,
                    pushed.outcome.bytes_out,
                    if pushed.outcome.duplicate { ", identical copy already archived" } else { "" }
                );
            }
            // Left to PostgreSQL's own call, which reports it.
            Err(e) => {
                stats.failed += 1;
                tracing::warn!("{name} not pushed ahead: {e}");
            }
        }
    }
    index.save();
    Ok(stats)
}

/// Push one claimed file and write its marker before the claim is released.
async fn push_claimed(
    repo: &Repo,
    dir: &Path,
    path: &Path,
    name: &str,
    found: Option<crate::ops::repo::wal_index::Found>,
    expected: crate::ops::repo::identity::ClusterInfo,
) -> Result<crate::ops::archive::push::Pushed> {
    let (data, meta) = read_unchanged(path).await?;
    let pushed = crate::ops::archive::push::push_one(repo, path, name, Some(data), None, found, Some(expected)).await?;
    mark_done(dir, name, &meta)?;
    if let Some((day, ext)) = &pushed.stored_at {
        crate::ops::repo::summary::wal_pushed(repo, dir.parent(), &repo.layout.wal_key(*day, name, ext), name).await;
    }
    Ok(pushed)
}

/// Read a whole file with its identity, checking it did not change while it was read.
async fn read_unchanged(path: &Path) -> Result<(Bytes, std::fs::Metadata)> {
    let path = path.to_path_buf();
    crate::ops::repo::blocking(move || {
        let (data, before) = crate::ops::archive::push::read_file(&path)?;
        let after = std::fs::metadata(&path).with_path(&path)?;
        if file_identity(&before) != file_identity(&after) {
            return Err(Error::Invalid(format!("{}: changed while it was read", path.display())));
        }
        Ok((Bytes::from(data), before))
    })
    .await
}

/// Remove markers of files that are no longer waiting (archived by PostgreSQL's own call,
/// or gone) and claims of processes that died.
fn remove_stale_markers(dir: &Path, pg_wal: &Path) {
    let status = pg_wal.join("archive_status");
    if let Ok(entries) = std::fs::read_dir(dir.join("done")) {
        for e in entries.flatten() {
            let name = e.file_name();
            let waiting = status.join(format!("{}.ready", name.to_string_lossy())).exists();
            if !waiting {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("claim")) {
        for e in entries.flatten() {
            if !PidFile::held(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
