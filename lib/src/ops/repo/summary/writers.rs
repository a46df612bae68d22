//! The writers' side of the summary: wal-push (throttled through a stamp file in its cache
//! directory), base-backup, verify, and the recount of prune and verify.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    BackupBrief, Repo, Result, TimelineSummary, VerificationSummary, VerifyProgress, WAL_WRITE_INTERVAL, best_effort,
    update,
};
use crate::ops::repo::catalog::BackupMetadata;
use crate::wal::WalFileName;

/// wal-push stored WAL object `key` (file `name`). Writes the summary when the last write is
/// older than [`WAL_WRITE_INTERVAL`], or the object opens a new day partition or timeline;
/// otherwise only counts it in `cache_dir` (no request). Never fails the push.
pub async fn wal_pushed(repo: &Repo, cache_dir: Option<&Path>, key: &str, name: &str) {
    let now = Utc::now();
    let stamp_path = cache_dir.map(|d| stamp_path(d, repo));
    let mut stamp = stamp_path.as_deref().and_then(read_stamp).unwrap_or_default();
    stamp.pending += 1;
    let day = |k: &str| repo.layout.parse_wal_key(k).map(|w| w.day);
    let tli = WalFileName::parse(name).map(|w| w.tli()).ok();
    let due = stamp.written_at.is_none_or(|t| now - t >= WAL_WRITE_INTERVAL || t > now)
        || stamp.newest_key.as_deref().is_none_or(|k| day(k) != day(key))
        || stamp.timeline != tli
        || name.ends_with(".history");
    if due {
        let pushes = stamp.pending;
        match update(repo, |s| s.wal_stored(key, name, now, pushes)).await {
            Ok(()) => stamp = Stamp { written_at: Some(now), pending: 0, newest_key: Some(key.into()), timeline: tli },
            Err(e) => {
                // Tried again after the interval, not on every push (a policy that forbids the
                // write would otherwise cost two requests per segment).
                (stamp.written_at, stamp.newest_key, stamp.timeline) = (Some(now), Some(key.into()), tli);
                tracing::warn!("the repository summary was not updated after {name}: {e}");
            }
        }
    }
    if let Some(path) = stamp_path
        && let Ok(text) = serde_json::to_vec(&stamp)
    {
        let _ = crate::fsutil::write_atomic(&path, &text, false);
    }
}

/// What wal-push remembers between calls about the summary it last wrote.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stamp {
    written_at: Option<DateTime<Utc>>,
    pending: u64,
    newest_key: Option<String>,
    timeline: Option<u32>,
}

fn stamp_path(cache_dir: &Path, repo: &Repo) -> PathBuf {
    crate::ops::repo::local::summary_stamp_file(cache_dir, &repo.url, repo.layout.env())
}

fn read_stamp(path: &Path) -> Option<Stamp> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// base-backup finished `b`: one more backup, the newest.
pub async fn backup_added(repo: &Repo, b: &BackupMetadata) {
    // A summary that never counted the backups (backups made before it existed): count them all.
    if !matches!(super::load(repo).await, Ok(Some(s)) if s.backups.is_some()) {
        match crate::ops::repo::catalog::backups(repo).await {
            Ok(all) => best_effort(repo, "the backup", |s| s.set_backups(&all)).await,
            Err(e) => tracing::warn!("the repository summary was not updated after the backup: {e}"),
        }
        return;
    }
    best_effort(repo, "the backup", |s| {
        let mut all = s.backups.take().unwrap_or_default();
        all.count += 1;
        all.stored_bytes += b.stored_bytes;
        all.oldest.get_or_insert_with(|| BackupBrief::of(b));
        all.newest = Some(BackupBrief::of(b));
        match b.backup_type.is_full() {
            true => all.newest_full = Some(BackupBrief::of(b)),
            false => all.newest_incremental = Some(BackupBrief::of(b)),
        }
        s.backups = Some(all);
    })
    .await;
}

/// verify wrote its report at `key`; recount everything while at it (verify lists anyway).
pub async fn verified(
    repo: &Repo,
    key: &str,
    status: &str,
    time_to_recover: Option<f64>,
    at: DateTime<Utc>,
    progress: VerifyProgress,
) {
    let v = VerificationSummary {
        key: key.to_string(),
        timestamp: at,
        status: status.to_string(),
        time_to_recover_seconds: time_to_recover,
    };
    best_effort(repo, "verify", |s| {
        s.verification = Some(v);
        s.verify = progress;
    })
    .await;
    recount(repo).await;
}

/// Count everything again from a full listing (prune and verify, which list anyway): the
/// backups, the WAL objects and each timeline's first and newest segment. What a writer
/// stored meanwhile is kept (newest values are maxima). Never fails the caller.
pub async fn recount(repo: &Repo) {
    if let Err(e) = recount_inner(repo).await {
        tracing::warn!("the repository summary was not recounted: {e}");
    }
}

async fn recount_inner(repo: &Repo) -> Result<()> {
    let backups = crate::ops::repo::catalog::backups(repo).await?;
    let seg_size = backups.first().map_or(16 << 20, |b| b.wal_segment_size);
    let mut index = crate::ops::repo::wal_index::WalIndex::load(None, repo);
    let archive = crate::ops::repo::catalog::WalArchive::load(repo, &mut index, seg_size).await?;
    let tls = crate::ops::repo::timelines::overview(repo, &archive).await?;
    let newest_key = archive.files.values().max().cloned();
    let newest_at = tls.iter().filter_map(|t| t.last_archived_at).max();
    update(repo, |s| {
        s.set_backups(&backups);
        let w = &mut s.wal;
        w.files = archive.files.len() as u64;
        if newest_key.as_deref() > w.newest_key.as_deref() {
            w.newest_key = newest_key;
            w.newest_archived_at = newest_at;
        }
        let mut timelines = BTreeMap::new();
        for t in &tls {
            let mut one = TimelineSummary {
                first_segment: t.first_segment.clone(),
                first_archived_at: t.first_archived_at,
                last_segment: t.last_segment.clone(),
                last_archived_at: t.last_archived_at,
                began_at: t.began_at,
                parent: t.parent,
                switchpoint: t.switchpoint,
            };
            if let Some(seen) = w.timelines.get(&t.timeline)
                && seen.last_segment > one.last_segment
            {
                one.last_segment.clone_from(&seen.last_segment);
                one.last_archived_at = seen.last_archived_at;
            }
            timelines.insert(t.timeline, one);
        }
        w.timelines = timelines;
    })
    .await
}
