use chrono::DateTime;

use super::*;
use crate::ops::repo::metadata::test_backup;

fn at(day: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_705_312_800 + day * 86_400, 0).unwrap_or_default()
}

fn backup(day: i64, stored: u64) -> BackupMetadata {
    BackupMetadata {
        bytes: stored,
        stored_bytes: stored,
        ..test_backup(&format!("main_production_{day:02}"), "production", at(day))
    }
}

fn names(v: &[&BackupMetadata]) -> Vec<String> {
    v.iter().map(|b| b.name.clone()).collect()
}

#[test]
fn first_run_reads_everything_new_then_only_the_newest() {
    let all: Vec<BackupMetadata> = (1..=5).map(|d| backup(d, 100)).collect();
    let mut progress = VerifyProgress::default();
    let (read, scope) = select(&all, &progress, &Which::Default, false, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.len(), 5, "nothing read yet: every backup is new");
    assert!(scope.backups_due.is_empty() && scope.bytes_read == 500);
    for b in &all {
        progress.backups.insert(b.name.clone(), at(6));
    }
    let (read, scope) = select(&all, &progress, &Which::Default, false, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&read), ["main_production_05"]);
    assert_eq!(scope.backups_due.len(), 4);
}

#[test]
fn the_budget_rotates_through_older_backups() {
    let all: Vec<BackupMetadata> = (1..=5).map(|d| backup(d, 100)).collect();
    let mut progress = VerifyProgress::default();
    for (i, b) in all.iter().enumerate() {
        progress.backups.insert(b.name.clone(), at(10 + i as i64));
    }
    // Newest (100) + 200 more: the two read longest ago (days 01 and 02).
    let (read, scope) = select(&all, &progress, &Which::Default, false, Some(300)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&read), ["main_production_01", "main_production_02", "main_production_05"]);
    assert_eq!(scope.backups_due.first().map(|d| d.name.as_str()), Some("main_production_03"));
    // The next run (those two now read most recently) takes 03 and 04.
    for b in &read {
        progress.backups.insert(b.name.clone(), at(20));
    }
    let (read, _) = select(&all, &progress, &Which::Default, false, Some(300)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&read), ["main_production_03", "main_production_04", "main_production_05"]);
}

#[test]
fn one_all_full_and_unknown() {
    let all: Vec<BackupMetadata> = (1..=3).map(|d| backup(d, 100)).collect();
    let progress = VerifyProgress::default();
    let one = |w: &str| select(&all, &progress, &w.parse().unwrap_or(Which::All), false, None).map(|(r, _)| names(&r));
    assert_eq!(one("latest").unwrap_or_default(), ["main_production_03"]);
    assert_eq!(one("main_production_01").unwrap_or_default(), ["main_production_01"]);
    assert_eq!(one("all").unwrap_or_default().len(), 3);
    assert!(matches!(one("nope"), Err(Error::NotFound { .. })));
    let (read, scope) =
        select(&all, &progress, &Which::One("latest".into()), true, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((read.len(), scope.mode.as_str()), (3, "full"));
}
