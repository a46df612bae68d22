//! The smaller items of issue #11, point 10: inputs that are not regular files never hang or
//! exhaust a binary, durations are bounded, caches are private whatever the umask,
//! `--tablespace-map` is checked before PGDATA is touched, and a write error in wal-fetch
//! names `%p`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::common::{Backend, TEST_KEY, TestRepo, shared_tempdir, stderr, walk};

const SEG: u32 = 1 << 20;
const SYSID: u64 = 7_300_000_000_000_000_012;

fn seg_name(segno: u64) -> String {
    walvault::wal::WalFileName::from_segno(1, segno, u64::from(SEG)).to_string()
}

fn segment(dir: &Path, segno: u64) -> PathBuf {
    let magic = walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("magic");
    let wal = dir.join("pg_wal");
    std::fs::create_dir_all(&wal).expect("mkdir");
    let path = wal.join(seg_name(segno));
    std::fs::write(&path, walvault::wal::synthetic_segment(SYSID, 1, segno, SEG, magic, segno as u8)).expect("write");
    path
}

/// Run `c`, failing the test (instead of hanging it) if it is not done within 20 s.
fn bounded(mut c: Command) -> Output {
    let mut child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{c:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().expect("mkfifo").success());
}

#[test]
fn fifos_devices_and_directories_are_refused_without_hanging() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let wal = repo.dir().join("work/pg_wal");
    std::fs::create_dir_all(&wal).expect("mkdir");
    let fifo = wal.join(seg_name(1));
    mkfifo(&fifo);
    let zero = wal.join(seg_name(2));
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let dir = wal.join(seg_name(3));
    std::fs::create_dir(&dir).expect("mkdir");
    let history = wal.join("00000002.history");
    mkfifo(&history);
    for (path, what) in [(&fifo, "a FIFO"), (&zero, "a character device"), (&dir, "a directory"), (&history, "a FIFO")]
    {
        let mut c = repo.command("wal-push");
        c.arg(path);
        let out = bounded(c);
        assert_eq!(out.status.code(), Some(2), "{}: {}", path.display(), stderr(&out));
        assert_eq!(
            stderr(&out).trim(),
            format!(
                "wal-push: error: {}: not a regular file ({what}); wal-push archives regular files only",
                path.display()
            )
        );
    }

    // A key file, the same.
    let key_fifo = repo.dir().join("key.fifo");
    mkfifo(&key_fifo);
    let seg = segment(&repo.dir().join("work2"), 4);
    for (key, what) in [(key_fifo.as_path(), "a FIFO"), (Path::new("/dev/zero"), "a character device")] {
        let mut c = repo.command("wal-push");
        c.env_remove("BACKUP_ENCRYPTION_KEY").env("WALVAULT_KEY_FILE", key).arg(&seg);
        let out = bounded(c);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let want = format!(
            "wal-push: error: setting WALVAULT_KEY_FILE: cannot read key file {}: not a regular file ({what})",
            key.display()
        );
        assert_eq!(stderr(&out).trim(), want);
    }

    // A config file, the same; and one too large to be a config file.
    let big = repo.dir().join("big.conf");
    std::fs::write(&big, "#".repeat(2 << 20)).expect("write");
    for (conf, what) in [
        (Path::new("/dev/zero"), "not a regular file (a character device)".to_string()),
        (key_fifo.as_path(), "not a regular file (a FIFO)".to_string()),
        (big.as_path(), "larger than 1048576 bytes".to_string()),
    ] {
        for bin in ["wal-push", "walvault"] {
            let mut c = repo.command(bin);
            c.arg("--config").arg(conf).arg(if bin == "walvault" { "ls" } else { seg.to_str().expect("utf8") });
            let out = bounded(c);
            assert_eq!(out.status.code(), Some(2), "{bin} {}: {}", conf.display(), stderr(&out));
            let want =
                format!("{bin}: error: config file {}: {what}; expected a file of NAME=value lines", conf.display());
            assert_eq!(stderr(&out).trim(), want);
        }
    }
    assert!(repo.fs_root.as_deref().is_none_or(|r| walk(r).is_empty()), "nothing archived");
}

#[test]
fn archive_timeout_out_of_range_is_a_usage_error_not_a_panic() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    for value in ["18446744073709551615", "0", "8d", "99999999999999w", "ten"] {
        let out = repo.run("base-backup", &["--archive-timeout", value]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("base-backup: error: setting --archive-timeout: "), "{value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Every directory walvault creates for its caches, spools, claims and locks is 0700 and
/// every file 0600, under umask 022: the listing cache, the push-ahead directory and the
/// prefetch spool with the worker's `.lock`.
#[test]
fn caches_spools_and_locks_are_private_whatever_the_umask() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let status = work.join("pg_wal/archive_status");
    std::fs::create_dir_all(&status).expect("mkdir");
    let segs: Vec<PathBuf> = (1..=6).map(|n| segment(&work, n)).collect();
    for s in &segs {
        let file_name = s.file_name().and_then(|n| n.to_str()).expect("name");
        std::fs::write(status.join(format!("{file_name}.ready")), "").expect("ready");
    }
    // The first push starts the push-ahead helper for the others.
    let out = repo.command_after("umask 022", "wal-push").arg(&segs[0]).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    for s in &segs[1..] {
        let out = repo.command_after("umask 022", "wal-push").arg(s).output().expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A fetch by hand starts the prefetch worker, which holds a lock in its spool.
    let dest = work.join("restore/RECOVERYXLOG");
    std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
    let out = repo.command_after("umask 022", "wal-fetch").arg(seg_name(1)).arg(&dest).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let cache = repo.dir().join("cache");
    let started = Instant::now();
    let mut lock_seen = false;
    let mut checked = 0;
    while started.elapsed() < Duration::from_secs(5) && !lock_seen {
        for path in std::iter::once(cache.clone()).chain(walk_all(&cache)) {
            use std::os::unix::fs::PermissionsExt;
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let mode = meta.permissions().mode() & 0o777;
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{} is {mode:o}", path.display());
            lock_seen |= path.file_name().is_some_and(|n| n == ".lock") && path.to_string_lossy().contains("prefetch-");
            checked += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lock_seen, "the prefetch worker's lock was seen ({checked} entries checked)");
}

/// Files and directories under `dir`, directories included.
fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk_all(&p));
            }
            out.push(p);
        }
    }
    out
}

/// A full disk (here: a file size limit) while wal-fetch writes `%p` names `%p`, not the
/// object it was reading; nothing is left at `%p`.
#[test]
fn a_write_error_in_wal_fetch_names_the_destination() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    assert!(repo.run("wal-push", &[segment(&work, 1).to_str().expect("utf8")]).status.success());
    let dest = work.join("restore/pg_wal/RECOVERYXLOG");
    std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
    let out = repo
        .command_after("trap '' XFSZ; ulimit -f 64", "wal-fetch")
        .env("WALVAULT_FETCH_PREFETCH", "0")
        .arg(seg_name(1))
        .arg(&dest)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(206), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with(&format!("wal-fetch: error: {}: File too large", dest.display())), "{err}");
    assert!(!err.contains(".zst.enc"), "the object is not what failed: {err}");
    assert!(!dest.exists());
    let left: Vec<_> = std::fs::read_dir(dest.parent().expect("parent")).expect("dir").flatten().collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
}

/// `--tablespace-map` (and every tablespace's destination) is checked before anything is
/// written: an unknown tablespace, a relative path, a path inside PGDATA, or a destination
/// that already holds the tablespace leaves PGDATA untouched.
#[test]
fn tablespace_map_is_checked_before_pgdata_is_touched() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = super::pitr::primary(&repo);
    let ts = p.dir.path().join("ts1");
    std::fs::create_dir(&ts).expect("mkdir");
    if super::common::is_root() {
        let (uid, gid) = super::common::postgres_ids();
        std::os::unix::fs::chown(&ts, Some(uid), Some(gid)).expect("chown");
    }
    p.psql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts.display()));
    p.psql("CREATE TABLE t TABLESPACE ts1 AS SELECT g FROM generate_series(1, 1000) g");
    let oid = p.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
    let out = super::pitr::base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let backup = serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["name"]
        .as_str()
        .expect("name")
        .to_string();
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();

    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let fresh = dir.path().join("ts-new");
    let cases = [
        (
            format!("99999={}", fresh.display()),
            2,
            format!("setting --tablespace-map: backup {backup} has no tablespace 99999; its tablespaces: {oid} (ts1)"),
        ),
        (format!("{oid}=relative/ts"), 2, format!("{oid}=relative/ts: the new location must be an absolute path")),
        (format!("{oid}={}/ts", pgdata.display()), 2, "a tablespace must be outside the data directory".to_string()),
        // Not moved: the original directory still holds the tablespace.
        (
            String::new(),
            5,
            format!("tablespace {oid} would be restored into {}, which already holds PG_", ts.display()),
        ),
        (format!("{oid}={}", ts.display()), 5, "refusing to overwrite it".to_string()),
    ];
    for (map, code, want) in cases {
        let mut c = repo.command("pitr-prepare");
        c.arg("--pgdata").arg(&pgdata).arg("--latest");
        if !map.is_empty() {
            c.args(["--tablespace-map", &map]);
        }
        let out = c.output().expect("pitr-prepare");
        assert_eq!(out.status.code(), Some(code), "{map}: {}", stderr(&out));
        assert!(stderr(&out).contains(&want), "{map}: {}", stderr(&out));
        assert!(!pgdata.exists(), "{map}: PGDATA untouched");
        assert!(!fresh.exists());
    }
    let out = repo
        .command("pitr-prepare")
        .arg("--pgdata")
        .arg(&pgdata)
        .args(["--latest", "--tablespace-map", &format!("{oid}={}", fresh.display())])
        .output()
        .expect("pitr-prepare");
    assert!(out.status.success(), "a good map still works: {}", stderr(&out));
    assert!(fresh.is_dir());
}
