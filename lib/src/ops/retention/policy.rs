//! What prune is asked to keep and what it decides: the policy, the options of a run, and the
//! plan (each backup's fate, the WAL kept, the steps). Shared by the planner and the runner.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// What to keep.
#[derive(Debug, Clone)]
pub struct PrunePolicy {
    pub backups: TimeDelta,
    pub wal: TimeDelta,
    pub files: TimeDelta,
    pub reports: TimeDelta,
    /// Always keep this many newest backups of each sort (at least 1).
    pub keep_last: usize,
    /// Backups (database or file) kept whatever their age.
    pub keep: Vec<String>,
}

impl Default for PrunePolicy {
    /// The runbook's: 90 days, 7 days, 30 days, 90 days, keep the newest.
    fn default() -> Self {
        PrunePolicy {
            backups: TimeDelta::days(90),
            wal: TimeDelta::days(7),
            files: TimeDelta::days(30),
            reports: TimeDelta::days(90),
            keep_last: 1,
            keep: Vec::new(),
        }
    }
}

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub policy: PrunePolicy,
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    /// Stop after this many deletions (spread a large first prune over several runs).
    pub max_deletes: Option<usize>,
    /// An interrupted base backup named within this of `now` may still be resumed: its
    /// folder is kept (`WALVAULT_RESUME_WINDOW`).
    pub resume_window: std::time::Duration,
}

/// What prune decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct PrunePlan {
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    pub policy: String,
    pub backups: Vec<Decision>,
    pub files: Vec<Decision>,
    /// Folders without a metadata object (an interrupted backup or prune) that go.
    pub incomplete: Vec<String>,
    pub wal: WalDecision,
    pub reports_kept: usize,
    pub reports_deleted: usize,
    /// Every change, in the order it is made.
    pub steps: Vec<Step>,
    /// Steps carried out.
    pub done: usize,
    pub complete: bool,
}

/// One backup's fate.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub name: String,
    /// `database` or the file-backup kind.
    pub kind: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WalDecision {
    /// The first segment kept on account of the oldest kept backup.
    pub needed_from: Option<String>,
    pub kept: usize,
    pub deleted: usize,
    pub first_deleted: Option<String>,
    pub last_deleted: Option<String>,
    pub note: Option<String>,
}

/// One change to the repository.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `delete`, or `update` (latest.json).
    pub action: String,
    pub key: String,
    pub why: String,
}
