//! Issue 11 scenario 6 and its kin: every object bound to its place (format 2). A clone's
//! segment copied under the same name, an object renamed, an object copied from another
//! environment, a backup part swapped between backups: each is refused with exit 4 (204 from
//! wal-fetch) and a line saying what it is, on the local directory and on S3. Format-1
//! objects are read only where they cannot be a substitution.

use std::time::Duration;

use walvault::codec::{CodecSettings, Compression, Context, Key};

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, shared_tempdir, stderr};
use super::pitr::{base_backup, prepare, primary};
use super::raw::{get_raw, json, keys, put_raw, wal_key};

pub(super) const SEG: u32 = 1 << 20;

pub(super) fn segment_name(segno: u64) -> String {
    walvault::wal::WalFileName::from_segno(1, segno, u64::from(SEG)).to_string()
}

/// A synthetic PostgreSQL 15 segment `segno` of one cluster, written into `dir`.
fn segment_at(dir: &std::path::Path, segno: u64) -> std::path::PathBuf {
    let magic = walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("magic");
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join(segment_name(segno));
    std::fs::write(&path, walvault::wal::synthetic_segment(7_300_000_000_000_000_005, 1, segno, SEG, magic, 3))
        .expect("write");
    path
}

/// The repository's `walvault.json`.
fn identity(repo: &TestRepo) -> serde_json::Value {
    serde_json::from_slice(&get_raw(repo, "walvault.json")).expect("walvault.json")
}

/// The context an object named `object` (`backup/<name>/part/1`, ...) is bound to in
/// environment `production` of `repo`; `on_cluster` false for file backups. For tests that
/// plant objects as an insider holding the key would.
pub(super) fn place_context(repo: &TestRepo, object: &str, on_cluster: bool) -> Context {
    let id = identity(repo);
    let text = id["repository_id"].as_str().expect("repository_id");
    let repository = walvault::ops::repo::identity::parse_repository_id(text).expect("32 hex digits");
    let sysid = id["envs"]["production"]["system_identifier"].as_str().map(|s| s.parse::<u64>().expect("sysid"));
    Context {
        repository,
        env: "production".into(),
        system_identifier: if on_cluster { sysid.expect("the environment's cluster") } else { 0 },
        object: object.into(),
    }
}

/// wal-fetch `name` into a fresh file with a cold cache (its own cache directory).
fn fetch_cold(repo: &TestRepo, name: &str) -> std::process::Output {
    let dir = shared_tempdir();
    repo.command("wal-fetch")
        .env("WALVAULT_CACHE_DIR", dir.path().join("cache"))
        .env("WALVAULT_FETCH_PREFETCH", "0")
        .arg(name)
        .arg(dir.path().join("out"))
        .output()
        .expect("wal-fetch")
}

/// Scenario 6: a pg_basebackup clone of the primary, started as its own primary (same
/// system identifier, own repository, same key), writes other rows into a segment of the
/// same name; that object copied into our repository is refused by wal-fetch (204, naming
/// it and the other repository), and a recovery reading it stops instead of promoting with
/// the clone's rows or without ours.
fn clone_segment(backend: Backend) {
    let mut ours = TestRepo::new(backend, Some(TEST_KEY));
    ours.env.push(("WALVAULT_FETCH_PREFETCH".into(), "0".into()));
    let theirs = TestRepo::new(backend, Some(TEST_KEY));
    let mut p = primary(&ours);
    p.psql("CREATE TABLE t(id int)");
    let backup = json(&base_backup(&ours, &p, &[]));
    // The clone: pg_basebackup of the primary, archiving into its own repository.
    let dir = shared_tempdir();
    let clone_data = dir.path().join("pgdata");
    let out = super::common::as_postgres(p.bin.join("pg_basebackup"))
        .arg("-D")
        .arg(&clone_data)
        .args(["-U", "postgres", "-h"])
        .arg(&p.socket_dir)
        .args(["-p", &p.port.to_string(), "-X", "stream", "--no-sync"])
        .output()
        .expect("pg_basebackup");
    assert!(out.status.success(), "pg_basebackup: {}", stderr(&out));
    let mut clone = Cluster::at(dir, clone_data, theirs.env.clone());
    clone.append_conf(&format!("unix_socket_directories = '{}'\n", clone.socket_dir.display()));
    clone.start();
    assert_eq!(
        clone.psql("SELECT system_identifier FROM pg_control_system()"),
        p.psql("SELECT system_identifier FROM pg_control_system()"),
        "a clone has the primary's system identifier"
    );
    // Bring both to the same segment (the clone resumes in the segment its backup ended in),
    // then both write into it: ours 1000 rows, the clone 7.
    // `+ 1`: right after a switch the position is the next segment's first byte, which
    // pg_walfile_name() would name as the previous segment.
    let current = |c: &Cluster| c.psql("SELECT pg_walfile_name(pg_current_wal_lsn() + 1)");
    let mut name = current(&p);
    for _ in 0..20 {
        let other = current(&clone);
        if other == name {
            break;
        }
        let behind = if other < name { &clone } else { &p };
        behind.psql("INSERT INTO t VALUES (0)");
        behind.psql("SELECT pg_switch_wal()");
        name = current(&p);
    }
    assert_eq!(current(&clone), name, "the clone and the primary write the same segment");
    p.psql("INSERT INTO t SELECT generate_series(1, 1000)");
    clone.psql("INSERT INTO t SELECT generate_series(1, 7)");
    assert_eq!(p.switch_and_wait_archived(Duration::from_secs(60)), name);
    assert_eq!(clone.switch_and_wait_archived(Duration::from_secs(60)), name);
    p.stop();
    clone.stop();

    let key = wal_key(&ours, &name).expect("ours");
    let planted = get_raw(&theirs, &wal_key(&theirs, &name).expect("theirs"));
    put_raw(&ours, &key, &planted);
    let out = fetch_cold(&ours, &name);
    assert_eq!(out.status.code(), Some(204), "refused, recovery stops: {}", stderr(&out));
    let err = stderr(&out);
    let theirs_id = identity(&theirs)["repository_id"].as_str().expect("id").to_string();
    assert!(err.contains("is bound to another place") && err.contains(&theirs_id), "{err}");

    // pitr-prepare (which reads no WAL bodies) prepares; PostgreSQL must not promote.
    let (mut r, out) = prepare(&ours, &["--backup", backup["name"].as_str().expect("name"), "--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    r.append_conf(&format!("unix_socket_directories = '{}'\narchive_mode = off\n", r.socket_dir.display()));
    r.start_no_wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !r.log().contains("is bound to another place") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged\n{}", r.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(!r.log().contains("selected new timeline ID"), "promoted with the clone's WAL\n{}", r.log());
    assert!(r.try_psql("SELECT count(*) FROM t").is_err(), "the server did not open for queries");
}

#[test]
fn a_clones_segment_is_refused_local_directory() {
    clone_segment(Backend::Fs);
}

#[test]
fn a_clones_segment_is_refused_s3() {
    clone_segment(Backend::S3);
}

/// A segment stored under the next segment's name, and one copied from another environment
/// of the same repository (same cluster, same key): both refused, naming what they are.
fn renamed_and_other_env(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(id int)");
    let first = p.switch_and_wait_archived(Duration::from_secs(60));
    p.psql("INSERT INTO t VALUES (1)");
    let second = p.switch_and_wait_archived(Duration::from_secs(60));
    p.stop();
    assert_ne!(first, second);

    // Renamed: the first segment's object stored under the second's name.
    let second_key = wal_key(&repo, &second).expect("second");
    let good = get_raw(&repo, &second_key);
    put_raw(&repo, &second_key, &get_raw(&repo, &wal_key(&repo, &first).expect("first")));
    let out = fetch_cold(&repo, &second);
    assert_eq!(out.status.code(), Some(204), "{}", stderr(&out));
    let want = format!("it holds wal/{first}, not wal/{second} (the object was renamed or copied)");
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    put_raw(&repo, &second_key, &good);
    assert_eq!(fetch_cold(&repo, &second).status.code(), Some(0), "the right object is restored");

    // Another environment: the same segment pushed by the same cluster into env staging.
    let work = shared_tempdir();
    let out = repo.run("wal-fetch", &[&second, &work.path().join(&second).display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut push = repo.command("wal-push");
    let out = push.env("WALVAULT_ENV", "staging").arg(work.path().join(&second)).output().expect("wal-push");
    assert!(out.status.success(), "push into staging: {}", stderr(&out));
    let staged = keys(&repo, "wal/staging/").into_iter().find(|k| k.contains(&second)).expect("staging copy");
    put_raw(&repo, &second_key, &get_raw(&repo, &staged));
    let out = fetch_cold(&repo, &second);
    assert_eq!(out.status.code(), Some(204), "{}", stderr(&out));
    assert!(stderr(&out).contains("it was written in environment staging, not production"), "{}", stderr(&out));
}

#[test]
fn renamed_and_other_environment_objects_are_refused_local_directory() {
    renamed_and_other_env(Backend::Fs);
}

#[test]
fn renamed_and_other_environment_objects_are_refused_s3() {
    renamed_and_other_env(Backend::S3);
}

/// A part of one backup swapped into another backup's place: pitr-prepare refuses before
/// it writes anything into PGDATA, and `verify` fails that backup.
fn swapped_part(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(id int)");
    let one = json(&base_backup(&repo, &p, &[]));
    std::thread::sleep(Duration::from_millis(1100)); // backup names have second resolution
    p.psql("INSERT INTO t SELECT generate_series(1, 100)");
    let two = json(&base_backup(&repo, &p, &[]));
    p.stop();
    let part = |b: &serde_json::Value| b["parts"][0]["key"].as_str().expect("part").to_string();
    put_raw(&repo, &part(&two), &get_raw(&repo, &part(&one)));

    let name = two["name"].as_str().expect("name");
    let (c, out) = prepare(&repo, &["--backup", name, "--immediate"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let want = format!("it holds backup/{}/part/0, not backup/{name}/part/0", one["name"].as_str().expect("one"));
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let untouched = std::fs::read_dir(&c.pgdata).map(|mut d| d.next().is_none()).unwrap_or(true);
    assert!(untouched, "nothing written into PGDATA");
    let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
    assert_eq!(out.status.code(), Some(8), "verify fails the backup: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bound to another place"));
}

#[test]
fn a_part_swapped_between_backups_is_refused_local_directory() {
    swapped_part(Backend::Fs);
}

#[test]
fn a_part_swapped_between_backups_is_refused_s3() {
    swapped_part(Backend::S3);
}

/// Format-1 objects: a repository created in format 2 reads none; one moved from format 1
/// reads them only before the first segment it archived in format 2.
#[test]
fn format1_objects_only_before_the_move() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let seg = |n: u64| segment_at(&work, n);
    for n in [3, 4] {
        let out = repo.run("wal-push", &[seg(n).to_str().expect("utf8")]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let key = Key::from_material(TEST_KEY.as_bytes(), "test").expect("key");
    let settings = CodecSettings { compression: Compression::Zstd, level: 1 };
    let v1 = |n: u64| {
        walvault::codec::encode_format1_for_tests(&std::fs::read(seg(n)).expect("read"), &settings, Some(&key))
    };
    let name = segment_name;
    let key3 = wal_key(&repo, &name(3)).expect("3");
    put_raw(&repo, &key3, &v1(3).expect("encode"));
    let out = fetch_cold(&repo, &name(3));
    assert_eq!(out.status.code(), Some(204), "created in format 2: {}", stderr(&out));
    assert!(
        stderr(&out).contains("format-1 object") && stderr(&out).contains("created in format 2"),
        "{}",
        stderr(&out)
    );

    // A repository written by walvault before format 2: its identity has no repository id.
    let root = repo.fs_root.clone().expect("fs");
    let mut id = identity(&repo);
    let obj = id.as_object_mut().expect("object");
    obj.remove("repository_id");
    obj.insert("format".into(), 1.into());
    std::fs::write(root.join("walvault.json"), serde_json::to_vec(&id).expect("json")).expect("write");
    // As left by walvault before format 2: its caches know no repository id either.
    let _ = std::fs::remove_dir_all(repo.dir().join("cache"));
    for n in [3, 4] {
        put_raw(&repo, &wal_key(&repo, &name(n)).expect("key"), &v1(n).expect("encode"));
        assert_eq!(fetch_cold(&repo, &name(n)).status.code(), Some(0), "a format-1 repository reads format 1");
    }
    // The first format-2 push moves it: 5 is archived in format 2 and recorded as the mark.
    let out = repo.run("wal-push", &[seg(5).to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let moved = identity(&repo);
    assert_eq!(moved["format"], 2);
    assert_eq!(moved["format1"]["wal_before"]["production"], name(5));
    assert_eq!(fetch_cold(&repo, &name(4)).status.code(), Some(0), "format-1 WAL before the mark still reads");
    assert_eq!(fetch_cold(&repo, &name(5)).status.code(), Some(0), "format 2 reads");
    // A format-1 object at or after the mark is refused.
    put_raw(&repo, &wal_key(&repo, &name(5)).expect("5"), &v1(5).expect("encode"));
    let out = fetch_cold(&repo, &name(5));
    assert_eq!(out.status.code(), Some(204), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("archives in format 2 since {}", name(5))), "{}", stderr(&out));
    // The marks are sealed with the key: widened by hand in the bucket, they read nothing.
    let mut widened = identity(&repo);
    widened["format1"]["wal_before"]["production"] = name(6).into();
    std::fs::write(root.join("walvault.json"), serde_json::to_vec(&widened).expect("json")).expect("write");
    let out = fetch_cold(&repo, &name(5));
    assert_eq!(out.status.code(), Some(204), "{}", stderr(&out));
    assert!(stderr(&out).contains("not sealed by a configured key"), "{}", stderr(&out));
    assert_eq!(fetch_cold(&repo, &name(4)).status.code(), Some(204), "no format-1 object at all");
}
