//! Issue 11 point 10: the repository at the same URL replaced by another cluster's while
//! wal-fetch's listing cache and prefetch spool still describe the first one.

use std::time::Duration;

use super::binding::{SEG, segment_name};
use super::common::{Backend, TEST_KEY, TestRepo, stderr};

/// A data directory at `parent/pgdata` whose `global/pg_control` starts with system
/// identifier `sysid` (in the machine's byte order, as PostgreSQL writes it): as if a backup
/// of that cluster had just been restored there.
fn data_directory(parent: &std::path::Path, sysid: u64) -> std::path::PathBuf {
    let pgdata = parent.join("pgdata");
    std::fs::create_dir_all(pgdata.join("global")).expect("mkdir");
    std::fs::create_dir_all(pgdata.join("pg_wal")).expect("mkdir");
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&sysid.to_ne_bytes());
    std::fs::write(pgdata.join("global/pg_control"), control).expect("pg_control");
    pgdata
}

/// Issue 11 point 10: the repository at the same URL replaced by another cluster's, while
/// wal-fetch's cache and prefetch spool (for the same data directory path) still hold the
/// first one. A recovery of the new cluster gets the new cluster's WAL, never the stale
/// spool; a recovery of the old one is refused clearly, by the data directory's system
/// identifier, and by an object bound to another repository than the cached one.
#[test]
fn a_repository_replaced_at_the_same_url_is_noticed() {
    const A: u64 = 7_300_000_000_000_000_005;
    const B: u64 = 7_300_000_000_000_000_777;
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let magic = walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("magic");
    let push_cluster = |sysid: u64, cache: &std::path::Path| {
        let dir = work.join(format!("wal-{sysid}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for n in 1..=6 {
            let path = dir.join(segment_name(n));
            std::fs::write(&path, walvault::wal::synthetic_segment(sysid, 1, n, SEG, magic, sysid as u8)).expect("w");
            let out = repo.command("wal-push").env("WALVAULT_CACHE_DIR", cache).arg(&path).output().expect("push");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        dir
    };
    let cache = repo.dir().join("cache");
    push_cluster(A, &cache);
    let fetch = |cache: &std::path::Path, pgdata: &std::path::Path, n: u64, prefetch: &str| {
        let dest = pgdata.join("pg_wal/RECOVERYXLOG");
        let _ = std::fs::remove_file(&dest);
        let mut c = repo.command("wal-fetch");
        c.env("WALVAULT_CACHE_DIR", cache).env("WALVAULT_FETCH_PREFETCH", prefetch);
        (c.arg(segment_name(n)).arg(&dest).output().expect("fetch"), dest)
    };
    let spooled = |cache: &std::path::Path, n: u64| {
        super::common::walk(cache).into_iter().any(|p| {
            p.file_name().is_some_and(|f| f.to_string_lossy() == segment_name(n))
                && p.parent().is_some_and(|d| d.to_string_lossy().contains("prefetch-"))
        })
    };
    let pgdata = data_directory(&work, A);
    let (out, _) = fetch(&cache, &pgdata, 1, "3");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !spooled(&cache, 2) {
        assert!(std::time::Instant::now() < deadline, "the worker never spooled {}", segment_name(2));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500)); // let the worker finish its round
    let saved = repo.dir().join("cache-saved");
    let cp = std::process::Command::new("cp").arg("-a").arg(&cache).arg(&saved).status().expect("cp");
    assert!(cp.success());

    // Replaced: cluster B's repository at the same URL (pushed with a cache of its own).
    std::fs::remove_dir_all(repo.fs_root.as_ref().expect("fs")).expect("rm repo");
    let b_wal = push_cluster(B, &repo.dir().join("cache-b"));

    // B restored into the same directory, A's cache and spool still there: B's segment 2.
    data_directory(&work, B);
    let (out, dest) = fetch(&cache, &pgdata, 2, "0");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let restored = std::fs::read(&dest).expect("read");
    assert!(restored == std::fs::read(b_wal.join(segment_name(2))).expect("read"), "B's own segment 2");
    assert!(!spooled(&cache, 3), "the stale spool was discarded");

    // A restored again: the repository holds B, whatever the cache says.
    data_directory(&work, A);
    let (out, dest) = fetch(&cache, &pgdata, 3, "0");
    assert_eq!(out.status.code(), Some(205), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("belongs to the cluster with system identifier {A}")), "{}", stderr(&out));
    assert!(!dest.exists(), "nothing at %p");

    // A's own cache (repository A) against the archive of B: the object of segment 6 is
    // bound to another repository; walvault.json is read again, the cache and spool dropped.
    let (out, dest) = fetch(&saved, &pgdata, 6, "0");
    assert_eq!(out.status.code(), Some(205), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed under this recovery"), "{}", stderr(&out));
    assert!(!dest.exists() && !spooled(&saved, 3), "nothing served, the spool discarded");
}
