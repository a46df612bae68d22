//! The recoverable window per timeline: from the oldest backup the archive makes consistent on
//! it to the end of the timeline's unbroken chain. Shown by `list` and `status`, checked by
//! `verify`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Repo;
use super::catalog::{BackupMetadata, WalArchive};
use crate::Result;
use crate::wal::Lsn;

/// The span one can restore to on a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub timeline: u32,
    /// The earliest consistent point: the oldest backup's end whose WAL is all there.
    pub earliest: DateTime<Utc>,
    pub earliest_backup: String,
    /// When the last segment of the unbroken chain was archived (the newest point is before it).
    pub latest: Option<DateTime<Utc>>,
    pub wal_ends_at: Lsn,
    pub last_segment: String,
    /// The first missing WAL file when later ones exist.
    pub gap: Option<String>,
}

/// The recoverable window per timeline: from the oldest backup that the archive makes
/// consistent on it to the end of the timeline's unbroken chain. Every timeline that passes
/// through a backup's start has its own window (a side branch never hides its parent).
///
/// # Errors
/// Storage failures, missing or unreadable history files.
pub async fn windows(repo: &Repo, backups: &[BackupMetadata], archive: &WalArchive) -> Result<Vec<Window>> {
    let mut windows: Vec<Window> = Vec::new();
    for b in backups {
        for tli in archive.timelines.through_point(b.timeline, b.start_lsn, archive.seg_size) {
            if windows.iter().all(|w| w.timeline != tli) {
                windows.extend(window(repo, archive, b, tli).await?);
            }
        }
    }
    windows.sort_by_key(|w| w.timeline);
    Ok(windows)
}

/// The window of timeline `tli` from backup `b`, if the archive makes `b` consistent on it.
async fn window(repo: &Repo, archive: &WalArchive, b: &BackupMetadata, tli: u32) -> Result<Option<Window>> {
    let end = archive.end_on(repo, b, tli).await?;
    if end.last_lsn < b.stop_lsn {
        return Ok(None);
    }
    Ok(Some(Window {
        timeline: tli,
        earliest: b.stop_time,
        earliest_backup: b.name.clone(),
        latest: end.last_archived_at,
        wal_ends_at: end.last_lsn,
        last_segment: end.last_segment,
        gap: end.gap,
    }))
}
