//! The WAL half of `walvault verify` (and of `status`): every backup's chain from its start
//! to the newest archived file, the history file of every timeline, the recoverable window.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;
use crate::ops::Repo;
use crate::ops::repo::catalog::{BackupMetadata, WalArchive};
use crate::ops::repo::timelines::{self, TimelineInfo};
use crate::ops::repo::windows::{self, Window};
use crate::ops::verify::Check;
use crate::wal::WalFileName;

/// What the archive holds, as the report shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalResult {
    /// Objects in the archive (segments, history, backup-history and partial files).
    pub files: usize,
    pub segments: usize,
    pub timelines: Vec<u32>,
    /// Each timeline with its parent, switchpoint and the window of its own files.
    pub timeline_details: Vec<TimelineInfo>,
    /// The newest segment: highest timeline, then highest segment number.
    pub newest_segment: Option<String>,
    /// When it was stored (the object's modification time).
    pub newest_archived_at: Option<DateTime<Utc>>,
    /// First missing file of each broken chain.
    pub gaps: Vec<String>,
    pub missing_history: Vec<String>,
}

/// The WAL checks with what they found.
pub struct WalCheck {
    pub checks: Vec<Check>,
    pub result: WalResult,
    pub windows: Vec<Window>,
}

/// Check the archive for every backup in `backups` (oldest first).
///
/// # Errors
/// Storage failures only: everything the archive lacks is a failed check.
pub async fn check_wal(repo: &Repo, archive: &WalArchive, backups: &[BackupMetadata]) -> Result<WalCheck> {
    let mut checks = Vec::new();
    let mut result = WalResult { files: archive.files.len(), ..WalResult::default() };
    let mut tlis = BTreeSet::new();
    for name in archive.files.keys() {
        if let Ok(w) = WalFileName::parse(name) {
            tlis.insert(w.tli());
            result.segments += usize::from(w.is_segment());
        }
    }
    result.timelines = tlis.iter().copied().collect();
    (result.newest_segment, result.newest_archived_at) = archive.newest_segment(repo).await?;
    checks.push(check_history(repo, archive, &tlis, &mut result).await?);
    let started = Instant::now();
    result.timeline_details = timelines::overview(repo, archive).await?;
    if !result.timeline_details.is_empty() {
        let each: Vec<String> = result.timeline_details.iter().map(timelines::describe).collect();
        checks.push(Check::passed("timelines", each.join("; "), started));
    }
    for b in backups {
        let check = check_chain(repo, archive, b, &mut result).await?;
        checks.push(check);
    }
    let started = Instant::now();
    let windows = match windows::windows(repo, backups, archive).await {
        Ok(w) => w,
        Err(e) if matches!(e, crate::Error::Storage { .. }) => return Err(e),
        Err(e) => {
            checks.push(Check::failed("recoverable window", e.to_string(), None, started));
            Vec::new()
        }
    };
    if !backups.is_empty() && windows.is_empty() {
        let why = "no backup has the WAL it needs to be consistent: nothing can be restored";
        checks.push(Check::failed("recoverable window", why, None, started));
    } else if !windows.is_empty() {
        let spans: Vec<String> = windows.iter().map(describe_window).collect();
        checks.push(Check::passed("recoverable window", spans.join("; "), started));
    }
    Ok(WalCheck { checks, result, windows })
}

fn describe_window(w: &Window) -> String {
    let latest = w.latest.map_or("?".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
    format!("timeline {}: {} to about {latest} UTC", w.timeline, w.earliest.format("%Y-%m-%d %H:%M:%S"))
}

/// Every timeline above 1 that has WAL (or is an ancestor of one that has) needs its history
/// file, and every history file must decode.
async fn check_history(
    repo: &Repo,
    archive: &WalArchive,
    tlis: &BTreeSet<u32>,
    result: &mut WalResult,
) -> Result<Check> {
    let started = Instant::now();
    let mut wanted: BTreeSet<u32> = tlis.iter().copied().filter(|t| *t > 1).collect();
    let mut checked = BTreeSet::new();
    let mut problems: Vec<(String, Option<String>)> = Vec::new();
    while let Some(tli) = wanted.pop_last() {
        if !checked.insert(tli) {
            continue;
        }
        let name = WalFileName::History { tli }.to_string();
        if !archive.files.contains_key(&name) {
            result.missing_history.push(name.clone());
            problems.push((format!("timeline {tli} needs the history file {name}, which is missing"), Some(name)));
            continue;
        }
        match archive.history(repo, tli) {
            Ok(entries) => wanted.extend(entries.iter().map(|e| e.tli).filter(|t| *t > 1 && !checked.contains(t))),
            Err(e @ crate::Error::Storage { .. }) => return Err(e),
            Err(e) => problems.push((e.to_string(), archive.files.get(&name).cloned())),
        }
    }
    if let Some((_, object)) = problems.first() {
        let detail: Vec<&str> = problems.iter().map(|(why, _)| why.as_str()).collect();
        return Ok(Check::failed("timeline history", detail.join("; "), object.clone(), started));
    }
    let detail = if checked.is_empty() {
        "timeline 1 only: no history files needed".to_string()
    } else {
        let names: Vec<String> = checked.iter().map(|t| WalFileName::History { tli: *t }.to_string()).collect();
        format!("present and readable: {}", names.join(", "))
    };
    Ok(Check::passed("timeline history", detail, started))
}

/// From the backup's start along the newest timeline that descends from it, as far as the
/// archive is unbroken: it must reach the backup's end (consistency) and have no gap.
async fn check_chain(repo: &Repo, archive: &WalArchive, b: &BackupMetadata, result: &mut WalResult) -> Result<Check> {
    let started = Instant::now();
    let name = format!("wal chain from {}", b.name);
    let seg = b.wal_segment_size;
    let end = match archive.end_from_backup(repo, b).await {
        Ok(end) => end,
        Err(e @ crate::Error::Storage { .. }) => return Err(e),
        Err(e) => return Ok(Check::failed(&name, e.to_string(), None, started)),
    };
    if let Some(gap) = &end.gap
        && !result.gaps.contains(gap)
    {
        result.gaps.push(gap.clone());
    }
    if end.last_lsn < b.stop_lsn {
        let missing = end
            .gap
            .clone()
            .unwrap_or_else(|| WalFileName::from_segno(b.timeline, end.last_lsn.segment_number(seg), seg).to_string());
        let why = format!(
            "backup {} cannot be made consistent: WAL file {missing} is missing (the backup needs WAL up to {}, the archive reaches {})",
            b.name, b.stop_lsn, end.last_lsn
        );
        return Ok(Check::failed(&name, why, Some(missing), started));
    }
    if let Some(gap) = end.gap {
        let why = format!(
            "gap: WAL file {gap} is missing while later WAL exists; recovery from {} stops at {} on timeline {}",
            b.name, end.last_lsn, end.timeline
        );
        return Ok(Check::failed(&name, why, Some(gap), started));
    }
    let detail = format!("reaches {} (segment {}) on timeline {}", end.last_lsn, end.last_segment, end.timeline);
    Ok(Check::passed(&name, detail, started))
}
