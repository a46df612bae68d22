//! `walvault status` in three requests: the repository summary (one GET), a listing of what
//! was stored in its newest day partition after the newest segment of each timeline written
//! that day (one LIST, as wal-push writes the summary at most a minute apart and at once for a
//! new day or timeline), and the verification reports' keys (one LIST; a report newer than the
//! summary's, written by an older version or by hand, costs one GET more). The WAL archive is
//! never listed whole: gaps are `walvault verify`'s to find (`status --full` lists everything).

use super::facts::{BackupHealth, Facts, StatusOptions, VerificationHealth, WalHealth};
use crate::Result;
use crate::ops::Repo;
use crate::ops::repo::summary::{self, Summary};
use crate::ops::repo::timelines::{self, TimelineInfo};
use crate::ops::repo::windows::Window;
use crate::wal::{Lsn, WalFileName};

/// The facts from `summary`, brought up to date with the newest day partition(s).
///
/// # Errors
/// Storage failures of the listings.
pub(super) async fn facts(repo: &Repo, opts: &StatusOptions, mut summary: Summary) -> Result<Facts> {
    summary::catch_up(repo, &mut summary, opts.now).await?;
    let seg_size = summary.backups.as_ref().and_then(|b| b.newest.as_ref()).map_or(16 << 20, |b| b.wal_segment_size);
    let tls = timeline_infos(&summary, seg_size);
    let followed = timelines::written_most_recently(&tls);
    let wal = WalHealth {
        files: usize::try_from(summary.wal.files).unwrap_or(usize::MAX),
        timeline: followed.map(|t| t.timeline),
        newest_segment: followed.and_then(|t| t.last_segment.clone()),
        newest_archived_at: followed.and_then(|t| t.last_archived_at),
        age_seconds: None,
        gaps: Vec::new(),
    };
    let b = summary.backups.clone().unwrap_or_default();
    let backups = BackupHealth {
        count: usize::try_from(b.count).unwrap_or(usize::MAX),
        newest: b.newest.as_ref().map(|n| n.name.clone()),
        newest_stop_time: b.newest.as_ref().map(|n| n.stop_time),
        age_seconds: None,
        newest_duration_seconds: b.newest.as_ref().map(|n| n.seconds),
        newest_stored_bytes: b.newest.as_ref().map(|n| n.stored_bytes),
        stored_bytes: b.stored_bytes,
        newest_full: b.newest_full.as_ref().map(|n| (n.name.clone(), n.stop_time)),
        newest_incremental: b.newest_incremental.as_ref().map(|n| (n.name.clone(), n.stop_time)),
    };
    // One window: from the oldest backup, once the archive reaches the WAL file of its end, to
    // the newest segment of the timeline written last (the full listing, `--full`, follows
    // every timeline's chain and finds gaps).
    let segno = |n: &str| WalFileName::parse(n).ok().and_then(|w| w.segno(seg_size));
    let windows = match (b.oldest.as_ref(), followed) {
        (Some(oldest), Some(t))
            if t.last_segment.as_deref().and_then(segno) >= segno(&oldest.stop_wal_file)
                && segno(&oldest.stop_wal_file).is_some() =>
        {
            let last = t.last_segment.clone().unwrap_or_default();
            let end = WalFileName::parse(&last)
                .ok()
                .and_then(|w| w.segno(seg_size))
                .map_or(Lsn(0), |s| Lsn::from_segment(s.saturating_add(1), 0, seg_size));
            vec![Window {
                timeline: t.timeline,
                earliest: oldest.stop_time,
                earliest_backup: oldest.name.clone(),
                latest: t.last_archived_at,
                wal_ends_at: end,
                last_segment: last,
                gap: None,
            }]
        }
        _ => Vec::new(),
    };
    let mut verification = summary.verification.as_ref().map(|v| VerificationHealth {
        key: v.key.clone(),
        timestamp: v.timestamp,
        status: v.status.clone(),
        age_seconds: 0.0,
        time_to_recover_seconds: v.time_to_recover_seconds,
    });
    if let Some((at, key)) = super::facts::newest_report(repo).await?
        && verification.as_ref().is_none_or(|v| v.key != key && at > v.timestamp)
    {
        verification = Some(super::facts::read_report(repo, key, at).await?);
    }
    Ok(Facts { wal, timelines: tls, windows, window_problems: Vec::new(), backups, verification, source: "summary" })
}

/// The summary's timelines as status shows them (segments estimated from the names).
fn timeline_infos(summary: &Summary, seg_size: u64) -> Vec<TimelineInfo> {
    let segno = |n: &Option<String>| n.as_deref().and_then(|n| WalFileName::parse(n).ok()?.segno(seg_size));
    summary
        .wal
        .timelines
        .iter()
        .map(|(&tli, t)| TimelineInfo {
            timeline: tli,
            parent: t.parent,
            switchpoint: t.switchpoint,
            history_file: tli > 1 && (t.began_at.is_some() || t.parent.is_some()),
            segments: match (segno(&t.first_segment), segno(&t.last_segment)) {
                (Some(a), Some(b)) if b >= a => usize::try_from(b - a + 1).unwrap_or(usize::MAX),
                _ => 0,
            },
            first_segment: t.first_segment.clone(),
            last_segment: t.last_segment.clone(),
            began_at: t.began_at,
            first_archived_at: t.first_archived_at,
            last_archived_at: t.last_archived_at,
            summarized: true,
        })
        .collect()
}
