use std::os::unix::fs::symlink;

use super::*;

const VERSION_DIR: &str = "PG_15_202209061";

fn touch(root: &Path, rel: &str, len: usize) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(&path, vec![7u8; len]).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A fake cluster: `<tmp>/data` and a tablespace at `<tmp>/ts`.
fn fake_cluster() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let d = tmp.path().join("data");
    for f in [
        "PG_VERSION",
        "postgresql.auto.conf",
        "current_logfiles",
        "global/1262",
        "global/pg_control",
        "base/1/1259",
        "base/1/1259_fsm",
        "base/1/1259_vm",
        "base/1/1259.1",
        "base/1/16500_init",
        "base/1/PG_VERSION",
        "base/1/pg_filenode.map",
        "pg_xact/0000",
        "log/postgresql.log",
        // excluded files, any directory
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "recovery.signal",
        "standby.signal",
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "global/pg_internal.init",
        "base/1/pg_internal.init.12345",
        "base/pgsql_tmp/pgsql_tmp123.0",
        "pgsql_tmp_stray",
        // temporary and unlogged relations
        "base/1/t3_16400",
        "base/1/t3_16400_fsm",
        "base/1/t12_16401.2",
        "base/1/16500",
        "base/1/16500_fsm",
        "base/1/16500.1",
        // excluded directory contents
        "pg_wal/000000010000000000000001",
        "pg_wal/archive_status/000000010000000000000001.ready",
        "pg_replslot/slot/state",
        "pg_dynshmem/mmap.1",
        "pg_notify/0000",
        "pg_serial/0000",
        "pg_snapshots/00000003-1",
        "pg_subtrans/0000",
        // t3_16400 outside a database directory is not a relation
        "global/t3_16400",
    ] {
        touch(&d, f, 10);
    }
    touch(tmp.path(), "stat_elsewhere/global.stat", 5);
    symlink(tmp.path().join("stat_elsewhere"), d.join("pg_stat_tmp")).unwrap_or_else(|e| panic!("{e}"));
    symlink("/etc/hostname", d.join("postgresql.conf")).unwrap_or_else(|e| panic!("{e}"));
    let ts = tmp.path().join("ts");
    touch(&ts, &format!("{VERSION_DIR}/5/16390"), 8192);
    touch(&ts, &format!("{VERSION_DIR}/5/t4_17000"), 1);
    touch(&ts, "PG_14_202107181/5/16390", 1);
    fs::create_dir(d.join("pg_tblspc")).unwrap_or_else(|e| panic!("{e}"));
    symlink(&ts, d.join("pg_tblspc/16384")).unwrap_or_else(|e| panic!("{e}"));
    symlink(tmp.path().join("gone"), d.join("pg_tblspc/16999")).unwrap_or_else(|e| panic!("{e}"));
    tmp
}

fn paths(files: &[DataFile]) -> Vec<&str> {
    files.iter().map(|f| f.rel_path.as_str()).collect()
}

#[test]
fn walk_applies_postgresql_exclusions() {
    let tmp = fake_cluster();
    let files = walk(&tmp.path().join("data"), Some(VERSION_DIR)).unwrap_or_else(|e| panic!("{e}"));
    let want = [
        "PG_VERSION",
        "base",
        "base/1",
        "base/1/1259",
        "base/1/1259.1",
        "base/1/1259_fsm",
        "base/1/1259_vm",
        "base/1/16500_init",
        "base/1/PG_VERSION",
        "base/1/pg_filenode.map",
        "current_logfiles",
        "global",
        "global/1262",
        "global/t3_16400",
        "log",
        "log/postgresql.log",
        "pg_dynshmem",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
        "pg_tblspc",
        "pg_tblspc/16384",
        "pg_tblspc/16384/PG_15_202209061",
        "pg_tblspc/16384/PG_15_202209061/5",
        "pg_tblspc/16384/PG_15_202209061/5/16390",
        "pg_tblspc/16999",
        "pg_wal",
        "pg_wal/archive_status",
        "pg_xact",
        "pg_xact/0000",
        "postgresql.auto.conf",
        "global/pg_control",
    ];
    assert_eq!(paths(&files), want);
    let by = |p: &str| files.iter().find(|f| f.rel_path == p).cloned();
    let link = by("pg_tblspc/16384").map(|f| f.kind);
    assert_eq!(link, Some(FileKind::Symlink(tmp.path().join("ts").display().to_string())));
    let stat = by("pg_stat_tmp").map(|f| (f.kind, f.mode));
    assert_eq!(stat, Some((FileKind::Dir, 0o700)), "a symlinked excluded dir is stored as a dir");
    let rel = by("pg_tblspc/16384/PG_15_202209061/5/16390").map(|f| (f.size, f.abs_path));
    let abs = tmp.path().join("ts").join(VERSION_DIR).join("5/16390");
    assert_eq!(rel, Some((8192, abs)));
}

#[test]
fn walk_without_version_dir_stores_whole_tablespace() {
    let tmp = fake_cluster();
    let files = walk(&tmp.path().join("data"), None).unwrap_or_else(|e| panic!("{e}"));
    let ts: Vec<&str> = paths(&files).into_iter().filter(|p| p.starts_with("pg_tblspc/16384/")).collect();
    assert_eq!(
        ts,
        [
            "pg_tblspc/16384/PG_14_202107181",
            "pg_tblspc/16384/PG_14_202107181/5",
            "pg_tblspc/16384/PG_14_202107181/5/16390",
            "pg_tblspc/16384/PG_15_202209061",
            "pg_tblspc/16384/PG_15_202209061/5",
            "pg_tblspc/16384/PG_15_202209061/5/16390",
        ]
    );
}

#[test]
fn walk_refuses_a_missing_pgdata_naming_it() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let missing = tmp.path().join("nope");
    let err = walk(&missing, None).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, format!("{}: No such file or directory (os error 2)", missing.display()));
}

#[test]
fn relation_names() {
    assert_eq!(parse_relation_file("16384"), Some(("16384", None)));
    assert_eq!(parse_relation_file("16384_init"), Some(("16384", Some("init"))));
    assert_eq!(parse_relation_file("16384_vm.3"), Some(("16384", Some("vm"))));
    assert_eq!(parse_relation_file("16384.12"), Some(("16384", None)));
    for bad in ["", "x1", "16384_main", "16384.", "16384.a", "12345678901", "pg_filenode.map"] {
        assert_eq!(parse_relation_file(bad), None, "{bad}");
    }
    for temp in ["t3_16400", "t3_16400_fsm", "t12_1.4", "t1_2_init.1"] {
        assert!(is_temp_relation(temp), "{temp}");
    }
    for not in ["t_1", "t3_", "t3_x", "3_4", "t3_4_main", "t3_4."] {
        assert!(!is_temp_relation(not), "{not}");
    }
}

fn df(path: &str, kind: FileKind, size: u64) -> DataFile {
    DataFile { rel_path: path.into(), abs_path: path.into(), kind, size, mode: 0o600, mtime: 0 }
}

#[test]
fn split_parts_bounds_bytes_and_isolates_big_files() {
    let files = vec![
        df("a", FileKind::Dir, 0),
        df("a/1", FileKind::File, 40),
        df("a/2", FileKind::File, 50),
        df("a/3", FileKind::File, 20),
        df("big", FileKind::File, 500),
        df("c", FileKind::Dir, 0),
        df("c/1", FileKind::File, 100),
        df("d", FileKind::File, 1),
    ];
    let parts = split_parts(files, 100);
    let names: Vec<Vec<&str>> = parts.iter().map(|p| paths(p)).collect();
    assert_eq!(names, vec![vec!["a", "a/1", "a/2"], vec!["a/3"], vec!["big"], vec!["c", "c/1"], vec!["d"]]);
    assert!(split_parts(Vec::new(), 100).is_empty());
}

#[test]
fn walk_follows_a_symlinked_pgdata() {
    let tmp = fake_cluster();
    let link = tmp.path().join("data-link");
    symlink(tmp.path().join("data"), &link).unwrap_or_else(|e| panic!("{e}"));
    let direct = walk(&tmp.path().join("data"), Some(VERSION_DIR)).unwrap_or_else(|e| panic!("{e}"));
    let linked = walk(&link, Some(VERSION_DIR)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(paths(&direct), paths(&linked));
}

/// Issue 16: a server with `unix_socket_directories = '.'` keeps its socket and the socket's
/// lock file in PGDATA; neither is backed up (the socket is skipped without a warning), while
/// a file that only looks alike is kept.
#[test]
fn walk_leaves_out_sockets_and_their_lock_files() {
    let tmp = fake_cluster();
    let d = tmp.path().join("data");
    let _socket = std::os::unix::net::UnixListener::bind(d.join(".s.PGSQL.5432")).expect("bind a socket");
    touch(&d, ".s.PGSQL.5432.lock", 60);
    touch(&d, ".s.PGSQL.notaport.lock", 1);
    let files = walk(&d, Some(VERSION_DIR)).unwrap_or_else(|e| panic!("walk: {e}"));
    let paths = paths(&files);
    assert!(!paths.iter().any(|p| p.starts_with(".s.PGSQL.5432")), "{paths:?}");
    assert!(paths.contains(&".s.PGSQL.notaport.lock"), "{paths:?}");
    assert!(is_socket_lock_file(".s.PGSQL.54329.lock"));
    assert!(!is_socket_lock_file(".s.PGSQL..lock") && !is_socket_lock_file(".s.PGSQL.5432"));
}
