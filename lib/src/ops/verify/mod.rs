//! `walvault verify`: the runbook's weekly backup verification.
//!
//! Every complete backup, database and file storage, is read in full (manifest, then each part
//! decrypted, decompressed and every tar entry hashed against the manifest, nothing written:
//! `verify_backups`), the WAL archive is checked ([`wal`]), and with a restore test ([`restore_test`]) the newest
//! backup is restored, replayed and queried. The report is written to
//! `verification_reports/<env>/verification_YYYYMMDD_HHMMSS.json`. Problems in the repository
//! are failed checks in the report, never errors; errors are for not being able to look
//! (storage unreachable).

mod backups;
mod checks_sql;
pub mod restore_test;
mod restore_types;
pub mod scope;
mod scratch_server;
pub mod wal;
mod wal_content;

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ops::Repo;
use crate::ops::repo::catalog::{self, WalArchive};
use crate::ops::repo::files_catalog;
use crate::ops::repo::human;
pub use crate::ops::repo::reports::ReportSummary;
use crate::ops::repo::windows::Window;
use crate::{Error, Result};
use restore_test::{RestoreTestOptions, RestoreTestResult};
use wal::WalResult;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The report's time (the clock, or `--now` in drills).
    pub now: DateTime<Utc>,
    /// Parts read at once.
    pub jobs: usize,
    /// Write the report into the repository.
    pub write_report: bool,
    pub restore_test: Option<RestoreTestOptions>,
    /// `--backup NAME|latest|all` (default: what is new, the newest, older ones in the budget).
    pub which: scope::Which,
    /// Read every backup and check every WAL object's content again.
    pub full: bool,
    /// Stored bytes to read this run: new backups and the newest always, then older ones
    /// (read longest ago first) while the total stays within it.
    pub max_bytes: Option<u64>,
}

/// The verification report (the runbook's `verification_*.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub timestamp: DateTime<Utc>,
    pub env: String,
    pub repository: String,
    /// `passed` or `failed`.
    pub status: String,
    pub checks: Vec<Check>,
    pub backups: Vec<BackupResult>,
    pub wal: WalResult,
    pub restore_test: Option<RestoreTestResult>,
    pub recoverable_window: Vec<Window>,
    /// What this run read and what is due.
    pub scope: scope::Scope,
    pub duration_seconds: f64,
    /// Where the report was written.
    pub report_key: Option<String>,
}

/// One check: `passed`, `failed` or `warning`, with the object it is about.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub seconds: f64,
}

impl Check {
    pub(crate) fn passed(name: &str, detail: impl Into<String>, started: Instant) -> Self {
        Self::new(name, "passed", detail.into(), None, started)
    }

    pub(crate) fn failed(name: &str, detail: impl Into<String>, object: Option<String>, started: Instant) -> Self {
        Self::new(name, "failed", detail.into(), object, started)
    }

    pub(crate) fn warning(name: &str, detail: impl Into<String>, object: Option<String>, started: Instant) -> Self {
        Self::new(name, "warning", detail.into(), object, started)
    }

    fn new(name: &str, status: &str, detail: String, object: Option<String>, started: Instant) -> Self {
        let seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        Check { name: name.to_string(), status: status.to_string(), detail, object, seconds }
    }

    /// True for a failed check.
    pub fn is_failed(&self) -> bool {
        self.status == "failed"
    }
}

/// One backup as verified.
#[derive(Debug, Clone, Serialize)]
pub struct BackupResult {
    pub name: String,
    /// `database`, or the kind of a file-storage backup.
    pub kind: String,
    pub status: String,
    pub stop_time: DateTime<Utc>,
    /// The timeline of a database backup.
    pub timeline: Option<u32>,
    pub parts: usize,
    pub files: u64,
    /// File bytes read and hashed.
    pub bytes: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
}

/// Verify everything and write the report.
///
/// # Errors
/// Storage failures that stop the verification from looking at all (listing the
/// repository), and [`Error::Key`] when the configured key does not open a backup (a wrong
/// key is a setting, exit 4, not a broken backup); everything else found wrong is a failed
/// check in the report instead.
pub async fn verify(repo: &Repo, opts: &VerifyOptions) -> Result<Report> {
    let began = Instant::now();
    let mut checks = vec![backups::check_identity(repo).await?];
    let backups = catalog::backups(repo).await?;
    // A summary that cannot be read or trusted (or was written in another repository) only
    // costs work: everything counts as new.
    let mut progress = match crate::ops::repo::summary::load_bound(repo).await {
        Ok(summary) => summary.unwrap_or_default().verify,
        Err(e) => {
            tracing::warn!("{e}: its verification progress is not used, everything counts as new");
            Default::default()
        }
    };
    let (chosen, mut scope) = scope::select(&backups, &progress, &opts.which, opts.full, opts.max_bytes)?;
    let mut results = Vec::new();
    for b in chosen {
        let (check, result) = backups::check_backup(repo, b, opts.jobs).await?;
        if !check.is_failed() {
            progress.backups.insert(b.name.clone(), opts.now);
        }
        checks.push(check);
        results.push(result);
    }
    checks.extend(backups::check_folders(repo, &backups).await?);
    for kind in files_catalog::KINDS {
        for meta in files_catalog::files_backups(repo, kind).await? {
            let (check, result) = backups::check_files_backup(repo, &meta).await?;
            checks.push(check);
            results.push(result);
        }
    }
    let seg_size = backups.first().map_or(16 << 20, |b| b.wal_segment_size);
    let (files, objects) = wal_content::list(repo).await?;
    let archive = WalArchive::from_files(repo, files, seg_size).await?;
    let wal = wal::check_wal(repo, &archive, &backups).await?;
    checks.extend(wal.checks);
    let since = if opts.full { None } else { progress.wal_checked_through };
    let sysid = backups.last().map(|b| b.system_identifier.0);
    let recent = if opts.full { Vec::new() } else { std::mem::take(&mut progress.wal_recent) };
    let content = wal_content::check(repo, &objects, since, &recent, sysid, opts.jobs).await?;
    (scope.wal_checked, scope.wal_bytes, scope.wal_checked_since) = (content.checked, content.bytes, since);
    checks.push(content.check);
    if content.passed {
        (progress.wal_checked_through, progress.wal_recent) = (content.through, content.recent);
    } else {
        progress.wal_recent = recent;
    }
    if backups.is_empty() {
        checks.push(Check::failed("backups", "no complete backup in the repository", None, Instant::now()));
    }
    let restore = match &opts.restore_test {
        Some(rt) if !backups.is_empty() => {
            let result = restore_test::restore_test(repo, rt).await;
            checks.extend(result.checks());
            Some(result)
        }
        _ => None,
    };
    let failed = checks.iter().any(Check::is_failed);
    let mut report = Report {
        timestamp: opts.now,
        env: repo.layout.env().to_string(),
        repository: repo.url.clone(),
        status: if failed { "failed" } else { "passed" }.to_string(),
        checks,
        backups: results,
        wal: wal.result,
        restore_test: restore,
        recoverable_window: wal.windows,
        scope,
        duration_seconds: began.elapsed().as_secs_f64(),
        report_key: None,
    };
    if opts.write_report {
        let key = repo.layout.verification_report_key(opts.now);
        let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Invalid(format!("report: {e}")))?;
        let started = Instant::now();
        match repo.storage.put(&key, json.into()).await {
            Ok(()) => {
                let ttr = report.restore_test.as_ref().and_then(|r| r.time_to_recover_seconds);
                crate::ops::repo::summary::verified(repo, &key, &report.status, ttr, opts.now, progress).await;
                report.report_key = Some(key);
            }
            Err(e) => {
                report.checks.push(Check::failed("write report", e.to_string(), Some(key), started));
                report.status = "failed".to_string();
            }
        }
    }
    Ok(report)
}

/// The report as lines that fit a terminal.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "verification {} of {} ({}) at {} UTC in {:.1} s\n\n",
        r.status.to_uppercase(),
        r.env,
        r.repository,
        human::human_time(r.timestamp),
        r.duration_seconds
    );
    for c in &r.checks {
        let mark = match c.status.as_str() {
            "passed" => "ok  ",
            "warning" => "WARN",
            _ => "FAIL",
        };
        out.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
        if let Some(o) = c.object.as_ref().filter(|_| c.status != "passed") {
            out.push_str(&format!("     object: {o}\n"));
        }
    }
    if let Some(rt) = &r.restore_test {
        out.push_str(&format!("\n{}\n", rt.summary_line()));
    }
    out.push_str(&scope::render(&r.scope));
    if let Some(key) = &r.report_key {
        out.push_str(&format!("\nreport: {key}\n"));
    }
    out
}
