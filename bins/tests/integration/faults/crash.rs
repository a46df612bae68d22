//! Crash safety: SIGKILL of wal-push, wal-fetch, base-backup and pitr-prepare at random
//! (seeded) points, many runs each, then the invariants:
//! - no half object is ever accepted: every object a reader finds decodes completely, and a
//!   name is either absent from the archive or comes back byte-identical;
//! - `%p` is either absent or complete (never half-written under its final name);
//! - nothing archived becomes unrecoverable: rerunning the killed command succeeds and the
//!   file comes back; `latest.json` only ever names a complete backup;
//! - pitr-prepare never writes to the repository, writes `recovery.signal` only after a
//!   complete restore, and a half-restored data directory does not start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::super::common::shared_tempdir;
use super::super::common::{Backend, TEST_KEY, TestRepo, stderr, walk};
use super::super::pitr::{prepare, primary, recover};
use super::proxy::Rng;
use super::segment_of_size;

/// Kill runs per binary.
const RUNS: u64 = 30;
/// Kill runs for base-backup and pitr-prepare (each run costs a second or two).
const SLOW_RUNS: u64 = 16;

/// Start `cmd` and SIGKILL it after `delay` unless it exits first. True when it was killed;
/// a run that ended by itself must have succeeded.
fn run_and_kill(cmd: &mut Command, delay: Duration) -> bool {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
            assert!(status.success(), "a run that was not killed failed: {status}\n{err}");
            return false;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long a command takes when left alone (to spread the kills over its whole run).
fn duration_of(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    t.elapsed()
}

fn delay(rng: &mut Rng, span: Duration) -> Duration {
    span.mul_f64(rng.unit() * 1.2)
}

fn name_of(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).expect("name").to_string()
}

/// wal-push killed anywhere: the name is then absent or complete, the rerun PostgreSQL makes
/// succeeds, and the file comes back byte-identical. Half the runs on each backend.
#[test]
fn killed_wal_push_never_leaves_half_an_object() {
    let mut report = Vec::new();
    for backend in [Backend::Fs, Backend::S3] {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let work = repo.dir().join("work");
        let warm = segment_of_size(&work, 1, 0, 4 << 20);
        let span = duration_of(repo.command("wal-push").arg(&warm));
        let mut rng = Rng(backend as u64 + 11);
        let (mut killed, mut stored_before_kill) = (0, 0);
        for i in 0..RUNS / 2 {
            let seg = segment_of_size(&work, 10 + i, i as u8, 4 << 20);
            let name = name_of(&seg);
            killed += u32::from(run_and_kill(repo.command("wal-push").arg(&seg), delay(&mut rng, span)));
            let dest = work.join("fetched").join(&name);
            let out = repo.run("wal-fetch", &[&name, dest.to_str().expect("utf8")]);
            match out.status.code() {
                Some(0) => {
                    stored_before_kill += 1;
                    assert!(std::fs::read(&dest).expect("read") == std::fs::read(&seg).expect("read"), "{name}");
                }
                Some(1) => assert!(!dest.exists()),
                other => panic!(
                    "{backend:?} run {i}: a killed wal-push left an unreadable {name}: {other:?} {}",
                    stderr(&out)
                ),
            }
            let out = repo.run("wal-push", &[seg.to_str().expect("utf8")]);
            assert!(out.status.success(), "{backend:?} run {i}: rerun of wal-push {name}: {}", stderr(&out));
            let out = repo.run("wal-fetch", &[&name, dest.to_str().expect("utf8")]);
            assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
            assert!(std::fs::read(&dest).expect("read") == std::fs::read(&seg).expect("read"), "{name} identical");
        }
        // Every object the repository lists is complete (temporary files are never listed).
        for (key, _) in repo.raw_objects() {
            assert!(!key.contains(".tmp."), "a temporary file is listed: {key}");
        }
        let leftovers =
            repo.fs_root.as_ref().map_or(0, |r| walk(r).iter().filter(|p| name_of(p).contains(".tmp.")).count());
        report.push(format!(
            "wal-push {backend:?}: {} runs, {killed} killed (span {:.0} ms), {stored_before_kill} already stored when killed, {leftovers} temp files left (unlisted)",
            RUNS / 2,
            span.as_secs_f64() * 1000.0
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// wal-fetch killed anywhere: `%p` is absent or complete, never half-written.
#[test]
fn killed_wal_fetch_never_leaves_half_a_file() {
    let mut report = Vec::new();
    for backend in [Backend::Fs, Backend::S3] {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let work = repo.dir().join("work");
        let segs: Vec<_> = (0..3).map(|i| segment_of_size(&work, 1 + i, i as u8, 16 << 20)).collect();
        for s in &segs {
            let out = repo.run("wal-push", &[s.to_str().expect("utf8")]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let pg_wal = work.join("restore/pg_wal");
        std::fs::create_dir_all(&pg_wal).expect("mkdir");
        let dest = pg_wal.join("RECOVERYXLOG");
        let span = duration_of(repo.command("wal-fetch").arg(name_of(&segs[0])).arg(&dest));
        let mut rng = Rng(backend as u64 + 21);
        let (mut killed, mut complete) = (0, 0);
        for i in 0..RUNS / 2 {
            let _ = std::fs::remove_file(&dest);
            let seg = &segs[i as usize % segs.len()];
            killed +=
                u32::from(run_and_kill(repo.command("wal-fetch").arg(name_of(seg)).arg(&dest), delay(&mut rng, span)));
            if dest.exists() {
                complete += 1;
                assert!(
                    std::fs::read(&dest).expect("read") == std::fs::read(seg).expect("read"),
                    "{backend:?} run {i}: %p is half-written"
                );
            }
        }
        let leftovers = std::fs::read_dir(&pg_wal).expect("dir").count() - usize::from(dest.exists());
        for entry in std::fs::read_dir(&pg_wal).expect("dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(name == "RECOVERYXLOG" || (name.starts_with(".RECOVERYXLOG.") && name.ends_with(".tmp")), "{name}");
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(entry.metadata().expect("meta").permissions().mode() & 0o077, 0, "{name} is private");
        }
        report.push(format!(
            "wal-fetch {backend:?}: {} runs, {killed} killed (span {:.0} ms), %p complete {complete} times and absent otherwise, {leftovers} temp files left beside it (0600, ignored by PostgreSQL)",
            RUNS / 2,
            span.as_secs_f64() * 1000.0
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// base-backup and pitr-prepare killed anywhere, against a real cluster: latest.json only
/// names complete backups, the previous backup stays restorable, pitr-prepare never touches
/// the repository and never leaves a startable half data directory; reruns succeed.
#[test]
fn killed_base_backup_and_pitr_prepare_leave_no_usable_half_state() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(n int)");
    p.pgbench(&["-i", "-s", "2", "-q"]);
    let spool = shared_tempdir();
    let bb = |extra: &[&str]| {
        let mut c = repo.command_as_postgres("base-backup");
        c.env("PGHOST", &p.socket_dir).env("PGUSER", "postgres").env("PGDATA", &p.pgdata).env("TMPDIR", spool.path());
        c.args(["--checkpoint", "fast", "--part-size", "2000000"]).args(extra);
        c
    };
    let t = Instant::now();
    let out = bb(&[]).output().expect("base-backup");
    assert!(out.status.success(), "{}", stderr(&out));
    let span = t.elapsed();
    let list = || -> serde_json::Value {
        let out = repo.run("walvault", &["list", "--json"]);
        assert!(out.status.success(), "walvault list: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let latest_path = repo.fs_root.clone().expect("fs").join("database/production/latest.json");
    let mut rng = Rng(31);
    let mut killed = 0;
    for i in 0..SLOW_RUNS {
        p.psql(&format!("INSERT INTO t VALUES ({i})"));
        killed += u32::from(run_and_kill(&mut bb(&[]), delay(&mut rng, span)));
        let v = list();
        let names: Vec<&str> =
            v["backups"].as_array().expect("backups").iter().map(|b| b["name"].as_str().expect("name")).collect();
        let latest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&latest_path).expect("latest")).expect("json");
        let latest = latest["backup"].as_str().expect("backup").to_string();
        assert!(
            names.contains(&latest.as_str()),
            "run {i}: latest.json names {latest}, not a complete backup: {names:?}"
        );
    }
    let complete = list()["backups"].as_array().expect("backups").len();
    let spool_left = walk(spool.path()).len();
    for f in walk(spool.path()) {
        let mode = std::fs::metadata(&f).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "spool file {} is private: {mode:o}", f.display());
    }
    p.psql("INSERT INTO t VALUES (1000)");
    p.switch_and_wait_archived(Duration::from_secs(60));
    let expected = p.psql("SELECT count(*) FROM t");
    p.stop();

    // pitr-prepare, killed anywhere.
    let before: Vec<(String, usize)> = repo.raw_objects().into_iter().map(|(k, b)| (k, b.len())).collect();
    let (reference, out) = prepare(&repo, &["--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let full = walk(&reference.pgdata).len();
    check_restored_permissions(&reference.pgdata);
    let t = Instant::now();
    let (_, out) = prepare(&repo, &["--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let prep_span = t.elapsed();
    let (mut prep_killed, mut half) = (0, 0);
    for i in 0..SLOW_RUNS {
        let dir = shared_tempdir();
        let pgdata = dir.path().join("pgdata");
        // As the postgres user, as a restore job would: the files are the server's own.
        let mut cmd = repo.command_as_postgres("pitr-prepare");
        cmd.arg("--pgdata").arg(&pgdata).arg("--latest");
        prep_killed += u32::from(run_and_kill(&mut cmd, delay(&mut rng, prep_span)));
        let files = walk(&pgdata).len();
        if pgdata.join("recovery.signal").exists() {
            assert_eq!(files, full, "run {i}: recovery.signal only after a complete restore");
            continue;
        }
        if files == 0 {
            continue;
        }
        half += 1;
        // A half-restored directory is refused as-is; --force restores over it.
        let out = repo
            .command_as_postgres("pitr-prepare")
            .arg("--pgdata")
            .arg(&pgdata)
            .arg("--latest")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(5), "run {i}: not empty: {}", stderr(&out));
        let out = repo
            .command_as_postgres("pitr-prepare")
            .arg("--pgdata")
            .arg(&pgdata)
            .args(["--latest", "--force"])
            .output()
            .expect("run");
        assert!(out.status.success(), "run {i}: --force over a half restore: {}", stderr(&out));
        assert_eq!(walk(&pgdata).len(), full);
    }
    // The worst places to die: everything extracted but recovery.signal not yet written,
    // with and without backup_label. PostgreSQL must refuse to start either (the WAL its
    // checkpoint needs is not in pg_wal), never come up as a primary with half a history.
    for drop in [&["recovery.signal"][..], &["recovery.signal", "backup_label"][..]] {
        let dir = shared_tempdir();
        let pgdata = dir.path().join("pgdata");
        let cp = Command::new("cp").arg("-a").arg(&reference.pgdata).arg(&pgdata).status().expect("cp");
        assert!(cp.success());
        for f in drop {
            std::fs::remove_file(pgdata.join(f)).expect("rm");
        }
        let c = super::super::common::Cluster::at(dir, pgdata.clone(), repo.env.clone());
        c.append_conf(&format!("unix_socket_directories = '{}'\narchive_mode = off\n", c.socket_dir.display()));
        let out = super::archive::try_start(&c);
        let running = pgdata.join("postmaster.pid").exists();
        if running {
            let _ = super::archive::pg_ctl(&c, &["-m", "immediate", "stop"]);
        }
        assert!(!out.status.success() && !running, "without {drop:?} the restored PGDATA started\n{}", c.log());
        let log = c.log();
        assert!(log.contains("checkpoint record"), "refused for the missing checkpoint WAL: {log}");
    }
    let after: Vec<(String, usize)> = repo.raw_objects().into_iter().map(|(k, b)| (k, b.len())).collect();
    assert_eq!(before, after, "pitr-prepare never writes to the repository");

    let (mut c, out) = prepare(&repo, &["--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    recover(&mut c, false);
    assert_eq!(c.psql("SELECT count(*) FROM t"), expected, "{}", c.log());
    c.stop();
    eprintln!(
        "base-backup: {SLOW_RUNS} runs, {killed} killed (span {:.1} s), {complete} complete backups listed, latest.json always complete, {spool_left} spool files left in TMPDIR\npitr-prepare: {SLOW_RUNS} runs, {prep_killed} killed (span {:.1} s), {half} half-restored dirs: refused without --force, restored with it; a complete restore without recovery.signal (and without backup_label) refused by PostgreSQL; repository untouched; final restore recovered every row",
        span.as_secs_f64(),
        prep_span.as_secs_f64()
    );
}

/// A restored data directory: PGDATA 0700, every file 0600 and directory 0700, owned by the
/// postgres user; the recovery settings name no key.
fn check_restored_permissions(pgdata: &Path) {
    let (uid, _) = super::super::common::postgres_ids();
    let meta = std::fs::metadata(pgdata).expect("pgdata");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "PGDATA mode");
    for path in walk(pgdata) {
        let m = std::fs::symlink_metadata(&path).expect("meta");
        if m.file_type().is_symlink() {
            continue;
        }
        assert_eq!(m.permissions().mode() & 0o077, 0, "{} is private", path.display());
        if super::super::common::is_root() {
            assert_eq!(m.uid(), uid, "{} belongs to postgres", path.display());
        }
        let dir = path.parent().expect("parent");
        let dmode = std::fs::metadata(dir).expect("dir").permissions().mode();
        assert_eq!(dmode & 0o077, 0, "{} is private", dir.display());
    }
    let conf = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(conf.contains("restore_command"), "{conf}");
    assert!(!conf.contains(TEST_KEY), "no key in postgresql.auto.conf: {conf}");
}
