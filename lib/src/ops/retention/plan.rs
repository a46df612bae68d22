//! Planning for `walvault prune` (see [`crate::ops::retention::prune`] for the policy and the order): which
//! backups go, which folders were left incomplete, which WAL no kept backup needs, which
//! reports are old; as an ordered list of steps.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use crate::layout::name_time;
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, LatestPointer, WalArchive};
use crate::ops::repo::files_catalog::{self, KINDS};
use crate::ops::repo::human::{human_age, human_duration};
use crate::ops::repo::wal_index::WalIndex;
use crate::ops::retention::policy::{Decision, PruneOptions, PrunePlan, PrunePolicy, Step, WalDecision};
use crate::wal::WalFileName;
use crate::wal::follow::{Anchor, Needs};
use crate::{Error, Result};

/// [`WalFileName::sort_key`].
type WalOrder = (u32, u32, u32, u8, u32);

fn delete(key: &str, why: impl Into<String>) -> Step {
    Step { action: "delete".into(), key: key.to_string(), why: why.into() }
}
/// Rank backups (oldest first, `times` in the same order) by the policy.
pub(super) fn decide(
    names: &[(String, DateTime<Utc>)],
    kind: &str,
    retention: TimeDelta,
    p: &PrunePolicy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let n = names.len();
    names
        .iter()
        .enumerate()
        .map(|(i, (name, time))| {
            let rank = n - 1 - i;
            let (keep, reason) = if rank == 0 {
                (true, "newest".to_string())
            } else if p.keep.contains(name) {
                (true, "--keep".to_string())
            } else if rank < p.keep_last {
                (true, format!("keep-last {}", p.keep_last))
            } else if now - *time <= retention {
                (true, format!("within {}", human_duration(retention)))
            } else {
                (false, format!("older than {} ({} old)", human_duration(retention), human_age(now - *time)))
            };
            Decision { name: name.clone(), kind: kind.to_string(), time: *time, keep, reason }
        })
        .collect()
}

pub(super) async fn plan(repo: &Repo, opts: &PruneOptions) -> Result<PrunePlan> {
    let (p, now) = (&opts.policy, opts.now);
    let backups = catalog::backups(repo).await?;
    let names: Vec<(String, DateTime<Utc>)> = backups.iter().map(|b| (b.name.clone(), b.stop_time)).collect();
    let mut decisions = decide(&names, "database", p.backups, p, now);
    let references: Vec<Option<String>> = backups.iter().map(|b| b.reference.clone()).collect();
    super::chains::keep_chains(&mut decisions, &references);
    let mut steps = Vec::new();
    let mut file_decisions = Vec::new();
    let mut known: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let mut incomplete = Vec::new();

    // latest.json must never point at a deleted backup (it cannot: the newest is kept).
    let latest_key = repo.layout.latest_backup_key();
    if let Ok(bytes) = repo.storage.get_bytes(&latest_key).await
        && let Ok(pointer) = serde_json::from_slice::<LatestPointer>(&bytes)
        && decisions.iter().any(|d| !d.keep && d.name == pointer.backup)
    {
        steps.push(Step { action: "update".into(), key: latest_key, why: "points at a backup being deleted".into() });
    }
    for d in decisions.iter().filter(|d| !d.keep) {
        steps.push(delete(&repo.layout.backup_metadata_key(&d.name), format!("backup {}: {}", d.name, d.reason)));
        steps.extend(folder(repo, &repo.layout.backup_prefix(&d.name), &format!("backup {}", d.name)).await?);
    }
    let oldest_kept = backups.iter().zip(&decisions).find(|(_, d)| d.keep).map(|(b, _)| b);
    if let Some(b) = oldest_kept {
        // A leftover base-backup may resume within the window: kept until then.
        let window = chrono::TimeDelta::from_std(opts.resume_window).unwrap_or(chrono::TimeDelta::MAX);
        let resumable = now.checked_sub_signed(window).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let since = name_time(&b.name).unwrap_or(b.start_time).min(resumable);
        steps.extend(orphans(repo, &repo.layout.database_root(), &names, since, &mut incomplete).await?);
    }
    let kept: Vec<&catalog::BackupMetadata> =
        backups.iter().zip(&decisions).filter(|(_, d)| d.keep).map(|(b, _)| b).collect();
    let wal = plan_wal(repo, opts, &kept, &mut steps).await?;

    for kind in KINDS {
        let all = files_catalog::files_backups(repo, kind).await?;
        let names: Vec<(String, DateTime<Utc>)> = all.iter().map(|b| (b.name.clone(), b.created)).collect();
        known.extend(names.iter().map(|(n, _)| n.clone()));
        let decided = decide(&names, kind, p.files, p, now);
        for d in decided.iter().filter(|d| !d.keep) {
            steps.push(delete(
                &repo.layout.files_metadata_key(kind, &d.name),
                format!("{kind} backup {}: {}", d.name, d.reason),
            ));
            let prefix = format!("{}{}/", repo.layout.files_root(kind), d.name);
            steps.extend(folder(repo, &prefix, &format!("{kind} backup {}", d.name)).await?);
        }
        if let Some((kept, _)) = names.iter().zip(&decided).find(|(_, d)| d.keep) {
            let since = name_time(&kept.0).unwrap_or(kept.1);
            steps.extend(orphans(repo, &repo.layout.files_root(kind), &names, since, &mut incomplete).await?);
        }
        file_decisions.extend(decided);
    }
    if let Some(unknown) = p.keep.iter().find(|k| !known.contains(k)) {
        return Err(Error::config("--keep", format!("no complete backup is named {unknown}")));
    }
    let (reports_kept, reports_deleted) = plan_reports(repo, p.reports, now, &mut steps).await?;
    let policy = format!(
        "base backups {}, WAL {}, files {}, reports {}, keep-last {}{}",
        human_duration(p.backups),
        human_duration(p.wal),
        human_duration(p.files),
        human_duration(p.reports),
        p.keep_last,
        if p.keep.is_empty() { String::new() } else { format!(", keep {}", p.keep.join(" ")) }
    );
    Ok(PrunePlan {
        now,
        dry_run: opts.dry_run,
        policy,
        backups: decisions,
        files: file_decisions,
        incomplete,
        wal,
        reports_kept,
        reports_deleted,
        steps,
        done: 0,
        complete: false,
    })
}

/// Every object under a backup's folder: parts first, the manifest last.
async fn folder(repo: &Repo, prefix: &str, what: &str) -> Result<Vec<Step>> {
    let mut keys: Vec<String> =
        repo.storage.list(prefix, None, None).await?.objects.into_iter().map(|o| o.key).collect();
    keys.sort_by_key(|k| (k.contains("manifest"), k.clone()));
    Ok(keys.iter().map(|k| delete(k, what.to_string())).collect())
}

/// Folders under `root` without a metadata object, named for a time before `before` (the
/// name time of the oldest kept backup, and before the resume window): left by an interrupted
/// backup or prune. A new backup still running is named for a later time than every complete
/// one, and a resumed one for a time within the window, so neither is touched (a resume that
/// starts in the window's last minutes and outlives it is the exception).
async fn orphans(
    repo: &Repo,
    root: &str,
    complete: &[(String, DateTime<Utc>)],
    before: DateTime<Utc>,
    found: &mut Vec<String>,
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for prefix in repo.storage.list(root, Some("/"), None).await?.prefixes {
        let name = prefix.trim_start_matches(root).trim_end_matches('/');
        let old = name_time(name).is_some_and(|t| t < before);
        if old && !complete.iter().any(|(n, _)| n == name) {
            steps.extend(folder(repo, &prefix, &format!("incomplete {name} (no metadata object)")).await?);
            found.push(prefix.clone());
        }
    }
    Ok(steps)
}

async fn plan_wal(
    repo: &Repo,
    opts: &PruneOptions,
    kept: &[&catalog::BackupMetadata],
    steps: &mut Vec<Step>,
) -> Result<WalDecision> {
    let Some(oldest) = kept.iter().min_by_key(|b| b.start_lsn) else {
        let note = "no complete backup: WAL is left alone".to_string();
        return Ok(WalDecision { note: Some(note), ..WalDecision::default() });
    };
    let seg = oldest.wal_segment_size;
    let mut index = WalIndex::load(None, repo);
    let archive = WalArchive::load(repo, &mut index, seg).await?;
    let anchors: Vec<Anchor> = kept.iter().map(|b| Anchor { tli: b.timeline, start_lsn: b.start_lsn }).collect();
    let needs = Needs::new(&archive.timelines, &anchors, seg);
    let cutoff = opts.now - opts.policy.wal;
    // (segment number, archive order, name, key): lowest segment first.
    let mut doomed: Vec<(u64, WalOrder, String, String)> = Vec::new();
    let mut kept_files = 0;
    for (name, key) in &archive.files {
        let parsed = WalFileName::parse(name).ok();
        // History files always stay; so does WAL of a timeline whose history is unknown.
        let place = parsed
            .as_ref()
            .filter(|w| !matches!(w, WalFileName::History { .. }) && archive.timelines.knows(w.tli()))
            .and_then(|w| w.segno(seg).map(|s| (s, w.tli())));
        let day = repo.layout.parse_wal_key(key).map(|k| k.day);
        match (parsed, place, day) {
            (Some(w), Some((s, t)), Some(d)) if !needs.needs(s, t) && day_end(d) <= cutoff => {
                doomed.push((s, w.sort_key(), name.clone(), key.clone()));
            }
            _ => kept_files += 1,
        }
    }
    doomed.sort();
    let why = format!(
        "WAL no kept backup reads on any timeline (the oldest starts at {} of {}), archived more than {} ago",
        oldest.start_wal_file,
        oldest.name,
        human_duration(opts.policy.wal)
    );
    steps.extend(doomed.iter().map(|(_, _, _, key)| delete(key, why.clone())));
    Ok(WalDecision {
        needed_from: Some(oldest.start_wal_file.clone()),
        kept: kept_files,
        deleted: doomed.len(),
        first_deleted: doomed.first().map(|d| d.2.clone()),
        last_deleted: doomed.last().map(|d| d.2.clone()),
        note: None,
    })
}

fn day_end(day: NaiveDate) -> DateTime<Utc> {
    let next = day.succ_opt().unwrap_or(day);
    next.and_hms_opt(0, 0, 0).map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}

async fn plan_reports(
    repo: &Repo,
    retention: TimeDelta,
    now: DateTime<Utc>,
    steps: &mut Vec<Step>,
) -> Result<(usize, usize)> {
    let listing = repo.storage.list(&repo.layout.verification_reports_root(), None, None).await?;
    let mut reports: Vec<(DateTime<Utc>, String)> = listing
        .objects
        .into_iter()
        .filter_map(|o| repo.layout.parse_verification_report_key(&o.key).map(|t| (t, o.key)))
        .collect();
    reports.sort();
    let newest = reports.last().map(|r| r.1.clone());
    let mut deleted = 0;
    for (t, key) in &reports {
        if Some(key) != newest.as_ref() && now - *t > retention {
            steps.push(delete(key, format!("report older than {}", human_duration(retention))));
            deleted += 1;
        }
    }
    Ok((reports.len() - deleted, deleted))
}
