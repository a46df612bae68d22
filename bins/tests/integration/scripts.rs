//! The runbook's shell entry points (scripts/*.sh): shellcheck on every script, and the
//! backup CronJob script, Procedure 1 (restore-postgresql.sh) and Procedure 2
//! (postgresql-pitr-restore.sh) against a real PostgreSQL cluster and a local directory
//! repository, run as a restore Job runs them (as root when the tests are).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::common::{Backend, TEST_KEY, TestRepo, as_postgres, bin, pg_bin, shared_tempdir, stderr};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The knobs of the scripts: none may leak in from the environment of the test run.
const KNOBS: &[&str] = &[
    "BACKUP_FILE",
    "SKIP_CONFIRMATION",
    "FORCE",
    "DELTA",
    "START_SERVER",
    "KEEP_RUNNING",
    "VERIFY_SQL",
    "VERIFY_USER",
    "VERIFY_DB",
    "RECOVERY_TARGET",
    "TARGET_TIME",
    "PG_START_TIMEOUT",
    "PG_BIN",
    "BACKUP_JSON",
    "ARCHIVE",
    "TARGET_TIMELINE",
];

/// A script with the repository's settings, the binaries under test (WALVAULT_BIN_DIR), the
/// test's PostgreSQL binaries (PG_BIN) and stdin that is not a terminal.
pub(super) fn script(repo: &TestRepo, name: &str, as_pg: bool) -> Command {
    let path = repo_root().join("scripts").join(name);
    let mut c = if as_pg { as_postgres(&path) } else { Command::new(&path) };
    for (k, _) in std::env::vars() {
        if k.starts_with("WALVAULT_")
            || k == "BACKUP_ENCRYPTION_KEY"
            || k.starts_with("AWS_")
            || k.starts_with("PG")
            || KNOBS.contains(&k.as_str())
        {
            c.env_remove(k);
        }
    }
    c.envs(repo.env.iter().map(|(k, v)| (k, v)));
    c.env("WALVAULT_BIN_DIR", bin("pitr-prepare").parent().expect("bin dir"));
    c.env("PG_BIN", pg_bin());
    c.stdin(Stdio::null());
    c
}

/// The values of the restore report's `verification result` lines.
fn verification(out: &Output) -> Vec<String> {
    stdout(out).lines().filter_map(|l| l.strip_prefix("  verification result ")).map(|v| v.trim().to_string()).collect()
}

fn is_empty_or_absent(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn shellcheck_passes_on_every_script() {
    let root = repo_root();
    // scripts/*.sh and the benchmark harness's scripts/bench/*.sh.
    let mut scripts: Vec<String> = ["scripts", "scripts/bench"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .expect("scripts/")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sh"))
                .map(move |n| format!("{d}/{n}"))
        })
        .collect();
    scripts.sort();
    for expected in [
        "backup-postgresql.sh",
        "restore-postgresql.sh",
        "postgresql-pitr-restore.sh",
        "drill.sh",
        "lib.sh",
        "bench.sh",
        "bench-pitr.sh",
    ] {
        assert!(scripts.contains(&format!("scripts/{expected}")), "scripts/{expected} exists: {scripts:?}");
    }
    let out = match Command::new("shellcheck").arg("-x").args(&scripts).current_dir(&root).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "shellcheck cannot run ({e}): it is required; scripts/test.sh installs it (apt-get install -y shellcheck)"
        ),
    };
    assert!(out.status.success(), "shellcheck {scripts:?}:\n{}{}", stdout(&out), stderr(&out));
}

/// Without SKIP_CONFIRMATION and with stdin not a terminal, both restore scripts refuse
/// (exit 5) and write nothing; bad settings are configuration errors (exit 2).
#[test]
fn restore_scripts_refuse_without_confirmation_and_bad_settings() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");

    let out = script(&repo, "restore-postgresql.sh", false).env("PGDATA", &pgdata).output().expect("run");
    assert_eq!(out.status.code(), Some(5), "refused: {}", stderr(&out));
    assert!(stderr(&out).contains("stdin is not a terminal"), "{}", stderr(&out));
    let out = script(&repo, "restore-postgresql.sh", false)
        .env("PGDATA", &pgdata)
        .env("SKIP_CONFIRMATION", "no")
        .env("BACKUP_FILE", "latest.sql.gz.enc")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(5), "refused: {}", stderr(&out));
    let out = script(&repo, "postgresql-pitr-restore.sh", false)
        .env("PGDATA", &pgdata)
        .args(["--target-time", "2024-01-15 10:30:00"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(5), "refused: {}", stderr(&out));
    assert!(!pgdata.exists(), "PGDATA not created");
    assert!(is_empty_or_absent(repo.fs_root.as_deref().expect("fs")), "repository untouched");

    let out = script(&repo, "restore-postgresql.sh", false)
        .env("PGDATA", &pgdata)
        .env("SKIP_CONFIRMATION", "true")
        .env("RECOVERY_TARGET", "yesterday")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("RECOVERY_TARGET=yesterday"), "{}", stderr(&out));
    let out = script(&repo, "postgresql-pitr-restore.sh", false)
        .env("PGDATA", &pgdata)
        .env("SKIP_CONFIRMATION", "true")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "no target: {}", stderr(&out));
    let out = script(&repo, "restore-postgresql.sh", false).env("SKIP_CONFIRMATION", "true").output().expect("run");
    assert_eq!(out.status.code(), Some(2), "no PGDATA: {}", stderr(&out));
    assert!(!pgdata.exists(), "PGDATA not created");

    // The CronJob script exits with base-backup's code, on a time-stamped line.
    let out = script(&repo, "backup-postgresql.sh", false)
        .env_remove("WALVAULT_REPO")
        .env("WALVAULT_CONFIG", "/dev/null")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("setting WALVAULT_REPO"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("backup-postgresql.sh: FAILED: base-backup exited with 2") && l.starts_with("20")),
        "{err}"
    );
}

/// The CronJob script takes a base backup; Procedure 1 restores the latest backup and
/// replays all WAL; Procedure 2 recovers to a time between two batches; a target beyond the
/// archive is refused with pitr-prepare's exit code and nothing written.
#[test]
fn backup_then_restore_latest_and_point_in_time() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = super::pitr::primary(&repo);
    p.psql("CREATE TABLE t(batch int)");
    p.psql("INSERT INTO t SELECT 1 FROM generate_series(1, 100)");
    p.pgbench(&["-i", "-s", "1", "-q"]);

    let out = script(&repo, "backup-postgresql.sh", true)
        .env("PGHOST", &p.socket_dir)
        .env("PGPORT", p.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATA", &p.pgdata)
        .args(["--checkpoint", "fast", "--part-size", "4000000"])
        .output()
        .expect("backup-postgresql.sh");
    assert!(out.status.success(), "backup-postgresql.sh: {}", stderr(&out));
    let summary = stdout(&out);
    let name = summary.lines().find_map(|l| l.strip_prefix("backup      ")).expect("backup name in the summary");
    assert!(name.contains("_production_"), "{summary}");
    for field in ["size        ", "stored      ", "duration    "] {
        assert!(summary.lines().any(|l| l.starts_with(field)), "{field:?} in {summary}");
    }
    let err = stderr(&out);
    assert!(err.lines().all(|l| l.starts_with("20") && l.as_bytes().get(19) == Some(&b'Z')), "time-stamped: {err}");
    assert!(err.contains("backup-postgresql.sh: done: backup"), "{err}");

    p.psql("INSERT INTO t SELECT 2 FROM generate_series(1, 100)");
    std::thread::sleep(Duration::from_millis(1100));
    let target = p.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')");
    std::thread::sleep(Duration::from_millis(1100));
    p.psql("INSERT INTO t SELECT 3 FROM generate_series(1, 100)");
    p.switch_and_wait_archived(Duration::from_secs(120));
    p.stop();

    // Procedure 1: the latest backup, all archived WAL, as the runbook's Job runs it.
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = script(&repo, "restore-postgresql.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("ARCHIVE", "on")
        .env("BACKUP_FILE", "latest.sql.gz.enc")
        .env("PGDATA", &pgdata)
        .env("VERIFY_SQL", "SELECT count(*) FROM t")
        .output()
        .expect("restore-postgresql.sh");
    assert!(out.status.success(), "restore-postgresql.sh: {}\n{}", stderr(&out), stdout(&out));
    assert_eq!(verification(&out), ["300"], "{}", stdout(&out));
    let report = stdout(&out);
    assert!(report.contains(&format!("backup restored     {name} (")), "{report}");
    // One file count (issue 16): the backup's summary and the restore report say the same.
    let files = summary.lines().find_map(|l| l.strip_prefix("size        ")).and_then(|l| l.split(" (").nth(1));
    let files = files.and_then(|f| f.strip_suffix(" files)")).expect("(N files) in the summary");
    assert!(report.contains(&format!("({files} files, ")), "{files} files in {report}");
    assert!(report.contains("time to recover"), "{report}");
    assert!(report.contains("WAL reached"), "{report}");
    assert!(report.contains("archiving           on: the restored server archives"), "{report}");
    assert!(!pgdata.join("recovery.signal").exists(), "promoted");
    assert!(!pgdata.join("postmaster.pid").exists(), "server stopped after verification");

    // DELTA=true over that data directory (same cluster): most files kept, the same rows;
    // never together with FORCE.
    let out = script(&repo, "restore-postgresql.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("DELTA", "true")
        .env("FORCE", "true")
        .env("PGDATA", &pgdata)
        .output()
        .expect("restore-postgresql.sh");
    assert_eq!(out.status.code(), Some(2), "FORCE and DELTA: {}", stderr(&out));
    let out = script(&repo, "restore-postgresql.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("DELTA", "true")
        .env("PGDATA", &pgdata)
        .env("VERIFY_SQL", "SELECT count(*) FROM t")
        .output()
        .expect("restore-postgresql.sh");
    assert!(out.status.success(), "DELTA=true: {}\n{}", stderr(&out), stdout(&out));
    assert_eq!(verification(&out), ["300"], "{}", stdout(&out));
    let delta = stdout(&out).lines().find(|l| l.starts_with("  delta ")).map(str::to_string);
    assert!(delta.as_deref().is_some_and(|l| l.contains(" kept, ") && !l.contains(" 0 B kept")), "{}", stdout(&out));

    // A target the archive cannot reach: pitr-prepare's refusal (5), nothing written.
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = script(&repo, "postgresql-pitr-restore.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("PGDATA", &pgdata)
        .args(["--target-time", "2999-01-01 00:00:00"])
        .output()
        .expect("postgresql-pitr-restore.sh");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("beyond the archive"), "{}", stderr(&out));
    assert!(is_empty_or_absent(&pgdata), "nothing written");

    // START_SERVER=false stops after pitr-prepare and says how to start.
    let out = script(&repo, "restore-postgresql.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("START_SERVER", "false")
        .env("RECOVERY_TARGET", "immediate")
        .env("PGDATA", &pgdata)
        .output()
        .expect("restore-postgresql.sh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("pg_ctl -D {} start", pgdata.display())), "{}", stdout(&out));
    assert!(pgdata.join("recovery.signal").exists(), "prepared, not started");
    assert!(!pgdata.join("postmaster.pid").exists(), "not started");

    // Procedure 2: to the time recorded between batches 2 and 3, on timeline 1 before the
    // branch the restore above made (timeline 2). The history file PostgreSQL then writes for
    // timeline 3 has a switchpoint below timeline 2's; later restores must still follow it.
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = script(&repo, "postgresql-pitr-restore.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("START_SERVER", "true")
        .env("ARCHIVE", "on")
        .env("PGDATA", &pgdata)
        .env("VERIFY_SQL", "SELECT count(*) FROM t")
        .args(["--target-time", &target])
        .output()
        .expect("postgresql-pitr-restore.sh");
    assert!(out.status.success(), "postgresql-pitr-restore.sh: {}\n{}", stderr(&out), stdout(&out));
    assert_eq!(verification(&out), ["200"], "{}", stdout(&out));
    assert!(stdout(&out).contains("recovery stopping before commit"), "{}", stdout(&out));
    assert!(!pgdata.join("postmaster.pid").exists(), "server stopped after verification");

    // Regression: a restore after that follows timeline 3 (whose history has a decreasing
    // switchpoint) to its end: the 200 rows of the branch.
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = script(&repo, "restore-postgresql.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("START_SERVER", "true")
        .env("PGDATA", &pgdata)
        .env("VERIFY_SQL", "SELECT count(*) FROM t")
        .output()
        .expect("restore-postgresql.sh");
    assert!(out.status.success(), "restore after a branch: {}\n{}", stderr(&out), stdout(&out));
    assert_eq!(verification(&out), ["200"], "{}", stdout(&out));
}

/// Procedure 1 fails (7) when recovery ends short of what pitr-prepare saw in the archive on
/// the timeline it follows: here the chain's last segment disappears between pitr-prepare and
/// the start of the server (a pitr-prepare wrapper deletes it), so PostgreSQL finds the end
/// one segment early and promotes. The script must not report success.
#[test]
fn restore_fails_when_recovery_ends_short_of_the_archive() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = super::pitr::primary(&repo);
    p.psql("CREATE TABLE t(batch int)");
    assert!(super::pitr::base_backup(&repo, &p, &[]).status.success());
    for n in 0..3 {
        p.psql(&format!("INSERT INTO t SELECT {n} FROM generate_series(1, 100)"));
        p.psql("SELECT pg_switch_wal()");
    }
    let last = p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();
    let root = repo.fs_root.clone().expect("fs");
    let out = repo.run("walvault", &["ls", "--json", "wal/"]);
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ls json");
    let victim = listing
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o["key"].as_str())
        .find(|k| k.rsplit('/').next().is_some_and(|f| f.starts_with(&format!("{last}."))))
        .unwrap_or_else(|| panic!("{last} archived: {listing}"))
        .to_string();

    let wrappers = shared_tempdir();
    let wrapper = wrappers.path().join("pitr-prepare");
    let text = format!(
        "#!/bin/sh\n\"{}\" \"$@\"\nrc=$?\nrm -f \"{}\"\nexit $rc\n",
        bin("pitr-prepare").display(),
        root.join(&victim).display()
    );
    std::fs::write(&wrapper, text).expect("wrapper");
    Command::new("chmod").args(["755"]).arg(&wrapper).status().expect("chmod");
    let dir = shared_tempdir();
    let out = script(&repo, "restore-postgresql.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("PGDATA", dir.path().join("pgdata"))
        .env("WALVAULT_BIN_DIR", wrappers.path())
        .env("WALVAULT_FETCH_PREFETCH", "0")
        .env("VERIFY_SQL", "SELECT count(*) FROM t")
        .env("TMPDIR", dir.path())
        .output()
        .expect("restore-postgresql.sh");
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("short of what the archive holds on timeline 1") && err.contains(&last), "{err}");
    // The server ran: its log is kept (in the test's directory, removed with it).
    let kept = std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.path());
    let kept: Vec<_> = kept.filter(|p| p.to_string_lossy().contains("walvault-restore.")).collect();
    assert!(kept.len() == 1 && kept[0].join("postgresql.log").is_file(), "the server log is kept: {kept:?}\n{err}");
    assert!(verification(&out).is_empty(), "no success report: {}", stdout(&out));
}
