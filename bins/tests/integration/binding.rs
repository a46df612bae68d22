//! Issue 11 scenario 6 and its kin: every object bound to its place (format 2). A clone's
//! segment copied under the same name, an object renamed, an object copied from another
//! environment, a backup part swapped between backups: each is refused with exit 4 (204 from
//! wal-fetch) and a line saying what it is, on the local directory and on S3. Format-1
//! objects are read only where they cannot be a substitution.

use std::time::Duration;

use walvault::codec::{CodecSettings, Compression, Context, Key};

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, shared_tempdir, stderr};
use super::pitr::{base_backup, prepare, primary};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json: {e}\n{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(out)))
}

/// Object keys of the repository under `prefix`.
fn keys(repo: &TestRepo, prefix: &str) -> Vec<String> {
    let out = repo.run("walvault", &["ls", "--json", prefix]);
    assert!(out.status.success(), "ls: {}", stderr(&out));
    json(&out).as_array().expect("array").iter().map(|o| o["key"].as_str().expect("key").to_string()).collect()
}

/// The key of WAL file `name` (None if absent).
fn wal_key(repo: &TestRepo, name: &str) -> Option<String> {
    keys(repo, "wal/").into_iter().find(|k| k.rsplit('/').next().is_some_and(|f| f.starts_with(&format!("{name}."))))
}

fn get_raw(repo: &TestRepo, key: &str) -> Vec<u8> {
    let out = repo.run("walvault", &["get", "--raw", key]);
    assert!(out.status.success(), "get {key}: {}", stderr(&out));
    out.stdout
}

/// One plain HTTP PUT to the S3 test server (it checks no signature).
fn s3_put(repo: &TestRepo, key: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let endpoint = repo.env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL").map(|(_, v)| v.clone()).expect("endpoint");
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let path = repo.url.trim_start_matches("s3://");
    let mut s = std::net::TcpStream::connect(&hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
    let head = format!(
        "PUT /{path}/{key} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

/// Store `bytes` at `key` as someone with write access to the bucket would.
pub(super) fn put_raw(repo: &TestRepo, key: &str, bytes: &[u8]) {
    match &repo.fs_root {
        Some(root) => {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
        None => assert!(s3_put(repo, key, bytes).starts_with("HTTP/1.1 200"), "put {key}"),
    }
}

const SEG: u32 = 1 << 20;

fn segment_name(segno: u64) -> String {
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
    let repository = walvault::ops::place::parse_repository_id(text).expect("32 hex digits");
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
}

/// A data directory at `parent/pgdata` whose `global/pg_control` starts with system
/// identifier `sysid` (in the machine's byte order, as PostgreSQL writes it): as if a backup
/// of that cluster had just been restored there.
fn data_directory(parent: &std::path::Path, sysid: u64) -> std::path::PathBuf {
    let pgdata = parent.join("pgdata");
    std::fs::create_dir_all(pgdata.join("global")).expect("mkdir");
    std::fs::create_dir_all(pgdata.join("pg_wal")).expect("mkdir");
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&sysid.to_ne_bytes());
    std::fs::write(pgdata.join("global/pg_control"), control).expect("pg_control");
    pgdata
}

/// Issue 11 point 10: the repository at the same URL replaced by another cluster's, while
/// wal-fetch's cache and prefetch spool (for the same data directory path) still hold the
/// first one. A recovery of the new cluster gets the new cluster's WAL, never the stale
/// spool; a recovery of the old one is refused clearly, by the data directory's system
/// identifier, and by an object bound to another repository than the cached one.
#[test]
fn a_repository_replaced_at_the_same_url_is_noticed() {
    const A: u64 = 7_300_000_000_000_000_005;
    const B: u64 = 7_300_000_000_000_000_777;
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let magic = walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("magic");
    let push_cluster = |sysid: u64, cache: &std::path::Path| {
        let dir = work.join(format!("wal-{sysid}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for n in 1..=6 {
            let path = dir.join(segment_name(n));
            std::fs::write(&path, walvault::wal::synthetic_segment(sysid, 1, n, SEG, magic, sysid as u8)).expect("w");
            let out = repo.command("wal-push").env("WALVAULT_CACHE_DIR", cache).arg(&path).output().expect("push");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        dir
    };
    let cache = repo.dir().join("cache");
    push_cluster(A, &cache);
    let fetch = |cache: &std::path::Path, pgdata: &std::path::Path, n: u64, prefetch: &str| {
        let dest = pgdata.join("pg_wal/RECOVERYXLOG");
        let _ = std::fs::remove_file(&dest);
        let mut c = repo.command("wal-fetch");
        c.env("WALVAULT_CACHE_DIR", cache).env("WALVAULT_FETCH_PREFETCH", prefetch);
        (c.arg(segment_name(n)).arg(&dest).output().expect("fetch"), dest)
    };
    let spooled = |cache: &std::path::Path, n: u64| {
        super::common::walk(cache).into_iter().any(|p| {
            p.file_name().is_some_and(|f| f.to_string_lossy() == segment_name(n))
                && p.parent().is_some_and(|d| d.to_string_lossy().contains("prefetch-"))
        })
    };
    let pgdata = data_directory(&work, A);
    let (out, _) = fetch(&cache, &pgdata, 1, "3");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !spooled(&cache, 2) {
        assert!(std::time::Instant::now() < deadline, "the worker never spooled {}", segment_name(2));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500)); // let the worker finish its round
    let saved = repo.dir().join("cache-saved");
    let cp = std::process::Command::new("cp").arg("-a").arg(&cache).arg(&saved).status().expect("cp");
    assert!(cp.success());

    // Replaced: cluster B's repository at the same URL (pushed with a cache of its own).
    std::fs::remove_dir_all(repo.fs_root.as_ref().expect("fs")).expect("rm repo");
    let b_wal = push_cluster(B, &repo.dir().join("cache-b"));

    // B restored into the same directory, A's cache and spool still there: B's segment 2.
    data_directory(&work, B);
    let (out, dest) = fetch(&cache, &pgdata, 2, "0");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let restored = std::fs::read(&dest).expect("read");
    assert!(restored == std::fs::read(b_wal.join(segment_name(2))).expect("read"), "B's own segment 2");
    assert!(!spooled(&cache, 3), "the stale spool was discarded");

    // A restored again: the repository holds B, whatever the cache says.
    data_directory(&work, A);
    let (out, dest) = fetch(&cache, &pgdata, 3, "0");
    assert_eq!(out.status.code(), Some(205), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("belongs to the cluster with system identifier {A}")), "{}", stderr(&out));
    assert!(!dest.exists(), "nothing at %p");

    // A's own cache (repository A) against the archive of B: the object of segment 6 is
    // bound to another repository; walvault.json is read again, the cache and spool dropped.
    let (out, dest) = fetch(&saved, &pgdata, 6, "0");
    assert_eq!(out.status.code(), Some(205), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed under this recovery"), "{}", stderr(&out));
    assert!(!dest.exists() && !spooled(&saved, 3), "nothing served, the spool discarded");
}
