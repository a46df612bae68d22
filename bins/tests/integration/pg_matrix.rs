//! The PostgreSQL version matrix (14 through 18) and WAL segment sizes other than 16 MiB.
//!
//! Per version, always: the archive + recover round trip of pg_e2e.rs on the local-directory
//! repository (`pgNN_archive_and_recover`), run by the server, pg_basebackup, psql and pgbench
//! of that version from `$WALVAULT_TEST_PG_ROOT/<major>/bin` (scripts/pg-binaries.sh; 15 is
//! Debian's and covered by pg_e2e.rs). The S3 variant per version
//! (`pgNN_archive_and_recover_s3`) is `#[ignore]`d: a plain run lists it as ignored instead of
//! counting a pass that ran nothing, and `WALVAULT_TEST_FULL_MATRIX=1 scripts/test.sh` runs
//! exactly these ignored tests after the rest (`--run-ignored only`).
//!
//! On 15: clusters made with `initdb --wal-segsize=1` and `--wal-segsize=64` archive, fetch
//! and recover. And wal-push refuses a segment whose page magic no known version writes.

use std::process::Command;

use super::common::{Backend, TEST_KEY, TestRepo, pg_bin_for, stderr, walk};
use super::pg_e2e::archive_and_recover_with;

/// The binaries of `major`, checked to really be that version (a misfilled root must not
/// pass as a matrix run on another version).
fn checked_bin(major: u32) -> std::path::PathBuf {
    let bin = pg_bin_for(major);
    let out = Command::new(bin.join("postgres")).arg("--version").output().expect("postgres --version");
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && version.starts_with(&format!("postgres (PostgreSQL) {major}.")),
        "{} is not PostgreSQL {major}: {version}{}",
        bin.display(),
        stderr(&out)
    );
    bin
}

fn round_trip(major: u32, backend: Backend) {
    archive_and_recover_with(backend, checked_bin(major), &[]);
}

macro_rules! per_version {
    ($major:literal, $fs:ident, $s3:ident, $pitr:ident, $timeline:ident) => {
        #[test]
        fn $fs() {
            round_trip($major, Backend::Fs);
        }

        #[test]
        fn $pitr() {
            super::pitr::pitr_drill_with(Backend::Fs, checked_bin($major));
        }

        #[test]
        fn $timeline() {
            super::pitr::timeline_switch_with(checked_bin($major));
        }

        #[test]
        #[ignore = "full matrix only: WALVAULT_TEST_FULL_MATRIX=1 scripts/test.sh runs it"]
        fn $s3() {
            round_trip($major, Backend::S3);
        }
    };
}

per_version!(14, pg14_archive_and_recover, pg14_archive_and_recover_s3, pg14_pitr_drill, pg14_timeline_switch);
per_version!(16, pg16_archive_and_recover, pg16_archive_and_recover_s3, pg16_pitr_drill, pg16_timeline_switch);
per_version!(17, pg17_archive_and_recover, pg17_archive_and_recover_s3, pg17_pitr_drill, pg17_timeline_switch);
per_version!(18, pg18_archive_and_recover, pg18_archive_and_recover_s3, pg18_pitr_drill, pg18_timeline_switch);

#[test]
fn pg15_wal_segsize_1_archive_and_recover() {
    archive_and_recover_with(Backend::Fs, checked_bin(15), &["--wal-segsize=1"]);
}

#[test]
fn pg15_wal_segsize_64_archive_and_recover() {
    archive_and_recover_with(Backend::Fs, checked_bin(15), &["--wal-segsize=64"]);
}

/// A segment whose page magic no supported version writes (0xD120, a future major's) is
/// refused with exit code 5 and a message naming the file and the magic; nothing is stored.
#[test]
fn wal_push_refuses_unknown_page_magic() {
    const UNKNOWN: u16 = 0xD120;
    assert_eq!(walvault::wal::header::pg_major_for_magic(UNKNOWN), None, "0xD120 must stay unknown for this test");
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let seg: u32 = 16 << 20;
    let name = walvault::wal::WalFileName::from_segno(1, 3, u64::from(seg)).to_string();
    let wal = repo.dir().join("pg_wal");
    std::fs::create_dir_all(&wal).expect("pg_wal");
    let path = wal.join(&name);
    std::fs::write(&path, walvault::wal::synthetic_segment(7_300_000_000_000_000_042, 1, 3, seg, UNKNOWN, 0x5a))
        .expect("write segment");

    let out = repo.run("wal-push", &[path.to_str().expect("utf8")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "unknown magic is refused (5): {err}");
    assert!(err.contains(&name), "the message names the file: {err}");
    assert!(err.contains("0xD120"), "the message names the magic: {err}");
    let stored: Vec<_> = repo.fs_root.as_deref().map(walk).unwrap_or_default();
    assert!(
        !stored.iter().any(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&name))),
        "nothing stored for {name}: {stored:?}"
    );
}
