//! `walvault status` from the repository summary (issue 15): wal-push and base-backup keep
//! `status/<env>/summary.json`, status reads it plus the newest day partition and the report
//! keys, counted by the proxy in front of the S3 test server (at most 3 requests), and agrees
//! with the full listing. A summary changed by someone without the key is refused: status
//! falls back to the listing.

use std::time::Duration;

use super::common::{Backend, TEST_KEY, TestRepo, s3_endpoint, stderr};
use super::faults::proxy::{Plan, Proxy};
use super::pitr::{base_backup, primary};
use super::raw::{delete, get_raw, json, put_raw};

fn requests(proxy: &Proxy) -> u64 {
    proxy.counts().get("requests").copied().unwrap_or(0)
}

/// A primary archiving into `repo` with a backup and a few switched segments; returns the
/// backup's name and the last archived segment.
fn archive_some(repo: &TestRepo) -> (super::common::Cluster, String, String) {
    let p = primary(repo);
    let out = base_backup(repo, &p, &[]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    let name = json(&out)["name"].as_str().expect("name").to_string();
    p.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    for _ in 0..4 {
        p.psql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
        p.psql("SELECT pg_switch_wal()");
    }
    let last = p.switch_and_wait_archived(Duration::from_secs(120));
    (p, name, last)
}

fn check_against_full(repo: &TestRepo, quick: &serde_json::Value, backup: &str, last: &str) {
    assert_eq!(quick["source"], "summary", "{quick}");
    assert_eq!(quick["healthy"], true, "{quick}");
    assert_eq!(quick["wal"]["newest_segment"], last, "{quick}");
    assert_eq!(quick["backups"]["count"], 1, "{quick}");
    assert_eq!(quick["backups"]["newest"], backup, "{quick}");
    let out = repo.run("walvault", &["status", "--json", "--full"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let full = json(&out);
    assert_eq!(full["source"], "listing");
    for field in ["newest_segment", "timeline", "files"] {
        assert_eq!(quick["wal"][field], full["wal"][field], "wal.{field}: summary {quick}\nlisting {full}");
    }
    assert_eq!(quick["backups"]["stored_bytes"], full["backups"]["stored_bytes"]);
    assert_eq!(quick["recoverable_window"][0]["earliest_backup"], full["recoverable_window"][0]["earliest_backup"]);
}

#[test]
fn status_reads_the_summary_in_three_requests_s3() {
    let proxy = Proxy::start(&s3_endpoint(), Plan::clean());
    let repo = super::faults::repo_via(&proxy);
    let (_p, backup, last) = archive_some(&repo);
    let before = requests(&proxy);
    let out = repo.run("walvault", &["status", "--json"]);
    let sent = requests(&proxy) - before;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let quick = json(&out);
    eprintln!("walvault status sent {sent} requests: {}", quick["requests"]);
    assert!(sent <= 3, "status sent {sent} requests: {}", quick["requests"]);
    let counted = &quick["requests"];
    let own: u64 = ["get", "put", "head", "list", "delete"].iter().map(|k| counted[k].as_u64().unwrap_or(99)).sum();
    assert_eq!(own, sent, "the status's own count agrees with the proxy's: {counted}");
    check_against_full(&repo, &quick, &backup, &last);
}

#[test]
fn status_summary_local_directory_and_a_forged_summary() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let (_p, backup, last) = archive_some(&repo);
    let out = repo.run("walvault", &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let quick = json(&out);
    check_against_full(&repo, &quick, &backup, &last);

    // Someone with write access but not the key makes the archive look fresh and whole.
    let key = "status/production/summary.json";
    let mut forged: serde_json::Value = serde_json::from_slice(&get_raw(&repo, key)).expect("summary json");
    forged["backups"]["count"] = serde_json::json!(90);
    put_raw(&repo, key, &serde_json::to_vec(&forged).expect("json"));
    let out = repo.run("walvault", &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["source"], "listing", "a forged summary is not used: {s}");
    assert_eq!(s["backups"]["count"], 1);
    assert!(stderr(&out).contains("summary mac does not match"), "{}", stderr(&out));
}

/// A repository whose backups predate the summary (deleted here): status lists everything
/// until a base-backup counts every backup into the summary.
#[test]
fn backups_made_before_the_summary_are_counted() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let (p, _, _) = archive_some(&repo);
    delete(&repo, "status/production/summary.json");
    p.psql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
    p.switch_and_wait_archived(Duration::from_secs(120));
    let s = json(&repo.run("walvault", &["status", "--json"]));
    assert_eq!((s["source"].as_str(), s["backups"]["count"].as_u64()), (Some("listing"), Some(1)), "{s}");
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    let s = json(&repo.run("walvault", &["status", "--json"]));
    assert_eq!((s["source"].as_str(), s["backups"]["count"].as_u64()), (Some("summary"), Some(2)), "{s}");
}
