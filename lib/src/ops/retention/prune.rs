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

pub use super::policy::{Decision, PruneOptions, PrunePlan, PrunePolicy, Step, WalDecision};
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, LatestPointer};
use crate::ops::repo::human::human_time;
use crate::{Error, Result};

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
    crate::ops::repo::summary::recount(repo).await;
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
    use chrono::{DateTime, Duration, Utc};

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
