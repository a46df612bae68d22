//! wal-push and wal-fetch on synthetic WAL, over the local directory and S3: round trips,
//! duplicates, foreign clusters, corruption, keys, and the request count of a sequential
//! recovery through the date-partitioned layout.

use std::path::{Path, PathBuf};

use super::common::{Backend, OTHER_KEY, TEST_KEY, TestRepo, requests, stderr};

const SEG: u32 = 1 << 20;
const SYSID: u64 = 7_300_000_000_000_000_001;

fn magic15() -> u16 {
    walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("pg 15 magic")
}

fn seg_name(segno: u64) -> String {
    walvault::wal::WalFileName::from_segno(1, segno, u64::from(SEG)).to_string()
}

/// Write a synthetic segment into `dir/pg_wal/` and return its path.
fn make_segment(dir: &Path, sysid: u64, segno: u64, fill: u8) -> PathBuf {
    let wal = dir.join("pg_wal");
    std::fs::create_dir_all(&wal).expect("pg_wal");
    let path = wal.join(seg_name(segno));
    let bytes = walvault::wal::synthetic_segment(sysid, 1, segno, SEG, magic15(), fill);
    std::fs::write(&path, bytes).expect("write segment");
    path
}

fn push(repo: &TestRepo, path: &Path) -> std::process::Output {
    repo.run("wal-push", &[path.to_str().expect("utf8")])
}

fn fetch(repo: &TestRepo, name: &str, dest: &Path) -> std::process::Output {
    repo.command("wal-fetch").env("WALVAULT_LOG", "debug").arg(name).arg(dest).output().expect("wal-fetch")
}

fn both(test: impl Fn(Backend)) {
    test(Backend::Fs);
    test(Backend::S3);
}

#[test]
fn round_trip_of_every_file_kind() {
    both(|backend| {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let work = repo.dir().join("work");
        let mut files = vec![make_segment(&work, SYSID, 1, 1), make_segment(&work, SYSID, 2, 2)];
        let history = work.join("pg_wal/00000002.history");
        std::fs::write(&history, "1\t0/2000000\tno recovery target specified\n").expect("history");
        let label = work.join(format!("pg_wal/{}.00000028.backup", seg_name(2)));
        std::fs::write(&label, "START WAL LOCATION: 0/2000028\n").expect("label");
        files.extend([history, label]);
        for f in &files {
            let out = push(&repo, f);
            assert!(out.status.success(), "{backend:?} push {}: {}", f.display(), stderr(&out));
        }
        for f in &files {
            let name = f.file_name().and_then(|n| n.to_str()).expect("name");
            let dest = work.join("restored").join(name);
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            let out = fetch(&repo, name, &dest);
            assert_eq!(out.status.code(), Some(0), "{backend:?} fetch {name}: {}", stderr(&out));
            assert_eq!(std::fs::read(&dest).expect("read"), std::fs::read(f).expect("read"), "{name} identical");
        }
        let dest = work.join("restored/missing");
        let out = fetch(&repo, &seg_name(3), &dest);
        assert_eq!(out.status.code(), Some(1), "{backend:?} missing segment: {}", stderr(&out));
        assert!(!dest.exists(), "nothing written for a missing file");
        let out = fetch(&repo, "00000003.history", &dest);
        assert_eq!(out.status.code(), Some(1), "missing history: {}", stderr(&out));
        assert!(!stderr(&out).contains("error"), "not-found is quiet: {}", stderr(&out));
    });
}

#[test]
fn identical_duplicate_succeeds_and_different_content_is_refused() {
    both(|backend| {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let work = repo.dir().join("work");
        let seg = make_segment(&work, SYSID, 5, 7);
        assert!(push(&repo, &seg).status.success());
        let out = push(&repo, &seg);
        assert!(out.status.success(), "identical duplicate: {}", stderr(&out));
        assert!(stderr(&out).contains("already archived with identical content"), "{}", stderr(&out));
        let before = repo.raw_objects();

        let original = std::fs::read(&seg).expect("read");
        let mut changed = original.clone();
        changed[5000] ^= 0xFF;
        std::fs::write(&seg, &changed).expect("write");
        let out = push(&repo, &seg);
        assert_eq!(out.status.code(), Some(5), "{backend:?} different content: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("{}: refusing to overwrite", seg_name(5))), "{}", stderr(&out));
        assert_eq!(repo.raw_objects(), before, "repository untouched");

        let dest = work.join("restored");
        assert!(fetch(&repo, &seg_name(5), &dest).status.success());
        assert_eq!(std::fs::read(&dest).expect("read"), original, "the original is what comes back");

        let history = work.join("pg_wal/00000002.history");
        std::fs::write(&history, "1\t0/5000000\tfirst\n").expect("history");
        assert!(push(&repo, &history).status.success());
        std::fs::write(&history, "1\t0/6000000\tsecond\n").expect("history");
        let out = push(&repo, &history);
        assert_eq!(out.status.code(), Some(5), ".history never overwritten: {}", stderr(&out));
    });
}

#[test]
fn wal_from_another_cluster_is_refused() {
    both(|backend| {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let work = repo.dir().join("work");
        assert!(push(&repo, &make_segment(&work, SYSID, 1, 1)).status.success());
        let other = make_segment(&work, SYSID + 1, 2, 1);
        let out = push(&repo, &other);
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("WAL from system identifier {} refused", SYSID + 1)), "{err}");
        assert!(err.contains(&format!("holds system identifier {SYSID}")), "{err}");
        let dest = work.join("x");
        assert_eq!(fetch(&repo, &seg_name(2), &dest).status.code(), Some(1), "nothing archived");
    });
}

#[test]
fn wrong_or_missing_key_and_mixed_encryption() {
    both(|backend| {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let work = repo.dir().join("work");
        assert!(push(&repo, &make_segment(&work, SYSID, 1, 1)).status.success());
        let dest = work.join("out");
        let out = repo
            .command("wal-fetch")
            .env("BACKUP_ENCRYPTION_KEY", OTHER_KEY)
            .arg(seg_name(1))
            .arg(&dest)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(204), "wrong key: {}", stderr(&out));
        assert!(stderr(&out).contains(&seg_name(1)), "names the object: {}", stderr(&out));
        assert!(!dest.exists());
        let out = repo
            .command("wal-fetch")
            .env_remove("BACKUP_ENCRYPTION_KEY")
            .env("WALVAULT_ENCRYPTION", "none")
            .arg(seg_name(1))
            .arg(&dest)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(204), "no key: {}", stderr(&out));
        let out = repo
            .command("wal-push")
            .env_remove("BACKUP_ENCRYPTION_KEY")
            .env("WALVAULT_ENCRYPTION", "none")
            .arg(make_segment(&work, SYSID, 2, 1))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(5), "unencrypted write into an encrypted repository: {}", stderr(&out));
        assert!(stderr(&out).contains("is encrypted and no key is configured"), "{}", stderr(&out));
    });
}

#[test]
fn corrupt_object_aborts_recovery_and_leaves_no_file() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    assert!(push(&repo, &make_segment(&work, SYSID, 1, 3)).status.success());
    let root = repo.fs_root.clone().expect("fs");
    let object = super::common::walk(&root.join("wal")).into_iter().next().expect("object");
    let mut bytes = std::fs::read(&object).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, &bytes).expect("write");
    let dest = work.join("out");
    let out = fetch(&repo, &seg_name(1), &dest);
    assert_eq!(out.status.code(), Some(204), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{}", object.display())), "names the object: {}", stderr(&out));
    assert!(!dest.exists(), "no partial file at %p");
    let leftovers: Vec<_> = std::fs::read_dir(&work).expect("dir").flatten().map(|e| e.file_name()).collect();
    assert!(!leftovers.iter().any(|n| n.to_string_lossy().contains("tmp")), "no temp file: {leftovers:?}");
    // Truncated object.
    std::fs::write(&object, &bytes[..mid]).expect("truncate");
    let out = fetch(&repo, &seg_name(1), &dest);
    assert_eq!(out.status.code(), Some(204), "truncated: {}", stderr(&out));
}

/// A sequential recovery over three day partitions costs one GET per file, one listing pass
/// per day partition plus day discovery, and one small listing per miss.
#[test]
fn sequential_fetch_costs_about_one_request_per_file() {
    let repo = TestRepo::new(Backend::Fs, None);
    let work = repo.dir().join("work");
    let n = 30u64;
    for segno in 1..=n {
        let out = push(&repo, &make_segment(&work, SYSID, segno, segno as u8));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Spread the archived files over three earlier days, as a week of archiving would.
    let root = repo.fs_root.clone().expect("fs");
    let objects = super::common::walk(&root.join("wal/production"));
    for (i, obj) in objects.iter().enumerate() {
        let day = format!("2024/03/{:02}", 10 + i * 3 / objects.len());
        let to = root.join("wal/production").join(day).join(obj.file_name().expect("name"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::rename(obj, &to).expect("move");
    }
    let _ = std::fs::remove_dir_all(repo.dir().join("cache"));
    let (mut get, mut list, mut other) = (0, 0, 0);
    for segno in 1..=n + 1 {
        let dest = work.join("restore").join(seg_name(segno));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        // Without prefetch: this counts the look-up itself.
        let out = repo
            .command("wal-fetch")
            .env("WALVAULT_LOG", "debug")
            .env("WALVAULT_FETCH_PREFETCH", "0")
            .arg(seg_name(segno))
            .arg(&dest)
            .output()
            .expect("wal-fetch");
        let expected = if segno <= n { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(expected), "{}", stderr(&out));
        let r = requests(&out);
        if segno <= n {
            get += r["get"].as_u64().expect("get");
            list += r["list"].as_u64().expect("list");
            other += r["put"].as_u64().unwrap_or(0) + r["head"].as_u64().unwrap_or(0);
        }
    }
    eprintln!("sequential fetch of {n} files: {get} GET, {list} LIST, {other} other");
    // Plus one GET of walvault.json by the first (cold-cache) call: every segment is checked
    // against the repository's cluster, and the identity is cached for the later calls.
    assert_eq!(get, n + 1, "one GET per file, and the identity once");
    assert_eq!(other, 0);
    // 5 listings find the days (root, year, month... at most 4 levels), 3 list the days,
    // and today's partition is listed once for the miss-free path.
    assert!(list <= 3 + 3 + 2, "listing passes: {list}");
}

/// With prefetch, later calls are served from the bounded prefetch directory beside the
/// data directory; every file is still byte-identical and the end of the archive is exit 1.
#[test]
fn prefetched_files_are_served_locally_and_bounded() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let n = 12u64;
    let mut originals = Vec::new();
    for segno in 1..=n {
        let seg = make_segment(&work, SYSID, segno, segno as u8);
        assert!(push(&repo, &seg).status.success());
        originals.push(std::fs::read(&seg).expect("read"));
    }
    let mut prefetched = 0;
    for segno in 1..=n {
        let dest = work.join("restored").join(seg_name(segno));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        let out = repo
            .command("wal-fetch")
            .env("WALVAULT_FETCH_PREFETCH", "3")
            .arg("--json")
            .arg(seg_name(segno))
            .arg(&dest)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(std::fs::read(&dest).expect("read"), originals[segno as usize - 1], "segment {segno} identical");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        if v["object"].as_str().is_some_and(|o| o.ends_with("(prefetched)")) {
            prefetched += 1;
        }
        // Give the detached worker a moment, as PostgreSQL's replay would.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let dir = super::common::walk(&repo.dir().join("cache"));
        let files = dir
            .iter()
            .filter(|p| {
                p.parent().is_some_and(|d| d.file_name().is_some_and(|f| f.to_string_lossy().starts_with("prefetch-")))
            })
            .filter(|p| {
                p.file_name().and_then(|f| f.to_str()).is_some_and(|f| walvault::wal::WalFileName::parse(f).is_ok())
            })
            .count();
        assert!(files <= 3, "prefetch directory bounded: {files} files");
    }
    eprintln!("{prefetched} of {n} segments served from the prefetch directory");
    assert!(prefetched >= n / 2, "most calls were prefetch hits: {prefetched}");
    let out = fetch(&repo, &seg_name(n + 1), &work.join("x"));
    assert_eq!(out.status.code(), Some(1), "end of the archive is still not-found: {}", stderr(&out));
}

/// A history file may be the first thing pushed into a brand-new local repository.
#[test]
fn history_file_first_into_a_new_repository() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work/pg_wal");
    std::fs::create_dir_all(&work).expect("mkdir");
    let history = work.join("00000002.history");
    std::fs::write(&history, "1\t0/3000000\tno recovery target specified\n").expect("write");
    let out = push(&repo, &history);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = repo.dir().join("restored.history");
    assert_eq!(fetch(&repo, "00000002.history", &dest).status.code(), Some(0));
    assert_eq!(std::fs::read(&dest).expect("read"), std::fs::read(&history).expect("read"));
}

/// The spool directory a data directory's wal-fetch uses (made by a first call).
fn spool_dir(repo: &TestRepo) -> PathBuf {
    let cache = repo.dir().join("cache");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("prefetch-")))
        .collect();
    assert_eq!(dirs.len(), 1, "one spool directory: {dirs:?}");
    dirs[0].clone()
}

/// Push segments 1..=n of SYSID; returns their bytes (index 0 = segment 1).
fn push_segments(repo: &TestRepo, n: u64) -> Vec<Vec<u8>> {
    let work = repo.dir().join("work");
    (1..=n)
        .map(|segno| {
            let seg = make_segment(&work, SYSID, segno, segno as u8);
            let out = push(repo, &seg);
            assert!(out.status.success(), "push {segno}: {}", stderr(&out));
            std::fs::read(&seg).expect("read")
        })
        .collect()
}

/// wal-fetch for PostgreSQL's `%p` of a data directory, with prefetch `depth`; returns the
/// output and the JSON outcome.
fn fetch_into(repo: &TestRepo, pgdata: &Path, name: &str, depth: &str) -> (std::process::Output, serde_json::Value) {
    std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
    let out = repo
        .command("wal-fetch")
        .env("WALVAULT_FETCH_PREFETCH", depth)
        .env("WALVAULT_LOG", "debug")
        .arg("--json")
        .arg(name)
        .arg(pgdata.join("pg_wal/RECOVERYXLOG"))
        .output()
        .expect("wal-fetch");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

/// A spooled file is served only when it is a complete segment of this cluster for its name:
/// a truncated file, one of another cluster, one of another (newer) timeline and one holding
/// another segment are each removed and fetched from the archive instead; a good one is
/// served. A temporary file left by a killed writer is never served.
#[test]
fn spool_files_are_verified_before_they_are_served() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let originals = push_segments(&repo, 7);
    let pgdata = repo.dir().join("restore/pgdata");
    let (out, v) = fetch_into(&repo, &pgdata, &seg_name(1), "0");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(v["source"], "archive");
    let spool = spool_dir(&repo);

    let other_cluster = walvault::wal::synthetic_segment(SYSID + 1, 1, 3, SEG, magic15(), 3);
    let other_timeline = walvault::wal::synthetic_segment(SYSID, 2, 4, SEG, magic15(), 4);
    let planted: [(u64, Vec<u8>); 5] = [
        (2, originals[1][..SEG as usize / 2].to_vec()), // truncated
        (3, other_cluster),
        (4, other_timeline),
        (5, originals[5].clone()), // segment 6 under segment 5's name
        (6, originals[5].clone()), // good
    ];
    for (segno, bytes) in &planted {
        std::fs::write(spool.join(seg_name(*segno)), bytes).expect("plant");
    }
    // What a writer killed mid-download leaves: a temporary file of a process that is gone.
    let dead_temp = spool.join(format!(".{}.walvault.999999999.1.tmp", seg_name(7)));
    std::fs::write(&dead_temp, &originals[6][..1000]).expect("plant temp");

    for segno in 2..=7u64 {
        let (out, v) = fetch_into(&repo, &pgdata, &seg_name(segno), "0");
        assert_eq!(out.status.code(), Some(0), "segment {segno}: {}", stderr(&out));
        let got = std::fs::read(pgdata.join("pg_wal/RECOVERYXLOG")).expect("read");
        assert!(got == originals[segno as usize - 1], "segment {segno} is the archive's");
        let expected = if segno == 6 { "spool" } else { "archive" };
        assert_eq!(v["source"], expected, "segment {segno}: {}", stderr(&out));
        assert!(!spool.join(seg_name(segno)).exists(), "segment {segno}: spooled file consumed or removed");
        if (2..=5).contains(&segno) {
            assert!(stderr(&out).contains("not serving the spooled"), "says why: {}", stderr(&out));
        }
    }
    // The next worker removes the dead writer's temporary file.
    let worker = repo
        .command("wal-fetch")
        .args(["--prefetch-worker", &SEG.to_string(), &seg_name(7)])
        .arg(pgdata.join("pg_wal/RECOVERYXLOG"))
        .output()
        .expect("worker");
    assert!(worker.status.success(), "{}", stderr(&worker));
    assert!(!dead_temp.exists(), "dead temporary file removed");
}

/// A prefetch worker killed (SIGKILL) at any point leaves only whole, verified segments under
/// their names and temporary files that are never served; later calls get the archive's
/// bytes; the next worker removes the leftovers.
#[test]
fn killed_prefetch_worker_leaves_nothing_that_is_served() {
    let repo = TestRepo::new(Backend::S3, Some(TEST_KEY));
    let n = 12u64;
    let originals = push_segments(&repo, n);
    let pgdata = repo.dir().join("restore/pgdata");
    let (out, _) = fetch_into(&repo, &pgdata, &seg_name(1), "0");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let spool = spool_dir(&repo);
    let dest = pgdata.join("pg_wal/RECOVERYXLOG");
    let mut leftovers = 0;
    for (round, delay_ms) in [5u64, 15, 30, 60, 120, 250].into_iter().enumerate() {
        let from = 1 + round as u64;
        let mut worker = repo
            .command("wal-fetch")
            .env("WALVAULT_FETCH_PREFETCH", "8")
            .args(["--prefetch-worker", &SEG.to_string(), &seg_name(from)])
            .arg(&dest)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn worker");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        worker.kill().expect("SIGKILL");
        worker.wait().expect("reap");
        for p in super::common::walk(&spool) {
            let f = p.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
            if let Ok(w) = walvault::wal::WalFileName::parse(&f) {
                let segno = w.segno(u64::from(SEG)).expect("segno");
                let bytes = std::fs::read(&p).expect("read");
                assert!(bytes == originals[segno as usize - 1], "round {round}: {f} under its name is whole");
            } else if f.ends_with(".tmp") || f.ends_with(".staged") {
                leftovers += 1;
            }
        }
    }
    eprintln!("{leftovers} temporary files left by killed workers");
    // Everything is served right, from the spool or the archive.
    for segno in 2..=n {
        let (out, v) = fetch_into(&repo, &pgdata, &seg_name(segno), "0");
        assert_eq!(out.status.code(), Some(0), "segment {segno}: {}", stderr(&out));
        assert!(std::fs::read(&dest).expect("read") == originals[segno as usize - 1], "segment {segno}: {v}");
    }
    // The next worker (nothing left to fetch: it stops at once) removes the leftovers.
    let worker = repo
        .command("wal-fetch")
        .args(["--prefetch-worker", &SEG.to_string(), &seg_name(n)])
        .arg(&dest)
        .output()
        .expect("worker");
    assert!(worker.status.success(), "{}", stderr(&worker));
    let left: Vec<PathBuf> = super::common::walk(&spool)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp") || p.to_string_lossy().ends_with(".staged"))
        .collect();
    assert!(left.is_empty(), "temporary files removed: {left:?}");
}

/// Overlapping wal-fetch calls for one data directory (each starting the prefetch worker)
/// all succeed with the archive's bytes; one worker runs at a time and it stops when idle.
#[test]
fn overlapping_fetches_share_one_worker_and_each_gets_whole_files() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let n = 10u64;
    let originals = push_segments(&repo, n);
    let pgdata = repo.dir().join("restore/pgdata");
    std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
    for round in 0..2 {
        let children: Vec<(u64, PathBuf, std::process::Child)> = (1..=n)
            .map(|segno| {
                let dest = pgdata.join(format!("pg_wal/RECOVERYXLOG.{segno}"));
                let child = repo
                    .command("wal-fetch")
                    .env("WALVAULT_FETCH_PREFETCH", "4")
                    .arg(seg_name(segno))
                    .arg(&dest)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn");
                (segno, dest, child)
            })
            .collect();
        for (segno, dest, child) in children {
            let out = child.wait_with_output().expect("wait");
            assert_eq!(out.status.code(), Some(0), "round {round} segment {segno}: {}", stderr(&out));
            assert!(std::fs::read(&dest).expect("read") == originals[segno as usize - 1], "segment {segno} whole");
        }
    }
    // The detached worker stops by itself once nobody asks for anything new.
    let lock = spool_dir(&repo).join(".lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lock.exists() {
        assert!(std::time::Instant::now() < deadline, "the prefetch worker did not stop");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
