//! A real streaming standby (pg_basebackup -R, restore_command = wal-fetch) keeps running
//! while its repository is unreachable: PostgreSQL falls back to the archive whenever
//! streaming stops, and a storage failure there must be retryable in standby mode (issue 11:
//! "a standby must not die because the archive blipped").

use std::time::{Duration, Instant};

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, as_postgres, bin, shared_tempdir, stderr};
use super::pitr::primary;

/// A streaming standby of `p`, restoring from `repo` when streaming stops.
pub(super) fn standby_of(repo: &TestRepo, p: &Cluster) -> Cluster {
    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = as_postgres(p.bin.join("pg_basebackup"))
        .arg("-D")
        .arg(&pgdata)
        .args(["-R", "-X", "stream", "-c", "fast", "-U", "postgres", "-h"])
        .arg(&p.socket_dir)
        .args(["-p", &p.port.to_string()])
        .output()
        .expect("pg_basebackup");
    assert!(out.status.success(), "pg_basebackup: {}", stderr(&out));
    let s = Cluster::at(dir, pgdata, repo.env.clone()).with_bin(p.bin.clone());
    s.append_conf(&format!(
        "unix_socket_directories = '{}'\narchive_mode = off\nhot_standby = on\nwal_retrieve_retry_interval = '200ms'\nrestore_command = '{} %f %p'\n",
        s.socket_dir.display(),
        bin("wal-fetch").display()
    ));
    s
}

/// Wait until `check` holds, for at most `timeout`.
pub(super) fn wait_for(what: &str, timeout: Duration, s: &Cluster, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rows(c: &Cluster) -> Option<i64> {
    c.try_psql("SELECT count(*) FROM t").ok().and_then(|s| s.parse().ok())
}

/// The primary stops while the standby's local repository directory is not mounted: the
/// standby asks wal-fetch for the next segment and for newer timelines' history files, is
/// told "retry" (not "fatal"), stays up in recovery, and streams again once the primary is back.
#[test]
fn a_streaming_standby_outlives_an_unreachable_repository() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)");
    p.switch_and_wait_archived(Duration::from_secs(60));
    let mut s = standby_of(&repo, &p);
    s.start();
    wait_for("the standby replays the first rows", Duration::from_secs(60), &s, || rows(&s) == Some(100));

    let seen = s.log().len();
    let root = repo.fs_root.clone().expect("a local repository");
    let away = root.with_extension("unmounted");
    std::fs::rename(&root, &away).expect("unmount the repository");
    p.stop();
    // wal-fetch's lines in the server log since the repository went away: several rounds of
    // restore_command (the next segment, newer timelines' history files), each answered.
    let asked = || s.log().get(seen..).map_or(0, |l| l.matches("wal-fetch: ").count());
    wait_for("rounds of restore_command while the repository is away", Duration::from_secs(60), &s, || {
        asked() >= 6 || s.log()[seen..].contains("startup process (PID")
    });
    assert!(s.log()[seen..].contains("wal-fetch: standby mode"), "answered as a standby\n{}", s.log());
    assert_eq!(s.try_psql("SELECT pg_is_in_recovery()").as_deref(), Ok("t"), "the standby is up\n{}", s.log());
    assert!(!s.log().contains("startup process (PID"), "the startup process lives\n{}", s.log());

    std::fs::rename(&away, &root).expect("mount the repository again");
    p.start();
    p.psql("INSERT INTO t SELECT generate_series(101, 150)");
    wait_for("the standby streams again", Duration::from_secs(90), &s, || rows(&s) == Some(150));
    s.stop();
    p.stop();
}
