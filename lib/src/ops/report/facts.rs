//! What a status run finds before it is judged, however it was found (the repository summary,
//! [`super::quick`], or a listing of everything, [`super::status`]), and the verification
//! reports both read.

use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::Result;
use crate::ops::Repo;
use crate::ops::repo::reports::ReportSummary;
use crate::ops::repo::timelines::TimelineInfo;
use crate::ops::repo::windows::Window;

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
    /// List the whole archive (and find gaps) instead of reading the repository summary.
    pub full: bool,
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

/// What a status run found, before it is judged.
pub(super) struct Facts {
    pub wal: WalHealth,
    pub timelines: Vec<TimelineInfo>,
    pub windows: Vec<Window>,
    /// Gaps and chains that cannot be followed (a full listing only).
    pub window_problems: Vec<String>,
    pub backups: BackupHealth,
    pub verification: Option<VerificationHealth>,
    pub source: &'static str,
}

/// The key of the newest verification report and the time in its name (one LIST).
pub(super) async fn newest_report(repo: &Repo) -> Result<Option<(DateTime<Utc>, String)>> {
    let listing = repo.storage.list(&repo.layout.verification_reports_root(), None, None).await?;
    Ok(listing
        .objects
        .iter()
        .filter_map(|o| repo.layout.parse_verification_report_key(&o.key).map(|t| (t, o.key.clone())))
        .max())
}

/// One verification report (one GET); one that does not parse is `unreadable`.
pub(super) async fn read_report(repo: &Repo, key: String, timestamp: DateTime<Utc>) -> Result<VerificationHealth> {
    let bytes = repo.storage.get_bytes(&key).await?;
    let Ok(summary) = serde_json::from_slice::<ReportSummary>(&bytes) else {
        let status = "unreadable".to_string();
        return Ok(VerificationHealth { key, timestamp, status, age_seconds: 0.0, time_to_recover_seconds: None });
    };
    Ok(VerificationHealth {
        key,
        timestamp: summary.timestamp,
        status: summary.status,
        age_seconds: 0.0,
        time_to_recover_seconds: summary.restore_test.and_then(|r| r.time_to_recover_seconds),
    })
}
