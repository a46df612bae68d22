//! Issue 11's timeline-fork and changed-repository scenarios on real PostgreSQL, on the local
//! directory and on S3: prune after a rewind, the parent standing in past a fork, another
//! cluster's object with a cold cache, a hole made after pitr-prepare, a standby whose
//! repository blipped.

use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, shared_tempdir, stderr};
use super::pitr::{base_backup, prepare, primary, recover};
use super::raw::{delete, get_raw, json, keys, put_raw, wal_key};

fn backup(repo: &TestRepo, c: &Cluster) -> serde_json::Value {
    let out = base_backup(repo, c, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(1100)); // backup names have second resolution
    json(&out)
}

fn rows(c: &Cluster) -> i64 {
    c.psql("SELECT count(*) FROM t").parse().expect("count")
}

/// wal-fetch `name` into a fresh file with a cold cache (its own cache directory).
fn fetch_cold(repo: &TestRepo, name: &str) -> std::process::Output {
    let dir = shared_tempdir();
    repo.command("wal-fetch")
        .env("WALVAULT_CACHE_DIR", dir.path().join("cache"))
        .env("WALVAULT_FETCH_PREFETCH", "0")
        .arg(name)
        .arg(dir.path().join("out"))
        .output()
        .expect("wal-fetch")
}

/// B1, B2 on timeline 1; a PITR of B1 to an early point promoted to timeline 2 archiving
/// into the same repository (`--archive on`: it replaces the primary); B3 on timeline 2. Returns (B2, B3, rows on timeline 2).
fn rewind(repo: &TestRepo) -> (serde_json::Value, serde_json::Value, i64) {
    let mut p = primary(repo);
    p.psql("CREATE TABLE t(batch int)");
    let b1 = backup(repo, &p);
    p.psql("INSERT INTO t SELECT 1 FROM generate_series(1, 100)");
    let early = p.psql("SELECT pg_current_wal_lsn()");
    for i in 2..6 {
        p.psql(&format!("INSERT INTO t SELECT {i} FROM generate_series(1, 100)"));
        p.psql("SELECT pg_switch_wal()");
    }
    p.switch_and_wait_archived(Duration::from_secs(60));
    let b2 = backup(repo, &p);
    p.psql("INSERT INTO t SELECT 9 FROM generate_series(1, 100)");
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();

    let name = b1["name"].as_str().expect("name");
    let (mut c, out) = prepare(repo, &["--backup", name, "--target-lsn", &early, "--archive", "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.append_conf(&c.archive_conf().replace("port = 5432\n", ""));
    recover(&mut c, true);
    assert_eq!(c.psql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    for i in 20..23 {
        c.psql(&format!("INSERT INTO t SELECT {i} FROM generate_series(1, 100)"));
        c.psql("SELECT pg_switch_wal()");
    }
    c.switch_and_wait_archived(Duration::from_secs(60));
    let b3 = backup(repo, &c);
    for i in 30..34 {
        c.psql(&format!("INSERT INTO t SELECT {i} FROM generate_series(1, 100)"));
        c.psql("SELECT pg_switch_wal()");
    }
    c.switch_and_wait_archived(Duration::from_secs(60));
    let want = rows(&c);
    c.stop();
    (b2, b3, want)
}

/// Issue 11 item 1: `prune --keep-last 2` after a rewind keeps the WAL B3 needs on timeline 2.
fn prune_after_rewind(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let (b2, b3, want) = rewind(&repo);
    // A restore that replaced the primary is one branch, not two being written at once.
    let status = json(&repo.run("walvault", &["status", "--json"]));
    assert_eq!(status["live_branches"], serde_json::json!([]), "{status}");
    assert_eq!(status["wal"]["timeline"], 2, "{status}");
    let later = super::ops::time_from_now("+9 days");
    let args = ["prune", "--json", "--keep-last", "2", "--retain-backups", "1s", "--retain-wal", "1s", "--now", &later];
    let out = repo.run("walvault", &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json(&out)["wal"]["deleted"].as_u64().expect("deleted") > 0, "prune deleted WAL B1 alone needed");
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    assert_eq!(out.status.code(), Some(0), "B2 and B3 verify: {}", String::from_utf8_lossy(&out.stdout));

    let b3_name = b3["name"].as_str().expect("name");
    let (mut r, out) = prepare(&repo, &["--backup", b3_name, "--latest"]);
    assert!(out.status.success(), "B3 restores after prune: {}", stderr(&out));
    recover(&mut r, false);
    assert_eq!(rows(&r), want, "every row of timeline 2\n{}", r.log());
    r.stop();
    assert!(b2["timeline"] == 1);
}

#[test]
fn prune_after_a_rewind_keeps_the_new_timelines_wal_local_directory() {
    prune_after_rewind(Backend::Fs);
}

#[test]
fn prune_after_a_rewind_keeps_the_new_timelines_wal_s3() {
    prune_after_rewind(Backend::S3);
}

/// Issue 11 items 2 and 4: a timeline-2 segment deleted while timeline 1's file of the same
/// number stays. list and verify name the gap, pitr-prepare refuses, wal-fetch answers a
/// hole (> 125) with a cold cache; a recovery prepared before the deletion aborts instead of
/// promoting early.
fn hole_past_the_fork(backend: Backend) {
    let mut repo = TestRepo::new(backend, Some(TEST_KEY));
    repo.env.push(("WALVAULT_FETCH_PREFETCH".into(), "0".into()));
    let (_, b3, _) = rewind(&repo);
    let b3_name = b3["name"].as_str().expect("name");
    let start = b3["start_wal_file"].as_str().expect("start").to_string();
    // A recovery prepared while the archive is whole.
    let (mut r, out) = prepare(&repo, &["--backup", b3_name, "--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The segment after B3's end, on timeline 2; timeline 1 has a file of that number.
    let segno = u64::from_str_radix(&start[16..], 16).expect("segno") + 2;
    let victim = format!("00000002{}{:08X}", &start[8..16], segno);
    let parent = format!("00000001{}", &victim[8..]);
    assert!(wal_key(&repo, &parent).is_some(), "timeline 1 holds {parent}: {:?}", keys(&repo, "wal/"));
    delete(&repo, &wal_key(&repo, &victim).unwrap_or_else(|| panic!("{victim} archived: {:?}", keys(&repo, "wal/"))));

    let out = repo.run("walvault", &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&victim), "list names the gap {victim}");
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    assert_eq!(out.status.code(), Some(8), "verify fails: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&victim));
    let (_, out) = prepare(&repo, &["--backup", b3_name, "--latest"]);
    assert!(!out.status.success() && stderr(&out).contains(&victim), "{}", stderr(&out));

    let out = fetch_cold(&repo, &victim);
    assert_eq!(out.status.code(), Some(205), "a hole: {}", stderr(&out));
    assert!(stderr(&out).contains("a hole, not the end"), "{}", stderr(&out));
    let next = format!("00000002{}{:08X}", &start[8..16], segno + 40);
    assert_eq!(fetch_cold(&repo, &next).status.code(), Some(1), "the true end is 1");

    // The recovery prepared before: PostgreSQL stops, it does not promote.
    r.append_conf(&format!("unix_socket_directories = '{}'\narchive_mode = off\n", r.socket_dir.display()));
    r.start_no_wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !r.log().contains("a hole, not the end") {
        assert!(std::time::Instant::now() < deadline, "no hole reported\n{}", r.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(!r.log().contains("selected new timeline ID"), "promoted past a hole\n{}", r.log());
}

#[test]
fn parent_never_stands_in_past_the_fork_local_directory() {
    hole_past_the_fork(Backend::Fs);
}

#[test]
fn parent_never_stands_in_past_the_fork_s3() {
    hole_past_the_fork(Backend::S3);
}

/// Issue 11 item 3: another cluster's segment (same key, same name) copied into the
/// repository is refused by wal-fetch with a cold cache.
fn foreign_segment(backend: Backend) {
    let ours = TestRepo::new(backend, Some(TEST_KEY));
    let theirs = TestRepo::new(backend, Some(TEST_KEY));
    let mut a = primary(&ours);
    let mut b = primary(&theirs);
    let name = a.switch_and_wait_archived(Duration::from_secs(60));
    b.switch_and_wait_archived(Duration::from_secs(60));
    a.stop();
    b.stop();
    let key = wal_key(&ours, &name).expect("ours");
    let foreign = get_raw(&theirs, &wal_key(&theirs, &name).expect("theirs"));
    delete(&ours, &key);
    put_raw(&ours, &key, &foreign);
    let out = fetch_cold(&ours, &name);
    let code = out.status.code().expect("exit");
    assert!(code > 125, "refused, recovery stops: {code} {}", stderr(&out));
    assert!(stderr(&out).contains(&name) || stderr(&out).contains(&key), "{}", stderr(&out));
}

#[test]
fn cold_cache_refuses_another_clusters_segment_local_directory() {
    foreign_segment(Backend::Fs);
}

#[test]
fn cold_cache_refuses_another_clusters_segment_s3() {
    foreign_segment(Backend::S3);
}

/// A standby (standby.signal) whose local repository directory is not mounted gets a
/// retryable answer (PostgreSQL tries again); without standby.signal it stays fatal.
#[test]
fn a_standby_survives_an_unreachable_repository() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();
    let root = repo.fs_root.clone().expect("fs");
    let away = root.with_extension("unmounted");
    std::fs::rename(&root, &away).expect("unmount");
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    std::fs::create_dir_all(pgdata.join("pg_wal")).expect("mkdir");
    let run = || {
        repo.command("wal-fetch")
            .current_dir(&pgdata)
            .args(["00000002.history", "pg_wal/RECOVERYHISTORY"])
            .output()
            .expect("wal-fetch")
    };
    let out = run();
    assert!(out.status.code().is_some_and(|c| c > 125), "archive recovery: fatal: {}", stderr(&out));
    std::fs::write(pgdata.join("standby.signal"), b"").expect("signal");
    let out = run();
    let code = out.status.code().expect("exit");
    assert!((2..=125).contains(&code), "standby: retryable, not 'not found': {code} {}", stderr(&out));
    assert!(stderr(&out).contains("standby mode"), "{}", stderr(&out));
    std::fs::rename(&away, &root).expect("mount");
}
