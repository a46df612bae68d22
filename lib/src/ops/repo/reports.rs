//! What `status` reads back from the newest verification report that `verify` wrote
//! (`verification_reports/<env>/`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What `status` reads back from the newest report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportSummary {
    pub timestamp: DateTime<Utc>,
    pub status: String,
    #[serde(default)]
    pub restore_test: Option<RestoreTestSummary>,
}

/// The part of a restore test that `status` reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreTestSummary {
    pub status: String,
    pub time_to_recover_seconds: Option<f64>,
}
