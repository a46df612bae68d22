//! base-backup and pitr-prepare against real PostgreSQL: point-in-time recovery to a time, an
//! LSN, an xid, a restore point and the end of the archive; refusals that write nothing; a
//! base backup killed halfway.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, shared_tempdir, stderr};

/// A primary archiving into `repo`.
pub(super) fn primary(repo: &TestRepo) -> Cluster {
    let mut c = Cluster::init(repo.env.clone());
    c.append_conf(&c.archive_conf());
    c.start();
    c
}

/// Run base-backup against `c`.
pub(super) fn base_backup(repo: &TestRepo, c: &Cluster, extra: &[&str]) -> Output {
    repo.command_as_postgres("base-backup")
        .env("PGHOST", &c.socket_dir)
        .env("PGPORT", c.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATA", &c.pgdata)
        .args(["--json", "--part-size", "4000000"])
        .args(extra)
        .output()
        .expect("base-backup")
}

/// pitr-prepare into a fresh directory; returns the cluster (not started) and the output.
pub(super) fn prepare(repo: &TestRepo, args: &[&str]) -> (Cluster, Output) {
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = repo.command("pitr-prepare").arg("--pgdata").arg(&pgdata).args(args).output().expect("pitr-prepare");
    (Cluster::at(dir, pgdata, repo.env.clone()), out)
}

/// Start a restored cluster on its own socket, without archiving, and wait for promotion.
pub(super) fn recover(c: &mut Cluster, archive: bool) {
    let mut conf = format!("unix_socket_directories = '{}'\n", c.socket_dir.display());
    if !archive {
        conf.push_str("archive_mode = off\n");
    }
    c.append_conf(&conf);
    c.start_and_wait_promoted(Duration::from_secs(180));
}

fn count(c: &Cluster) -> i64 {
    c.psql("SELECT count(*) FROM t").parse().expect("count")
}

fn pitr_drill(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(batch int, at timestamptz default clock_timestamp())");
    p.pgbench(&["-i", "-s", "1", "-q"]);
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert!(meta["parts"].as_array().expect("parts").len() >= 3, "several parts: {meta}");

    let batch = |n: i32| p.psql(&format!("INSERT INTO t(batch) SELECT {n} FROM generate_series(1, 100)"));
    batch(1);
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = p.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')");
    std::thread::sleep(Duration::from_millis(1100));
    batch(2);
    let lsn2 = p.psql("SELECT pg_current_wal_lsn()");
    let xid3 =
        p.psql("BEGIN; INSERT INTO t(batch) SELECT 3 FROM generate_series(1, 100); SELECT txid_current(); COMMIT;");
    let xid3 = xid3.lines().find(|l| l.trim().parse::<u64>().is_ok()).expect("xid").trim().to_string();
    batch(4);
    p.psql("SELECT pg_create_restore_point('before_batch5')");
    batch(5);
    p.switch_and_wait_archived(Duration::from_secs(120));

    let cases: [(&[&str], i64); 5] = [
        (&["--target-time", &t1], 100),
        (&["--target-lsn", &lsn2], 200),
        (&["--target-xid", &xid3], 300),
        (&["--target-name", "before_batch5"], 400),
        (&["--latest"], 500),
    ];
    for (args, expected) in cases {
        let (mut c, out) = prepare(&repo, args);
        assert!(out.status.success(), "pitr-prepare {args:?}: {}", stderr(&out));
        recover(&mut c, false);
        assert_eq!(count(&c), expected, "{backend:?} {args:?}\n{}", c.log());
        c.stop();
    }
    let listing = repo.run("walvault", &["list"]);
    assert!(listing.status.success(), "{}", stderr(&listing));
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.contains("timeline 1: from"), "{text}");
}

#[test]
fn pitr_to_every_kind_of_target_local_directory() {
    pitr_drill(Backend::Fs);
}

#[test]
fn pitr_to_every_kind_of_target_s3() {
    pitr_drill(Backend::S3);
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// A target beyond the archive, a missing WAL file, a non-empty PGDATA and a wrong key are
/// refused before anything is written; the repository is untouched.
#[test]
fn refusals_write_nothing() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(batch int)");
    assert!(base_backup(&repo, &p, &[]).status.success());
    for n in 0..3 {
        p.psql(&format!("INSERT INTO t SELECT {n} FROM generate_series(1, 1000)"));
        p.psql("SELECT pg_switch_wal()");
    }
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();
    let before = repo.raw_objects();

    let (c, out) = prepare(&repo, &["--target-time", "2999-01-01 00:00:00"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("beyond the archive"), "{}", stderr(&out));
    assert!(stderr(&out).contains("the newest point the archive reaches is"), "{}", stderr(&out));
    assert!(dir_is_empty(&c.pgdata), "nothing written");

    let (c, out) = prepare(&repo, &["--target-lsn", "FF/0"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(dir_is_empty(&c.pgdata));

    let (c, out) = repo_with(&repo, "BACKUP_ENCRYPTION_KEY", super::common::OTHER_KEY, &["--latest"]);
    assert_eq!(out.status.code(), Some(4), "wrong key: {}", stderr(&out));
    assert!(dir_is_empty(&c.pgdata));

    let busy = shared_tempdir();
    std::fs::write(busy.path().join("PG_VERSION"), "15\n").expect("write");
    let out = repo.command("pitr-prepare").arg("--pgdata").arg(busy.path()).arg("--latest").output().expect("run");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(busy.path()).expect("dir").count(), 1);

    // A WAL file missing in the middle of the chain.
    let root = repo.fs_root.clone().expect("fs");
    let wal: Vec<PathBuf> = super::common::walk(&root.join("wal"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() > 24 && !n.contains("history") && !n.contains("backup"))
        })
        .collect();
    let victim = &wal[wal.len() - 2];
    let saved = std::fs::read(victim).expect("read");
    std::fs::remove_file(victim).expect("remove");
    let (c, out) = prepare(&repo, &["--latest"]);
    let name: String = victim.file_name().and_then(|n| n.to_str()).expect("name").chars().take(24).collect();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("missing {name}")), "names the missing file {name}: {}", stderr(&out));
    assert!(dir_is_empty(&c.pgdata));
    std::fs::write(victim, saved).expect("restore");
    assert_eq!(repo.raw_objects(), before, "repository untouched");
}

fn repo_with(repo: &TestRepo, k: &str, v: &str, args: &[&str]) -> (Cluster, Output) {
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = repo.command("pitr-prepare").env(k, v).arg("--pgdata").arg(&pgdata).args(args).output().expect("run");
    (Cluster::at(dir, pgdata, repo.env.clone()), out)
}

/// Restore, promote (timeline 2), keep archiving into the same repository, then recover to
/// a point on the new timeline.
#[test]
fn pitr_on_a_new_timeline() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(batch int)");
    assert!(base_backup(&repo, &p, &[]).status.success());
    p.psql("INSERT INTO t SELECT 1 FROM generate_series(1, 100)");
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();

    let (mut c, out) = prepare(&repo, &["--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.append_conf(&c.archive_conf().replace("port = 5432\n", ""));
    recover(&mut c, true);
    assert_eq!(c.psql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    c.psql("INSERT INTO t SELECT 2 FROM generate_series(1, 100)");
    let lsn = c.psql("SELECT pg_current_wal_lsn()");
    c.psql("INSERT INTO t SELECT 3 FROM generate_series(1, 100)");
    c.switch_and_wait_archived(Duration::from_secs(60));
    assert_eq!(c.failed_count(), 0, "{}", c.log());
    c.stop();

    let (mut r, out) = prepare(&repo, &["--target-lsn", &lsn]);
    assert!(out.status.success(), "{}", stderr(&out));
    recover(&mut r, false);
    assert_eq!(count(&r), 200, "{}", r.log());
    r.stop();
}

/// A base backup killed with SIGKILL halfway leaves latest.json on the previous complete
/// backup, and the next base backup succeeds.
#[test]
fn killed_base_backup_leaves_latest_alone() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let p = primary(&repo);
    p.pgbench(&["-i", "-s", "3", "-q"]);
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let latest_path = repo.fs_root.clone().expect("fs").join("database/production/latest.json");
    let latest_before = std::fs::read(&latest_path).expect("latest.json");

    let mut child = repo
        .command_as_postgres("base-backup")
        .env("PGHOST", &p.socket_dir)
        .env("PGUSER", "postgres")
        .env("PGDATA", &p.pgdata)
        .args(["--part-size", "1000000", "--jobs", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr_pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr_pipe).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(l)) if l.contains("part 3/") => return true,
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
        false
    });
    let reached = reader.join().expect("reader");
    let _ = child.kill();
    let _ = child.wait();
    assert!(reached, "the backup got halfway before the kill");
    assert_eq!(std::fs::read(&latest_path).expect("latest.json"), latest_before, "latest.json unchanged");
    let list = repo.run("walvault", &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(v["backups"].as_array().expect("backups").len(), 1, "the killed backup is not listed");

    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "next base-backup: {}", stderr(&out));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_ne!(first["name"], second["name"]);
    let latest: serde_json::Value = serde_json::from_slice(&std::fs::read(&latest_path).expect("read")).expect("json");
    assert_eq!(latest["backup"], second["name"]);
}
