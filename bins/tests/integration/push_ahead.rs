//! Push-ahead safety: the helper process that archives the `.ready` backlog in parallel.
//! Overlapping calls, a killed helper, a file changed after it was pushed ahead, a stale
//! claim: no file is ever acknowledged that is not durably stored with exactly its content.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{Backend, TEST_KEY, TestRepo, stderr, walk};
use super::faults::proxy::Rng;

const SEG: u32 = 1 << 20;
const SYSID: u64 = 7_300_000_000_000_000_077;

fn magic15() -> u16 {
    walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("pg 15 magic")
}

fn seg_name(segno: u64) -> String {
    walvault::wal::WalFileName::from_segno(1, segno, u64::from(SEG)).to_string()
}

/// `n` segments in `work/pg_wal`, each marked `.ready` as PostgreSQL would.
fn backlog(work: &Path, first: u64, n: u64) -> Vec<PathBuf> {
    let wal = work.join("pg_wal");
    std::fs::create_dir_all(wal.join("archive_status")).expect("mkdir");
    (first..first + n)
        .map(|segno| {
            let path = wal.join(seg_name(segno));
            let bytes = walvault::wal::synthetic_segment(SYSID, 1, segno, SEG, magic15(), segno as u8);
            std::fs::write(&path, bytes).expect("write segment");
            std::fs::write(wal.join(format!("archive_status/{}.ready", seg_name(segno))), "").expect("ready");
            path
        })
        .collect()
}

fn name_of(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).expect("name").to_string()
}

/// What PostgreSQL's archiver does after exit 0: `.ready` becomes `.done`.
fn archived(seg: &Path) {
    let status = seg.parent().expect("pg_wal").join("archive_status");
    let name = name_of(seg);
    let _ = std::fs::rename(status.join(format!("{name}.ready")), status.join(format!("{name}.done")));
}

fn push_cmd(repo: &TestRepo, seg: &Path, parallel: u32) -> Command {
    let mut c = repo.command("wal-push");
    c.env("WALVAULT_PUSH_PARALLEL", parallel.to_string()).arg(seg);
    c
}

/// The push-ahead directory under the repository's cache.
fn ahead_dir(repo: &TestRepo) -> Option<PathBuf> {
    std::fs::read_dir(repo.dir().join("cache"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("push-")))
}

/// Wait (bounded) until no helper holds the lock: it stops by itself once idle.
fn wait_helper_gone(repo: &TestRepo) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ahead_dir(repo).is_some_and(|d| d.join(".lock").exists()) {
        assert!(Instant::now() < deadline, "the push-ahead helper did not stop by itself");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every segment comes back byte-identical, and the repository holds exactly one object per
/// name.
fn assert_archived_once_and_identical(repo: &TestRepo, segs: &[PathBuf]) {
    let objects = repo.raw_objects();
    for seg in segs {
        let name = name_of(seg);
        let copies = objects.iter().filter(|(k, _)| k.contains(&format!("/{name}."))).count();
        assert_eq!(copies, 1, "{name} stored once: {:?}", objects.iter().map(|(k, _)| k).collect::<Vec<_>>());
        let dest = repo.dir().join("fetched").join(&name);
        let out = repo.run("wal-fetch", &[&name, dest.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(std::fs::read(&dest).expect("read") == std::fs::read(seg).expect("read"), "{name} identical");
    }
}

/// One call starts the helper; it archives the backlog while the call pushes its own file,
/// and PostgreSQL's later calls return without a request. Both backends.
#[test]
fn helper_pushes_the_backlog_and_later_calls_return_at_once() {
    for backend in [Backend::Fs, Backend::S3] {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let segs = backlog(&repo.dir().join("work"), 1, 8);
        let out = push_cmd(&repo, &segs[0], 2).output().expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        archived(&segs[0]);
        // The helper needs the identity the first call verified; the second call starts it.
        let out = push_cmd(&repo, &segs[1], 2).output().expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        archived(&segs[1]);
        wait_helper_gone(&repo);
        let mut ahead = 0;
        for seg in &segs[2..] {
            let out = push_cmd(&repo, seg, 2).arg("--json").output().expect("run");
            assert!(out.status.success(), "{}", stderr(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            if v["object"] == "(pushed ahead)" {
                ahead += 1;
                assert_eq!(v["requests"], serde_json::json!({}), "no request: {v}");
            }
            archived(seg);
        }
        assert_eq!(ahead, segs.len() - 2, "{backend:?}: every later call found its file pushed ahead");
        let log = std::fs::read_to_string(ahead_dir(&repo).expect("dir").join("helper.log")).unwrap_or_default();
        assert!(!log.contains("warning"), "helper log: {log}");
        assert_archived_once_and_identical(&repo, &segs);
    }
}

/// Three archivers racing over the same backlog (as after a failover script gone wrong, or
/// an operator's manual run beside PostgreSQL's): every call succeeds, each file is stored
/// once and comes back identical.
#[test]
fn overlapping_calls_store_each_file_once_and_identically() {
    for backend in [Backend::Fs, Backend::S3] {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let segs = backlog(&repo.dir().join("work"), 1, 10);
        std::thread::scope(|s| {
            for t in 0..3 {
                let (repo, segs) = (&repo, &segs);
                s.spawn(move || {
                    for seg in segs {
                        let out = push_cmd(repo, seg, 2).output().expect("run");
                        assert!(out.status.success(), "{backend:?} archiver {t} {}: {}", name_of(seg), stderr(&out));
                    }
                });
            }
        });
        wait_helper_gone(&repo);
        assert_archived_once_and_identical(&repo, &segs);
    }
}

/// The helper SIGKILLed at random points: every file it marked done is stored and identical;
/// its claims do not block PostgreSQL's calls, which all succeed; nothing is lost.
#[test]
fn killed_helper_never_acknowledges_an_unstored_file() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let first = backlog(&work, 1, 1);
    let out = push_cmd(&repo, &first[0], 2).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    archived(&first[0]);
    let mut rng = Rng(42);
    let mut all = Vec::new();
    let mut killed = 0;
    for round in 0..6u64 {
        let segs = backlog(&work, 2 + round * 6, 6);
        let mut helper = repo
            .command("wal-push")
            .env("WALVAULT_PUSH_PARALLEL", "2")
            .arg("--push-ahead-helper")
            .arg(work.join("pg_wal"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn helper");
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 60_000));
        if helper.try_wait().expect("try_wait").is_none() {
            killed += 1;
        }
        let _ = helper.kill();
        let _ = helper.wait();
        // Every done marker stands for a stored, identical object.
        let dir = ahead_dir(&repo).expect("push-ahead dir");
        for marker in walk(&dir.join("done")) {
            let name = name_of(&marker);
            if walvault::wal::WalFileName::parse(&name).is_err() {
                continue; // a marker being written when the helper was killed: never read
            }
            let seg = work.join("pg_wal").join(&name);
            let dest = repo.dir().join("check").join(&name);
            let out = repo.run("wal-fetch", &[&name, dest.to_str().expect("utf8")]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: {name} marked done but not fetchable: {}",
                stderr(&out)
            );
            assert!(std::fs::read(&dest).expect("read") == std::fs::read(&seg).expect("read"), "{name}");
        }
        // PostgreSQL's own calls: all succeed, stale claims or not.
        for seg in &segs {
            let t = Instant::now();
            let out = push_cmd(&repo, seg, 2).output().expect("run");
            assert!(out.status.success(), "round {round} {}: {}", name_of(seg), stderr(&out));
            assert!(t.elapsed() < Duration::from_secs(60), "a stale claim made wal-push wait");
            archived(seg);
        }
        all.extend(segs);
    }
    wait_helper_gone(&repo);
    assert_archived_once_and_identical(&repo, &all);
    eprintln!("helper killed mid-run in {killed} of 6 rounds");
}

/// A file changed after it was pushed ahead (its marker no longer matches) is compared with
/// the archived copy: different content is refused, never acknowledged by the marker.
#[test]
fn a_marker_is_never_trusted_for_a_changed_file() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let segs = backlog(&work, 1, 4);
    for seg in &segs[..2] {
        let out = push_cmd(&repo, seg, 2).output().expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        archived(seg);
    }
    wait_helper_gone(&repo);
    let dir = ahead_dir(&repo).expect("dir");
    assert!(dir.join("done").join(name_of(&segs[3])).exists(), "pushed ahead");
    // Other content under the same name (same size, so only the content and times differ).
    let other = walvault::wal::synthetic_segment(SYSID, 1, 4, SEG, magic15(), 0xEE);
    std::fs::write(&segs[3], other).expect("rewrite");
    let out = push_cmd(&repo, &segs[3], 2).output().expect("run");
    assert_eq!(out.status.code(), Some(5), "refused, not acknowledged: {}", stderr(&out));
    assert!(stderr(&out).contains("different content"), "{}", stderr(&out));
    // A marker that does not match its file is dropped, and the file pushed for real (with no
    // file waiting, so that no helper -- not even one the refused call spawned that starts
    // late on a loaded machine -- pushes it and vouches for it anew).
    archived(&segs[3]);
    archived(&segs[2]);
    wait_helper_gone(&repo);
    std::fs::write(dir.join("done").join(name_of(&segs[2])), "dev 0 ino 0").expect("forge");
    let out = push_cmd(&repo, &segs[2], 2).arg("--json").output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["object"], "(pushed ahead)");
}
