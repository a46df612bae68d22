//! `walvault status`: archive health for the RPO, read from the repository only (so it runs
//! from its own CronJob), plus the local `.ready` backlog when given PGDATA. Thresholds turn
//! into problems, problems into the exit code; [`prometheus`] renders the same numbers for
//! node_exporter's textfile collector.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::ops::Repo;
use crate::ops::repo::catalog::{self, WalArchive};
use crate::ops::repo::human::human_bytes;
use crate::ops::repo::human::{human_age, human_duration, human_time, seconds};
use crate::ops::repo::reports::ReportSummary;
use crate::ops::repo::timelines::{self, TimelineInfo};
use crate::ops::repo::wal_index::WalIndex;
use crate::ops::repo::windows::{self, Window};
use crate::wal::WalFileName;
use crate::{Error, Result};

/// Thresholds and options.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub now: DateTime<Utc>,
    /// The RPO: the newest archived WAL may be at most this old.
    pub max_wal_age: Option<TimeDelta>,
    pub max_backup_age: Option<TimeDelta>,
    /// The newest verification report may be at most this old (none: only its result counts).
    pub max_verify_age: Option<TimeDelta>,
    /// Count `pg_wal/archive_status/*.ready` here.
    pub pgdata: Option<PathBuf>,
}

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
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WalHealth {
    pub files: usize,
    /// The timeline written most recently: the RPO is measured on it.
    pub timeline: Option<u32>,
    pub newest_segment: Option<String>,
    pub newest_archived_at: Option<DateTime<Utc>>,
    pub age_seconds: Option<f64>,
    pub gaps: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupHealth {
    pub count: usize,
    pub newest: Option<String>,
    pub newest_stop_time: Option<DateTime<Utc>>,
    pub age_seconds: Option<f64>,
    pub newest_duration_seconds: Option<f64>,
    pub newest_stored_bytes: Option<u64>,
    pub stored_bytes: u64,
    /// The newest full backup, and the newest diff/incr backup, with when they finished.
    pub newest_full: Option<(String, DateTime<Utc>)>,
    pub newest_incremental: Option<(String, DateTime<Utc>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerificationHealth {
    pub key: String,
    pub timestamp: DateTime<Utc>,
    pub status: String,
    pub age_seconds: f64,
    pub time_to_recover_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadyHealth {
    pub pgdata: String,
    pub files: u64,
    pub oldest_age_seconds: Option<f64>,
}

/// Read the repository (and PGDATA's archive status) and judge it.
///
/// # Errors
/// Storage failures (the repository cannot be read: that is an error, not a problem, so the
/// exit code tells "unreachable" from "stale"); a PGDATA without `pg_wal/archive_status`.
pub async fn status(repo: &Repo, opts: &StatusOptions) -> Result<Status> {
    let mut problems = Vec::new();
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
        age_seconds: archived_at.map(|t| seconds(opts.now - t)),
        gaps: Vec::new(),
    };
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
    let windows = match windows::windows(repo, &backups, &archive).await {
        Ok(w) => w,
        Err(e @ Error::Storage { .. }) => return Err(e),
        Err(e) => {
            problems.push(format!("cannot follow the WAL chain: {e}"));
            Vec::new()
        }
    };
    for w in &windows {
        if let Some(gap) = &w.gap {
            problems.push(format!("WAL gap on timeline {}: {gap} is missing", w.timeline));
            wal.gaps.push(gap.clone());
        }
    }
    let last = backups.last();
    let backup = BackupHealth {
        count: backups.len(),
        newest: last.map(|b| b.name.clone()),
        newest_stop_time: last.map(|b| b.stop_time),
        age_seconds: last.map(|b| seconds(opts.now - b.stop_time)),
        newest_duration_seconds: last.map(|b| b.seconds),
        newest_stored_bytes: last.map(|b| b.stored_bytes),
        stored_bytes: backups.iter().map(|b| b.stored_bytes).sum(),
        newest_full: backups.iter().rfind(|b| b.backup_type.is_full()).map(|b| (b.name.clone(), b.stop_time)),
        newest_incremental: backups.iter().rfind(|b| !b.backup_type.is_full()).map(|b| (b.name.clone(), b.stop_time)),
    };
    match (last, opts.max_backup_age) {
        (None, _) => problems.push("no complete base backup".to_string()),
        (Some(b), Some(max)) if opts.now - b.stop_time > max => problems.push(format!(
            "newest backup {} finished {} ago, more than --max-backup-age {}",
            b.name,
            human_age(opts.now - b.stop_time),
            human_duration(max)
        )),
        (Some(_), _) if windows.is_empty() => {
            problems.push("no backup has the WAL it needs to be consistent: nothing can be restored".to_string());
        }
        _ => {}
    }
    let verification = last_verification(repo, opts.now).await?;
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
        backups: backup,
        recoverable_window: windows,
        timelines: tls,
        live_branches: live,
        verification,
        ready,
        max_wal_age_seconds: opts.max_wal_age.map(seconds),
        max_backup_age_seconds: opts.max_backup_age.map(seconds),
        max_verify_age_seconds: opts.max_verify_age.map(seconds),
    })
}

/// The newest report under `verification_reports/<env>/`.
async fn last_verification(repo: &Repo, now: DateTime<Utc>) -> Result<Option<VerificationHealth>> {
    let listing = repo.storage.list(&repo.layout.verification_reports_root(), None, None).await?;
    let newest = listing
        .objects
        .iter()
        .filter_map(|o| repo.layout.parse_verification_report_key(&o.key).map(|t| (t, o.key.clone())))
        .max();
    let Some((_, key)) = newest else { return Ok(None) };
    let bytes = repo.storage.get_bytes(&key).await?;
    let Ok(summary) = serde_json::from_slice::<ReportSummary>(&bytes) else {
        let timestamp = repo.layout.parse_verification_report_key(&key).unwrap_or(now);
        let status = "unreadable".to_string();
        let age_seconds = seconds(now - timestamp);
        return Ok(Some(VerificationHealth { key, timestamp, status, age_seconds, time_to_recover_seconds: None }));
    };
    Ok(Some(VerificationHealth {
        key,
        timestamp: summary.timestamp,
        status: summary.status,
        age_seconds: seconds(now - summary.timestamp),
        time_to_recover_seconds: summary.restore_test.and_then(|r| r.time_to_recover_seconds),
    }))
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

/// The status in Prometheus text format (for node_exporter's textfile collector).
pub fn prometheus(s: &Status) -> String {
    let mut out = String::new();
    let env = escape_label(&s.env);
    let mut metric = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        out.push_str(&format!("# HELP walvault_{name} {help}\n# TYPE walvault_{name} gauge\n"));
        for (labels, v) in samples {
            out.push_str(&format!("walvault_{name}{{env=\"{env}\"{labels}}} {v}\n"));
        }
    };
    let one = |v: Option<f64>| v.map(|v| vec![(String::new(), v)]).unwrap_or_default();
    let ts = |t: Option<DateTime<Utc>>| one(t.map(|t| t.timestamp_millis() as f64 / 1000.0));
    metric(
        "healthy",
        "1 when no threshold is exceeded and nothing is missing",
        one(Some(f64::from(u8::from(s.healthy)))),
    );
    metric("problems", "Problems found (see walvault status)", one(Some(s.problems.len() as f64)));
    metric("wal_files", "Objects in the WAL archive", one(Some(s.wal.files as f64)));
    metric(
        "wal_last_archived_timestamp_seconds",
        "When the newest WAL segment was stored",
        ts(s.wal.newest_archived_at),
    );
    metric("wal_last_archived_age_seconds", "Age of the newest archived WAL segment (RPO)", one(s.wal.age_seconds));
    metric(
        "wal_timeline",
        "The timeline written most recently (the RPO is measured on it)",
        one(s.wal.timeline.map(f64::from)),
    );
    metric(
        "wal_live_branches",
        "Timelines being written at once (0 normally; 2 or more: a restored server archives beside the primary)",
        one(Some(s.live_branches.len() as f64)),
    );
    metric(
        "timeline_last_archived_timestamp_seconds",
        "When the newest segment of each timeline was stored",
        timelines::last_archived_samples(&s.timelines),
    );
    metric("wal_gaps", "Missing WAL files with later WAL archived", one(Some(s.wal.gaps.len() as f64)));
    metric("backups", "Complete base backups", one(Some(s.backups.count as f64)));
    metric("backups_stored_bytes", "Bytes stored by all base backups", one(Some(s.backups.stored_bytes as f64)));
    metric(
        "backup_last_completion_timestamp_seconds",
        "When the newest base backup finished",
        ts(s.backups.newest_stop_time),
    );
    metric("backup_last_age_seconds", "Age of the newest base backup", one(s.backups.age_seconds));
    metric(
        "backup_last_full_completion_timestamp_seconds",
        "When the newest full base backup finished",
        ts(s.backups.newest_full.as_ref().map(|b| b.1)),
    );
    metric(
        "backup_last_incremental_completion_timestamp_seconds",
        "When the newest diff or incr base backup finished",
        ts(s.backups.newest_incremental.as_ref().map(|b| b.1)),
    );
    metric(
        "backup_last_duration_seconds",
        "Wall time of the newest base backup",
        one(s.backups.newest_duration_seconds),
    );
    metric(
        "backup_last_stored_bytes",
        "Bytes stored by the newest base backup",
        one(s.backups.newest_stored_bytes.map(|b| b as f64)),
    );
    let windows = |f: &dyn Fn(&Window) -> Option<DateTime<Utc>>| -> Vec<(String, f64)> {
        s.recoverable_window
            .iter()
            .filter_map(|w| f(w).map(|t| (format!(",timeline=\"{}\"", w.timeline), t.timestamp() as f64)))
            .collect()
    };
    metric(
        "recoverable_window_start_timestamp_seconds",
        "Earliest point restorable, per timeline",
        windows(&|w| Some(w.earliest)),
    );
    metric(
        "recoverable_window_end_timestamp_seconds",
        "About the newest point restorable, per timeline",
        windows(&|w| w.latest),
    );
    if let Some(v) = &s.verification {
        metric("verification_last_timestamp_seconds", "When the newest verification ran", ts(Some(v.timestamp)));
        metric(
            "verification_last_success",
            "1 if the newest verification passed",
            one(Some(f64::from(u8::from(v.status == "passed")))),
        );
        metric(
            "verification_last_time_to_recover_seconds",
            "Time to recover measured by the newest restore test (RTO)",
            one(v.time_to_recover_seconds),
        );
    }
    if let Some(r) = &s.ready {
        metric("wal_ready_files", "WAL files waiting for archive_command", one(Some(r.files as f64)));
        metric(
            "wal_ready_oldest_age_seconds",
            "Age of the oldest WAL file waiting for archive_command",
            // An empty backlog is 0 s old: an alert on this series must see a value.
            one(if r.files == 0 { Some(0.0) } else { r.oldest_age_seconds }),
        );
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
