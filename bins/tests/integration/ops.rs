//! The operations commands (issue #6) against real PostgreSQL and the S3 test server:
//! verify (damage of every kind is found and named; the restore test measures a time),
//! status (exit codes, Prometheus format); prune and file backups in the submodules.

mod files;
mod prune;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::common::{Backend, TEST_KEY, TestRepo, stderr};
use super::pitr::{base_backup, prepare, primary, recover};

/// Parse a command's JSON output.
pub(super) fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json: {e}\n{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(out)))
}

/// An RFC 3339 time `offset` from now (GNU date syntax: `+8 days`, `-200 days`).
pub(super) fn time_from_now(offset: &str) -> String {
    let out =
        std::process::Command::new("date").args(["-u", "-d", offset, "+%Y-%m-%dT%H:%M:%SZ"]).output().expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// WAL segment files of the local repository (not history, backup-history or partial).
pub(super) fn wal_segments(root: &Path) -> Vec<PathBuf> {
    super::common::walk(&root.join("wal"))
        .into_iter()
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.len() > 24 && n.as_bytes()[24] == b'.' && !n.contains("backup") && !n.contains("partial")
            })
        })
        .collect()
}

pub(super) fn wal_name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).expect("name").chars().take(24).collect()
}

/// The failed checks of a verification report.
fn failed(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["checks"].as_array().expect("checks").iter().filter(|c| c["status"] == "failed").cloned().collect()
}

/// Run verify; it must fail (exit 8) with a failed check about `object`.
fn assert_verify_names(repo: &TestRepo, object: &str, what: &str) {
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    assert_eq!(out.status.code(), Some(8), "{what}: {}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["status"], "failed", "{what}");
    let hits: Vec<_> =
        failed(&report).into_iter().filter(|c| c["object"].as_str().is_some_and(|o| o.ends_with(object))).collect();
    assert!(!hits.is_empty(), "{what}: no failed check names {object}: {:#}", report["checks"]);
    let human = repo.run("walvault", &["verify", "--no-report"]);
    assert_eq!(human.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&human.stdout).contains(object), "{what}: the table names {object}");
}

/// Verify passes on a healthy repository with two timelines, then fails, naming the object,
/// after each kind of damage: a WAL file deleted in the middle, a flipped byte in a backup
/// part, a missing manifest, a missing history file. The restore test follows timeline 2.
#[test]
fn verify_finds_and_names_damage() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let root = repo.fs_root.clone().expect("fs");
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(batch int)");
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = json(&out);
    for n in 0..3 {
        p.psql(&format!("INSERT INTO t SELECT {n} FROM generate_series(1, 1000)"));
        p.psql("SELECT pg_switch_wal()");
    }
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();
    let (mut c, out) = prepare(&repo, &["--latest", "--archive", "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.append_conf(&c.archive_conf().replace("port = 5432\n", ""));
    recover(&mut c, true);
    c.psql("INSERT INTO t SELECT 9 FROM generate_series(1, 500)");
    c.switch_and_wait_archived(Duration::from_secs(60));
    c.stop();

    let out = repo.run("walvault", &["verify", "--json"]);
    assert!(out.status.success(), "healthy: {}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let report = json(&out);
    assert_eq!(report["status"], "passed");
    assert_eq!(report["wal"]["timelines"], serde_json::json!([1, 2]));
    assert!(report["duration_seconds"].as_f64().expect("duration") > 0.0);
    let key = report["report_key"].as_str().expect("report written");
    assert!(key.starts_with("verification_reports/production/verification_") && key.ends_with(".json"), "{key}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(key)).expect("report")).expect("json");
    assert_eq!(stored["status"], "passed");
    assert!(stored["restore_test"].is_null());

    // A WAL file in the middle of the chain.
    let tl1: Vec<PathBuf> = wal_segments(&root).into_iter().filter(|p| wal_name(p).starts_with("00000001")).collect();
    let victim = tl1[tl1.len() - 2].clone();
    let saved = std::fs::read(&victim).expect("read");
    std::fs::remove_file(&victim).expect("remove");
    assert_verify_names(&repo, &wal_name(&victim), "deleted WAL");
    std::fs::write(&victim, &saved).expect("put back");

    // A flipped byte in a backup part.
    let part = meta["parts"][1]["key"].as_str().expect("part").to_string();
    let path = root.join(&part);
    let saved = std::fs::read(&path).expect("read");
    let mut flipped = saved.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    std::fs::write(&path, flipped).expect("flip");
    assert_verify_names(&repo, &part, "flipped byte");
    std::fs::write(&path, &saved).expect("put back");

    // A missing manifest.
    let manifest = root.join(meta["manifest_key"].as_str().expect("manifest"));
    let saved = std::fs::read(&manifest).expect("read");
    std::fs::remove_file(&manifest).expect("remove");
    assert_verify_names(&repo, meta["manifest_key"].as_str().expect("key"), "missing manifest");
    std::fs::write(&manifest, &saved).expect("put back");

    // A missing history file.
    let history = super::common::walk(&root.join("wal"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("00000002.history"))
        .expect("history file archived");
    let saved = std::fs::read(&history).expect("read");
    std::fs::remove_file(&history).expect("remove");
    assert_verify_names(&repo, "00000002.history", "missing history");
    std::fs::write(&history, &saved).expect("put back");

    let out = repo.run(
        "walvault",
        &[
            "verify",
            "--json",
            "--restore-test",
            "--pg-setting",
            "work_mem=7MB",
            "--check-sql",
            "SELECT count(*) FROM t",
            "--check-sql",
            "SELECT timeline_id FROM pg_control_checkpoint()",
            "--check-sql",
            "SHOW work_mem",
        ],
    );
    assert!(out.status.success(), "restored: {}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let rt = &json(&out)["restore_test"];
    assert_eq!(rt["status"], "passed", "{rt:#}");
    assert_eq!(rt["queries"][0]["rows"][0][0], "3500", "{rt:#}");
    assert_eq!(rt["queries"][1]["rows"][0][0], "3", "promoted onto a new timeline after 2: {rt:#}");
    assert_eq!(rt["queries"][2]["rows"][0][0], "7MB", "--pg-setting reaches the scratch server: {rt:#}");
}

/// The restore test on S3: the default checks count the largest tables, the time to recover
/// is recorded in the stored report, and status reads it back.
#[test]
fn restore_test_records_the_time_to_recover_s3() {
    let repo = TestRepo::new(Backend::S3, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.pgbench(&["-i", "-s", "2", "-q"]);
    assert!(base_backup(&repo, &p, &[]).status.success());
    p.psql("CREATE TABLE later AS SELECT g FROM generate_series(1, 1234) g");
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();
    let wal_before = json(&repo.run("walvault", &["ls", "--json", "wal/"]));

    let out = repo.run("walvault", &["verify", "--json", "--restore-test"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    // The restored server was promoted (timeline 2) and never archived: no history file, no WAL.
    assert_eq!(json(&repo.run("walvault", &["ls", "--json", "wal/"])), wal_before, "the restore test archived");
    let report = json(&out);
    let rt = &report["restore_test"];
    assert_eq!(rt["status"], "passed", "{rt:#}");
    let ttr = rt["time_to_recover_seconds"].as_f64().expect("time to recover");
    assert!(ttr > 0.0 && ttr < 600.0, "{ttr}");
    let counts: Vec<(String, String)> = rt["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .map(|q| (q["sql"].as_str().expect("sql").to_string(), q["rows"][0][0].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(counts.contains(&("SELECT count(*) FROM public.pgbench_accounts".into(), "200000".into())), "{counts:?}");
    assert!(counts.contains(&("SELECT count(*) FROM public.later".into(), "1234".into())), "{counts:?}");
    assert!(report["checks"].as_array().expect("checks").iter().any(|c| c["name"] == "rto" && c["status"] == "passed"));

    let out = repo.run("walvault", &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let s = json(&out);
    assert_eq!(s["verification"]["status"], "passed");
    assert!(s["verification"]["time_to_recover_seconds"].as_f64().is_some());

    // A WAL object deleted from the bucket in the middle of the chain is named.
    let ls = json(&repo.run("walvault", &["ls", "--json", "wal/production/"]));
    let keys: Vec<String> =
        ls.as_array().expect("ls").iter().map(|o| o["key"].as_str().expect("key").to_string()).collect();
    let segment = |k: &&String| {
        k.rsplit('/').next().is_some_and(|f| f.len() > 24 && f.as_bytes()[24] == b'.' && !f.contains("backup"))
    };
    let segments: Vec<&String> = keys.iter().filter(segment).collect();
    let victim = segments[segments.len() - 2];
    super::raw::delete(&repo, victim);
    let name: String = victim.rsplit('/').next().expect("file").chars().take(24).collect();
    assert_verify_names(&repo, &name, "WAL deleted from S3");
}

/// Every line of Prometheus text format: a comment, or `name{labels} value`.
pub(super) fn assert_prometheus(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            let name = rest.split(' ').next().expect("name");
            assert!(
                name.starts_with("walvault_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(value.parse::<f64>().is_ok_and(f64::is_finite), "value of {line:?}");
        let (name, labels) = series.split_once('{').unwrap_or_else(|| panic!("no labels: {line:?}"));
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("labels: {line:?}"));
        for pair in labels.split(',') {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("label {pair:?} in {line:?}"));
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && v.starts_with('"') && v.ends_with('"'),
                "{line}"
            );
        }
        names.push(name.to_string());
    }
    names
}

/// Fresh archive: exit 0; two hours later (--now) with a one-hour RPO: exit 8 naming the
/// threshold; a failed verification report: exit 8; Prometheus lines parse.
#[test]
fn status_exit_codes_and_prometheus() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let root = repo.fs_root.clone().expect("fs");
    let p = primary(&repo);
    assert!(base_backup(&repo, &p, &[]).status.success());
    p.switch_and_wait_archived(Duration::from_secs(60));

    let out = repo.run("walvault", &["status", "--json", "--pgdata", &p.pgdata.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "fresh: {}\n{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    let s = json(&out);
    assert_eq!(s["healthy"], true);
    assert!(s["wal"]["age_seconds"].as_f64().expect("age") < 600.0);
    assert_eq!(s["ready"]["files"], 0);

    let later = time_from_now("+2 hours");
    let out = repo.run("walvault", &["status", "--now", &later]);
    assert_eq!(out.status.code(), Some(8), "stale: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("UNHEALTHY") && text.contains("more than --max-wal-age 1h"), "{text}");
    let out = repo.run("walvault", &["status", "--now", &later, "--max-wal-age", "3h"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    let out = repo.run("walvault", &["status", "--prometheus", "--now", &later]);
    assert_eq!(out.status.code(), Some(8));
    let names = assert_prometheus(&String::from_utf8_lossy(&out.stdout));
    for want in [
        "walvault_healthy",
        "walvault_wal_last_archived_age_seconds",
        "walvault_backup_last_age_seconds",
        "walvault_recoverable_window_start_timestamp_seconds",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }

    let report = root.join("verification_reports/production/verification_20990101_000000.json");
    std::fs::create_dir_all(report.parent().expect("dir")).expect("mkdir");
    std::fs::write(&report, r#"{"timestamp":"2099-01-01T00:00:00Z","status":"failed","restore_test":null}"#)
        .expect("plant");
    let out = repo.run("walvault", &["status"]);
    assert_eq!(out.status.code(), Some(8), "failed verification: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the last verification"));
    drop(p);
}
