//! Incremental chains in the other commands and situations: list, verify (with a restore
//! test), prune and status; `--full-every`; a chain across a timeline switch; a chain with a
//! tablespace restored into a moved one; a block map planted from another backup. Helpers in
//! `incremental`.

use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, stderr};
use super::incremental::{amcheck, backup, delete_raw, state};
use super::pitr::{base_backup, recover};

/// list, verify, prune and status know chains: types, references and lengths listed; every
/// chain verified end to end (a broken one fails, naming the missing backup); prune keeps the
/// chain of a kept backup and says why; status reports the newest full and incremental.
#[test]
fn chains_in_list_verify_prune_and_status() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = super::pitr::primary(&repo);
    p.psql("CREATE TABLE t(id int, v text)");
    let mut names = Vec::new();
    for (i, kind) in ["full", "incr", "incr", "diff"].iter().enumerate() {
        p.psql(&format!("INSERT INTO t SELECT g, 'batch {i}' FROM generate_series(1, 2000) g"));
        names.push(backup(&repo, &p, kind)["name"].as_str().expect("name").to_string());
    }
    p.switch_and_wait_archived(Duration::from_secs(120));
    p.stop();

    let out = repo.run("walvault", &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = super::raw::json(&out);
    let chains: Vec<(String, u64, String)> = listing["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .map(|c| {
            let kind = c["type"].as_str().expect("type").to_string();
            (kind, c["length"].as_u64().expect("length"), c["reference"].as_str().unwrap_or("-").to_string())
        })
        .collect();
    let expected = [
        ("full".to_string(), 1, "-".to_string()),
        ("incr".to_string(), 2, names[0].clone()),
        ("incr".to_string(), 3, names[1].clone()),
        ("diff".to_string(), 2, names[0].clone()),
    ];
    assert_eq!(chains, expected);
    let text = String::from_utf8_lossy(&repo.run("walvault", &["list"]).stdout).into_owned();
    assert!(text.contains("BUILDS ON") && text.contains("incr     3"), "{text}");

    // Every chain verified, and the restore test restores the newest backup's chain.
    let out = repo.run("walvault", &["verify", "--json", "--no-report", "--restore-test"]);
    let report = super::raw::json(&out);
    assert_eq!(report["status"], "passed", "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["restore_test"]["status"], "passed", "{report:#}");
    let counts = report["restore_test"]["queries"].to_string();
    assert!(counts.contains("public.t") && counts.contains("8000"), "{counts}");

    let status = repo.run("walvault", &["status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains(&format!("newest full {}", names[0])), "{text}");
    assert!(text.contains(&format!("newest incremental {}", names[3])), "{text}");
    let prom = String::from_utf8_lossy(&repo.run("walvault", &["status", "--prometheus"]).stdout).into_owned();
    assert!(prom.contains("walvault_backup_last_full_completion_timestamp_seconds{"), "{prom}");
    assert!(prom.contains("walvault_backup_last_incremental_completion_timestamp_seconds{"), "{prom}");

    // Long after: only the newest (the diff) is kept by the policy, and its full backup with it.
    let later = super::ops::time_from_now("+200 days");
    let out = repo.run("walvault", &["prune", "--dry-run", "--json", "--now", &later]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = super::raw::json(&out);
    let fate: Vec<(bool, String)> = plan["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|d| (d["keep"] == true, d["reason"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(fate.iter().map(|f| f.0).collect::<Vec<_>>(), [true, false, false, true], "{fate:?}");
    assert!(fate[0].1.contains(&format!("{} builds on it", names[3])), "{fate:?}");
    // Keep the second incr: its whole chain stays.
    let out = repo.run("walvault", &["prune", "--dry-run", "--json", "--now", &later, "--keep", &names[2]]);
    let kept: Vec<bool> =
        super::raw::json(&out)["backups"].as_array().expect("b").iter().map(|d| d["keep"] == true).collect();
    assert_eq!(kept, [true, true, true, true]);

    // The middle of a chain deleted by hand: verify fails on its successor, naming it.
    let env = "production";
    delete_raw(&repo, &format!("database/{env}/{}_metadata.json", names[1]));
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    let report = super::raw::json(&out);
    assert_eq!(report["status"], "failed");
    let failed: Vec<String> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        failed.iter().any(|d| d.contains(&format!("backup {}, which {} builds on, is missing", names[1], names[2]))),
        "{failed:?}"
    );
    let text = String::from_utf8_lossy(&repo.run("walvault", &["list"]).stdout).into_owned();
    assert!(text.contains("BROKEN"), "{text}");
}

/// `--full-every`: a nightly `--type incr` takes a full backup once the newest full backup is
/// that old, an incremental one before.
#[test]
fn full_every_turns_an_incr_into_the_weekly_full() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let p = super::pitr::primary(&repo);
    let first = base_backup(&repo, &p, &["--type", "incr", "--full-every", "7d"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(super::raw::json(&first).get("backup_type").is_none(), "no backup to build on: a full one");
    let incr = base_backup(&repo, &p, &["--type", "incr", "--full-every", "7d"]);
    assert_eq!(super::raw::json(&incr)["backup_type"], "incr", "{}", stderr(&incr));
    std::thread::sleep(Duration::from_millis(1100));
    let out = base_backup(&repo, &p, &["--type", "incr", "--full-every", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(super::raw::json(&out).get("backup_type").is_none(), "the full backup is over 1 s old: {}", stderr(&out));
    assert!(stderr(&out).contains("older than --full-every"), "{}", stderr(&out));
    let bad = base_backup(&repo, &p, &["--type", "weekly"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--type"), "{}", stderr(&bad));
}

/// A chain across a timeline switch: after a point-in-time restore of the full backup made
/// timeline 2, an incr on timeline 2 builds on that full backup (on its path), not on the newer
/// incr of timeline 1 past the fork; the chain restores on timeline 2.
#[test]
fn chain_across_a_timeline_switch() {
    timeline_drill(super::common::pg_bin(), false);
}

/// The same on PostgreSQL 17 with `summarize_wal`: the changed blocks come from the summaries
/// of timeline 1 up to the switch and of timeline 2 after it.
#[test]
fn chain_across_a_timeline_switch_from_wal_summaries_postgres_17() {
    timeline_drill(super::common::pg_bin_for(17), true);
}

fn timeline_drill(bin: std::path::PathBuf, summaries: bool) {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = super::pitr::primary_with(&repo, bin.clone());
    if summaries {
        p.psql("ALTER SYSTEM SET summarize_wal = on");
        p.psql("SELECT pg_reload_conf()");
    }
    p.psql("CREATE TABLE t(id int, v text)");
    p.psql("INSERT INTO t SELECT g, 'one' FROM generate_series(1, 3000) g");
    let full = backup(&repo, &p, "full");
    p.psql("UPDATE t SET v = 'early' WHERE id < 100");
    let early = p.psql("SELECT pg_current_wal_lsn()");
    p.psql("UPDATE t SET v = 'lost' WHERE id >= 100");
    p.psql("SELECT pg_switch_wal()");
    let tl1 = backup(&repo, &p, "incr");
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();

    let name = |m: &serde_json::Value| m["name"].as_str().expect("name").to_string();
    let args = ["--backup", &name(&full), "--target-lsn", &early, "--archive", "on"];
    let (mut c, out) = super::pitr::prepare_with(&repo, &args, bin.clone());
    assert!(out.status.success(), "{}", stderr(&out));
    c.append_conf(&c.archive_conf().replace("port = 5432\n", ""));
    recover(&mut c, true);
    c.psql("CHECKPOINT");
    assert_eq!(c.psql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    c.psql("INSERT INTO t SELECT g, 'two' FROM generate_series(5001, 6000) g");
    c.switch_and_wait_archived(Duration::from_secs(60));
    let tl2 = backup(&repo, &c, "incr");
    assert_eq!(tl2["timeline"], 2);
    assert_eq!(tl2["reference"].as_str(), Some(name(&full).as_str()), "not {}: {tl2}", name(&tl1));
    if summaries {
        assert_eq!(tl2["block_source"], "wal-summaries", "{tl2}");
    }
    c.psql("DELETE FROM t WHERE id % 2 = 0");
    let want = state(&c);
    let lsn = c.psql("SELECT pg_current_wal_lsn()");
    c.switch_and_wait_archived(Duration::from_secs(60));
    c.stop();

    let (mut r, out) =
        super::pitr::prepare_with(&repo, &["--backup", &name(&tl2), "--target-lsn", &lsn, "--json"], bin);
    assert!(out.status.success(), "{}", stderr(&out));
    recover(&mut r, false);
    assert_eq!(state(&r), want, "{}", r.log());
    r.stop();
}

/// A chain with a tablespace restores into a moved tablespace (`--tablespace-map`): the files
/// of the tablespace are laid out and filled block by block there.
#[test]
fn chain_with_a_tablespace_restores_into_a_moved_tablespace() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = super::pitr::primary(&repo);
    let ts = p.dir.path().join("ts1");
    std::fs::create_dir(&ts).expect("mkdir");
    if super::common::is_root() {
        let (uid, gid) = super::common::postgres_ids();
        std::os::unix::fs::chown(&ts, Some(uid), Some(gid)).expect("chown");
    }
    p.psql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts.display()));
    p.psql("CREATE TABLE tst(id int, v text) TABLESPACE ts1");
    p.psql("INSERT INTO tst SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    let full = backup(&repo, &p, "full");
    p.psql("UPDATE tst SET v = 'changed' WHERE id % 50 = 0");
    p.psql("CREATE TABLE tst2 TABLESPACE ts1 AS SELECT g FROM generate_series(1, 500) g");
    let incr = backup(&repo, &p, "incr");
    assert_eq!(incr["reference"], full["name"]);
    let want = state(&p);
    let lsn = p.psql("SELECT pg_current_wal_lsn()");
    let oid = p.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();

    let dir = super::common::shared_tempdir();
    let moved = dir.path().join("ts1-restored");
    let pgdata = dir.path().join("pgdata");
    let out = repo
        .command("pitr-prepare")
        .arg("--pgdata")
        .arg(&pgdata)
        .args(["--target-lsn", &lsn, "--tablespace-map", &format!("{oid}={}", moved.display())])
        .output()
        .expect("pitr-prepare");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = Cluster::at(dir, pgdata, repo.env.clone());
    recover(&mut c, false);
    assert_eq!(state(&c), want, "{}", c.log());
    assert_eq!(
        c.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
        moved.display().to_string()
    );
    amcheck(&c);
    c.stop();
}

/// An incremental's block map replaced by another backup's (both authentic, from the same
/// repository) is refused wherever it is read, naming the object: by the next incremental
/// base-backup (which streams its reference's chain), by verify and by pitr-prepare. With
/// its chain broken instead, the next incremental is taken in full.
#[test]
fn a_block_map_from_another_backup_is_refused() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = super::pitr::primary(&repo);
    p.psql("CREATE TABLE t(id int, v text)");
    let mut backups = Vec::new();
    for (i, kind) in ["full", "incr", "incr"].iter().enumerate() {
        p.psql(&format!("INSERT INTO t SELECT g, 'batch {i}' FROM generate_series(1, 2000) g"));
        backups.push(backup(&repo, &p, kind));
    }
    let map_key = |b: &serde_json::Value| {
        let prefix = format!("database/{}/{}/", b["env"].as_str().expect("env"), b["name"].as_str().expect("name"));
        let keys = super::raw::keys(&repo, &prefix);
        keys.into_iter().find(|k| k.contains("/blockmap.bin")).expect("block map")
    };
    let (planted, victim) = (map_key(&backups[1]), map_key(&backups[2]));
    super::raw::put_raw(&repo, &victim, &super::raw::get_raw(&repo, &planted));

    let out = base_backup(&repo, &p, &["--type", "incr"]);
    assert!(!out.status.success(), "an incremental built on a planted map");
    assert!(stderr(&out).contains(&victim), "{}", stderr(&out));
    p.switch_and_wait_archived(Duration::from_secs(120));
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success() && report.contains(&victim), "{report}");
    let name = backups[2]["name"].as_str().expect("name");
    let (_, out) = super::pitr::prepare_with(&repo, &["--backup", name], super::common::pg_bin());
    assert!(!out.status.success() && stderr(&out).contains(&victim), "{}", stderr(&out));

    // The newest backup's chain broken (a middle backup deleted by hand): the next incremental
    // cannot build on it, and is taken in full, saying why.
    let middle = backups[1]["name"].as_str().expect("name");
    delete_raw(&repo, &format!("database/{}/{middle}_metadata.json", backups[1]["env"].as_str().expect("env")));
    let out = base_backup(&repo, &p, &["--type", "incr"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert!(summary.get("backup_type").is_none() && summary.get("reference").is_none(), "{summary}");
    assert!(stderr(&out).contains(&format!("backup {middle}, which {name} builds on, is missing")), "{}", stderr(&out));
    assert!(stderr(&out).contains("taking a full backup"), "{}", stderr(&out));
    p.stop();
}
