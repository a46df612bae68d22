use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::manifest::{EntryKind, Manifest, ManifestEntry, ManifestTablespace};
use crate::pg::{datadir, recovery};
use crate::tarball;

#[test]
fn lsn_and_units() {
    assert_eq!(parse_lsn("16/B374D848").ok(), Some(Lsn(0x16_B374_D848)));
    assert_eq!(parse_lsn("0/0").ok(), Some(Lsn(0)));
    for bad in ["", "16", "/1", "1/", "x/1", "123456789/0"] {
        let err = parse_lsn(bad).err().map(|e| e.to_string());
        assert_eq!(err, Some(format!("{bad:?} is not an lsn")));
    }
    assert_eq!(unit_bytes("B"), Some(1));
    assert_eq!(unit_bytes("8kB"), Some(8192));
    assert_eq!(unit_bytes("MB"), Some(1 << 20));
    assert_eq!(unit_bytes("s"), None);
}

#[track_caller]
fn ok<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The PostgreSQL server binaries: `WALVAULT_TEST_PG_BIN`, else PostgreSQL 15's. Missing
/// binaries fail the test: a skipped cluster test would hide a broken backup.
fn pg_bin() -> PathBuf {
    let dir = std::env::var_os("WALVAULT_TEST_PG_BIN")
        .map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), PathBuf::from);
    assert!(
        dir.join("initdb").is_file(),
        "{} not found: install PostgreSQL server binaries or set WALVAULT_TEST_PG_BIN to their directory",
        dir.join("initdb").display()
    );
    dir
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// Run a server binary as `postgres` when we are root (PostgreSQL refuses root), in a clean
/// environment.
fn run(bin: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() { Command::new("runuser") } else { Command::new(bin) };
    if is_root() {
        cmd.args(["-u", "postgres", "--"]).arg(bin);
    }
    ok(cmd.args(args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("LANG", "C").output())
}

fn run_ok(bin: &Path, args: &[&str]) {
    let out = run(bin, args);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let st = ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status());
        assert!(st.success(), "chown {}", path.display());
    }
}

/// A server on a private socket directory, stopped (immediate) when dropped.
struct Running {
    bin: PathBuf,
    pgdata: PathBuf,
}

impl Running {
    fn start(bin: &Path, pgdata: &Path) -> Running {
        let log = pgdata.with_extension("log");
        let guard = Running { bin: bin.to_path_buf(), pgdata: pgdata.to_path_buf() };
        let out = run(
            &bin.join("pg_ctl"),
            &["-D", &pgdata.to_string_lossy(), "-l", &log.to_string_lossy(), "-w", "-t", "60", "start"],
        );
        let log = fs::read_to_string(&log).unwrap_or_default();
        assert!(out.status.success(), "pg_ctl start {} failed:\n{log}", pgdata.display());
        guard
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = run(&self.bin.join("pg_ctl"), &["-D", &self.pgdata.to_string_lossy(), "-m", "immediate", "-w", "stop"]);
    }
}

async fn admin(params: &ConnParams, sql: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
    let (client, conn) = ok(params.to_config("walvault-test").connect(tokio_postgres::NoTls).await);
    tokio::spawn(conn);
    ok(client.simple_query(sql).await)
}

async fn count(params: &ConnParams, table: &str) -> String {
    let server = ok(connect(params, "walvault-test").await);
    ok(server.query_one_string(&format!("SELECT count(*) FROM {table}")).await)
}

async fn wait_archived(server: &Server, lsn: Lsn) {
    let want = ok(server.current_wal_file(lsn).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = ok(server.last_archived_wal().await);
        if done.as_deref().is_some_and(|d| d >= want.as_str()) {
            return;
        }
        assert!(Instant::now() < deadline, "{want} not archived (last: {done:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn digest_file(path: &Path) -> crate::manifest::FileDigest {
    crate::manifest::digest::of_bytes(&ok(fs::read(path)))
}

/// Directories of one test: a source cluster with a tablespace and a WAL archive, and the
/// places it is restored to.
struct Fixture {
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    root: PathBuf,
    pgdata: PathBuf,
    archive: PathBuf,
    ts: PathBuf,
    restore: PathBuf,
    ts_new: PathBuf,
    params: ConnParams,
}

impl Fixture {
    /// initdb a cluster that archives with `cp` and listens only on a private socket.
    fn new() -> Fixture {
        let bin = pg_bin();
        let tmp = ok(tempfile::tempdir());
        let root = tmp.path().to_path_buf();
        let fx = Fixture {
            bin,
            pgdata: root.join("data"),
            archive: root.join("archive"),
            ts: root.join("ts"),
            restore: root.join("restore"),
            ts_new: root.join("ts_new"),
            params: ConnParams {
                host: Some(root.display().to_string()),
                port: Some(5432),
                user: Some("postgres".into()),
                dbname: Some("postgres".into()),
                password: None,
            },
            root,
            _tmp: tmp,
        };
        for d in [&fx.archive, &fx.ts, &fx.restore, &fx.ts_new] {
            ok(fs::create_dir(d));
        }
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        ok(fs::set_permissions(&fx.restore, private));
        give_to_postgres(&fx.root);
        let pgdata = fx.pgdata.to_string_lossy();
        run_ok(&fx.bin.join("initdb"), &["-D", &pgdata, "-U", "postgres", "--auth=trust", "-N"]);
        let conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = 5432\nfsync = off\n\
             shared_buffers = 16MB\narchive_mode = on\narchive_command = 'cp %p {}/%f'\n",
            fx.root.display(),
            fx.archive.display()
        );
        let pgconf = fx.pgdata.join("postgresql.conf");
        ok(fs::write(&pgconf, ok(fs::read_to_string(&pgconf)) + &conf));
        fx
    }
}

/// Back up the running cluster in two data parts plus a label part, changing a table while
/// the backup runs. Returns the parts and their manifest entries.
async fn take_backup(fx: &Fixture, server: &Server, oid: u32) -> (Vec<Vec<u8>>, Vec<ManifestEntry>) {
    let start = ok(server.backup_start("walvault test", true).await);
    assert_eq!(start.timeline, 1);
    admin(&fx.params, "INSERT INTO t SELECT generate_series(1001, 1500)").await;
    let files = ok(datadir::walk(&fx.pgdata, Some(&server.tablespace_version_dir())));
    let names: HashSet<&str> = files.iter().map(|f| f.rel_path.as_str()).collect();
    assert!(!names.contains("postmaster.pid") && names.contains("global/pg_control"));
    assert!(names.contains("pg_wal") && !names.iter().any(|n| n.starts_with("pg_wal/0")));
    assert!(names.contains(format!("pg_tblspc/{oid}").as_str()));
    let total: u64 = files.iter().map(|f| f.size).sum();
    let (mut tars, mut entries) = (Vec::new(), Vec::new());
    for (part, chunk) in datadir::split_parts(files, total / 2 + 1).into_iter().enumerate() {
        let (tar, mut stored) = ok(tarball::write_tar(Vec::new(), &chunk));
        stored.iter_mut().for_each(|e| e.part = part as u32);
        entries.extend(stored);
        tars.push(tar);
    }
    let stop = ok(server.backup_stop().await);
    assert!(stop.backup_label.contains("START WAL LOCATION"), "{}", stop.backup_label);
    assert!(stop.lsn > start.lsn);
    let map = stop.tablespace_map.clone().unwrap_or_default();
    assert!(map.starts_with(&format!("{oid} ")), "{map}");
    let label: [(&str, &[u8]); 2] =
        [("backup_label", stop.backup_label.as_bytes()), ("tablespace_map", map.as_bytes())];
    let (tar, mut stored) = ok(tarball::write_tar_bytes(Vec::new(), &label));
    stored.iter_mut().for_each(|e| e.part = tars.len() as u32);
    entries.extend(stored);
    tars.push(tar);
    ok(server.switch_wal().await);
    wait_archived(server, stop.lsn).await;
    (tars, entries)
}

/// Extract every part into `fx.restore` (the tablespace into `fx.ts_new`) and check every
/// file against the manifest.
fn extract_and_verify(fx: &Fixture, tars: &[Vec<u8>], manifest: &Manifest, remap: &BTreeMap<u32, PathBuf>, oid: u32) {
    let mut extracted = HashSet::new();
    for tar in tars {
        let stats = ok(tarball::extract_tar(tar.as_slice(), &fx.restore, manifest, remap));
        extracted.extend(stats.paths);
    }
    for part in 0..tars.len() as u32 {
        assert!(manifest.missing(part, &extracted).is_empty());
    }
    let prefix = format!("pg_tblspc/{oid}/");
    for e in manifest.files.iter().filter(|e| e.kind == EntryKind::File) {
        let at = e.path.strip_prefix(&prefix).map_or_else(|| fx.restore.join(&e.path), |inner| fx.ts_new.join(inner));
        assert_eq!(digest_file(&at), e.digest, "{}", e.path);
    }
    assert_eq!(ok(fs::read_link(fx.restore.join(format!("pg_tblspc/{oid}")))), fx.ts_new);
}

/// Configure recovery to `target` (with a stale target left in postgresql.auto.conf, as
/// another tool may leave one), start the copy and wait until it has promoted.
async fn recover(fx: &Fixture, target: Lsn, remap: &BTreeMap<u32, PathBuf>) -> Running {
    let map_path = fx.restore.join("tablespace_map");
    let map = ok(recovery::rewrite_tablespace_map(&ok(fs::read_to_string(&map_path)), remap));
    ok(fs::write(&map_path, map));
    let auto = fx.restore.join("postgresql.auto.conf");
    let stale = "recovery_target_time = '2000-01-01 00:00:00+00'\n";
    ok(fs::write(&auto, ok(fs::read_to_string(&auto)) + stale));
    let settings = recovery::RecoverySettings {
        restore_command: format!("cp {}/%f %p", fx.archive.display()),
        target: recovery::RecoveryTarget::Lsn(target),
        action: recovery::TargetAction::Promote,
        timeline: None,
        archive: true,
    };
    ok(recovery::write_recovery(&fx.restore, &settings));
    give_to_postgres(&fx.restore);
    give_to_postgres(&fx.ts_new);
    let copy = Running::start(&fx.bin, &fx.restore);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = connect(&fx.params, "walvault-test").await
            && ok(s.query_one_string("SELECT pg_is_in_recovery()").await) == "f"
        {
            break;
        }
        let log = fx.restore.with_extension("log");
        assert!(Instant::now() < deadline, "restored cluster did not promote; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = ok(fs::read_to_string(fx.restore.with_extension("log")));
    let stopped = format!("recovery stopping after WAL location (LSN) \"{}\"", recovery::format_lsn(target));
    assert!(log.contains(&stopped), "{log}");
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_a_real_cluster() {
    let fx = Fixture::new();
    let source = Running::start(&fx.bin, &fx.pgdata);
    admin(&fx.params, &format!("CREATE TABLESPACE ts LOCATION '{}'", fx.ts.display())).await;
    admin(
        &fx.params,
        "CREATE TABLE t AS SELECT generate_series(1, 1000) AS i; \
         CREATE TABLE t2 TABLESPACE ts AS SELECT generate_series(1, 100) AS i; \
         CREATE UNLOGGED TABLE u AS SELECT 1 AS i",
    )
    .await;
    let server = ok(connect(&fx.params, "walvault-test").await);
    assert!(server.version_num >= 150_000, "{}", server.version_num);
    assert_eq!(ok(fs::canonicalize(&server.data_directory)), ok(fs::canonicalize(&fx.pgdata)));
    assert_eq!((server.wal_segment_size, server.timeline, server.in_recovery), (16 << 20, 1, false));
    assert_ne!(server.system_identifier, 0);
    let spaces = ok(server.tablespaces().await);
    let named: Vec<_> = spaces.iter().map(|t| (t.name.as_str(), t.location.as_path())).collect();
    assert_eq!(named, [("ts", fx.ts.as_path())]);
    let oid = spaces[0].oid;

    let (tars, entries) = take_backup(&fx, &server, oid).await;
    admin(&fx.params, "INSERT INTO t SELECT generate_series(1501, 1600)").await;
    let target = ok(parse_lsn(&ok(server.query_one_string("SELECT pg_current_wal_lsn()::text").await)));
    let end = ok(server.switch_wal().await);
    wait_archived(&server, end).await;
    drop(server);
    drop(source);

    let location = fx.ts.display().to_string();
    let manifest = Manifest::new(entries, vec![ManifestTablespace { oid, name: "ts".into(), location }]);
    ok(manifest.validate());
    let remap = BTreeMap::from([(oid, fx.ts_new.clone())]);
    extract_and_verify(&fx, &tars, &manifest, &remap, oid);
    let _copy = recover(&fx, target, &remap).await;
    assert_eq!(count(&fx.params, "t").await, "1600");
    assert_eq!(count(&fx.params, "t2").await, "100");
    assert_eq!(count(&fx.params, "u").await, "0", "unlogged tables come back empty");
    let sock = fx.root.to_string_lossy();
    let check = run(&fx.bin.join("pg_amcheck"), &["-h", &sock, "-U", "postgres", "--install-missing", "--all"]);
    let out = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "pg_amcheck: {out}");
}
