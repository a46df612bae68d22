//! prune with a synthetic clock (`--now`) and backups made old by rewriting their metadata:
//! it keeps exactly what the policy says, never the WAL a kept backup needs, `--dry-run`
//! changes nothing, and a prune interrupted after any single change leaves a repository
//! that verifies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::common::{Backend, TEST_KEY, TestRepo, stderr, walk};
use super::super::pitr::{base_backup, primary};
use super::{json, time_from_now, wal_name, wal_segments};

/// Move a backup `days` into the past (its metadata's start and stop times, sealed again as
/// base-backup would have: the metadata is authenticated).
fn age_backup(repo: &TestRepo, name: &str, days: u32) {
    let then = time_from_now(&format!("-{days} days"));
    super::super::binding_metadata::rewrite_sealed(repo, name, Some(TEST_KEY), &|meta| {
        meta["start_time"] = then.clone().into();
        meta["stop_time"] = then.clone().into();
    });
}

fn snapshot(root: &Path) -> Vec<(PathBuf, u64)> {
    walk(root).into_iter().map(|p| (p.clone(), std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0))).collect()
}

fn backup_names(repo: &TestRepo) -> Vec<String> {
    let out = repo.run("walvault", &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| b["name"].as_str().expect("name").to_string())
        .collect()
}

fn assert_verifies(repo: &TestRepo, when: &str) {
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    assert_eq!(out.status.code(), Some(0), "{when}: {}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
}

/// WAL segments before `start` are gone, the others are all there.
fn assert_wal_from(root: &Path, all: &[String], start: &str) {
    let now: Vec<String> = wal_segments(root).iter().map(|p| wal_name(p)).collect();
    for name in all {
        let kept = now.contains(name);
        assert_eq!(kept, name.as_str() >= start, "{name} kept={kept}, WAL needed from {start}");
    }
}

#[test]
fn prune_keeps_what_the_policy_says() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let root = repo.fs_root.clone().expect("fs");
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(n int)");
    let mut backups: Vec<(String, String)> = Vec::new();
    for i in 0..3 {
        let out = base_backup(&repo, &p, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let meta = json(&out);
        backups.push((
            meta["name"].as_str().expect("name").into(),
            meta["start_wal_file"].as_str().expect("start").into(),
        ));
        for n in 0..2 {
            p.psql(&format!("INSERT INTO t SELECT {i}{n} FROM generate_series(1, 1000)"));
            p.psql("SELECT pg_switch_wal()");
        }
        p.switch_and_wait_archived(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1100));
    }
    p.stop();
    let [(a, _), (b, b_start), (c, c_start)] = <[(String, String); 3]>::try_from(backups).expect("three");
    age_backup(&repo, &a, 200);
    age_backup(&repo, &b, 100);
    let reports = root.join("verification_reports/production");
    std::fs::create_dir_all(&reports).expect("mkdir");
    let recent = format!(
        "verification_{}.json",
        time_from_now("-1 day").replace(['-', ':'], "").replace('T', "_").trim_end_matches('Z')
    );
    for name in ["verification_20200101_000000.json", recent.as_str()] {
        std::fs::write(reports.join(name), r#"{"timestamp":"2020-01-01T00:00:00Z","status":"passed"}"#).expect("plant");
    }
    let all_wal: Vec<String> = wal_segments(&root).iter().map(|p| wal_name(p)).collect();
    let later = time_from_now("+8 days");

    // --dry-run: the plan, and nothing changes.
    let before = snapshot(&root);
    let out = repo.run("walvault", &["prune", "--dry-run", "--json", "--now", &later]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = json(&out);
    let fate: Vec<(String, bool)> = plan["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|d| (d["name"].as_str().expect("n").into(), d["keep"] == true))
        .collect();
    assert_eq!(fate, [(a.clone(), false), (b.clone(), false), (c.clone(), true)]);
    assert!(plan["wal"]["deleted"].as_u64().expect("wal") > 0);
    assert_eq!(plan["reports_deleted"], 1);
    let human = repo.run("walvault", &["prune", "--dry-run", "--now", &later, "--keep-last", "3"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("dry run") && !text.contains("DELETE database"), "keep-last 3 keeps all: {text}");
    assert_eq!(snapshot(&root), before, "--dry-run changed nothing");
    let out = repo.run("walvault", &["prune", "--keep", "no_such_backup"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Keep B (--keep), one change per run: every interruption point must verify.
    let mut runs = 0;
    loop {
        let out = repo.run("walvault", &["prune", "--json", "--now", &later, "--keep", &b, "--max-deletes", "1"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let plan = json(&out);
        if plan["complete"] == true {
            break;
        }
        assert_verifies(&repo, &format!("after {} single-change prune runs", runs + 1));
        runs += 1;
        assert!(runs < 60, "prune does not converge");
    }
    assert!(runs >= 5, "the prune was interrupted at several points ({runs})");
    assert_eq!(backup_names(&repo), [b.as_str(), c.as_str()]);
    assert!(walk(&root.join("database/production").join(&a)).is_empty(), "A's parts and manifest are gone");
    assert_wal_from(&root, &all_wal, &b_start);
    assert!(!reports.join("verification_20200101_000000.json").exists());
    assert!(reports.join(&recent).exists());

    // The policy alone: B goes, and the WAL only B needed.
    let out = repo.run("walvault", &["prune", "--json", "--now", &later]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["complete"], true);
    assert_eq!(backup_names(&repo), [c.as_str()]);
    assert_wal_from(&root, &all_wal, &c_start);
    assert_verifies(&repo, "after prune");

    // The only backup is never deleted, nor the WAL it needs, however old.
    let out = repo.run("walvault", &["prune", "--json", "--now", &time_from_now("+1000 days")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(backup_names(&repo), [c.as_str()]);
    assert_wal_from(&root, &all_wal, &c_start);
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("database/production/latest.json")).expect("latest"))
            .expect("json");
    assert_eq!(latest["backup"], c.as_str());
    assert_verifies(&repo, "after pruning everything prunable");
}
