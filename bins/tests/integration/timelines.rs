//! Issue 11 item 9 on real PostgreSQL, on the local directory and on S3: a side restore
//! promoted to timeline 2 archives into the repository while the primary keeps writing
//! timeline 1. `list` shows both timelines with their own windows, `status` alerts two live
//! branches and measures the RPO on the primary's, pitr-prepare refuses to let `latest`
//! choose the branch and restores the primary's newest commit with `--target-timeline 1`;
//! a side restore with `--archive off` (the default) writes nothing into the repository.

use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, stderr};
use super::pitr::{base_backup, prepare, primary, recover};

const WAIT: Duration = Duration::from_secs(60);

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json: {e}\n{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(out)))
}

/// Every object key of the repository.
fn keys(repo: &TestRepo) -> Vec<String> {
    let out = repo.run("walvault", &["ls", "--json"]);
    assert!(out.status.success(), "ls: {}", stderr(&out));
    let mut keys: Vec<String> =
        json(&out).as_array().expect("array").iter().map(|o| o["key"].as_str().expect("key").to_string()).collect();
    keys.sort();
    keys
}

fn rows(c: &Cluster) -> i64 {
    c.psql("SELECT count(*) FROM t").parse().expect("count")
}

fn batch(c: &Cluster, n: i32) {
    c.psql(&format!("INSERT INTO t SELECT {n} FROM generate_series(1, 100)"));
}

/// The entry of `timeline` in a JSON array of objects with a "timeline" field.
fn entry(list: &serde_json::Value, timeline: u64) -> serde_json::Value {
    let found = list.as_array().expect("array").iter().find(|t| t["timeline"] == timeline).cloned();
    found.unwrap_or_else(|| panic!("timeline {timeline} in {list}"))
}

/// A side restore of `backup` with `args`, promoted; returns the running cluster.
fn side_restore(repo: &TestRepo, backup: &str, args: &[&str]) -> Cluster {
    let mut all = vec!["--backup", backup, "--latest"];
    all.extend_from_slice(args);
    let (mut c, out) = prepare(repo, &all);
    assert!(out.status.success(), "side restore: {}", stderr(&out));
    // The restored postgresql.conf archives with wal-push (the primary's settings).
    recover(&mut c, true);
    c
}

fn side_restore_beside_the_primary(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(batch int)");
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let b = json(&out)["name"].as_str().expect("name").to_string();
    batch(&p, 1);
    p.switch_and_wait_archived(WAIT);

    // --archive off (the default): the side restore never writes into the repository.
    let before = keys(&repo);
    let mut off = side_restore(&repo, &b, &[]);
    assert_eq!(off.psql("SHOW archive_mode"), "off");
    batch(&off, 50);
    off.psql("SELECT pg_switch_wal()");
    batch(&off, 51);
    off.stop();
    assert_eq!(keys(&repo), before, "a side restore with --archive off wrote into the repository");

    // The trap, reproduced on purpose: --archive on beside the running primary.
    let mut side = side_restore(&repo, &b, &["--archive", "on"]);
    assert_eq!(side.psql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    for n in 60..63 {
        batch(&side, n);
        side.psql("SELECT pg_switch_wal()");
    }
    let side_last = side.switch_and_wait_archived(WAIT);
    side.stop();
    std::thread::sleep(Duration::from_millis(1100)); // object times have second resolution
    batch(&p, 2);
    let after_fork = p.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')");
    std::thread::sleep(Duration::from_millis(1100));
    batch(&p, 3);
    let primary_last = p.switch_and_wait_archived(WAIT);
    let want = rows(&p);
    p.stop();
    let wal_objects = keys(&repo).iter().filter(|k| k.starts_with("wal/")).count();

    // list: both timelines, each with the window of its own files.
    let out = repo.run("walvault", &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let l = json(&out);
    let (t1, t2) = (entry(&l["timelines"], 1), entry(&l["timelines"], 2));
    assert_eq!(t1["last_segment"], primary_last.as_str(), "{l}");
    assert_eq!((t2["parent"].as_u64(), t2["last_segment"].as_str()), (Some(1), Some(side_last.as_str())), "{l}");
    assert!(t2["switchpoint"].is_string() && t1["parent"].is_null(), "{l}");
    assert_eq!(entry(&l["windows"], 1)["last_segment"], primary_last.as_str(), "timeline 1 stays: {l}");
    assert_eq!(entry(&l["windows"], 2)["last_segment"], side_last.as_str(), "timeline 2 ends on its own: {l}");
    let text = String::from_utf8_lossy(&repo.run("walvault", &["list"]).stdout).into_owned();
    assert!(text.contains("TIMELINES\ntimeline 1: ") && text.contains("\ntimeline 2 (from timeline 1 at "), "{text}");

    // status: two live branches; the RPO follows the primary's timeline.
    let out = repo.run("walvault", &["status", "--json"]);
    assert_eq!(out.status.code(), Some(8), "two live branches are unhealthy: {}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["live_branches"], serde_json::json!([1, 2]), "{s}");
    assert_eq!(
        (s["wal"]["timeline"].as_u64(), s["wal"]["newest_segment"].as_str()),
        (Some(1), Some(primary_last.as_str()))
    );
    let problems = s["problems"].to_string();
    assert!(problems.contains("two timelines are being written at once: timeline 1 (newest"), "{problems}");
    let prom = String::from_utf8_lossy(&repo.run("walvault", &["status", "--prometheus"]).stdout).into_owned();
    assert!(prom.contains("walvault_wal_live_branches{env=\"production\"} 2\n"), "{prom}");
    assert!(prom.contains("walvault_wal_timeline{env=\"production\"} 1\n"), "{prom}");

    // verify shows every timeline.
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    let details = json(&out)["wal"]["timeline_details"].clone();
    assert_eq!(entry(&details, 2)["last_segment"], side_last.as_str(), "{details}");

    // pitr-prepare: latest by default is refused (two branches); a time on timeline 1 after the
    // fork while following latest (timeline 2) is refused, naming the timeline that has it.
    let (_, out) = prepare(&repo, &["--backup", &b, "--latest"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("two branches pass through backup") && stderr(&out).contains("--target-timeline 1"));
    let (_, out) = prepare(&repo, &["--backup", &b, "--target-time", &after_fork, "--target-timeline", "latest"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("beyond the archive on timeline 2") && err.contains("timeline 1 reaches it"), "{err}");

    // verify --restore-test does not pass on the side branch: the restore is refused.
    let out = repo.run("walvault", &["verify", "--json", "--no-report", "--restore-test"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("two branches pass through backup"), "{}", stderr(&out));

    // A timeline the archive does not know, and one that is not a timeline.
    let (_, out) = prepare(&repo, &["--backup", &b, "--latest", "--target-timeline", "7"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("00000007.history"), "{}", stderr(&out));
    let (_, out) = prepare(&repo, &["--backup", &b, "--latest", "--target-timeline", "newest"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--target-timeline"), "{}", stderr(&out));
    assert_eq!(keys(&repo).iter().filter(|k| k.starts_with("wal/")).count(), wal_objects, "nothing archived since");

    // --target-timeline 1: every commit of the primary.
    let (mut r, out) = prepare(&repo, &["--backup", &b, "--latest", "--target-timeline", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conf = std::fs::read_to_string(r.pgdata.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(conf.contains("recovery_target_timeline = '1'\narchive_mode = 'off'\n"), "{conf}");
    recover(&mut r, true);
    assert_eq!(rows(&r), want, "the primary's newest commit\n{}", r.log());
    r.stop();
}

#[test]
fn side_restore_beside_the_primary_local_directory() {
    side_restore_beside_the_primary(Backend::Fs);
}

#[test]
fn side_restore_beside_the_primary_s3() {
    side_restore_beside_the_primary(Backend::S3);
}
