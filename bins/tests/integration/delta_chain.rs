//! `pitr-prepare --delta` to an incremental backup, on real PostgreSQL and both backends: the
//! local files are decided by the chain's effective block map (an incremental's manifest has
//! no whole-file digest for what it did not store whole). A chain full -> incr -> incr is
//! restored, one block of a file whose content comes from two incrementals is damaged and
//! found; then the restored and run data directory is damaged as in `delta` and restored over
//! again; every time every table equals the source's and the report counts what happened.
//! Another cluster's data directory is refused untouched.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, stderr};
use super::delta::{another_cluster_is_refused_untouched, damage, table_digests};
use super::incremental::backup;
use super::pitr::{prepare, primary, recover};
use super::raw::{get_raw, put_raw};

/// `pitr-prepare --delta --latest` into `pgdata` (with `extra` arguments); its output and report.
fn delta_to_latest(repo: &TestRepo, pgdata: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = repo.pitr_prepare(pgdata, &[&["--delta", "--latest", "--json", "--jobs", "2"][..], extra].concat());
    assert!(out.status.success(), "pitr-prepare --delta: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    (out, report)
}

pub(super) fn count(report: &serde_json::Value, key: &str) -> u64 {
    report["delta"][key].as_u64().unwrap_or_else(|| panic!("{key} in {report}"))
}

/// Flip bytes inside block `block` of `file` (its length stays).
pub(super) fn damage_block(file: &Path, block: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(file).expect("open");
    let at = block * 8192 + 4000;
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, at).expect("read block");
    b.iter_mut().for_each(|x| *x ^= 0x5a);
    f.write_all_at(&b, at).expect("write block");
}

fn delta_chain_with(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql(
        "DO $$ BEGIN FOR i IN 1..40 LOOP EXECUTE format('CREATE TABLE t%s AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g', i); EXECUTE format('CREATE INDEX ON t%s (id)', i); END LOOP; END $$",
    );
    p.pgbench(&["-i", "-s", "2", "-q"]);
    let full = backup(&repo, &p, "full");
    // `late` exists from the first incremental on (stored whole there), frozen so that no hint
    // bit rewrites its pages later; the second stores only its changed blocks.
    p.psql("CREATE TABLE late AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 6000) g");
    p.psql("VACUUM (FREEZE) late");
    p.psql("INSERT INTO t1 SELECT g, 'after the full backup' FROM generate_series(1, 500) g");
    p.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0");
    let incr1 = backup(&repo, &p, "incr");
    p.psql("UPDATE late SET v = 'changed' WHERE id <= 20");
    p.psql("UPDATE t2 SET v = 'changed' WHERE id % 100 = 0");
    let incr2 = backup(&repo, &p, "incr");
    p.psql("INSERT INTO t3 SELECT g, 'after the chain' FROM generate_series(1, 300) g");
    p.switch_and_wait_archived(Duration::from_secs(120));
    let name = |m: &serde_json::Value| m["name"].as_str().expect("name").to_string();
    assert_eq!(incr2["reference"].as_str(), Some(name(&incr1).as_str()), "{incr2}");
    assert_eq!(incr1["reference"].as_str(), Some(name(&full).as_str()), "{incr1}");
    let source = table_digests(&p);
    let rel = |t: &str| PathBuf::from(p.psql(&format!("SELECT pg_relation_filepath('{t}')")));
    let late = rel("late");
    let heaps: Vec<PathBuf> = (4..=40).map(|i| rel(&format!("t{i}"))).collect();
    p.stop();

    // Another cluster's data directory: refused for an incremental target too, nothing changed.
    another_cluster_is_refused_untouched(&repo);

    // Restored from the chain; one block of `late` damaged (its content comes from incr1 and
    // incr2): the delta restore fetches it and postgresql.auto.conf (pitr-prepare's own
    // settings), nothing else, from the parts of both incrementals.
    let (mut c, out) = prepare(&repo, &["--latest"]);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    damage_block(&c.pgdata.join(&late), 5);
    let (out, report) = delta_to_latest(&repo, &c.pgdata, &[]);
    assert_eq!(report["backup"].as_str(), Some(name(&incr2).as_str()), "{report}");
    assert_eq!(count(&report, "fetched_files"), 2, "late and postgresql.auto.conf: {report}");
    assert!(count(&report, "kept_files") > 100, "{report}");
    assert!(count(&report, "parts_skipped") + 3 >= count(&report, "parts"), "{report}");
    let log = stderr(&out);
    for link in [&incr1, &incr2] {
        assert!(log.contains(&format!("{} part", name(link))), "blocks of late from {}: {log}", name(link));
    }
    failed_delta_disables_the_directory(&repo, &c.pgdata, &incr2, &late);
    recover(&mut c, false);
    assert_eq!(table_digests(&c), source, "{backend:?}: tables differ after --delta\n{}", c.log());
    c.stop();

    // The restored and run directory damaged as in `delta`: restored over again, the
    // incremental named this time.
    let heaps: Vec<PathBuf> = heaps.iter().map(|h| c.pgdata.join(h)).collect();
    let (removed, extra) = damage(&c.pgdata, &heaps);
    let (_, report) = delta_to_latest(&repo, &c.pgdata, &["--backup", &name(&incr2)]);
    assert_eq!(report["backup"].as_str(), Some(name(&incr2).as_str()), "{report}");
    let n = |k: &str| count(&report, k);
    assert!(n("kept_files") > 10 * n("fetched_files") && n("kept_bytes") > 0, "mostly kept: {report}");
    assert!(n("fetched_files") >= 4, "changed, truncated and removed files fetched: {report}");
    assert!(n("removed_files") >= 2 && n("removed_bytes") >= 16384, "extra file and postmaster.pid: {report}");
    assert!(n("parts_skipped") > 0, "{report}");
    assert!(removed.is_file(), "the removed file is back");
    assert!(!extra.exists() && !c.pgdata.join("postmaster.pid").exists(), "old state left behind");
    recover(&mut c, false);
    assert_eq!(table_digests(&c), source, "{backend:?}: tables differ after the second --delta\n{}", c.log());
    c.stop();
}

/// With every part of `incr` damaged in the repository, a delta restore that needs one fails
/// (exit 4) and leaves the directory unstartable (`global/pg_control` moved aside); once the
/// parts are back, `--delta` recognises the directory and restores it.
fn failed_delta_disables_the_directory(repo: &TestRepo, pgdata: &Path, incr: &serde_json::Value, late: &Path) {
    let keys: Vec<String> =
        incr["parts"].as_array().expect("parts").iter().map(|p| p["key"].as_str().expect("key").to_string()).collect();
    let originals: Vec<Vec<u8>> = keys.iter().map(|k| get_raw(repo, k)).collect();
    for (key, bytes) in keys.iter().zip(&originals) {
        // The last chunk's tag: found once the part is streamed (the header is intact).
        let mut bad = bytes.clone();
        if let Some(last) = bad.last_mut() {
            *last ^= 0x01;
        }
        put_raw(repo, key, &bad);
    }
    damage_block(&pgdata.join(late), 5);
    let out = repo.pitr_prepare(pgdata, &["--delta", "--latest"]);
    assert_eq!(out.status.code(), Some(4), "a damaged part: {}", stderr(&out));
    assert!(
        !pgdata.join("global/pg_control").exists(),
        "a failed delta restore left a startable directory: {}",
        stderr(&out)
    );
    assert!(pgdata.join("global/pg_control.walvault-delta").is_file());
    for (key, bytes) in keys.iter().zip(&originals) {
        put_raw(repo, key, bytes);
    }
    let (_, report) = delta_to_latest(repo, pgdata, &[]);
    // At least late and pg_control (postgresql.auto.conf too, unless the failed run wrote it).
    assert!(count(&report, "fetched_files") >= 2, "{report}");
    assert_eq!(count(&report, "removed_files"), 1, "pg_control moved aside: {report}");
    assert!(pgdata.join("global/pg_control").is_file() && !pgdata.join("global/pg_control.walvault-delta").exists());
}

#[test]
fn delta_restore_of_a_chain_local_directory() {
    delta_chain_with(Backend::Fs);
}

#[test]
fn delta_restore_of_a_chain_s3() {
    delta_chain_with(Backend::S3);
}

/// A chain with a tablespace restored into a moved one, run, then a block of a relation in
/// the tablespace damaged and an extra file planted there: `--delta` with the same
/// `--tablespace-map` fixes the one and removes the other; the tables equal the source's.
#[test]
fn delta_restore_of_a_chain_into_a_moved_tablespace() {
    use super::incremental::{amcheck, state};
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    let ts = p.dir.path().join("ts1");
    std::fs::create_dir(&ts).expect("mkdir");
    if super::common::is_root() {
        let (uid, gid) = super::common::postgres_ids();
        std::os::unix::fs::chown(&ts, Some(uid), Some(gid)).expect("chown");
    }
    p.psql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts.display()));
    p.psql("CREATE TABLE tst(id int, v text) TABLESPACE ts1");
    p.psql("INSERT INTO tst SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    backup(&repo, &p, "full");
    p.psql("UPDATE tst SET v = 'changed' WHERE id % 50 = 0");
    p.psql("CREATE TABLE tst2 TABLESPACE ts1 AS SELECT g FROM generate_series(1, 500) g");
    backup(&repo, &p, "incr");
    let want = state(&p);
    let lsn = p.psql("SELECT pg_current_wal_lsn()");
    let oid = p.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
    let tst = PathBuf::from(p.psql("SELECT pg_relation_filepath('tst')"));
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();

    let dir = super::common::shared_tempdir();
    let moved = dir.path().join("ts1-restored");
    let pgdata = dir.path().join("pgdata");
    let map = format!("{oid}={}", moved.display());
    let args = ["--target-lsn", lsn.as_str(), "--tablespace-map", map.as_str()];
    let out = repo.pitr_prepare(&pgdata, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = Cluster::at(dir, pgdata, repo.env.clone());
    recover(&mut c, false);
    c.stop();

    let damaged = c.pgdata.join(&tst);
    assert!(std::fs::canonicalize(&damaged).is_ok_and(|p| p.starts_with(&moved)), "{}", damaged.display());
    damage_block(&damaged, 3);
    let extra = damaged.with_file_name("999999");
    std::fs::write(&extra, [7u8; 8192]).expect("extra file");
    let out = repo.pitr_prepare(&c.pgdata, &[&["--delta", "--json"][..], &args].concat());
    assert!(out.status.success(), "pitr-prepare --delta: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(count(&report, "fetched_files") >= 1 && count(&report, "kept_files") > 100, "{report}");
    assert!(count(&report, "removed_bytes") >= 8192, "the extra file: {report}");
    assert!(!extra.exists(), "the extra file in the tablespace is still there");
    recover(&mut c, false);
    assert_eq!(state(&c), want, "{}", c.log());
    amcheck(&c);
    c.stop();
}
