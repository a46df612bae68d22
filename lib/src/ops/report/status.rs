//! `walvault status`: archive health for the RPO, read from the repository only (so it runs
//! from its own CronJob), plus the local `.ready` backlog when given PGDATA. Thresholds turn
//! into problems, problems into the exit code; [`prometheus`] renders the same numbers for
//! node_exporter's textfile collector.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::ops::Repo;
use crate::ops::repo::catalog::{self, WalArchive};
use crate::ops::repo::human::human_bytes;
use crate::ops::repo::human::{human_age, human_duration, human_time, seconds};
use crate::ops::repo::timelines::{self, TimelineInfo};
use crate::ops::repo::wal_index::WalIndex;
use crate::ops::repo::windows::{self, Window};
use crate::wal::WalFileName;
use crate::{Error, Result};

pub use super::facts::{BackupHealth, StatusOptions, VerificationHealth, WalHealth};
use super::facts::{Facts, newest_report, read_report};
pub use super::prometheus::prometheus;

/// Archive health.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub env: String,
    pub repository: String,
    pub now: DateTime<Utc>,
    pub healthy: bool,
    pub problems: Vec<String>,
    pub wal: WalHealth,
    pub backups: BackupHealth,
    pub recoverable_window: Vec<Window>,
    /// Every timeline with the window of its own files.
    pub timelines: Vec<TimelineInfo>,
    /// Timelines being written at once (empty normally; two or more is a problem).
    pub live_branches: Vec<u32>,
    pub verification: Option<VerificationHealth>,
    pub ready: Option<ReadyHealth>,
    pub max_wal_age_seconds: Option<f64>,
    pub max_backup_age_seconds: Option<f64>,
    pub max_verify_age_seconds: Option<f64>,
    /// Where the numbers come from: `summary` (the repository summary and the newest day
    /// partition; gaps are verify's to find) or `listing` (the whole archive, `--full`).
    pub source: &'static str,
    /// Requests this run sent to the repository.
    pub requests: crate::storage::RequestStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadyHealth {
    pub pgdata: String,
    pub files: u64,
    pub oldest_age_seconds: Option<f64>,
}

/// Read the repository (and PGDATA's archive status) and judge it: from the repository
/// summary and the newest day partition (a few requests, [`super::quick`]), or with `full`
/// (or without a usable summary) from a listing of everything, which also finds gaps.
///
/// # Errors
/// Storage failures (the repository cannot be read: that is an error, not a problem, so the
/// exit code tells "unreachable" from "stale"); a PGDATA without `pg_wal/archive_status`.
pub async fn status(repo: &Repo, opts: &StatusOptions) -> Result<Status> {
    if !opts.full {
        match crate::ops::repo::summary::load(repo).await {
            // Backups made before the summary existed are counted by the next base-backup,
            // prune or verify; until then the listing tells.
            Ok(Some(summary)) if summary.backups.is_some() => {
                return judge(repo, opts, super::quick::facts(repo, opts, summary).await?);
            }
            Ok(_) => tracing::info!("no repository summary with the backups yet: listing the whole archive"),
            Err(e @ Error::Storage { .. }) => return Err(e),
            Err(e) => tracing::warn!("{e}: listing the whole archive instead"),
        }
    }
    judge(repo, opts, full(repo).await?)
}

/// Everything, from a listing of the whole archive.
async fn full(repo: &Repo) -> Result<Facts> {
    let backups = catalog::backups(repo).await?;
    let seg_size = backups.first().map_or(16 << 20, |b| b.wal_segment_size);
    let mut index = WalIndex::load(None, repo);
    let archive = WalArchive::load(repo, &mut index, seg_size).await?;
    let tls = timelines::overview(repo, &archive).await?;
    let (newest, archived_at, followed) = match timelines::written_most_recently(&tls) {
        Some(t) => (t.last_segment.clone(), t.last_archived_at, Some(t.timeline)),
        None => {
            let (newest, at) = archive.newest_segment(repo).await?;
            (newest, at, None)
        }
    };
    let mut wal = WalHealth {
        files: archive.files.len(),
        timeline: followed,
        newest_segment: newest,
        newest_archived_at: archived_at,
        age_seconds: None,
        gaps: Vec::new(),
    };
    let mut window_problems = Vec::new();
    let windows = match windows::windows(repo, &backups, &archive).await {
        Ok(w) => w,
        Err(e @ Error::Storage { .. }) => return Err(e),
        Err(e) => {
            window_problems.push(format!("cannot follow the WAL chain: {e}"));
            Vec::new()
        }
    };
    for w in &windows {
        if let Some(gap) = &w.gap {
            window_problems.push(format!("WAL gap on timeline {}: {gap} is missing", w.timeline));
            wal.gaps.push(gap.clone());
        }
    }
    let last = backups.last();
    let backup = BackupHealth {
        count: backups.len(),
        newest: last.map(|b| b.name.clone()),
        newest_stop_time: last.map(|b| b.stop_time),
        age_seconds: None,
        newest_duration_seconds: last.map(|b| b.seconds),
        newest_stored_bytes: last.map(|b| b.stored_bytes),
        stored_bytes: backups.iter().map(|b| b.stored_bytes).sum(),
        newest_full: backups.iter().rfind(|b| b.backup_type.is_full()).map(|b| (b.name.clone(), b.stop_time)),
        newest_incremental: backups.iter().rfind(|b| !b.backup_type.is_full()).map(|b| (b.name.clone(), b.stop_time)),
    };
    let verification = last_verification(repo).await?;
    Ok(Facts { wal, timelines: tls, windows, window_problems, backups: backup, verification, source: "listing" })
}

/// Ages, thresholds and problems.
fn judge(repo: &Repo, opts: &StatusOptions, f: Facts) -> Result<Status> {
    let Facts { mut wal, timelines: tls, windows, window_problems, mut backups, mut verification, source } = f;
    let mut problems = Vec::new();
    let archived_at = wal.newest_archived_at;
    wal.age_seconds = archived_at.map(|t| seconds(opts.now - t));
    match (&wal.newest_segment, archived_at, opts.max_wal_age) {
        (None, _, _) => problems.push("no WAL segment in the archive".to_string()),
        (Some(n), Some(at), Some(max)) if opts.now - at > max => problems.push(format!(
            "newest WAL {n} was archived {} ago, more than --max-wal-age {}",
            human_age(opts.now - at),
            human_duration(max)
        )),
        _ => {}
    }
    let live = timelines::live_branches(&tls, opts.now, opts.max_wal_age.unwrap_or(TimeDelta::hours(1)));
    problems.extend(timelines::live_branches_problem(&tls, &live, opts.now));
    problems.extend(window_problems);
    backups.age_seconds = backups.newest_stop_time.map(|t| seconds(opts.now - t));
    match (&backups.newest, backups.newest_stop_time, opts.max_backup_age) {
        (None, _, _) => problems.push("no complete base backup".to_string()),
        (Some(b), Some(at), Some(max)) if opts.now - at > max => problems.push(format!(
            "newest backup {b} finished {} ago, more than --max-backup-age {}",
            human_age(opts.now - at),
            human_duration(max)
        )),
        (Some(_), _, _) if windows.is_empty() => {
            problems.push("no backup has the WAL it needs to be consistent: nothing can be restored".to_string());
        }
        _ => {}
    }
    if let Some(v) = verification.as_mut() {
        v.age_seconds = seconds(opts.now - v.timestamp);
    }
    match (&verification, opts.max_verify_age) {
        (Some(v), _) if v.status != "passed" => {
            problems.push(format!("the last verification ({}) {}", human_time(v.timestamp), v.status));
        }
        (Some(v), Some(max)) if opts.now - v.timestamp > max => problems.push(format!(
            "the last verification ran {} ago, more than --max-verify-age {}",
            human_age(opts.now - v.timestamp),
            human_duration(max)
        )),
        (None, Some(_)) => problems.push("no verification report".to_string()),
        _ => {}
    }
    let ready = match &opts.pgdata {
        Some(p) => Some(ready_backlog(p, opts.now)?),
        None => None,
    };
    if let (Some(r), Some(max)) = (&ready, opts.max_wal_age)
        && r.oldest_age_seconds.is_some_and(|a| a > seconds(max))
    {
        problems.push(format!(
            "{} WAL files wait to be archived in {}, the oldest for more than --max-wal-age {}",
            r.files,
            r.pgdata,
            human_duration(max)
        ));
    }
    Ok(Status {
        env: repo.layout.env().to_string(),
        repository: repo.url.clone(),
        now: opts.now,
        healthy: problems.is_empty(),
        problems,
        wal,
        backups,
        recoverable_window: windows,
        timelines: tls,
        live_branches: live,
        verification,
        ready,
        max_wal_age_seconds: opts.max_wal_age.map(seconds),
        max_backup_age_seconds: opts.max_backup_age.map(seconds),
        max_verify_age_seconds: opts.max_verify_age.map(seconds),
        source,
        requests: repo.storage.stats(),
    })
}

/// The newest report under `verification_reports/<env>/` (its age is set when judged).
async fn last_verification(repo: &Repo) -> Result<Option<VerificationHealth>> {
    match newest_report(repo).await? {
        Some((timestamp, key)) => read_report(repo, key, timestamp).await.map(Some),
        None => Ok(None),
    }
}

/// `.ready` files in `pg_wal/archive_status`: WAL PostgreSQL has not archived yet.
fn ready_backlog(pgdata: &Path, now: DateTime<Utc>) -> Result<ReadyHealth> {
    let dir = pgdata.join("pg_wal").join("archive_status");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut files = 0;
    let mut oldest: Option<DateTime<Utc>> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(wal) = name.strip_suffix(".ready") else { continue };
        if WalFileName::parse(wal).is_err() {
            continue;
        }
        files += 1;
        if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            let t = DateTime::<Utc>::from(modified);
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
    }
    Ok(ReadyHealth {
        pgdata: pgdata.display().to_string(),
        files,
        oldest_age_seconds: oldest.map(|t| seconds(now - t).max(0.0)),
    })
}

/// The status as lines that fit a terminal.
pub fn render(s: &Status) -> String {
    let verdict = if s.healthy { "HEALTHY" } else { "UNHEALTHY" };
    let mut out = format!("{} ({}) at {} UTC: {verdict}\n", s.env, s.repository, human_time(s.now));
    let ago = |secs: Option<f64>| secs.map_or("?".to_string(), |a| human_age(TimeDelta::seconds(a as i64)));
    let limit = |max: Option<f64>| {
        max.map_or(String::new(), |m| format!(" (limit {})", human_duration(TimeDelta::seconds(m as i64))))
    };
    match &s.wal.newest_segment {
        Some(n) => out.push_str(&format!(
            "WAL     newest {n}{}, archived {} ago{}; {} files\n",
            s.wal.timeline.map_or(String::new(), |t| format!(" (timeline {t}, written most recently)")),
            ago(s.wal.age_seconds),
            limit(s.max_wal_age_seconds),
            s.wal.files
        )),
        None => out.push_str("WAL     none archived\n"),
    }
    match &s.backups.newest {
        Some(n) => out.push_str(&format!(
            "BACKUP  newest {n}, finished {} ago{}; {} backups, {} stored\n",
            ago(s.backups.age_seconds),
            limit(s.max_backup_age_seconds),
            s.backups.count,
            human_bytes(s.backups.stored_bytes)
        )),
        None => out.push_str("BACKUP  none\n"),
    }
    for (what, b) in [("full", &s.backups.newest_full), ("incremental", &s.backups.newest_incremental)] {
        if let Some((n, at)) = b {
            out.push_str(&format!("BACKUP  newest {what} {n}, finished {} UTC\n", human_time(*at)));
        }
    }
    for w in &s.recoverable_window {
        let latest = w.latest.map_or("?".to_string(), human_time);
        out.push_str(&format!("WINDOW  timeline {}: {} to about {latest} UTC\n", w.timeline, human_time(w.earliest)));
    }
    for t in &s.timelines {
        out.push_str(&format!("TIMELINE {}\n", timelines::describe(t)));
    }
    match &s.verification {
        Some(v) => {
            let rto = v.time_to_recover_seconds.map_or(String::new(), |t| format!(", time to recover {t:.0} s"));
            out.push_str(&format!("VERIFY  {} {} ago{rto}\n", v.status, ago(Some(v.age_seconds))));
        }
        None => out.push_str("VERIFY  no report yet\n"),
    }
    if let Some(r) = &s.ready {
        match r.files {
            0 => out.push_str(&format!("READY   no WAL files waiting in {}\n", r.pgdata)),
            n => out.push_str(&format!(
                "READY   {n} WAL files waiting in {}, the oldest {} old\n",
                r.pgdata,
                ago(r.oldest_age_seconds)
            )),
        }
    }
    for p in &s.problems {
        out.push_str(&format!("PROBLEM {p}\n"));
    }
    out
}
