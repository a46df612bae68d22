//! A repository written by an older walvault still restores: `fixtures/pre-blake3.tar` holds
//! one made by the last version before BLAKE3 (commit 5196033: manifest version 1 with SHA-256
//! file digests, SHA-256 block maps `WVBLKMAP1`), encrypted with `TEST_KEY`: a full backup of a
//! PostgreSQL 15 cluster, an incremental on top of it, and the WAL after both, with the state
//! of the cluster at the end of that WAL. [`make_pre_blake3_fixture`] wrote it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, shared_tempdir, stderr};
use super::delta_chain::{count, damage_block};
use super::incremental::{amcheck, backup, state};
use super::pitr::{primary, recover};

/// The fixture: a tar of `repo/` (the repository) and `state.txt` (what recovery must give).
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-blake3.tar")
}

const STATE: &str = "state.txt";

/// Unpack the fixture into `repo`'s directory (its repository is `repo/` there); the state
/// recovery must reach.
fn unpack(repo: &TestRepo) -> String {
    let out = Command::new("tar").arg("-xf").arg(fixture()).arg("-C").arg(repo.dir()).output().expect("tar");
    assert!(out.status.success(), "tar -xf {}: {}", fixture().display(), stderr(&out));
    // wal-fetch runs as PostgreSQL's OS user, as it would on the server.
    if super::common::is_root() {
        let out = Command::new("chown").args(["-R", "postgres:postgres"]).arg(repo.dir()).output().expect("chown");
        assert!(out.status.success(), "chown: {}", stderr(&out));
    }
    std::fs::read_to_string(repo.dir().join(STATE)).expect("state.txt in the fixture")
}

/// Verify, restore the chain, recover to the end of the archive, then a delta restore over a
/// damaged copy: every step reads the older formats, and the tables come back as they were.
#[test]
fn a_repository_written_before_blake3_verifies_restores_and_takes_a_delta() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let want = unpack(&repo);
    let out = repo.run("walvault", &["verify", "--backup", "all", "--full", "--no-report", "--json"]);
    assert!(out.status.success(), "walvault verify of the older repository: {}", stderr(&out));
    // Its summary does not name the repository: not trusted, and said so in one line.
    assert!(stderr(&out).contains("written by an older walvault"), "{}", stderr(&out));

    let dir = shared_tempdir();
    let pgdata = dir.path().join("pgdata");
    let out = repo.pitr_prepare(&pgdata, &["--latest"]);
    assert!(out.status.success(), "pitr-prepare of the older chain: {}", stderr(&out));
    let mut c = Cluster::at(dir, pgdata, repo.env.clone());
    recover(&mut c, false);
    assert_eq!(state(&c), want, "{}", c.log());
    amcheck(&c);
    let heap = c.pgdata.join(c.psql("SELECT pg_relation_filepath('compat')"));
    c.stop();

    // The chain's block maps are SHA-256: a delta compares with them.
    damage_block(&heap, 1);
    let out = repo.pitr_prepare(&c.pgdata, &["--delta", "--latest", "--json"]);
    assert!(out.status.success(), "pitr-prepare --delta over the older chain: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(count(&report, "fetched_files") >= 1 && count(&report, "kept_files") > 100, "{report}");
    recover(&mut c, false);
    assert_eq!(state(&c), want, "{}", c.log());
    c.stop();
}

/// Writes the fixture with the binaries of the checkout it runs in (an older one: copy this
/// file there): `WALVAULT_FIXTURE_OUT=/abs/pre-blake3.tar cargo test --release --test
/// integration make_pre_blake3_fixture -- --ignored`.
#[test]
#[ignore = "writes the fixture with the binaries of the checkout it runs in"]
fn make_pre_blake3_fixture() {
    let Some(target) = std::env::var_os("WALVAULT_FIXTURE_OUT") else { return };
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE compat AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g");
    p.psql("CREATE INDEX ON compat (id)");
    backup(&repo, &p, "full");
    p.psql("UPDATE compat SET v = 'changed ' || id WHERE id % 50 = 0");
    p.psql("CREATE TABLE later AS SELECT g FROM generate_series(1, 500) g");
    backup(&repo, &p, "incr");
    p.psql("INSERT INTO compat SELECT g, 'after the incremental' FROM generate_series(20001, 20500) g");
    let want = state(&p);
    p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();
    std::fs::write(repo.dir().join(STATE), want).expect("state.txt");
    let out = Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-cf"])
        .arg(&target)
        .arg("-C")
        .arg(repo.dir())
        .args(["repo", STATE])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar: {}", stderr(&out));
}
