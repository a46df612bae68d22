//! Incremental backups on a real cluster: a full backup and three increments (incr, incr,
//! diff) with inserts, updates, deletes, TRUNCATE, DROP TABLE, CREATE DATABASE, VACUUM FULL
//! and a table extended then truncated between them; a point-in-time restore into each link
//! picks that link's chain, and every table's rows (md5) equal the source's at that point;
//! pg_amcheck passes. A chain with a missing middle backup is refused, naming it. An
//! incremental's block map costs what it stored.

use std::path::PathBuf;
use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, as_postgres, stderr};
use super::pitr::{base_backup, prepare_with, primary_with, recover};

/// `db`'s fingerprint: every public table's name and the md5 of its rows, in order.
fn fingerprint(c: &Cluster, db: &str) -> String {
    let psql = |sql: &str| {
        let out = as_postgres(c.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", db, "-h"])
            .arg(&c.socket_dir)
            .args(["-p", &c.port.to_string(), "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {db} {sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let query = psql(
        "SELECT string_agg(format('SELECT %L || '':'' || count(*) || '':'' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), '''') FROM public.%I t', relname, relname), ' UNION ALL ' ORDER BY relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace",
    );
    if query.is_empty() {
        return String::new();
    }
    let mut lines: Vec<String> = psql(&query).lines().map(str::to_string).collect();
    lines.sort();
    lines.join("\n")
}

/// Both databases' fingerprints (db2 once it exists).
pub(super) fn state(c: &Cluster) -> String {
    let has_db2 = c.psql("SELECT count(*) FROM pg_database WHERE datname = 'db2'") == "1";
    format!("{}\n--db2--\n{}", fingerprint(c, "postgres"), if has_db2 { fingerprint(c, "db2") } else { String::new() })
}

pub(super) fn backup(repo: &TestRepo, p: &Cluster, kind: &str) -> serde_json::Value {
    let out = base_backup(repo, p, &["--type", kind, "--part-size", "2000000", "--jobs", "2"]);
    assert!(out.status.success(), "base-backup --type {kind}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json summary")
}

/// The size of backup `b`'s block map object in the repository (encoded, as stored).
pub(super) fn block_map_size(repo: &TestRepo, b: &serde_json::Value) -> usize {
    let prefix = format!("database/{}/{}/", b["env"].as_str().expect("env"), b["name"].as_str().expect("name"));
    let keys = super::raw::keys(repo, &prefix);
    let key = keys.iter().find(|k| k.contains("/blockmap.bin")).unwrap_or_else(|| panic!("no block map in {keys:?}"));
    super::raw::get_raw(repo, key).len()
}

pub(super) fn amcheck(c: &Cluster) {
    let out = as_postgres(c.bin.join("pg_amcheck"))
        .args(["--install-missing", "--all", "--heapallindexed", "-U", "postgres", "-h"])
        .arg(&c.socket_dir)
        .args(["-p", &c.port.to_string()])
        .output()
        .expect("pg_amcheck");
    assert!(out.status.success(), "pg_amcheck: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}

pub(super) fn delete_raw(repo: &TestRepo, key: &str) {
    match &repo.fs_root {
        Some(root) => std::fs::remove_file(root.join(key)).expect("remove"),
        None => {
            let resp = super::raw::s3_request(repo, "DELETE", key, b"");
            assert!(resp.starts_with("HTTP/1.1 204") || resp.starts_with("HTTP/1.1 200"), "delete {key}: {resp}");
        }
    }
}

pub(super) fn chain_drill(backend: Backend, bin: PathBuf) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let p = primary_with(&repo, bin.clone());
    p.pgbench(&["-i", "-s", "2", "-q"]);
    p.psql("CREATE TABLE t(id int primary key, v text)");
    p.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    p.psql("CREATE TABLE doomed AS SELECT g AS id FROM generate_series(1, 5000) g");
    p.psql("CREATE TABLE ext(id int, pad text)");
    let full = backup(&repo, &p, "full");
    assert!(full.get("backup_type").is_none() && full.get("reference").is_none(), "{full}");

    let mut points = Vec::new();
    let record = |p: &Cluster, points: &mut Vec<(String, String)>| {
        let lsn = p.psql("SELECT pg_current_wal_lsn()");
        points.push((lsn, state(p)));
    };
    // Link 0 (the full backup): inserts, updates, deletes.
    p.psql("INSERT INTO t SELECT g, 'new' FROM generate_series(20001, 21000) g");
    p.psql("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 97 = 0");
    p.psql("DELETE FROM t WHERE id % 13 = 0");
    record(&p, &mut points);
    let b1 = backup(&repo, &p, "incr");
    // Link 1: TRUNCATE, DROP TABLE, CREATE DATABASE, a table extended.
    p.psql("TRUNCATE pgbench_history");
    p.psql("DROP TABLE doomed");
    p.psql("CREATE DATABASE db2");
    let out = as_postgres(p.bin.join("psql"))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "db2", "-h"])
        .arg(&p.socket_dir)
        .args([
            "-p",
            &p.port.to_string(),
            "-c",
            "CREATE TABLE d2 AS SELECT g, md5(g::text) FROM generate_series(1, 3000) g",
        ])
        .output()
        .expect("psql db2");
    assert!(out.status.success(), "{}", stderr(&out));
    p.psql("INSERT INTO ext SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g");
    record(&p, &mut points);
    let b2 = backup(&repo, &p, "incr");
    // Link 2: VACUUM FULL (new relfilenodes), the extended table truncated by VACUUM.
    p.psql("UPDATE t SET v = 'vf' WHERE id % 5 = 0");
    p.psql("VACUUM FULL t");
    p.psql("DELETE FROM ext WHERE id > 100");
    p.psql("VACUUM ext");
    record(&p, &mut points);
    let b3 = backup(&repo, &p, "diff");
    // Link 3 (a diff: built on the full backup).
    p.psql("UPDATE pgbench_accounts SET abalance = abalance - 3 WHERE aid % 101 = 0");
    p.psql("INSERT INTO t SELECT g, 'late' FROM generate_series(30001, 30500) g");
    record(&p, &mut points);
    // Then one increment right after another: almost nothing (pg_control, a few pages).
    let _ = backup(&repo, &p, "incr");
    let quiet = backup(&repo, &p, "incr");
    // One row changed: the incremental's block map holds what it stored (a few blocks), where
    // the full backup's holds a digest of every block of the cluster.
    p.psql("UPDATE t SET v = 'one row' WHERE id = 1");
    let one_row = backup(&repo, &p, "incr");
    let (one_map, full_map) = (block_map_size(&repo, &one_row), block_map_size(&repo, &full));
    eprintln!("block map after a one-row update: {one_map} bytes (full backup's: {full_map} bytes)");
    assert!(one_map < 4096 && one_map * 10 < full_map, "{one_map} vs the full backup's {full_map} bytes");
    p.switch_and_wait_archived(Duration::from_secs(120));

    let name = |m: &serde_json::Value| m["name"].as_str().expect("name").to_string();
    assert_eq!(b1["backup_type"], "incr");
    assert_eq!(b1["reference"].as_str(), Some(name(&full).as_str()));
    assert_eq!(b2["reference"].as_str(), Some(name(&b1).as_str()));
    assert_eq!(b3["backup_type"], "diff");
    assert_eq!(b3["reference"].as_str(), Some(name(&full).as_str()), "a diff builds on the full backup");
    let stored = |m: &serde_json::Value| m["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(stored(&b1) < stored(&full), "incr {} vs full {}", stored(&b1), stored(&full));
    assert!(stored(&quiet) * 10 < stored(&full), "quiet incr {} vs full {}", stored(&quiet), stored(&full));

    let links = [&full, &b1, &b2, &b3];
    for (i, (lsn, expected)) in points.iter().enumerate() {
        let (mut c, out) = prepare_with(&repo, &["--target-lsn", lsn, "--json"], bin.clone());
        assert!(out.status.success(), "pitr-prepare to link {i}: {}", stderr(&out));
        let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(outcome["backup"].as_str(), Some(name(links[i]).as_str()), "link {i} picks its backup");
        recover(&mut c, false);
        assert_eq!(&state(&c), expected, "{backend:?} link {i}\n{}", c.log());
        amcheck(&c);
        c.stop();
    }

    // A middle backup deleted by hand: its successors are refused, naming it; the diff's
    // chain does not need it.
    let b1_name = name(&b1);
    let env = b1["env"].as_str().expect("env");
    delete_raw(&repo, &format!("database/{env}/{b1_name}_metadata.json"));
    let (_, out) = prepare_with(&repo, &["--target-lsn", &points[2].0, "--backup", &name(&b2)], bin.clone());
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("backup {b1_name}, which {} builds on, is missing", name(&b2))),
        "{}",
        stderr(&out)
    );
    let (_, out) = prepare_with(&repo, &["--target-lsn", &points[3].0, "--backup", &name(&b3)], bin);
    assert!(out.status.success(), "the diff's chain is whole: {}", stderr(&out));
}

#[test]
fn chain_of_full_and_three_increments_restores_every_link_local_directory() {
    chain_drill(Backend::Fs, super::common::pg_bin());
}

#[test]
fn chain_of_full_and_three_increments_restores_every_link_s3() {
    chain_drill(Backend::S3, super::common::pg_bin());
}

#[test]
fn chain_of_full_and_three_increments_restores_every_link_postgres_17() {
    chain_drill(Backend::Fs, super::common::pg_bin_for(17));
}

/// PostgreSQL 17 and newer with `summarize_wal`: an increment whose range the summaries do not
/// cover (the summarizer was off when the reference started) compares by content and says
/// so; the next one reads only the blocks the summaries name; the chain restores exactly.
pub(super) fn summaries_drill(bin: PathBuf) {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let p = primary_with(&repo, bin.clone());
    p.pgbench(&["-i", "-s", "5", "-q"]);
    p.psql("CREATE TABLE ext(id int, pad text)");
    let full = backup(&repo, &p, "full");
    p.psql("ALTER SYSTEM SET summarize_wal = on");
    p.psql("SELECT pg_reload_conf()");
    p.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 500");
    p.psql("CHECKPOINT");
    // The summaries so far removed (as wal_summary_keep_time does), once the summarizer has
    // caught up: the range from the full backup is not covered.
    // The summarizer writes a summary at each checkpoint's redo point.
    let lsn = p.psql("SELECT redo_lsn FROM pg_control_checkpoint()");
    let caught_up =
        |p: &Cluster| p.psql(&format!("SELECT summarized_lsn >= '{lsn}' FROM pg_get_wal_summarizer_state()"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while caught_up(&p) != "t" {
        assert!(std::time::Instant::now() < deadline, "the summarizer did not reach {lsn}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for f in std::fs::read_dir(p.pgdata.join("pg_wal/summaries")).expect("summaries").flatten() {
        std::fs::remove_file(f.path()).expect("remove summary");
    }
    let first = backup(&repo, &p, "incr");
    let source = first["block_source"].as_str().unwrap_or("").to_string();
    assert!(source.starts_with("content (") && source.contains("do not cover"), "{first}");

    p.psql("UPDATE pgbench_accounts SET abalance = abalance + 2 WHERE aid <= 1000");
    p.psql("TRUNCATE pgbench_history");
    p.psql("INSERT INTO ext SELECT g, repeat('x', 500) FROM generate_series(1, 5000) g");
    p.psql("DELETE FROM ext WHERE id > 50");
    p.psql("VACUUM ext");
    p.psql("CREATE TABLE born AS SELECT g FROM generate_series(1, 1000) g");
    let second = backup(&repo, &p, "incr");
    assert_eq!(second["block_source"], "wal-summaries", "{second}");
    let (read, total) = (second["read_bytes"].as_u64().expect("read_bytes"), full["bytes"].as_u64().expect("bytes"));
    assert!(read * 10 < total, "read {read} of {total} bytes");
    let lsn = p.psql("SELECT pg_current_wal_lsn()");
    let expected = state(&p);
    p.switch_and_wait_archived(Duration::from_secs(120));

    let (mut c, out) = prepare_with(&repo, &["--target-lsn", &lsn, "--json"], bin);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(outcome["backup"], second["name"]);
    recover(&mut c, false);
    assert_eq!(state(&c), expected, "{}", c.log());
    amcheck(&c);
    c.stop();
}

#[test]
fn wal_summaries_postgres_17() {
    summaries_drill(super::common::pg_bin_for(17));
}

#[test]
fn wal_summaries_postgres_18() {
    summaries_drill(super::common::pg_bin_for(18));
}

/// PostgreSQL 17: summaries whose LSNs print with different lengths ("0/2000028" and
/// "0/11000028", ordered otherwise as text) cover the range: the increment reads the summaries
/// (it fell back to comparing every file by content when the server sorted the text), and
/// the chain restores exactly.
#[test]
fn wal_summaries_across_lsns_of_different_lengths_postgres_17() {
    let bin = super::common::pg_bin_for(17);
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let p = primary_with(&repo, bin.clone());
    p.psql("ALTER SYSTEM SET summarize_wal = on");
    p.psql("SELECT pg_reload_conf()");
    p.psql("CREATE TABLE t AS SELECT g AS id, 0 AS v FROM generate_series(1, 20000) g");
    let full = backup(&repo, &p, "full");
    let start = full["start_lsn"].as_str().unwrap_or_default().to_string();
    assert!(p.psql(&format!("SELECT '{start}'::pg_lsn < '0/10000000'")) == "t", "{full}");
    // Past 0/10000000, one segment at a time (a switch needs WAL in the segment).
    while p.psql("SELECT pg_current_wal_lsn() < '0/10000000'") == "t" {
        p.psql("INSERT INTO t VALUES (0, 0)");
        p.psql("SELECT pg_switch_wal()");
    }
    p.psql("UPDATE t SET v = 1 WHERE id % 50 = 0");
    p.psql("CHECKPOINT");
    let incr = backup(&repo, &p, "incr");
    assert_eq!(incr["block_source"], "wal-summaries", "{incr}");
    let lsn = p.psql("SELECT pg_current_wal_lsn()");
    let expected = state(&p);
    p.switch_and_wait_archived(Duration::from_secs(120));
    let (mut c, out) = prepare_with(&repo, &["--target-lsn", &lsn, "--json"], bin);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    recover(&mut c, false);
    assert_eq!(state(&c), expected, "{}", c.log());
    c.stop();
}
