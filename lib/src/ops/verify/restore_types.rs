//! What the restore test is asked to do and what it reports: shared by the test itself, its
//! scratch server and its SQL checks.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Rows kept per query in the report.
pub const MAX_ROWS: usize = 20;

/// How to run the restore test.
#[derive(Debug, Clone)]
pub struct RestoreTestOptions {
    /// PostgreSQL server binaries; default `/usr/lib/postgresql/<major>/bin`, else `pg_config --bindir`.
    pub pg_bin: Option<PathBuf>,
    /// Where the scratch directory is made; default the system temp directory.
    pub scratch_dir: Option<PathBuf>,
    /// The restore_command the scratch server uses (wal-fetch with the repository settings).
    pub restore_command: String,
    /// SQL run in `check_db` after promotion (default: row counts of the largest tables).
    pub check_sql: Vec<String>,
    pub check_db: String,
    pub check_user: String,
    /// Largest user tables counted per database when no `check_sql` is given.
    pub tables: usize,
    /// Extra server settings (`NAME=VALUE`), e.g. a smaller `shared_buffers` than production's.
    pub settings: Vec<String>,
    /// Give up on replay after this long.
    pub timeout: Duration,
    /// Fail the test when the time to recover exceeds this (the runbook's RTO).
    pub max_rto: Option<Duration>,
    pub jobs: usize,
}

/// What the restore test measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreTestResult {
    /// `passed` or `failed`.
    pub status: String,
    pub backup: Option<String>,
    pub pg_bin: Option<String>,
    pub pg_version: Option<String>,
    /// Restoring the backup into the scratch PGDATA.
    pub prepare_seconds: f64,
    /// Starting the server until it was promoted (WAL replay).
    pub replay_seconds: f64,
    /// prepare + replay: the measured RTO.
    pub time_to_recover_seconds: Option<f64>,
    pub rto_objective_seconds: Option<f64>,
    pub checks_seconds: f64,
    /// The commit time of the last transaction replayed.
    pub recovered_to: Option<DateTime<Utc>>,
    pub queries: Vec<QueryResult>,
    pub error: Option<String>,
}

/// One query run against the restored server.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub database: String,
    pub sql: String,
    /// Text values, at most 20 rows.
    pub rows: Vec<Vec<Option<String>>>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl QueryResult {
    /// The first row, for the check line.
    pub fn summary(&self) -> String {
        match self.rows.first() {
            None => "no rows".to_string(),
            Some(row) => {
                let values: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                let more =
                    if self.rows.len() > 1 { format!(" (+{} rows)", self.rows.len() - 1) } else { String::new() };
                format!("{}{more}", values.join(", "))
            }
        }
    }
}
