//! `walvault prune`: the runbook's retention. Base backups 90 days, WAL 7 days, file backups
//! 30 days, verification reports 90 days (all configurable), plus keep-last-N and `--keep
//! NAME`. The newest backup of each sort is never deleted.
//!
//! WAL a kept backup needs is never deleted: for each kept backup, every file PostgreSQL
//! reads on every timeline path through its start (its own timeline from its start, each
//! descendant from its switchpoint), to the end of that path (`wal::follow::Needs`); every
//! history file, and WAL of a timeline whose history is unknown, stays too. A segment number
//! alone never decides. Other WAL goes once its day partition is older than the WAL retention.
//!
//! Order, so that an interrupted prune leaves a consistent repository: for each backup,
//! oldest first, its metadata object first (the backup stops being complete and listed), then
//! its parts and manifest; folders left without metadata by an earlier interrupted prune;
//! then WAL, lowest segment first (what remains is always an unbroken suffix); then file
//! backups (metadata first) and old reports. Running prune again finishes the job.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::ops::Repo;
use crate::ops::repo::catalog::{self, LatestPointer};
use crate::ops::repo::human::human_time;
use crate::{Error, Result};

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

/// Decide, then (unless a dry run) delete in the documented order.
///
/// # Errors
/// [`Error::Config`] naming `--keep` for a name that is no backup; storage failures (what was
/// deleted before one leaves the repository consistent; run prune again).
pub async fn prune(repo: &Repo, opts: &PruneOptions) -> Result<PrunePlan> {
    let mut plan = crate::ops::retention::plan::plan(repo, opts).await?;
    if opts.dry_run {
        return Ok(plan);
    }
    for step in &plan.steps {
        if opts.max_deletes.is_some_and(|max| plan.done >= max) {
            tracing::info!("stopped after {} changes (--max-deletes); run prune again to continue", plan.done);
            return Ok(plan);
        }
        match step.action.as_str() {
            "update" => {
                let newest = catalog::backup(repo, "latest").await?;
                let pointer = LatestPointer {
                    backup: newest.name.clone(),
                    metadata: repo.layout.backup_metadata_key(&newest.name),
                    stop_time: newest.stop_time,
                    stop_lsn: newest.stop_lsn,
                    timeline: newest.timeline,
                };
                let json = serde_json::to_vec_pretty(&pointer).map_err(|e| Error::Invalid(e.to_string()))?;
                repo.storage.put(&step.key, json.into()).await?;
            }
            _ => repo.storage.delete(&step.key).await?,
        }
        tracing::debug!("{} {}", step.action, step.key);
        plan.done += 1;
    }
    plan.complete = true;
    Ok(plan)
}

/// The plan as lines that fit a terminal.
pub fn render(plan: &PrunePlan) -> String {
    let mode = if plan.dry_run { " (dry run: nothing deleted)" } else { "" };
    let mut out = format!("prune at {} UTC{mode}\npolicy: {}\n\n", human_time(plan.now), plan.policy);
    let width = plan.backups.iter().chain(&plan.files).map(|d| d.name.len()).max().unwrap_or(0);
    for d in plan.backups.iter().chain(&plan.files) {
        let verdict = if d.keep { "keep  " } else { "DELETE" };
        let time = human_time(d.time);
        out.push_str(&format!("{verdict} {:<8} {:<width$} {time}  {}\n", d.kind, d.name, d.reason));
    }
    for prefix in &plan.incomplete {
        out.push_str(&format!("DELETE incomplete {prefix} (no metadata object)\n"));
    }
    let w = &plan.wal;
    match (&w.note, &w.needed_from) {
        (Some(note), _) => out.push_str(&format!("\nWAL: {note}\n")),
        (None, Some(from)) => {
            out.push_str(&format!("\nWAL: kept from {from} (the oldest kept backup's start): {} files kept", w.kept));
            match (&w.first_deleted, &w.last_deleted) {
                (Some(a), Some(b)) => out.push_str(&format!(", {} deleted ({a} .. {b})\n", w.deleted)),
                _ => out.push_str(", none deleted\n"),
            }
        }
        _ => {}
    }
    out.push_str(&format!("reports: {} kept, {} deleted\n", plan.reports_kept, plan.reports_deleted));
    let total = plan.steps.len();
    out.push_str(&if plan.dry_run {
        format!("\nwould make {total} changes\n")
    } else if plan.complete {
        format!("\nmade {total} changes\n")
    } else {
        format!("\nmade {} of {total} changes (stopped by --max-deletes; run prune again)\n", plan.done)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn decisions_follow_the_policy() {
        let now = DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z").map(|t| t.with_timezone(&Utc)).ok();
        let now = now.unwrap_or_default();
        let names: Vec<(String, DateTime<Utc>)> =
            [200, 120, 95, 30, 1].iter().map(|d| (format!("b{d}"), now - Duration::days(*d))).collect();
        let p = PrunePolicy { keep: vec!["b200".into()], ..PrunePolicy::default() };
        let kept: Vec<bool> = crate::ops::retention::plan::decide(&names, "database", p.backups, &p, now)
            .iter()
            .map(|d| d.keep)
            .collect();
        assert_eq!(kept, [true, false, false, true, true]);
        let p = PrunePolicy { keep_last: 4, ..PrunePolicy::default() };
        let kept: Vec<bool> = crate::ops::retention::plan::decide(&names, "database", p.backups, &p, now)
            .iter()
            .map(|d| d.keep)
            .collect();
        assert_eq!(kept, [false, true, true, true, true]);
        let only = vec![("old".to_string(), now - Duration::days(500))];
        assert!(
            crate::ops::retention::plan::decide(&only, "database", p.backups, &p, now)[0].keep,
            "never the only backup"
        );
    }
}
