//! `walvault verify`: the runbook's weekly backup verification.
//!
//! Every complete backup is read in full (manifest, then each part decrypted, decompressed and
//! every tar entry hashed against the manifest, nothing written), the WAL archive is checked
//! ([`super::verify_wal`]), and with a restore test ([`super::restore_test`]) the newest
//! backup is restored, replayed and queried. The report is written to
//! `verification_reports/<env>/verification_YYYYMMDD_HHMMSS.json`. Problems in the repository
//! are failed checks in the report, never errors; errors are for not being able to look
//! (storage unreachable).

use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::SyncIoBridge;

use super::catalog::{self, BackupMetadata, LatestPointer, WalArchive};
use super::list::Window;
use super::restore_test::{self, RestoreTestOptions, RestoreTestResult};
use super::verify_wal::{self, WalResult};
use super::wal_index::WalIndex;
use super::{Repo, blocking, human, identity};
use crate::manifest::Manifest;
use crate::{Error, Result, codec, tarball};

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
    pub duration_seconds: f64,
    /// Where the report was written.
    pub report_key: Option<String>,
}

/// What `status` reads back from the newest report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportSummary {
    pub timestamp: DateTime<Utc>,
    pub status: String,
    #[serde(default)]
    pub restore_test: Option<restore_test::RestoreTestSummary>,
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
    pub status: String,
    pub stop_time: DateTime<Utc>,
    pub timeline: u32,
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
/// repository); everything found wrong is a failed check in the report instead.
pub async fn verify(repo: &Repo, opts: &VerifyOptions) -> Result<Report> {
    let began = Instant::now();
    let mut checks = vec![check_identity(repo).await?];
    let backups = catalog::backups(repo).await?;
    let mut results = Vec::new();
    for b in &backups {
        let (check, result) = check_backup(repo, b, opts.jobs).await?;
        checks.push(check);
        results.push(result);
    }
    checks.extend(check_folders(repo, &backups).await?);
    let seg_size = backups.first().map_or(16 << 20, |b| b.wal_segment_size);
    let mut index = WalIndex::load(None, repo);
    let archive = WalArchive::load(repo, &mut index, seg_size).await?;
    let wal = verify_wal::check_wal(repo, &archive, &backups).await?;
    checks.extend(wal.checks);
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
        duration_seconds: began.elapsed().as_secs_f64(),
        report_key: None,
    };
    if opts.write_report {
        let key = repo.layout.verification_report_key(opts.now);
        let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Invalid(format!("report: {e}")))?;
        let started = Instant::now();
        match repo.storage.put(&key, json.into()).await {
            Ok(()) => report.report_key = Some(key),
            Err(e) => {
                report.checks.push(Check::failed("write report", e.to_string(), Some(key), started));
                report.status = "failed".to_string();
            }
        }
    }
    Ok(report)
}

async fn check_identity(repo: &Repo) -> Result<Check> {
    let started = Instant::now();
    let env = repo.layout.env();
    Ok(match identity::load(repo).await {
        Ok(Some(id)) => match id.envs.get(env) {
            Some(e) => Check::passed(
                "repository identity",
                format!("environment {env}: system identifier {}", e.system_identifier),
                started,
            ),
            None => Check::failed(
                "repository identity",
                format!("walvault.json does not list environment {env}"),
                Some(crate::layout::IDENTITY_KEY.into()),
                started,
            ),
        },
        Ok(None) => Check::failed(
            "repository identity",
            "walvault.json not found",
            Some(crate::layout::IDENTITY_KEY.into()),
            started,
        ),
        Err(e @ Error::Storage { .. }) => return Err(e),
        Err(e) => {
            Check::failed("repository identity", e.to_string(), Some(crate::layout::IDENTITY_KEY.into()), started)
        }
    })
}

/// The manifest, then every part read to its end against it.
async fn check_backup(repo: &Repo, b: &BackupMetadata, jobs: usize) -> Result<(Check, BackupResult)> {
    let started = Instant::now();
    let name = format!("backup {}", b.name);
    let mut result = BackupResult {
        name: b.name.clone(),
        status: "failed".to_string(),
        stop_time: b.stop_time,
        timeline: b.timeline,
        parts: b.parts.len(),
        files: 0,
        bytes: 0,
        stored_bytes: b.stored_bytes,
        seconds: 0.0,
    };
    let outcome = read_backup(repo, b, jobs, &mut result).await;
    result.seconds = started.elapsed().as_secs_f64();
    let check = match outcome {
        Ok(()) => {
            result.status = "passed".to_string();
            let detail = format!(
                "manifest and {} parts: {} files, {} read and matched their checksums",
                b.parts.len(),
                result.files,
                super::list::human_bytes(result.bytes)
            );
            Check::passed(&name, detail, started)
        }
        Err((e @ Error::Storage { permanent: false, .. }, _)) => return Err(e),
        Err((e, key)) => Check::failed(&name, e.to_string(), Some(key), started),
    };
    Ok((check, result))
}

/// Errors come with the key of the object they are about.
async fn read_backup(
    repo: &Repo,
    b: &BackupMetadata,
    jobs: usize,
    result: &mut BackupResult,
) -> std::result::Result<(), (Error, String)> {
    let manifest = match super::pitr_prepare::load_manifest(repo, b).await {
        Err(Error::NotFound { .. }) => {
            let e = Error::not_found(format!("manifest {}", repo.storage.describe(&b.manifest_key)));
            return Err((e, b.manifest_key.clone()));
        }
        other => other.map_err(|e| (e, b.manifest_key.clone()))?,
    };
    let indices: Vec<u32> = b.parts.iter().map(|p| p.index).collect();
    if let Some(stray) = manifest.files.iter().find(|e| !indices.contains(&e.part)) {
        let why = format!("{} is listed in part {}, which the backup does not have", stray.path, stray.part);
        return Err((Error::corrupt(repo.storage.describe(&b.manifest_key), why), b.manifest_key.clone()));
    }
    let stats: Vec<std::result::Result<tarball::VerifyStats, (Error, String)>> =
        futures_util::stream::iter(b.parts.clone())
            .map(|part| {
                let manifest = manifest.clone();
                async move { verify_part(repo, &part.key, part.index, manifest).await.map_err(|e| (e, part.key)) }
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    for s in stats {
        let s = s?;
        result.files += s.files;
        result.bytes += s.bytes;
    }
    Ok(())
}

async fn verify_part(repo: &Repo, key: &str, index: u32, manifest: Manifest) -> Result<tarball::VerifyStats> {
    let reader = repo.storage.get(key).await?;
    let bridge = SyncIoBridge::new(reader);
    let (object, keyring) = (repo.storage.describe(key), repo.keyring.clone());
    blocking(move || {
        let input = std::io::BufReader::with_capacity(1 << 20, bridge);
        let (_, body) = codec::decoder(input, &keyring, &object, false)?;
        tarball::verify_tar(body, &manifest, index).map_err(|e| match e {
            // An entry's problem, named inside the part.
            Error::Corrupt { object: entry, reason } if entry != object && !reason.contains(&object) => {
                Error::corrupt(&object, format!("{entry}: {reason}"))
            }
            Error::Refused(why) => Error::corrupt(&object, why),
            other => other,
        })
    })
    .await
}

/// Folders without a metadata object (an interrupted base-backup or prune), and latest.json.
async fn check_folders(repo: &Repo, backups: &[BackupMetadata]) -> Result<Vec<Check>> {
    let started = Instant::now();
    let mut checks = Vec::new();
    let root = repo.layout.database_root();
    let listing = repo.storage.list(&root, Some("/"), None).await?;
    for prefix in &listing.prefixes {
        let name = prefix.trim_start_matches(&root).trim_end_matches('/');
        if !backups.iter().any(|b| b.name == name) {
            let why = format!(
                "{prefix} has no metadata object: an interrupted base-backup or prune (prune removes it once it is older than the oldest kept backup)"
            );
            checks.push(Check::warning("incomplete backup", why, Some(prefix.clone()), started));
        }
    }
    let latest_key = repo.layout.latest_backup_key();
    let pointer = match repo.storage.get_bytes(&latest_key).await {
        Ok(bytes) => serde_json::from_slice::<LatestPointer>(&bytes).ok(),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let newest = backups.last().map(|b| b.name.as_str());
    match (pointer, newest) {
        (Some(p), Some(n)) if p.backup == n => {
            checks.push(Check::passed("latest.json", format!("points at {n}"), started))
        }
        (p, Some(n)) => {
            let at = p.map_or("nothing readable".to_string(), |p| p.backup);
            let why =
                format!("points at {at}, not the newest complete backup {n} (pitr-prepare does not depend on it)");
            checks.push(Check::warning("latest.json", why, Some(latest_key), started));
        }
        _ => {}
    }
    Ok(checks)
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
    if let Some(key) = &r.report_key {
        out.push_str(&format!("\nreport: {key}\n"));
    }
    out
}
