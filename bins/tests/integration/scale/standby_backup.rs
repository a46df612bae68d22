//! The nightly backup taken on a streaming standby while pgbench writes on the primary, and a
//! point-in-time recovery from it checked row by row; a standby too far behind is refused.

use std::process::Output;
use std::time::{Duration, Instant};

use super::super::common::{Backend, Cluster, TEST_KEY, TestRepo, as_postgres, stderr};
use super::super::pitr::{prepare, primary, recover};
use super::super::standby::{standby_of, wait_for};

fn backup_from(repo: &TestRepo, s: &Cluster, env: &[(&str, &str)]) -> Output {
    repo.command_as_postgres("base-backup")
        .env("PGHOST", &s.socket_dir)
        .env("PGPORT", s.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATA", &s.pgdata)
        .envs(env.iter().copied())
        .args(["--json", "--checkpoint", "fast", "--part-size", "4000000", "--archive-timeout", "120"])
        .output()
        .expect("base-backup")
}

/// Every row of the pgbench tables, as one digest each (ordered by key).
fn digest(c: &Cluster) -> String {
    c.psql(
        "SELECT (SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts) || ' ' || \
         (SELECT md5(string_agg(tid || ':' || bid || ':' || aid || ':' || delta || ':' || mtime, ',' ORDER BY mtime, tid, aid, delta)) FROM pgbench_history) || ' ' || \
         (SELECT count(*) FROM pgbench_history)",
    )
}

fn replayed_everything(p: &Cluster, s: &Cluster) -> bool {
    let at = p.psql("SELECT pg_current_wal_lsn()");
    s.try_psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{at}'::pg_lsn")).is_ok_and(|v| v == "t")
}

#[test]
fn a_backup_from_a_streaming_standby_under_load_restores_every_row() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.pgbench(&["-i", "-s", "2", "-q"]);
    let mut s = standby_of(&repo, &p);
    s.start();
    wait_for("the standby catches up", Duration::from_secs(60), &s, || replayed_everything(&p, &s));

    // A standby whose replay is paused falls behind while the primary writes: refused, the lag
    // named (the age of the last transaction it replayed, so it replays one first).
    p.psql("CREATE TABLE marks AS SELECT 1 AS n");
    wait_for("the standby replays a transaction", Duration::from_secs(60), &s, || replayed_everything(&p, &s));
    s.psql("SELECT pg_wal_replay_pause()");
    std::thread::sleep(Duration::from_millis(1500));
    p.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 10");
    wait_for("the standby receives WAL it does not replay", Duration::from_secs(30), &s, || {
        s.try_psql("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()").is_ok_and(|v| v == "t")
    });
    let out = backup_from(&repo, &s, &[("WALVAULT_STANDBY_MAX_LAG", "1")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "refused: {err}");
    assert!(err.contains("s behind its primary (replayed up to ") && err.contains("replay is paused"), "{err}");
    assert!(err.contains("WALVAULT_STANDBY_MAX_LAG is 1 s"), "{err}");
    s.psql("SELECT pg_wal_replay_resume()");
    wait_for("the standby catches up again", Duration::from_secs(60), &s, || replayed_everything(&p, &s));
    cut_off_behind_the_archive(&repo, &p, &s);

    // The backup from the standby while pgbench writes on the primary (which archives; the
    // switches make the backup's last segment complete sooner).
    let mut bench = as_postgres(p.bin.join("pgbench"))
        .arg("-h")
        .arg(&p.socket_dir)
        .args(["-p", &p.port.to_string(), "-U", "postgres", "-T", "15", "-c", "2", "postgres"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pgbench");
    let done = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        let switcher = scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let _ = p.try_psql("SELECT pg_switch_wal()");
            }
        });
        let out = backup_from(&repo, &s, &[]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = switcher.join();
        out
    });
    let err = stderr(&out);
    assert!(out.status.success(), "base-backup from the standby: {err}");
    assert!(err.contains("backing up from the standby"), "{err}");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(meta["from_standby"], true, "{meta}");
    assert!(bench.wait().expect("pgbench").success(), "pgbench on the primary");
    let list = repo.run("walvault", &["verify"]);
    assert!(list.status.success(), "verify: {}", stderr(&list));

    // The target: a restore point on the primary after the backup; then more writes.
    let started = Instant::now();
    let expected = digest(&p);
    p.psql("SELECT pg_create_restore_point('after_standby_backup')");
    p.psql("UPDATE pgbench_accounts SET abalance = abalance - 7 WHERE aid % 3 = 0");
    p.switch_and_wait_archived(Duration::from_secs(60));
    let (mut r, out) =
        prepare(&repo, &["--target-name", "after_standby_backup", "--backup", meta["name"].as_str().expect("name")]);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    recover(&mut r, false);
    assert_eq!(digest(&r), expected, "every row as at the restore point");
    eprintln!(
        "standby backup: {} bytes; restored and checked in {:.1} s",
        meta["bytes"],
        started.elapsed().as_secs_f64()
    );
    r.stop();
    s.stop();
    p.stop();
}

/// A standby cut off from its primary (not streaming) and paused: what it received tells
/// nothing, the archive shows how far the primary went on: refused all the same. Then it
/// streams and catches up again.
fn cut_off_behind_the_archive(repo: &TestRepo, p: &Cluster, s: &Cluster) {
    let conninfo = s.psql("SHOW primary_conninfo").replace('\'', "''");
    s.psql("ALTER SYSTEM SET primary_conninfo = ''");
    s.psql("SELECT pg_reload_conf()");
    wait_for("the standby stops streaming", Duration::from_secs(60), s, || {
        s.try_psql("SELECT count(*) FROM pg_stat_wal_receiver").is_ok_and(|v| v == "0")
    });
    s.psql("SELECT pg_wal_replay_pause()");
    std::thread::sleep(Duration::from_millis(1500));
    for aid in [11, 12] {
        p.psql(&format!("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = {aid}"));
        p.switch_and_wait_archived(Duration::from_secs(60));
    }
    let out = backup_from(repo, s, &[("WALVAULT_STANDBY_MAX_LAG", "1")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "refused: {err}");
    assert!(err.contains("s behind its primary") && err.contains("the archive holds WAL from"), "{err}");
    s.psql(&format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"));
    s.psql("SELECT pg_reload_conf()");
    s.psql("SELECT pg_wal_replay_resume()");
    wait_for("the standby catches up once more", Duration::from_secs(60), s, || replayed_everything(p, s));
}
