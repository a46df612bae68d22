//! base-backup and pitr-prepare against real PostgreSQL: point-in-time recovery to a time, an
//! LSN, an xid, a restore point and the end of the archive; refusals that write nothing; a
//! base backup killed halfway.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, shared_tempdir, stderr, walk};

/// A primary archiving into `repo`.
pub(super) fn primary(repo: &TestRepo) -> Cluster {
    primary_with(repo, super::common::pg_bin())
}

/// A primary of the PostgreSQL in `bin` archiving into `repo`.
pub(super) fn primary_with(repo: &TestRepo, bin: PathBuf) -> Cluster {
    let mut c = Cluster::init_with(bin, &[], repo.env.clone());
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
        .args(["--json", "--checkpoint", "fast"])
        .args(if extra.contains(&"--part-size") { &[][..] } else { &["--part-size", "4000000"][..] })
        .args(extra)
        .output()
        .expect("base-backup")
}

/// pitr-prepare into a fresh directory; returns the cluster (not started) and the output.
pub(super) fn prepare(repo: &TestRepo, args: &[&str]) -> (Cluster, Output) {
    prepare_with(repo, args, super::common::pg_bin())
}

/// As [`prepare`], the restored cluster to be run by the PostgreSQL in `bin`.
pub(super) fn prepare_with(repo: &TestRepo, args: &[&str], bin: PathBuf) -> (Cluster, Output) {
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = repo.pitr_prepare(&pgdata, args);
    (Cluster::at(dir, pgdata, repo.env.clone()).with_bin(bin), out)
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

/// The PITR drill on the PostgreSQL in `bin`: every kind of target.
pub(super) fn pitr_drill_with(backend: Backend, bin: PathBuf) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let p = primary_with(&repo, bin.clone());
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
    // One statement, one transaction (psql before 15 prints only the last result of -c).
    let xid3 = p.psql(
        "WITH x AS (INSERT INTO t(batch) SELECT 3 FROM generate_series(1, 100) RETURNING 1) SELECT txid_current() FROM (SELECT count(*) FROM x) s",
    );
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
        let (mut c, out) = prepare_with(&repo, args, bin.clone());
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
    pitr_drill_with(Backend::Fs, super::common::pg_bin());
}

#[test]
fn pitr_to_every_kind_of_target_s3() {
    pitr_drill_with(Backend::S3, super::common::pg_bin());
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
    timeline_switch_with(super::common::pg_bin());
}

/// The timeline-switch suite on the PostgreSQL in `bin`.
pub(super) fn timeline_switch_with(bin: PathBuf) {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary_with(&repo, bin.clone());
    p.psql("CREATE TABLE t(batch int)");
    assert!(base_backup(&repo, &p, &[]).status.success());
    p.psql("INSERT INTO t SELECT 1 FROM generate_series(1, 100)");
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();

    let (mut c, out) = prepare_with(&repo, &["--latest", "--archive", "on"], bin.clone());
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

    let (mut r, out) = prepare_with(&repo, &["--target-lsn", &lsn], bin);
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

    // A killed process cannot remove its spool: keep it in the test's directory.
    let spool = repo.dir().join("spool");
    std::fs::create_dir(&spool).expect("spool");
    if super::common::is_root() {
        let (uid, gid) = super::common::postgres_ids();
        std::os::unix::fs::chown(&spool, Some(uid), Some(gid)).expect("chown spool");
    }
    let mut child = repo
        .command_as_postgres("base-backup")
        .env("PGHOST", &p.socket_dir)
        .env("PGUSER", "postgres")
        .env("PGDATA", &p.pgdata)
        .args(["--checkpoint", "fast", "--part-size", "1000000", "--jobs", "1", "--spool-dir"])
        .arg(&spool)
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

/// One 512-byte ustar header plus data, with any path (the tar crate refuses to write `..`).
pub(super) fn raw_tar_entry(path: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..107].copy_from_slice(b"0000600");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A hostile tar entry in a backup part is refused; nothing lands outside PGDATA and the
/// half-restored PGDATA is emptied again.
#[test]
fn hostile_tar_entry_is_refused() {
    use walvault::codec::{CodecSettings, Compression, Key, encode_to_vec};
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.stop();
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let part_key = meta["parts"][1]["key"].as_str().expect("part key");
    let root = repo.fs_root.clone().expect("fs");
    let key = Key::from_material(TEST_KEY.as_bytes(), "test").expect("key");
    let settings = CodecSettings { compression: Compression::Zstd, level: 1 };
    for hostile in ["../escaped-by-walvault-test", "/tmp/absolute-by-walvault-test", "base/../../escaped2"] {
        let mut tar = raw_tar_entry(hostile, b"owned");
        tar.extend_from_slice(&[0u8; 1024]);
        let name = meta["name"].as_str().expect("name");
        let place = super::binding::place_context(&repo, &format!("backup/{name}/part/1"), true);
        let object = encode_to_vec(&tar, &settings, Some(&key), None, &place).expect("encode");
        std::fs::write(root.join(part_key), object).expect("plant");
        let (c, out) = prepare(&repo, &["--immediate"]);
        assert_eq!(out.status.code(), Some(5), "{hostile}: {}", stderr(&out));
        assert!(stderr(&out).contains(hostile), "names the entry: {}", stderr(&out));
        assert!(dir_is_empty(&c.pgdata), "PGDATA emptied again");
        assert!(!c.pgdata.parent().expect("parent").join("escaped-by-walvault-test").exists());
        assert!(!Path::new("/tmp/absolute-by-walvault-test").exists());
    }
}

/// A database with a tablespace and a few hundred MB of pgbench data restores (tablespace
/// moved with --tablespace-map), has the source's row counts, and passes pg_amcheck.
#[test]
fn tablespace_and_pgbench_restore_passes_amcheck() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    let ts = p.dir.path().join("ts1");
    std::fs::create_dir(&ts).expect("mkdir");
    let (uid, gid) = super::common::postgres_ids();
    if super::common::is_root() {
        std::os::unix::fs::chown(&ts, Some(uid), Some(gid)).expect("chown");
    }
    p.psql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts.display()));
    p.psql("CREATE TABLE tst(id int, v text) TABLESPACE ts1");
    p.psql("INSERT INTO tst SELECT g, md5(g::text) FROM generate_series(1, 100000) g");
    p.psql("CREATE INDEX tst_id ON tst(id) TABLESPACE ts1");
    p.pgbench(&["-i", "-s", "20", "-q"]);
    let oid = p.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");

    let out = base_backup(&repo, &p, &["--part-size", "67108864"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    p.pgbench(&["-n", "-t", "300", "-c", "2"]);
    p.psql("INSERT INTO tst SELECT g, 'after' FROM generate_series(100001, 101000) g");
    let counts = "SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM tst)";
    let expected = p.psql(counts);
    p.switch_and_wait_archived(Duration::from_secs(120));
    p.stop();

    let dir = shared_tempdir();
    let moved = dir.path().join("ts1-restored");
    let pgdata = dir.path().join("pgdata");
    let started = Instant::now();
    let out = repo
        .command("pitr-prepare")
        .arg("--pgdata")
        .arg(&pgdata)
        .args(["--latest", "--tablespace-map", &format!("{oid}={}", moved.display())])
        .output()
        .expect("pitr-prepare");
    assert!(out.status.success(), "{}", stderr(&out));
    let prepared = started.elapsed();
    let mut c = Cluster::at(dir, pgdata, repo.env.clone());
    recover(&mut c, false);
    let recovered = started.elapsed();
    assert_eq!(c.psql(counts), expected, "{}", c.log());
    assert_eq!(
        c.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
        moved.display().to_string()
    );
    let amcheck = super::common::as_postgres(super::common::pg_bin().join("pg_amcheck"))
        .args(["--install-missing", "--all", "--heapallindexed", "-U", "postgres", "-h"])
        .arg(&c.socket_dir)
        .args(["-p", &c.port.to_string()])
        .output()
        .expect("pg_amcheck");
    assert!(amcheck.status.success(), "pg_amcheck: {}{}", String::from_utf8_lossy(&amcheck.stdout), stderr(&amcheck));
    c.stop();
    let mb = meta["bytes"].as_f64().expect("bytes") / 1e6;
    let secs = meta["seconds"].as_f64().expect("seconds");
    eprintln!(
        "pgbench -s 20 + tablespace: {mb:.0} MB backed up in {secs:.1} s ({:.0} MB/s, stored {:.0} MB); pitr-prepare {:.1} s ({:.0} MB/s); promoted after {:.1} s",
        mb / secs,
        meta["stored_bytes"].as_f64().expect("stored") / 1e6,
        prepared.as_secs_f64(),
        mb / prepared.as_secs_f64(),
        recovered.as_secs_f64()
    );
}

/// Names of the WAL segments a recovery read, from the server log (wal-fetch logging at
/// debug): those PostgreSQL restored through `%p`, and those wal-fetch found in pg_wal,
/// verified, and left for PostgreSQL to read there (exit 1).
fn segments_read(log: &str) -> (Vec<String>, Vec<String>) {
    let name_after = |line: &str, marker: &str| -> Option<String> {
        let rest = &line[line.find(marker)? + marker.len()..];
        let name: String = rest.chars().take(24).collect();
        (name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit())).then_some(name)
    };
    let via_p = log.lines().filter_map(|l| name_after(l, "restored log file \"")).collect();
    let in_pg_wal = log
        .lines()
        .filter(|l| l.contains("is in pg_wal, complete and verified"))
        .filter_map(|l| name_after(l, "wal-fetch: debug: "))
        .collect();
    (via_p, in_pg_wal)
}

/// Every segment number from the first read to the last was read one way or the other.
fn assert_contiguous(via_p: &[String], in_pg_wal: &[String], log: &str) {
    let segno = |n: &String| {
        u64::from_str_radix(&n[8..16], 16).unwrap_or(0) * 256 + u64::from_str_radix(&n[16..], 16).unwrap_or(0)
    };
    let mut all: Vec<u64> = via_p.iter().chain(in_pg_wal).map(segno).collect();
    all.sort_unstable();
    all.dedup();
    let (first, last) = (all[0], all[all.len() - 1]);
    assert_eq!(all.len() as u64, last - first + 1, "every segment from {first} to {last} was read: {all:?}\n{log}");
}

/// A recovery pitr-prepare planned reads its WAL straight from pg_wal (placed there, verified,
/// by pitr-prepare and wal-fetch's worker; PostgreSQL reads it after wal-fetch's exit 1), on
/// timeline 1 and across a switch to timeline 2, and still stops exactly at the target.
#[test]
fn planned_recovery_reads_wal_from_pg_wal_across_a_timeline_switch() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(batch int, pad text)");
    assert!(base_backup(&repo, &p, &[]).status.success());
    let fill = |c: &Cluster, batch: i32| {
        for _ in 0..8 {
            c.psql(&format!("INSERT INTO t SELECT {batch}, repeat('x', 100) FROM generate_series(1, 1000)"));
            c.psql("SELECT pg_switch_wal()");
        }
    };
    fill(&p, 1);
    p.switch_and_wait_archived(Duration::from_secs(120));
    p.stop();

    // Timeline 1 to its end, then promotion to timeline 2 (archiving into the same repository).
    let (mut c, out) = prepare(&repo, &["--latest", "--json", "--archive", "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let placed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(placed["wal_staged"].as_u64().is_some_and(|n| n >= 1), "pitr-prepare fetched WAL ahead: {placed}");
    let wal_names = |dir: &Path| -> Vec<PathBuf> {
        walk(dir)
            .into_iter()
            .filter(|p| {
                p.file_name().and_then(|f| f.to_str()).is_some_and(|f| walvault::wal::WalFileName::parse(f).is_ok())
            })
            .collect()
    };
    // A data directory that someone starts without recovery.signal must find no WAL to run on.
    assert!(wal_names(&c.pgdata.join("pg_wal")).is_empty(), "nothing in pg_wal before recovery runs");
    c.env.push(("WALVAULT_LOG".into(), "debug".into()));
    c.append_conf(&c.archive_conf().replace("port = 5432\n", ""));
    recover(&mut c, true);
    assert_eq!(c.psql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    assert_eq!(count(&c), 8000, "{}", c.log());
    let (via_p, in_pg_wal) = segments_read(&c.log());
    eprintln!("timeline 1: {} segments through %p, {} read from pg_wal", via_p.len(), in_pg_wal.len());
    assert!(!in_pg_wal.is_empty(), "segments read from pg_wal: {in_pg_wal:?} vs {via_p:?}\n{}", c.log());
    assert_contiguous(&via_p, &in_pg_wal, &c.log());

    fill(&c, 2);
    let lsn = c.psql("SELECT pg_current_wal_lsn()");
    c.psql("INSERT INTO t SELECT 3 FROM generate_series(1, 100)");
    c.switch_and_wait_archived(Duration::from_secs(120));
    assert_eq!(c.failed_count(), 0, "{}", c.log());
    c.stop();

    // Back across the switch to a point on timeline 2, restored with --force into the same
    // data directory, whose spool holds leftovers of the first restore (never used), with room
    // for the whole range in pg_wal (so that no segment's way depends on the worker's speed).
    let canonical = std::fs::canonicalize(&c.pgdata).expect("canonical");
    let spool = walk(&repo.dir().join("cache"))
        .into_iter()
        .filter(|p| p.ends_with("plan.json"))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(&format!("\"{}\"", canonical.display()))))
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the first restore's spool");
    let leftover = walvault::wal::synthetic_segment(1, 2, 0x10, 16 << 20, 0xD110, 9);
    std::fs::write(spool.join("000000020000000000000010"), &leftover).expect("plant");
    std::fs::write(spool.join("000000020000000000000011.staged"), b"half").expect("plant");
    let out = repo
        .command("pitr-prepare")
        .env("WALVAULT_FETCH_PREFETCH", "32")
        .arg("--pgdata")
        .arg(&c.pgdata)
        .args(["--force", "--target-lsn", &lsn])
        .output()
        .expect("pitr-prepare");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!spool.join("000000020000000000000010").exists(), "the earlier restore's spool is gone");
    assert!(!spool.join("000000020000000000000011.staged").exists());
    std::fs::write(c.dir.path().join("server.log"), b"").expect("truncate log");
    let mut r = c;
    r.env.push(("WALVAULT_FETCH_PREFETCH".into(), "32".into()));
    recover(&mut r, false);
    assert_eq!(count(&r), 16000, "exactly the target: {}", r.log());
    assert_eq!(r.psql("SELECT count(*) FROM t WHERE batch = 3"), "0");
    let log = r.log();
    let (via_p, in_pg_wal) = segments_read(&log);
    eprintln!("timeline 1 -> 2: {} segments through %p, {} read from pg_wal", via_p.len(), in_pg_wal.len());
    assert!(in_pg_wal.iter().any(|n| n.starts_with("00000001")), "timeline 1 from pg_wal: {in_pg_wal:?}\n{log}");
    assert!(in_pg_wal.iter().any(|n| n.starts_with("00000002")), "timeline 2 from pg_wal: {in_pg_wal:?}\n{log}");
    assert!(
        in_pg_wal.len() >= 12 && via_p.len() <= 2,
        "most segments read from pg_wal: {in_pg_wal:?} vs {via_p:?}\n{log}"
    );
    assert_contiguous(&via_p, &in_pg_wal, &log);
    // Nothing PostgreSQL read from pg_wal is archived again after promotion.
    let status = walk(&r.pgdata.join("pg_wal/archive_status"));
    assert!(
        status.iter().all(|p| !p.to_string_lossy().ends_with(".ready") || p.to_string_lossy().contains("00000003")),
        "{status:?}"
    );
    r.stop();
}
