use std::collections::BTreeMap;
use std::path::Path;

use ring::digest::SHA256;

use super::*;
use crate::blockmap::{BLOCK, DigestAlgo, FileBlocks, of_bytes};
use crate::manifest::{Delta, FileDigest, ManifestEntry, ManifestReference, Unchanged};

fn sha(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, data))
}

fn file(path: &str, data: &[u8], part: u32) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        size: data.len() as u64,
        digest: FileDigest::Sha256(sha(data)),
        mode: 0o600,
        part,
        kind: EntryKind::File,
        link_target: None,
    }
}

fn dir(path: &str, part: u32) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        size: 0,
        digest: FileDigest::none(),
        mode: 0o700,
        part,
        kind: EntryKind::Dir,
        link_target: None,
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap_or(root)).unwrap_or_else(|e| panic!("{e}"));
    fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn keeps_matching_files_and_removes_everything_else() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path();
    let manifest = Manifest::new(
        vec![
            dir("base", 0),
            dir("base/5", 0),
            file("base/5/1000", b"same in part 0", 0),
            file("base/5/1001", b"also the same", 0),
            dir("pg_wal", 1),
            file("base/5/2000", b"changed content", 1),
            file("base/5/2001", b"truncated content", 1),
            file("base/5/2002", b"removed", 1),
            file("backup_label", b"START WAL LOCATION", 2),
        ],
        vec![],
    );
    write(root, "base/5/1000", b"same in part 0");
    write(root, "base/5/1001", b"also the same");
    write(root, "base/5/2000", b"changed CONTENT");
    write(root, "base/5/2001", b"trunc");
    write(root, "base/5/9999", b"extra file");
    write(root, "postmaster.pid", b"4242\n");
    write(root, "pg_wal/000000010000000000000009", &[7u8; 64]);
    write(root, "backup_label", b"an older label");
    write(root, "extra_dir/inner", b"12345");

    let plan = clean(root, &manifest, &BTreeMap::new(), 2).unwrap_or_else(|e| panic!("{e}"));
    let mut keep: Vec<_> = plan.keep.iter().cloned().collect();
    keep.sort();
    assert_eq!(keep, ["base/5/1000", "base/5/1001"]);
    assert_eq!(plan.report.kept_files, 2);
    assert_eq!(plan.report.kept_bytes, 27);
    // postmaster.pid, base/5/9999, the WAL segment, extra_dir/inner.
    assert_eq!(plan.report.removed_files, 4);
    assert_eq!(plan.report.removed_bytes, 5 + 10 + 64 + 5);
    assert_eq!(plan.skip_parts, HashSet::from([0]));
    for gone in ["postmaster.pid", "base/5/9999", "base/5/2000", "base/5/2001", "backup_label", "extra_dir"] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }
    assert!(root.join("pg_wal").is_dir());
    assert_eq!(fs::read_dir(root.join("pg_wal")).map(|d| d.count()).unwrap_or(99), 0);
}

#[test]
fn a_link_or_a_file_where_the_backup_has_a_directory_goes() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path().join("pgdata");
    let elsewhere = tmp.path().join("elsewhere");
    write(&elsewhere, "keepme", b"not ours");
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&elsewhere, root.join("pg_wal")).unwrap_or_else(|e| panic!("{e}"));
    write(&root, "base", b"a file, not a directory");
    let manifest = Manifest::new(vec![dir("pg_wal", 0), dir("base", 0)], vec![]);
    let plan = clean(&root, &manifest, &BTreeMap::new(), 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.report.removed_files, 2);
    assert!(!root.join("pg_wal").exists() && !root.join("base").exists());
    // Never through the link.
    assert!(elsewhere.join("keepme").is_file());
    assert!(plan.skip_parts.is_empty());
}

#[test]
fn another_cluster_or_an_unknown_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path();
    let check = |dir: &Path| check_identifier(dir, "b1", crate::wal::sysid::SystemId(42));
    assert!(check(&root.join("absent")).is_ok());
    write(root, "PG_VERSION", b"16\n");
    assert!(
        matches!(check(root).as_ref().map_err(Error::root), Err(Error::Refused(m)) if m.contains("no global/pg_control"))
    );
    write(root, PG_CONTROL, &43u64.to_ne_bytes());
    assert!(
        matches!(check(root).as_ref().map_err(Error::root), Err(Error::Refused(m)) if m.contains("system identifier 43"))
    );
    write(root, PG_CONTROL, &42u64.to_ne_bytes());
    assert!(check(root).is_ok());
    disable(root);
    assert!(!root.join(PG_CONTROL).exists());
    assert!(check(root).is_ok(), "the control file moved aside still names the cluster");
}

/// An incremental target: `base/5/1000` stored whole, `base/5/2000` as a delta (its other
/// blocks from the reference), `base/5/3000` unchanged; the effective map decides each.
#[test]
fn a_chain_target_is_decided_block_by_block() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path();
    let data = |seed: u8, len: usize| -> Vec<u8> { (0..len).map(|i| (i % 251) as u8 ^ seed).collect() };
    let (whole, delta, same, big) =
        (data(1, 3 * BLOCK), data(2, 5 * BLOCK + 100), data(3, 2 * BLOCK), data(4, 700 * BLOCK + 5));
    let mut manifest = Manifest::new(
        vec![
            dir("base", 0),
            dir("base/5", 0),
            file("base/5/1000", &whole, 0),
            file("base/5/2000", &delta[BLOCK..2 * BLOCK], 0),
            file("base/5/4000", &big, 1),
            file("base/5/5000", b"gone", 1),
        ],
        vec![],
    );
    manifest.reference = Some(ManifestReference { name: "full".into(), metadata_sha256: "cd".repeat(32) });
    manifest.deltas.insert("base/5/2000".into(), Delta { length: delta.len() as u64, blocks: vec![[1, 1]] });
    manifest.unchanged.push(Unchanged { path: "base/5/3000".into(), length: same.len() as u64, mode: 0o600 });
    let mut map = BlockMap::default();
    for (path, content) in [("base/5/1000", &whole), ("base/5/2000", &delta), ("base/5/3000", &same)] {
        map.files.insert(path.to_string(), of_bytes(content));
    }
    map.files.insert("base/5/4000".to_string(), of_bytes(&big));
    map.files.insert("base/5/5000".to_string(), of_bytes(b"gone"));

    // Kept: 1000 (whole), 3000 (unchanged, in no part of this backup). Differ: 2000 in a block
    // the reference holds, 4000 (three chunks of blocks) in its last block; 5000 truncated.
    write(root, "base/5/1000", &whole);
    let mut changed = delta.clone();
    changed[4 * BLOCK + 7] ^= 0xff;
    write(root, "base/5/2000", &changed);
    write(root, "base/5/3000", &same);
    let mut big_changed = big.clone();
    big_changed[700 * BLOCK + 2] ^= 1;
    write(root, "base/5/4000", &big_changed);
    write(root, "base/5/5000", b"go");
    write(root, "base/5/9999", b"extra");
    let plan = clean_chain(root, &manifest, &map, &BTreeMap::new(), 3).unwrap_or_else(|e| panic!("{e}"));
    let mut keep: Vec<_> = plan.keep.iter().cloned().collect();
    keep.sort();
    assert_eq!(keep, ["base/5/1000", "base/5/3000"]);
    assert_eq!(plan.report.kept_bytes, (whole.len() + same.len()) as u64);
    assert_eq!((plan.report.removed_files, plan.report.removed_bytes), (1, 5));
    for gone in ["base/5/2000", "base/5/4000", "base/5/5000", "base/5/9999"] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }

    // The same big file intact is kept; a map without a restored file is refused.
    write(root, "base/5/4000", &big);
    let again = clean_chain(root, &manifest, &map, &BTreeMap::new(), 2).unwrap_or_else(|e| panic!("{e}"));
    assert!(again.keep.contains("base/5/4000") && root.join("base/5/4000").is_file());

    // An old chain's map (SHA-256 digests) is compared with SHA-256; digests of one hash read
    // as the other never match.
    let mut old = BlockMap { algo: DigestAlgo::Sha256, ..BlockMap::default() };
    for (path, content) in [("base/5/1000", &whole), ("base/5/3000", &same), ("base/5/4000", &big)] {
        let digests = content.chunks(BLOCK).map(|b| DigestAlgo::Sha256.digest(b)).collect();
        old.files.insert(path.to_string(), FileBlocks { length: content.len() as u64, digests });
    }
    for path in ["base/5/2000", "base/5/5000"] {
        old.files.insert(path.to_string(), map.files[path].clone());
    }
    let kept = clean_chain(root, &manifest, &old, &BTreeMap::new(), 2).unwrap_or_else(|e| panic!("{e}"));
    assert!(kept.keep.contains("base/5/4000") && kept.keep.contains("base/5/1000"));
    let mislabelled = BlockMap { algo: DigestAlgo::Sha256, ..map.clone() };
    let plan = clean_chain(root, &manifest, &mislabelled, &BTreeMap::new(), 2).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.keep.is_empty() && !root.join("base/5/4000").exists());
    map.files.remove("base/5/3000");
    let err = clean_chain(root, &manifest, &map, &BTreeMap::new(), 2).map(|_| ()).map_err(|e| e.to_string());
    assert!(err.is_err_and(|e| e.contains("base/5/3000") && e.contains("block map")));
}

/// Throughput of the keep/compare phase on ~1 GB, both ways (`--run-ignored only`; prints MB/s
/// of wall time and of CPU time, which a busy machine does not skew; asserts only that
/// everything is kept): one 1 GiB relation segment, then 1024 files of 1 MiB.
#[test]
#[ignore = "a measurement: cargo nextest run -E 'test(/compare_throughput/)' --run-ignored only --no-capture"]
fn compare_throughput() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path();
    let jobs = crate::ops::restore::default_jobs();
    let make = |rel: &str, len: usize| -> (ManifestEntry, FileDigest, crate::blockmap::FileBlocks) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap_or(root)).unwrap_or_else(|e| panic!("{e}"));
        let mut out = std::io::BufWriter::new(fs::File::create(&path).unwrap_or_else(|e| panic!("{e}")));
        let (mut sha, mut blocks) = (ring::digest::Context::new(&SHA256), crate::blockmap::BlockHasher::default());
        let mut b3 = crate::manifest::FileHasher::new();
        let mut chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for i in 0..len >> 20 {
            chunk[0..8].copy_from_slice(&(i as u64).to_le_bytes());
            sha.update(&chunk);
            b3.update(&chunk);
            blocks.update(&chunk);
            out.write_all(&chunk).unwrap_or_else(|e| panic!("{e}"));
        }
        out.flush().unwrap_or_else(|e| panic!("{e}"));
        let entry = ManifestEntry {
            path: rel.into(),
            size: len as u64,
            digest: b3.finish(),
            mode: 0o600,
            part: 0,
            kind: EntryKind::File,
            link_target: None,
        };
        let old = FileDigest::Sha256(hex::encode(sha.finish()));
        (entry, old, blocks.finish())
    };
    let measure = |what: &str, files: Vec<(ManifestEntry, FileDigest, crate::blockmap::FileBlocks)>| {
        let mut entries = vec![dir("base", 0), dir("base/5", 0)];
        let (mut old_entries, mut map) = (entries.clone(), BlockMap::default());
        for (e, old, b) in files {
            map.files.insert(e.path.clone(), b);
            old_entries.push(ManifestEntry { digest: old, ..e.clone() });
            entries.push(e);
        }
        let old = Manifest::new(old_entries, vec![]);
        let total: u64 = map.files.values().map(|b| b.length).sum();
        let full = Manifest::new(entries, vec![]);
        let mut incr = full.clone();
        incr.reference = Some(ManifestReference { name: "full".into(), metadata_sha256: "cd".repeat(32) });
        let ways =
            [("manifest BLAKE3", &full, None), ("manifest SHA-256 (v1)", &old, None), ("block map", &incr, Some(&map))];
        for (label, manifest, blocks) in ways {
            let (began, cpu) = (std::time::Instant::now(), cpu_seconds());
            let plan = match blocks {
                None => clean(root, manifest, &BTreeMap::new(), jobs),
                Some(m) => clean_chain(root, manifest, m, &BTreeMap::new(), jobs),
            };
            let plan = plan.unwrap_or_else(|e| panic!("{e}"));
            let (secs, cpu) = (began.elapsed().as_secs_f64(), cpu_seconds() - cpu);
            assert_eq!(plan.report.kept_bytes, total);
            let mb = total as f64 / 1e6;
            eprintln!(
                "{what}, {label}, {jobs} jobs: {:.0} MB/s wall ({secs:.2} s), {:.0} MB per CPU second",
                mb / secs,
                mb / cpu
            );
        }
    };
    measure("one 1 GiB segment", vec![make("base/5/16384", 1 << 30)]);
    fs::remove_file(root.join("base/5/16384")).unwrap_or_else(|e| panic!("{e}"));
    measure("1024 files of 1 MiB", (0..1024).map(|i| make(&format!("base/5/{}", 20000 + i), 1 << 20)).collect());
}

/// User + system CPU time of this process (all its threads) so far, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<f64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}
