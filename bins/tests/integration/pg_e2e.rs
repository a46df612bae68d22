//! Real PostgreSQL: archive with `archive_command = 'wal-push %p'` into each backend, fetch
//! every segment back byte-identical, and recover a `pg_basebackup -X none` copy with
//! `restore_command = 'wal-fetch %f %p'` to every committed row.

use std::path::PathBuf;
use std::time::Duration;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, as_postgres, pg_bin, shared_tempdir, stderr};

const CANARY: &str = "CANARY-plaintext-7f3a9c1e-must-never-reach-the-repository";

/// The round trip with the PostgreSQL binaries in `bin` (server, pg_basebackup, psql,
/// pgbench: all of one version) and extra initdb arguments (e.g. `--wal-segsize=64`).
pub(super) fn archive_and_recover_with(backend: Backend, bin: PathBuf, initdb_args: &[&str]) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let mut primary = Cluster::init_with(bin.clone(), initdb_args, repo.env.clone());
    primary.append_conf(&primary.archive_conf());
    primary.start();

    primary.psql(&format!(
        "CREATE TABLE canary(id int primary key, secret text); INSERT INTO canary SELECT g, '{CANARY}' || g FROM generate_series(1, 2000) g"
    ));
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    primary.switch_and_wait_archived(Duration::from_secs(120));

    // A physical copy without WAL, taken by PostgreSQL's own tool: only the archive can make it consistent.
    let copy_dir = shared_tempdir();
    let copy_data = copy_dir.path().join("pgdata");
    let out = as_postgres(bin.join("pg_basebackup"))
        .args(["-X", "none", "-c", "fast", "-U", "postgres", "-h"])
        .arg(&primary.socket_dir)
        .args(["-p", &primary.port.to_string(), "-D"])
        .arg(&copy_data)
        .output()
        .expect("pg_basebackup");
    assert!(out.status.success(), "pg_basebackup: {}", stderr(&out));

    primary.psql("CREATE TABLE batches(n int, at timestamptz default now())");
    for n in 0..5 {
        primary.psql(&format!("INSERT INTO batches(n) SELECT {n} FROM generate_series(1, 1000)"));
        primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
        primary.psql("SELECT pg_switch_wal()");
    }
    let last = primary.switch_and_wait_archived(Duration::from_secs(180));
    let expected_batches = primary.psql("SELECT count(*) FROM batches");
    let expected_history = primary.psql("SELECT count(*) FROM pgbench_history");
    assert_eq!(primary.failed_count(), 0, "no archive failures:\n{}", primary.log());

    // Every archived segment comes back byte-identical.
    let wal_dir = primary.pgdata.join("pg_wal");
    let mut names: Vec<String> = std::fs::read_dir(&wal_dir)
        .expect("pg_wal")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.as_str() <= last.as_str())
        .collect();
    names.sort();
    // At least one per switch (the first, the base backup's, five batches), whatever the segment size.
    assert!(names.len() >= 7, "several segments: {names:?}");
    let restored = repo.dir().join("fetched");
    std::fs::create_dir_all(&restored).expect("mkdir");
    for name in &names {
        let dest = restored.join(name);
        let out = repo.run("wal-fetch", &[name, dest.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(0), "fetch {name}: {}", stderr(&out));
        assert!(
            std::fs::read(&dest).expect("read") == std::fs::read(wal_dir.join(name)).expect("read"),
            "{name} identical"
        );
    }
    let out = repo.run("wal-fetch", &["0000000100000099000000FF", restored.join("x").to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "missing name exits 1: {}", stderr(&out));

    // The raw repository never holds the canary in plaintext.
    let objects = repo.raw_objects();
    assert!(objects.len() > names.len(), "objects: {}", objects.len());
    let needle = CANARY.as_bytes();
    for (key, bytes) in &objects {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "plaintext canary found in {key}");
    }
    primary.stop();

    // Archive recovery of the copy, through wal-fetch only.
    let mut copy = Cluster::at(copy_dir, copy_data, repo.env.clone()).with_bin(bin);
    copy.append_conf(&format!(
        "listen_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\nrestore_command = '{} %f %p'\nrecovery_target_timeline = 'latest'\n",
        copy.socket_dir.display(),
        super::common::bin("wal-fetch").display()
    ));
    std::fs::write(copy.pgdata.join("recovery.signal"), "").expect("recovery.signal");
    if super::common::is_root() {
        std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(copy.pgdata.join("recovery.signal"))
            .status()
            .expect("chown");
    }
    copy.start_and_wait_promoted(Duration::from_secs(180));
    assert_eq!(copy.psql("SELECT count(*) FROM batches"), expected_batches, "every committed row\n{}", copy.log());
    assert_eq!(copy.psql("SELECT count(*) FROM pgbench_history"), expected_history);
    assert_eq!(copy.psql("SELECT count(*) FROM canary"), "2000");
    copy.stop();
}

#[test]
fn archive_and_recover_local_directory() {
    archive_and_recover_with(Backend::Fs, pg_bin(), &[]);
}

#[test]
fn archive_and_recover_s3() {
    archive_and_recover_with(Backend::S3, pg_bin(), &[]);
}
