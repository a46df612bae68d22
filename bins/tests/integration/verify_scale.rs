//! `walvault verify` that costs what is new (issue 15), on both backends: the first run reads
//! every backup and decodes every WAL object; the next reads only the newest backup and the
//! WAL stored since, and says which backups are due; `--max-bytes` rotates through older
//! backups; `--backup NAME` reads one; a damaged new WAL object is found by content, a damaged
//! old one only by `--full`.

use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, stderr};
use super::pitr::{base_backup, primary};
use super::raw::{get_raw, json, keys, put_raw};

fn some_wal(p: &Cluster, n: usize) {
    for _ in 0..n {
        p.psql("INSERT INTO t SELECT g FROM generate_series(1, 2000) g");
        p.psql("SELECT pg_switch_wal()");
    }
    p.switch_and_wait_archived(Duration::from_secs(120));
}

fn verify(repo: &TestRepo, args: &[&str]) -> serde_json::Value {
    let out = repo.command("walvault").args(["verify", "--json"]).args(args).output().expect("verify");
    let report = json(&out);
    let code = if report["status"] == "passed" { Some(0) } else { Some(8) };
    assert_eq!(out.status.code(), code, "verify {args:?}: {}", stderr(&out));
    report
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn due(report: &serde_json::Value) -> Vec<String> {
    let due = report["scope"]["backups_due"].as_array().cloned().unwrap_or_default();
    due.iter().filter_map(|d| d["name"].as_str().map(str::to_string)).collect()
}

/// Flip one byte in the middle of object `key`; returns the original bytes.
fn damage(repo: &TestRepo, key: &str) -> Vec<u8> {
    let saved = get_raw(repo, key);
    let mut bad = saved.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    put_raw(repo, key, &bad);
    saved
}

fn failed_check(report: &serde_json::Value, name: &str) -> String {
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    let c = checks.iter().find(|c| c["name"] == name && c["status"] == "failed");
    c.map(|c| format!("{} {}", c["detail"], c["object"])).unwrap_or_default()
}

fn verify_costs_what_is_new(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let p = primary(&repo);
    p.psql("CREATE TABLE t(g int)");
    let mut names = Vec::new();
    for _ in 0..3 {
        some_wal(&p, 1);
        let out = base_backup(&repo, &p, &[]);
        assert!(out.status.success(), "base-backup: {}", stderr(&out));
        names.push(json(&out)["name"].as_str().expect("name").to_string());
    }
    some_wal(&p, 2);
    let (b1, b2, b3) = (names[0].clone(), names[1].clone(), names[2].clone());

    // First run: everything is new.
    let first = verify(&repo, &[]);
    assert_eq!(first["status"], "passed", "{first:#}");
    let scope = &first["scope"];
    assert_eq!(strings(&scope["backups_read"]), names, "{scope}");
    let wal_objects = first["wal"]["files"].as_u64().expect("files");
    assert_eq!(scope["wal_checked"].as_u64(), Some(wal_objects), "every WAL object decoded: {scope}");
    assert!(scope["wal_checked_since"].is_null());

    // Second run, after a little more WAL: the newest backup and the new WAL only.
    some_wal(&p, 2);
    let second = verify(&repo, &[]);
    assert_eq!(second["status"], "passed", "{second:#}");
    let scope = &second["scope"];
    assert_eq!(strings(&scope["backups_read"]), [b3.as_str()], "{scope}");
    assert_eq!(due(&second), [b1.clone(), b2.clone()], "{scope}");
    let checked = scope["wal_checked"].as_u64().expect("wal_checked");
    assert!(checked >= 2 && checked < wal_objects, "only what is new (and a margin): {checked} of {wal_objects}");
    assert!(scope["wal_checked_since"].is_string(), "{scope}");

    // A budget for the newest and one more: the one read longest ago (B1), then B2 next time.
    let size = first["backups"][2]["stored_bytes"].as_u64().expect("size");
    let budget = (size * 5 / 2).to_string();
    let third = verify(&repo, &["--max-bytes", &budget]);
    assert_eq!(strings(&third["scope"]["backups_read"]), [b1.clone(), b3.clone()], "{:#}", third["scope"]);
    let fourth = verify(&repo, &["--max-bytes", &budget]);
    assert_eq!(strings(&fourth["scope"]["backups_read"]), [b2.clone(), b3.clone()], "{:#}", fourth["scope"]);
    let one = verify(&repo, &["--backup", &b1, "--no-report"]);
    assert_eq!(strings(&one["scope"]["backups_read"]), [b1.as_str()]);
    copied_summary_is_not_trusted(&repo, backend, &names);

    // A damaged new WAL object is found by content; an old one only with --full.
    let old_key = keys(&repo, "wal/").into_iter().find(|k| k.ends_with(".zst.enc") && !k.contains(".history"));
    let old_key = old_key.expect("an old segment");
    some_wal(&p, 1);
    let new_key = keys(&repo, "wal/").into_iter().filter(|k| !k.contains(".history")).max().expect("newest");
    let saved = damage(&repo, &new_key);
    let bad = verify(&repo, &["--no-report"]);
    assert_eq!(bad["status"], "failed", "{bad:#}");
    assert!(failed_check(&bad, "wal content").contains(&new_key), "{}", failed_check(&bad, "wal content"));
    put_raw(&repo, &new_key, &saved);
    let saved = damage(&repo, &old_key);
    let quiet = verify(&repo, &["--no-report"]);
    assert_eq!(quiet["status"], "passed", "an old object is not read again: {:#}", quiet["scope"]);
    let full = verify(&repo, &["--no-report", "--full"]);
    assert!(failed_check(&full, "wal content").contains(&old_key), "{}", failed_check(&full, "wal content"));
    assert_eq!(strings(&full["scope"]["backups_read"]).len(), 3);
    put_raw(&repo, &old_key, &saved);
}

#[test]
fn verify_costs_what_is_new_local_directory() {
    verify_costs_what_is_new(Backend::Fs);
}

#[test]
fn verify_costs_what_is_new_s3() {
    verify_costs_what_is_new(Backend::S3);
}

/// Another repository under the same key, verified just now: its summary copied over this
/// one's passes the MAC but names another repository, so verify trusts none of its progress
/// (everything is new again) and the summary written after is this repository's.
fn copied_summary_is_not_trusted(repo: &TestRepo, backend: Backend, names: &[String]) {
    let other = TestRepo::new(backend, Some(TEST_KEY));
    let p = primary(&other);
    p.psql("CREATE TABLE t(g int)");
    some_wal(&p, 1);
    assert!(base_backup(&other, &p, &[]).status.success());
    assert_eq!(verify(&other, &[])["status"], "passed");
    let key = "status/production/summary.json";
    put_raw(repo, key, &get_raw(&other, key));
    let out = repo.command("walvault").args(["verify", "--json"]).output().expect("verify");
    assert!(stderr(&out).contains("copied from another repository"), "{}", stderr(&out));
    let scope = &json(&out)["scope"];
    assert_eq!(strings(&scope["backups_read"]), names, "{scope}");
    assert!(scope["wal_checked_since"].is_null(), "every WAL object decoded again: {scope}");
    let again = verify(repo, &["--no-report"]);
    assert!(again["scope"]["wal_checked_since"].is_string(), "{:#}", again["scope"]);
}
