//! `walvault list`: backups and the recoverable window per timeline.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, BackupMetadata, WalArchive};
use crate::ops::repo::timelines::{self, TimelineInfo};
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::Lsn;

/// What `walvault list` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The environment listed (`WALVAULT_ENV`).
    pub env: String,
    pub backups: Vec<BackupMetadata>,
    pub windows: Vec<Window>,
    /// With no backup here: the other environments the repository holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_envs: Vec<String>,
    /// Every timeline with its parent, switchpoint and the window of its own files.
    pub timelines: Vec<TimelineInfo>,
}

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

/// Backups and windows.
///
/// # Errors
/// Storage failures, unreadable metadata or history files.
pub async fn list(repo: &Repo) -> Result<Listing> {
    let backups = catalog::backups(repo).await?;
    // The backups' segment size (WAL alone: PostgreSQL's default, as status assumes).
    let seg_size = backups.first().map_or(16 << 20, |b| b.wal_segment_size);
    let mut index = WalIndex::load(None, repo);
    let archive = WalArchive::load(repo, &mut index, seg_size).await?;
    let windows = self::windows(repo, &backups, &archive).await?;
    let timelines = timelines::overview(repo, &archive).await?;
    let env = repo.layout.env().to_string();
    let other_envs = match backups.is_empty() {
        true => crate::ops::repo::envs::environments(repo).await?.into_iter().filter(|e| *e != env).collect(),
        false => Vec::new(),
    };
    Ok(Listing { env, backups, windows, other_envs, timelines })
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

/// Bytes in human units: `1.6 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// The listing as tables that fit a terminal.
pub fn render(l: &Listing) -> String {
    let mut out = String::new();
    if l.backups.is_empty() {
        out.push_str(&format!("no complete backups in environment {}\n", l.env));
        if let Some(hint) = crate::ops::repo::envs::hint(&l.env, &l.other_envs) {
            out.push_str(&format!("{hint}\n"));
        }
    } else {
        out.push_str(&format!(
            "{:<40} {:<19} {:<19} {:>3} {:>12} {:>12} {:>10} {:>10}\n",
            "BACKUP", "STARTED (UTC)", "STOPPED (UTC)", "TL", "START LSN", "STOP LSN", "SIZE", "STORED"
        ));
        for b in &l.backups {
            out.push_str(&format!(
                "{:<40} {:<19} {:<19} {:>3} {:>12} {:>12} {:>10} {:>10}\n",
                b.name,
                b.start_time.format("%Y-%m-%d %H:%M:%S"),
                b.stop_time.format("%Y-%m-%d %H:%M:%S"),
                b.timeline,
                b.start_lsn.to_string(),
                b.stop_lsn.to_string(),
                human_bytes(b.bytes),
                human_bytes(b.stored_bytes)
            ));
        }
    }
    out.push_str("\nRECOVERABLE WINDOW\n");
    if l.windows.is_empty() {
        out.push_str("none: no backup has the WAL it needs to be consistent\n");
    }
    for w in &l.windows {
        let latest = w.latest.map_or("?".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        out.push_str(&format!(
            "timeline {}: from {} (backup {}) to about {} UTC (WAL to {}, segment {}){}\n",
            w.timeline,
            w.earliest.format("%Y-%m-%d %H:%M:%S"),
            w.earliest_backup,
            latest,
            w.wal_ends_at,
            w.last_segment,
            w.gap.as_ref().map_or(String::new(), |g| format!("; GAP: {g} is missing"))
        ));
    }
    out.push_str(&timelines::render(&l.timelines));
    out
}
