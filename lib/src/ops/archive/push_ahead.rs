//! Push-ahead: while PostgreSQL's archiver calls `wal-push` for one file at a time, a helper
//! process archives the rest of the `.ready` backlog in parallel, so that a backlog drains on
//! every core and the archiver's later calls return at once.
//!
//! The helper starts itself (a `wal-push` call that sees other `.ready` files spawns it,
//! detached) and stops when the backlog has been idle for [`IDLE_EXIT`]. Its state lives in
//! `<cache>/push-<repository hash>/` ([`crate::ops::repo::local::push_ahead_dir`]):
//!
//! - `.lock`: the helper's [`PidFile`]: one helper per repository and environment.
//! - `claim/NAME` and `done/NAME`: who pushes a file now, and what was stored
//!   ([`crate::ops::archive::claims`]).
//!
//! A lost or stale marker costs a second push of the same file (an identical duplicate, which
//! wal-push accepts); a marker can never stand for content that was not stored.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::error::IoContext;
use crate::fsutil::PidFile;
use crate::ops::Repo;
use crate::ops::archive::claims;
use crate::ops::repo::local;
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::WalFileName;
use crate::{Error, Result};

/// The helper exits once no `.ready` file has been waiting for this long.
pub const IDLE_EXIT: Duration = Duration::from_secs(2);
/// How often the helper looks at `archive_status` while idle.
const POLL: Duration = Duration::from_millis(20);
/// The helper exits after this long even with work left; the next call starts a new one.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// True while a live helper holds `dir`'s lock.
pub fn helper_running(dir: &Path) -> bool {
    PidFile::held(&local::lock_file(dir))
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
    let dir = local::push_ahead_dir(cache_dir, &repo.url, repo.layout.env());
    for sub in [local::claims_dir(&dir), local::done_dir(&dir)] {
        crate::fsutil::create_private_dir_all(&sub).with_path(&sub)?;
    }
    let mut stats = HelperStats::default();
    let Some(_lock) = PidFile::acquire(&local::lock_file(&dir)) else { return Ok(stats) };
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
                if skip.contains(&name) || local::done_dir(&dir).join(&name).exists() {
                    continue;
                }
                let Some(claim) = PidFile::acquire(&local::claims_dir(&dir).join(&name)) else { continue };
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
                    let result = push_claimed(repo, (cache_dir, dir), &path, &name, found, expected).await;
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
    (cache_dir, dir): (&Path, &Path),
    path: &Path,
    name: &str,
    found: Option<crate::ops::repo::wal_index::Found>,
    expected: crate::ops::repo::identity::ClusterInfo,
) -> Result<crate::ops::archive::push::Pushed> {
    let (data, meta) = read_unchanged(path).await?;
    let pushed = crate::ops::archive::push::push_one(repo, path, name, Some(data), None, found, Some(expected)).await?;
    claims::mark_done(dir, name, &meta)?;
    if let Some((day, ext)) = &pushed.stored_at {
        crate::ops::repo::summary::wal_pushed(repo, Some(cache_dir), &repo.layout.wal_key(*day, name, ext), name).await;
    }
    Ok(pushed)
}

/// Read a whole file with its identity, checking it did not change while it was read.
async fn read_unchanged(path: &Path) -> Result<(Bytes, std::fs::Metadata)> {
    let path = path.to_path_buf();
    crate::ops::repo::blocking(move || {
        let (data, before) = crate::ops::archive::push::read_file(&path)?;
        let after = std::fs::metadata(&path).with_path(&path)?;
        if claims::file_identity(&before) != claims::file_identity(&after) {
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
    if let Ok(entries) = std::fs::read_dir(local::done_dir(dir)) {
        for e in entries.flatten() {
            let name = e.file_name();
            let waiting = status.join(format!("{}.ready", name.to_string_lossy())).exists();
            if !waiting {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(local::claims_dir(dir)) {
        for e in entries.flatten() {
            if !PidFile::held(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
