//! A base backup killed (SIGKILL) at several points and resumed by the next runs: the parts
//! already stored are reused (those whose files changed in between are read again), the last
//! run completes the same backup, verify passes, and a recovery from it has every row.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::super::common::{Backend, Cluster, TEST_KEY, TestRepo, stderr};
use super::super::pitr::{prepare, primary, recover};

fn backup(repo: &TestRepo, p: &Cluster) -> Command {
    let mut c = repo.command_as_postgres("base-backup");
    c.env("PGHOST", &p.socket_dir).env("PGPORT", p.port.to_string()).env("PGUSER", "postgres");
    c.env("PGDATA", &p.pgdata).args(["--json", "--checkpoint", "fast", "--part-size", "4000000", "--jobs", "1"]);
    c.args(["--max-rate", "16M"]);
    c
}

/// Run a backup, SIGKILL it once `parts` more parts are stored; the log lines it wrote.
fn run_and_kill(repo: &TestRepo, p: &Cluster, parts: usize) -> Vec<String> {
    let mut child = backup(repo, p).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut lines = Vec::new();
    let mut stored = 0;
    for line in BufReader::new(child.stderr.take().expect("stderr")).lines().map_while(Result::ok) {
        stored += usize::from(line.contains(": part "));
        lines.push(line);
        if stored == parts {
            child.kill().expect("SIGKILL");
            break;
        }
    }
    let _ = child.wait();
    assert_eq!(stored, parts, "killed after {parts} parts: {lines:#?}");
    lines
}

/// `resuming backup NAME: R of N parts (B bytes) reused`: (NAME, R).
fn resumed(lines: &[String]) -> Option<(String, usize)> {
    let line = lines.iter().find_map(|l| l.split_once("resuming backup ").map(|(_, r)| r.to_string()))?;
    let (name, rest) = line.split_once(": ")?;
    Some((name.to_string(), rest.split(' ').next()?.parse().ok()?))
}

fn digest(c: &Cluster) -> String {
    c.psql(
        "SELECT (SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts) || ' ' || \
         (SELECT md5(string_agg(n::text, ',' ORDER BY n)) FROM t)",
    )
}

#[test]
fn a_backup_killed_again_and_again_is_resumed_and_restores_every_row() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.pgbench(&["-i", "-s", "4", "-q"]);
    p.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n; CHECKPOINT");
    // Files written just now are never reused (their timestamps could hide a change).
    std::thread::sleep(Duration::from_secs(2));

    let first = run_and_kill(&repo, &p, 4);
    assert!(resumed(&first).is_none(), "nothing to resume yet: {first:#?}");
    p.psql("INSERT INTO t SELECT generate_series(1001, 2000)");
    let second = run_and_kill(&repo, &p, 3);
    let (name, reused) = resumed(&second).unwrap_or_else(|| panic!("the second run resumes: {second:#?}"));
    assert!(reused >= 3, "most of the first run's 4 parts reused: {second:#?}");
    p.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0");

    let out = backup(&repo, &p).output().expect("base-backup");
    let err = stderr(&out);
    assert!(out.status.success(), "the third run completes: {err}");
    let lines: Vec<String> = err.lines().map(str::to_string).collect();
    let (again, reused) = resumed(&lines).unwrap_or_else(|| panic!("the third run resumes: {err}"));
    assert_eq!(again, name, "the same backup, continued");
    // Parts whose files changed since (the accounts, catalogs autovacuum touched) are read again.
    assert!(reused >= 3, "the unchanged parts reused: {err}");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(meta["name"].as_str(), Some(name.as_str()));
    eprintln!("resumed {name}: {reused} of {} parts reused", meta["parts"].as_array().map_or(0, Vec::len));

    let out = repo.run("walvault", &["verify"]);
    assert!(out.status.success(), "verify: {}", stderr(&out));
    p.psql("INSERT INTO t SELECT generate_series(2001, 2500)");
    let expected = digest(&p);
    p.psql("SELECT pg_create_restore_point('after_resume')");
    p.psql("DELETE FROM t WHERE n > 100");
    p.switch_and_wait_archived(Duration::from_secs(60));
    let (mut r, out) = prepare(&repo, &["--target-name", "after_resume", "--backup", &name]);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    recover(&mut r, false);
    assert_eq!(digest(&r), expected, "every row as at the restore point");
    r.stop();
    p.stop();
}

/// Prune keeps the folder of an interrupted backup while it may still be resumed
/// (WALVAULT_RESUME_WINDOW), even when older than the oldest kept backup, and removes it after.
#[test]
fn prune_keeps_a_resumable_leftover_until_its_window_passes() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let p = primary(&repo);
    p.pgbench(&["-i", "-s", "2", "-q"]);
    let first = backup(&repo, &p).output().expect("base-backup");
    assert!(first.status.success(), "{}", stderr(&first));
    run_and_kill(&repo, &p, 2);
    let leftover: Vec<String> = std::fs::read_dir(repo.fs_root.clone().expect("root").join("database/production"))
        .expect("database root")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !repo.fs_root.clone().expect("root").join(format!("database/production/{n}_metadata.json")).exists()
        })
        .collect();
    assert_eq!(leftover.len(), 1, "one interrupted backup: {leftover:?}");
    std::thread::sleep(Duration::from_secs(1));
    // A newer complete backup that does not resume it.
    let newer = backup(&repo, &p).env("WALVAULT_RESUME_WINDOW", "0").output().expect("base-backup");
    assert!(newer.status.success(), "{}", stderr(&newer));
    let incomplete = |offset: &str| -> Vec<String> {
        let now = super::super::ops::time_from_now(offset);
        let args = ["prune", "--json", "--dry-run", "--retain-backups", "1s", "--now", &now];
        let out = repo.command("walvault").env("WALVAULT_RESUME_WINDOW", "3600").args(args).output().expect("prune");
        assert!(out.status.success(), "prune: {}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        plan["incomplete"]
            .as_array()
            .expect("incomplete")
            .iter()
            .map(|v| v.as_str().expect("str").to_string())
            .collect()
    };
    assert!(incomplete("+30 minutes").is_empty(), "kept within the window");
    let gone = incomplete("+90 minutes");
    assert!(gone.len() == 1 && gone[0].contains(&leftover[0]), "deleted after the window: {gone:?}");
}
