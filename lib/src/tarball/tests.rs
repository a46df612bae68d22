use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::*;
use crate::manifest::{Manifest, ManifestTablespace};
use crate::pg::datadir;

#[track_caller]
fn ok<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn sha(data: &[u8]) -> FileDigest {
    crate::manifest::digest::of_bytes(data)
}

const LONG: &str =
    "base/1/a_directory_name_that_is_long_enough/to_push_the_whole_path_well_past_the_classic_100_byte_tar_name_limit";

/// A small PGDATA with a long path, a multi-chunk file, an empty file and a tablespace.
fn cluster(root: &Path) -> (PathBuf, PathBuf) {
    let data = root.join("data");
    let ts = root.join("ts");
    for (rel, len) in
        [("PG_VERSION", 3usize), ("global/pg_control", 8192), ("base/1/1259", 2 * READ_CHUNK + 17), ("base/1/empty", 0)]
    {
        let p = data.join(rel);
        ok(fs::create_dir_all(ok(p.parent().ok_or("no parent"))));
        ok(fs::write(&p, (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()));
    }
    ok(fs::create_dir_all(data.join(LONG)));
    ok(fs::write(data.join(LONG).join("file"), b"long"));
    ok(fs::create_dir_all(ts.join("PG_15_1/5")));
    ok(fs::write(ts.join("PG_15_1/5/16390"), b"tablespace data"));
    ok(fs::create_dir_all(data.join("pg_tblspc")));
    ok(symlink(&ts, data.join("pg_tblspc/16384")));
    (data, ts)
}

fn backup(data: &Path, ts: &Path) -> (Vec<u8>, Manifest) {
    let files = ok(datadir::walk(data, Some("PG_15_1")));
    let (tar, entries) = ok(write_tar(Vec::new(), &files));
    let loc = ts.display().to_string();
    (tar, Manifest::new(entries, vec![ManifestTablespace { oid: 16384, name: "ts".into(), location: loc }]))
}

#[test]
fn round_trip_verifies_against_manifest() {
    let tmp = ok(tempfile::tempdir());
    let (data, ts) = cluster(tmp.path());
    let (tar, manifest) = backup(&data, &ts);
    let dest = tmp.path().join("restore");
    let new_ts = tmp.path().join("ts_new");
    ok(fs::create_dir(&dest));
    let remap = BTreeMap::from([(16384, new_ts.clone())]);
    let stats = ok(extract_tar(tar.as_slice(), &dest, &manifest, &remap));
    assert_eq!(stats.files, 6);
    assert_eq!(stats.symlinks, 1);
    assert_eq!(stats.bytes, manifest.total_size());
    let extracted: HashSet<String> = stats.paths.iter().cloned().collect();
    assert!(manifest.missing(0, &extracted).is_empty());
    for e in manifest.files.iter().filter(|e| e.kind == EntryKind::File) {
        let at = match e.path.strip_prefix("pg_tblspc/16384/") {
            Some(inner) => new_ts.join(inner),
            None => dest.join(&e.path),
        };
        let bytes = ok(fs::read(&at));
        assert_eq!((bytes.len() as u64, sha(&bytes)), (e.size, e.digest.clone()), "{}", e.path);
        assert_eq!(ok(fs::metadata(&at)).permissions().mode() & 0o777, 0o600, "{}", e.path);
    }
    assert_eq!(ok(fs::read(data.join("base/1/1259"))), ok(fs::read(dest.join("base/1/1259"))));
    assert_eq!(ok(fs::read_link(dest.join("pg_tblspc/16384"))), new_ts);
    assert_eq!(ok(fs::metadata(dest.join(LONG))).permissions().mode() & 0o777, 0o700);
    assert!(!ts.join("PG_15_1/5/16390").exists() || ok(fs::read(ts.join("PG_15_1/5/16390"))) == b"tablespace data");
}

#[test]
fn vanished_file_is_skipped_and_short_file_is_padded() {
    let tmp = ok(tempfile::tempdir());
    let gone = datadir::DataFile {
        rel_path: "base/1/gone".into(),
        abs_path: tmp.path().join("gone"),
        kind: FileKind::File,
        size: 10,
        mode: 0o600,
        mtime: 0,
    };
    let (_, entries) = ok(write_tar(Vec::new(), &[gone]));
    assert!(entries.is_empty());
    let mut reader = ExactReader {
        inner: &b"abc"[..],
        remaining: 8,
        padded: 0,
        hash: FileHasher::new(),
        blocks: Default::default(),
        read_error: None,
    };
    let mut out = Vec::new();
    ok(std::io::copy(&mut reader, &mut out));
    assert_eq!(out, b"abc\0\0\0\0\0");
    assert_eq!((reader.padded, reader.hash.finish()), (5, sha(b"abc\0\0\0\0\0")));
    let mut long = ExactReader {
        inner: &b"abcdef"[..],
        remaining: 4,
        padded: 0,
        hash: FileHasher::new(),
        blocks: Default::default(),
        read_error: None,
    };
    let mut out = Vec::new();
    ok(std::io::copy(&mut long, &mut out));
    assert_eq!(out, b"abcd", "a file that grew is cut at the header size");
}

#[test]
fn label_files_round_trip() {
    let tmp = ok(tempfile::tempdir());
    let label: &[u8] = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n";
    let (tar, entries) = ok(write_tar_bytes(Vec::new(), &[("backup_label", label)]));
    let manifest = Manifest::new(entries, vec![]);
    ok(extract_tar(tar.as_slice(), tmp.path(), &manifest, &BTreeMap::new()));
    assert_eq!(ok(fs::read(tmp.path().join("backup_label"))), label);
}

/// One raw tar entry, bypassing the tar crate's own path checks.
fn raw(kind: tar::EntryType, name: &[u8], data: &[u8], link: Option<&[u8]>) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(l) = link {
        header.as_old_mut().linkname[..l.len()].copy_from_slice(l);
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    ok(b.append(&header, data));
    ok(b.into_inner())
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    // `raw` builders each end their archive; keep only the entries, then end once.
    let mut joined = Vec::new();
    for e in entries {
        joined.extend_from_slice(&e[..e.len() - 1024]);
    }
    joined.extend_from_slice(&[0u8; 1024]);
    joined
}

fn listed(path: &str, kind: EntryKind, data: &[u8]) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        size: if kind == EntryKind::File { data.len() as u64 } else { 0 },
        digest: sha(data),
        mode: 0o600,
        part: 0,
        kind,
        link_target: None,
    }
}

/// A file entry as a version-1 manifest lists it (SHA-256).
fn sha256_listed(path: &str, data: &[u8]) -> ManifestEntry {
    let digest = FileDigest::Sha256(hex::encode(ring::digest::digest(&ring::digest::SHA256, data)));
    ManifestEntry { digest, ..listed(path, EntryKind::File, data) }
}

/// Extract `tar` into `<tmp>/dest` (which holds `pre` symlinks) and return the error text and
/// whether anything appeared in `<tmp>/outside` or beside `dest`.
fn hostile(tar: &[u8], manifest: Manifest, pre: &[(&str, &str)]) -> String {
    let tmp = ok(tempfile::tempdir());
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    ok(fs::create_dir(&dest));
    ok(fs::create_dir(&outside));
    for (link, target) in pre {
        ok(symlink(tmp.path().join(target), dest.join(link)));
    }
    let result = extract_tar(tar, &dest, &manifest, &BTreeMap::new());
    let leaked: Vec<_> = ok(fs::read_dir(&outside)).map(|e| ok(e).path()).collect();
    assert!(leaked.is_empty(), "written outside dest: {leaked:?}");
    let beside: Vec<_> = ok(fs::read_dir(tmp.path())).map(|e| ok(e).file_name()).collect();
    assert_eq!(beside.len(), 2, "written beside dest: {beside:?}");
    match result {
        Ok(stats) => format!("extracted {:?}", stats.paths),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_entries_are_refused_before_writing() {
    use tar::EntryType as T;
    let m = |entries: Vec<ManifestEntry>| Manifest::new(entries, vec![]);
    let f = |p: &str| listed(p, EntryKind::File, b"x");
    let abs = "/tmp/walvault-test-absolute-evil";
    type Case<'a> = (Vec<u8>, Manifest, &'a [(&'a str, &'a str)], String);
    let cases: Vec<Case> = vec![
        (raw(T::Regular, abs.as_bytes(), b"x", None), m(vec![]), &[], format!("tar entry {abs:?} is absolute")),
        (
            raw(T::Regular, b"../outside/x", b"x", None),
            m(vec![]),
            &[],
            "tar entry \"../outside/x\" contains '..'".into(),
        ),
        (
            raw(T::Regular, b"a/../../outside/x", b"x", None),
            m(vec![]),
            &[],
            "tar entry \"a/../../outside/x\" contains '..'".into(),
        ),
        (
            raw(T::Symlink, b"evil", b"", Some(b"/")),
            m(vec![]),
            &[],
            "tar entry \"evil\" is a symlink outside pg_tblspc".into(),
        ),
        (raw(T::Link, b"hl", b"", Some(b"/etc/passwd")), m(vec![]), &[], "tar entry \"hl\" is a hard link".into()),
        (raw(T::Char, b"dev/null", b"", None), m(vec![]), &[], "tar entry \"dev/null\" is a device or fifo".into()),
        (raw(T::Block, b"sda", b"", None), m(vec![]), &[], "tar entry \"sda\" is a device or fifo".into()),
        (raw(T::Fifo, b"fifo", b"", None), m(vec![]), &[], "tar entry \"fifo\" is a device or fifo".into()),
        (raw(T::Regular, b"base/x", b"x", None), m(vec![f("base/x")]), &[("base", "outside")], String::new()),
        (
            raw(T::Regular, b"extra", b"x", None),
            m(vec![f("base")]),
            &[],
            "tar entry \"extra\" is not in the manifest".into(),
        ),
        (
            raw(T::Directory, b"base/", b"", None),
            m(vec![f("base")]),
            &[],
            "tar entry \"base\" is a directory but the manifest lists a file".into(),
        ),
        (
            raw(T::Regular, b"f", b"xxxxx", None),
            m(vec![f("f")]),
            &[],
            "object f is corrupt: size 5 in the archive but 1 in the manifest".into(),
        ),
        (
            raw(T::Regular, b"f", b"y", None),
            m(vec![f("f")]),
            &[],
            "object f is corrupt: blake3 differs from the manifest".into(),
        ),
        (
            // A version-1 manifest's SHA-256 entry: checked as SHA-256.
            raw(T::Regular, b"f", b"y", None),
            m(vec![sha256_listed("f", b"x")]),
            &[],
            "object f is corrupt: sha256 differs from the manifest".into(),
        ),
        (raw(T::Regular, b"f", b"x", None), m(vec![sha256_listed("f", b"x")]), &[], "extracted [\"f\"]".into()),
        (
            raw(T::Regular, b"f\xff", b"x", None),
            m(vec![]),
            &[],
            "tar entry \"f\u{fffd}\" has a name that is not utf-8".into(),
        ),
        (raw(T::Regular, b"f", b"x", None), m(vec![f("f")]), &[("f", "outside/f")], String::new()),
    ];
    for (i, (tar, manifest, pre, want)) in cases.into_iter().enumerate() {
        let got = hostile(&archive(&[tar]), manifest, pre);
        if want.is_empty() {
            assert!(
                got.starts_with("tar entry")
                    && (got.contains("goes through the symlink") || got.contains("would replace")),
                "case {i}: {got}"
            );
        } else {
            assert_eq!(got, want, "case {i}");
        }
    }
    assert!(!Path::new(abs).exists());
}

#[test]
fn duplicate_and_tablespace_link_checks() {
    use tar::EntryType as T;
    let file = raw(T::Regular, b"f", b"x", None);
    let got =
        hostile(&archive(&[file.clone(), file]), Manifest::new(vec![listed("f", EntryKind::File, b"x")], vec![]), &[]);
    assert_eq!(got, "tar entry \"f\" appears twice");
    let mut link = listed("pg_tblspc/7", EntryKind::Symlink, b"");
    link.link_target = Some("/srv/ts".into());
    let ts = |loc: &str| vec![ManifestTablespace { oid: 7, name: "t".into(), location: loc.into() }];
    let dirs = |e: ManifestEntry| vec![listed("pg_tblspc", EntryKind::Dir, b""), e];
    let tar =
        archive(&[raw(T::Directory, b"pg_tblspc/", b"", None), raw(T::Symlink, b"pg_tblspc/7", b"", Some(b"/etc"))]);
    let got = hostile(&tar, Manifest::new(dirs(link.clone()), ts("/srv/ts")), &[]);
    assert_eq!(got, "object pg_tblspc/7 is corrupt: link target differs from the manifest");
    let tar = archive(&[raw(T::Regular, b"pg_tblspc/7/PG_15_1/x", b"x", None)]);
    let got =
        hostile(&tar, Manifest::new(vec![link, listed("pg_tblspc/7/PG_15_1/x", EntryKind::File, b"x")], vec![]), &[]);
    assert_eq!(got, "tar entry \"pg_tblspc/7/PG_15_1/x\" belongs to tablespace 7, which the manifest does not list");
}

#[test]
fn corrupt_file_is_removed() {
    let tmp = ok(tempfile::tempdir());
    let tar = archive(&[raw(tar::EntryType::Regular, b"f", b"y", None)]);
    let manifest = Manifest::new(vec![listed("f", EntryKind::File, b"x")], vec![]);
    assert!(extract_tar(tar.as_slice(), tmp.path(), &manifest, &BTreeMap::new()).is_err());
    assert!(!tmp.path().join("f").exists());
}
