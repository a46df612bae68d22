//! Every timeline the archive holds, as a person needs to see it: its parent and switchpoint
//! (from its history file) and the window of its own files (first and last segment, when
//! each was archived). Which timeline is being written most recently, and whether two are
//! being written at once: two live branches, such as a restored server archiving into the
//! repository beside the primary, or a split brain.
//!
//! A timeline is written from when it began (its history file was archived; for a timeline
//! without one, its first segment) to when its newest segment was archived. Two timelines
//! are live together when those spans overlap: each received a segment after the other
//! began. A promotion that replaces the old server does not overlap: the old timeline's
//! last segment is archived before the new timeline's history file.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::Result;
use crate::ops::Repo;
use crate::ops::repo::catalog::WalArchive;
use crate::ops::repo::human::{human_age, human_time};
use crate::wal::{Lsn, WalFileName};

/// One timeline and the window of its own files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineInfo {
    pub timeline: u32,
    /// The timeline it branched off, from its history file (`None` for timeline 1 or a
    /// timeline whose history file is missing or unreadable).
    pub parent: Option<u32>,
    /// The first LSN that is on this timeline rather than its parent.
    pub switchpoint: Option<Lsn>,
    /// Whether the archive holds its history file (timeline 1 has none).
    pub history_file: bool,
    /// Full segments of this timeline in the archive.
    pub segments: usize,
    pub first_segment: Option<String>,
    pub last_segment: Option<String>,
    /// When its history file was archived: when the timeline began.
    pub began_at: Option<DateTime<Utc>>,
    pub first_archived_at: Option<DateTime<Utc>>,
    /// When its newest segment was archived.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// Taken from the repository summary (`walvault status` without `--full`): `segments` is
    /// estimated from the first and last names, and the parent is known once counted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub summarized: bool,
}

impl TimelineInfo {
    /// When the timeline began to be written: its history file, else its first segment.
    pub fn start(&self) -> Option<DateTime<Utc>> {
        match (self.began_at, self.first_archived_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Every timeline with a segment or a history file in the archive, ascending (a few HEAD
/// requests each, for the times).
///
/// # Errors
/// Storage failures.
pub async fn overview(repo: &Repo, archive: &WalArchive) -> Result<Vec<TimelineInfo>> {
    let mut ids: Vec<u32> = archive.present.iter().map(|&(_, t)| t).collect();
    ids.extend(archive.timelines.ids().filter(|&t| t > 1));
    ids.extend(archive.bad_history.iter().filter_map(|(n, _)| WalFileName::parse(n).ok().map(|w| w.tli())));
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for tli in ids {
        out.push(one(repo, archive, tli).await?);
    }
    Ok(out)
}

async fn one(repo: &Repo, archive: &WalArchive, tli: u32) -> Result<TimelineInfo> {
    let seg = archive.seg_size;
    let own: Vec<u64> = archive.present.iter().filter(|&&(_, t)| t == tli).map(|&(s, _)| s).collect();
    let name = |s: Option<&u64>| s.map(|s| WalFileName::from_segno(tli, *s, seg).to_string());
    let (first_segment, last_segment) = (name(own.first()), name(own.last()));
    let history = WalFileName::History { tli }.to_string();
    let parent = archive.timelines.parent(tli).filter(|_| tli > 1);
    Ok(TimelineInfo {
        timeline: tli,
        parent: parent.map(|(p, _)| p),
        switchpoint: parent.map(|(_, sp)| sp),
        history_file: archive.files.contains_key(&history),
        segments: own.len(),
        began_at: archived_at(repo, archive, Some(&history)).await?,
        first_archived_at: archived_at(repo, archive, first_segment.as_ref()).await?,
        last_archived_at: archived_at(repo, archive, last_segment.as_ref()).await?,
        first_segment,
        last_segment,
        summarized: false,
    })
}

async fn archived_at(repo: &Repo, archive: &WalArchive, name: Option<&String>) -> Result<Option<DateTime<Utc>>> {
    match name.and_then(|n| archive.files.get(n)) {
        Some(key) => Ok(repo.storage.head(key).await?.and_then(|m| m.last_modified)),
        None => Ok(None),
    }
}

/// Whether `a` and `b` were being written at once: each received a segment after the other
/// began.
pub fn overlap(a: &TimelineInfo, b: &TimelineInfo) -> bool {
    let after = |x: &TimelineInfo, y: &TimelineInfo| match (x.last_archived_at, y.start()) {
        (Some(last), Some(start)) => last > start,
        _ => false,
    };
    a.timeline != b.timeline && after(a, b) && after(b, a)
}

/// The timeline written most recently (its newest segment archived last; a tie goes to the
/// higher timeline). The RPO is measured on it.
pub fn written_most_recently(timelines: &[TimelineInfo]) -> Option<&TimelineInfo> {
    timelines.iter().filter(|t| t.last_archived_at.is_some()).max_by_key(|t| (t.last_archived_at, t.timeline))
}

/// Timelines being written at once, now: each received a segment within `recent` of `now`
/// and overlaps another such timeline. Empty when one timeline (or none) is live.
pub fn live_branches(timelines: &[TimelineInfo], now: DateTime<Utc>, recent: TimeDelta) -> Vec<u32> {
    let live: Vec<&TimelineInfo> =
        timelines.iter().filter(|t| t.last_archived_at.is_some_and(|at| now - at <= recent)).collect();
    live.iter().filter(|a| live.iter().any(|b| overlap(a, b))).map(|t| t.timeline).collect()
}

/// The problem line for two (or more) live branches, naming each with its newest segment.
pub fn live_branches_problem(timelines: &[TimelineInfo], live: &[u32], now: DateTime<Utc>) -> Option<String> {
    if live.len() < 2 {
        return None;
    }
    let each: Vec<String> = timelines
        .iter()
        .filter(|t| live.contains(&t.timeline))
        .map(|t| {
            let ago = t.last_archived_at.map_or("?".to_string(), |at| human_age(now - at));
            format!("timeline {} (newest {}, archived {ago} ago)", t.timeline, t.last_segment.as_deref().unwrap_or("?"))
        })
        .collect();
    Some(format!(
        "two timelines are being written at once: {}; a restored server is archiving into this repository beside the primary (a side restore without --archive off, or a split brain): stop the one that is not production, and restore with --target-timeline to choose a branch",
        each.join(" and ")
    ))
}

/// `(labels, value)` samples for Prometheus: when each timeline's newest segment was stored.
pub fn last_archived_samples(timelines: &[TimelineInfo]) -> Vec<(String, f64)> {
    timelines
        .iter()
        .filter_map(|t| {
            let at = t.last_archived_at?;
            Some((format!(",timeline=\"{}\"", t.timeline), at.timestamp_millis() as f64 / 1000.0))
        })
        .collect()
}

/// One line per timeline, for `list`, `status` and `verify`.
pub fn describe(t: &TimelineInfo) -> String {
    let origin = match (t.parent, t.switchpoint) {
        (Some(p), Some(sp)) => format!(" (from timeline {p} at {sp})"),
        _ if t.summarized && t.timeline > 1 => " (parent known after the next verify or prune)".to_string(),
        _ if t.timeline > 1 && !t.history_file => " (history file missing)".to_string(),
        _ if t.timeline > 1 => " (history file unreadable)".to_string(),
        _ => String::new(),
    };
    let at = |x: Option<DateTime<Utc>>| x.map_or("?".to_string(), human_time);
    let files = match (&t.first_segment, &t.last_segment) {
        (Some(first), Some(last)) => format!(
            "{first} to {last} ({}{} segments), archived {} to {} UTC",
            if t.summarized { "about " } else { "" },
            t.segments,
            at(t.first_archived_at),
            at(t.last_archived_at)
        ),
        _ => "no segments".to_string(),
    };
    format!("timeline {}{origin}: {files}", t.timeline)
}

/// The `TIMELINES` section of `list` and `status`.
pub fn render(timelines: &[TimelineInfo]) -> String {
    let mut out = String::from("\nTIMELINES\n");
    if timelines.is_empty() {
        out.push_str("none: no WAL archived\n");
    }
    for t in timelines {
        out.push_str(&describe(t));
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[path = "timelines_tests.rs"]
mod tests;
