//! An incremental tar part against a full one, and the pair restored by block plan: the
//! restored tree is byte for byte the changed one (changed, extended, truncated, new, dropped
//! and unchanged files; timestamps deliberately left the same).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use super::*;
use crate::blockmap::{AnyMap, BLOCK, LinkMap, StoredMap, merge_chain};
use crate::manifest::{Manifest, ManifestReference};
use crate::pg::datadir;

#[track_caller]
fn ok<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    ok(fs::create_dir_all(ok(p.parent().ok_or("parent"))));
    ok(fs::write(&p, data));
}

fn set_mtime(p: &Path, secs: i64) {
    let status = std::process::Command::new("touch").arg("-d").arg(format!("@{secs}")).arg(p).status();
    assert!(status.is_ok_and(|s| s.success()));
}

fn part(data: &Path, reference: Option<&crate::blockmap::BlockMap>, spool: &Path) -> (Vec<u8>, IncrementalPart) {
    let files = ok(datadir::walk(data, None));
    match reference {
        None => {
            let (tar, entries, blocks) = ok(write_tar_blocks(Vec::new(), &files));
            (tar, IncrementalPart { entries, blocks, ..Default::default() })
        }
        Some(r) => ok(write_tar_incremental(Vec::new(), &files, r, None, spool)),
    }
}

#[test]
fn incremental_part_restores_exactly_the_changed_tree() {
    let tmp = ok(tempfile::tempdir());
    let data = tmp.path().join("data");
    write(&data, "PG_VERSION", b"15\n");
    write(&data, "base/1/changed", &bytes(5 * BLOCK, 1));
    write(&data, "base/1/extended_then_truncated", &bytes(4 * BLOCK, 2));
    write(&data, "base/1/same", &bytes(3 * BLOCK + 100, 3));
    write(&data, "base/1/dropped", &bytes(BLOCK, 4));
    write(&data, "global/short", &bytes(100, 5));
    let (full_tar, full) = part(&data, None, tmp.path());

    let mut changed = bytes(5 * BLOCK, 1);
    changed[2 * BLOCK + 5] ^= 0xff;
    write(&data, "base/1/changed", &changed);
    let mut ext = bytes(4 * BLOCK, 2);
    ext[..BLOCK].copy_from_slice(&bytes(BLOCK, 9));
    ext.truncate(2 * BLOCK + 10);
    write(&data, "base/1/extended_then_truncated", &ext);
    ok(fs::remove_file(data.join("base/1/dropped")));
    write(&data, "base/2/new", &bytes(2 * BLOCK, 6));
    write(&data, "global/short", &bytes(101, 5));
    // mtime lies: the changed file gets its old timestamp back.
    set_mtime(&data.join("base/1/changed"), 1_000_000_000);
    let (incr_tar, incr) = part(&data, Some(&full.blocks), tmp.path());

    assert_eq!(incr.unchanged.iter().map(|u| u.path.as_str()).collect::<Vec<_>>(), ["PG_VERSION", "base/1/same"]);
    assert_eq!(incr.deltas["base/1/changed"].blocks, vec![[2, 1]]);
    assert_eq!(incr.deltas["base/1/extended_then_truncated"].blocks, vec![[0, 1], [2, 1]]);
    assert!(!incr.deltas.contains_key("base/2/new"), "a new file is stored whole");

    let full_m = Manifest::new(full.entries, vec![]);
    let mut incr_m = Manifest::new(incr.entries, vec![]);
    incr_m.reference = Some(ManifestReference { name: "full".into(), metadata_sha256: "ab".repeat(32) });
    incr_m.deltas = incr.deltas;
    incr_m.unchanged = incr.unchanged;
    ok(incr_m.validate());
    let plan = ok(crate::manifest::chain::plan(&[&full_m, &incr_m], &["full", "incr"]));
    // The incremental's block map holds what it stored; the target's is merged from the chain.
    let stored = ok(StoredMap::of_backup(incr.blocks, incr.stored, &incr_m));
    assert_eq!(
        stored.files.keys().collect::<Vec<_>>(),
        ["base/1/changed", "base/1/extended_then_truncated", "base/2/new", "global/short"]
    );
    assert_eq!(stored.files["base/1/changed"].digests.len(), 1);
    let link = |map, manifest, name| LinkMap { map, manifest, name, object: format!("{name}/blockmap") };
    let chain =
        vec![link(AnyMap::Complete(full.blocks), &full_m, "full"), link(AnyMap::Stored(stored), &incr_m, "incr")];
    let target = ok(merge_chain(chain));

    let dest = tmp.path().join("restore");
    ok(fs::create_dir(&dest));
    let places = ok(lay_out(&dest, &incr_m, &BTreeMap::new()));
    let empty = HashMap::new();
    // Newest first, oldest first: the order does not matter.
    ok(apply_tar(incr_tar.as_slice(), plan[1].get(&0).unwrap_or(&empty), &places, &target));
    ok(apply_tar(full_tar.as_slice(), plan[0].get(&0).unwrap_or(&empty), &places, &target));
    for f in ok(datadir::walk(&data, None)).iter().filter(|f| matches!(f.kind, datadir::FileKind::File)) {
        let restored = ok(fs::read(dest.join(&f.rel_path)));
        assert_eq!(restored, ok(fs::read(&f.abs_path)), "{}", f.rel_path);
    }
    assert!(!dest.join("base/1/dropped").exists());

    // A block that differs from the target's block map is refused.
    let mut lying = target.clone();
    if let Some(f) = lying.files.get_mut("base/1/same") {
        f.digests[0] = [0; 16];
    }
    let dest2 = tmp.path().join("restore2");
    ok(fs::create_dir(&dest2));
    let places2 = ok(lay_out(&dest2, &incr_m, &BTreeMap::new()));
    let err = apply_tar(full_tar.as_slice(), plan[0].get(&0).unwrap_or(&empty), &places2, &lying);
    assert!(err.is_err_and(|e| e.to_string().contains("block 0 differs")));

    // A part that lacks a planned entry is refused, naming it.
    let empty = ok(tar::Builder::new(Vec::new()).into_inner());
    let err = apply_tar(empty.as_slice(), plan[1].get(&0).unwrap_or(&empty_plan()), &places2, &target);
    assert!(err.is_err_and(|e| e.to_string().contains("is in the manifest but not in the part")));
}

fn empty_plan() -> HashMap<String, crate::manifest::chain::EntryPlan> {
    HashMap::new()
}
