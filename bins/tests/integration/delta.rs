//! `pitr-prepare --delta` against real PostgreSQL on both backends: a stopped primary's data
//! directory with 1% of its relation files changed, one truncated, one removed, an extra file
//! and a stale `postmaster.pid` is restored over; after recovery every table equals the
//! source's. Another cluster's data directory, and a target the archive cannot reach, are
//! refused with the data directory left exactly as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, stderr, walk};
use super::pitr::{base_backup, primary, recover};

/// `table=md5 of its rows` for every table of the public schema, in one query.
pub(super) fn table_digests(c: &Cluster) -> String {
    c.psql(
        "SELECT string_agg(c.relname || '=' || (xpath('/row/m/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) AS m FROM %I x', c.relname), false, true, '')))[1]::text, ' ' ORDER BY c.relname) FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace",
    )
}

/// Every file under `dir` with its content.
pub(super) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default())).collect()
}

/// Relation files (numeric names under base/) that hold data.
fn relation_files(pgdata: &Path) -> Vec<PathBuf> {
    walk(&pgdata.join("base"))
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|p| std::fs::metadata(p).map(|m| m.len() >= 8192).unwrap_or(false))
        .collect()
}

/// Change 1% of the relation files (rows inside the heaps of `heaps`, at least 2), truncate
/// one more heap, remove another, add an extra file and a stale postmaster.pid. Returns the
/// paths of the removed and the extra file.
pub(super) fn damage(pgdata: &Path, heaps: &[PathBuf]) -> (PathBuf, PathBuf) {
    let count = relation_files(pgdata).len();
    let changed = (count / 100).max(2);
    assert!(heaps.len() >= changed + 2, "{} heaps for {changed} changes among {count} relation files", heaps.len());
    for f in &heaps[..changed] {
        let mut data = std::fs::read(f).expect("read relation file");
        // Row data sits at the end of a heap page.
        data[8192 - 150..8192 - 50].fill(b'Z');
        std::fs::write(f, data).expect("change relation file");
    }
    let truncated = &heaps[changed];
    std::fs::OpenOptions::new().write(true).open(truncated).and_then(|f| f.set_len(4096)).expect("truncate");
    let removed = heaps[changed + 1].clone();
    std::fs::remove_file(&removed).expect("remove");
    let extra = removed.with_file_name("999999999");
    std::fs::write(&extra, vec![0x55; 16384]).expect("extra file");
    // A process id that no longer runs.
    let mut gone = std::process::Command::new("true").spawn().expect("spawn true");
    let pid = gone.id();
    gone.wait().expect("wait");
    std::fs::write(pgdata.join("postmaster.pid"), format!("{pid}\n{}\n", pgdata.display())).expect("stale pid");
    (removed, extra)
}

fn delta_restore_with(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql(
        "DO $$ BEGIN FOR i IN 1..40 LOOP EXECUTE format('CREATE TABLE t%s AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g', i); EXECUTE format('CREATE INDEX ON t%s (id)', i); END LOOP; END $$",
    );
    p.pgbench(&["-i", "-s", "2", "-q"]);
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    p.psql("INSERT INTO t1 SELECT g, 'after the backup' FROM generate_series(1, 500) g");
    p.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0");
    p.switch_and_wait_archived(Duration::from_secs(120));
    let source = table_digests(&p);
    let heaps: Vec<PathBuf> =
        (2..=40).map(|i| p.pgdata.join(p.psql(&format!("SELECT pg_relation_filepath('t{i}')")))).collect();
    p.stop();

    // Another cluster's data directory: refused, nothing changed.
    another_cluster_is_refused_untouched(&repo);

    let (removed, extra) = damage(&p.pgdata, &heaps);
    // The data directory is read while the archive is checked: a target the archive cannot
    // reach is refused with nothing in it changed.
    let before = snapshot(&p.pgdata);
    let out = repo.pitr_prepare(&p.pgdata, &["--delta", "--target-lsn", "7F/0"]);
    assert_eq!(out.status.code(), Some(5), "an unreachable target: {}", stderr(&out));
    assert!(before == snapshot(&p.pgdata), "a refused delta restore changed the data directory");
    let out = repo.pitr_prepare(&p.pgdata, &["--delta", "--latest", "--json"]);
    assert!(out.status.success(), "pitr-prepare --delta: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let d = &report["delta"];
    let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("{k} in {report}"));
    assert!(n("kept_files") > 10 * n("fetched_files") && n("kept_bytes") > 0, "mostly kept: {d}");
    assert!(n("fetched_files") >= 4, "changed, truncated and removed files fetched: {d}");
    assert!(n("removed_files") >= 2 && n("removed_bytes") >= 16384, "extra file and postmaster.pid removed: {d}");
    // The local files compared were read from the page cache or the device, at most once.
    assert!(n("read_from_device_bytes") <= n("kept_bytes") + (64 << 20), "read from the disk: {d}");
    assert!(removed.is_file(), "the removed file is back");
    assert!(!extra.exists() && !p.pgdata.join("postmaster.pid").exists(), "old state left behind");

    recover(&mut p, false);
    assert_eq!(table_digests(&p), source, "{backend:?}: tables differ after --delta\n{}", p.log());
    p.stop();
}

#[test]
fn delta_restore_local_directory() {
    delta_restore_with(Backend::Fs);
}

#[test]
fn delta_restore_s3() {
    delta_restore_with(Backend::S3);
}

/// `pitr-prepare --delta --latest` over another cluster's data directory: refused (exit 5,
/// naming the system identifier), nothing in it changed.
pub(super) fn another_cluster_is_refused_untouched(repo: &TestRepo) {
    let other = Cluster::init(repo.env.clone());
    let before = snapshot(&other.pgdata);
    let out = repo.pitr_prepare(&other.pgdata, &["--delta", "--latest"]);
    assert_eq!(out.status.code(), Some(5), "another cluster: {}", stderr(&out));
    assert!(stderr(&out).contains("system identifier"), "{}", stderr(&out));
    assert!(before == snapshot(&other.pgdata), "another cluster's data directory was changed");
}
