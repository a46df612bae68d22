//! The effective map of generated chains equals the complete map of the final files; links
//! that do not fit their chain are refused, naming the file and the backup.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;
use crate::blockmap::stored::StoredMap;
use crate::blockmap::stream::{CompleteReader, DigestSpool, ReferenceBlocks, spool_chain};
use crate::blockmap::{BLOCK, Digest, of_bytes};
use crate::manifest::{Delta, EntryKind, ManifestEntry, ManifestReference, Unchanged};

/// A file as block values: block `b` is `blocks[b]` repeated over `block_len(length, b)`.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    blocks: Vec<u8>,
    length: u64,
}

impl Model {
    fn new(length: u64, v: u8) -> Model {
        Model { blocks: vec![v; block_count(length) as usize], length }
    }
    fn resize(&mut self, length: u64, v: u8) {
        self.blocks.resize(block_count(length) as usize, v);
        self.length = length;
    }
    fn bytes(&self) -> Vec<u8> {
        let lens = (0..self.blocks.len()).map(|b| block_len(self.length, b as u64));
        self.blocks.iter().zip(lens).flat_map(|(&v, len)| std::iter::repeat_n(v, len)).collect()
    }
}

/// Digests by (value, length): the model hashes each distinct block once.
#[derive(Default)]
struct Digests(HashMap<(u8, usize), Digest>);

impl Digests {
    fn of(&mut self, m: &Model) -> FileBlocks {
        let digests = (0..m.blocks.len())
            .map(|b| {
                let len = block_len(m.length, b as u64);
                *self.0.entry((m.blocks[b], len)).or_insert_with(|| crate::blockmap::digest(&vec![m.blocks[b]; len]))
            })
            .collect();
        FileBlocks { length: m.length, digests }
    }
    fn complete(&mut self, files: &BTreeMap<String, Model>) -> BlockMap {
        BlockMap { files: files.iter().map(|(p, m)| (p.clone(), self.of(m))).collect(), ..BlockMap::default() }
    }
}

fn entry(path: &str, size: u64) -> ManifestEntry {
    let digest = crate::manifest::FileDigest::Blake3("ab".repeat(32));
    ManifestEntry { path: path.into(), size, digest, mode: 0o600, part: 0, kind: EntryKind::File, link_target: None }
}

/// The manifest an incremental writer makes of `now` against `before` (the reference's
/// files): a block is stored when it is new, past the old end or its digest differs, or when
/// `extra` names it (WAL summaries may name blocks that did not change).
fn incremental(
    before: &BTreeMap<String, Model>,
    now: &BTreeMap<String, Model>,
    extra: &BTreeSet<(String, u64)>,
    d: &mut Digests,
) -> Manifest {
    let (mut files, mut deltas, mut unchanged) = (Vec::new(), BTreeMap::new(), Vec::new());
    for (path, m) in now {
        let new = d.of(m);
        let Some(old) = before.get(path).map(|o| d.of(o)) else {
            files.push(entry(path, m.length));
            continue;
        };
        let changed: Vec<u64> = (0..new.digests.len() as u64)
            .filter(|&b| {
                old.digests.get(b as usize) != Some(&new.digests[b as usize]) || extra.contains(&(path.clone(), b))
            })
            .collect();
        if changed.is_empty() && old.length == new.length {
            unchanged.push(Unchanged { path: path.clone(), length: m.length, mode: 0o600 });
        } else if changed.len() == new.digests.len() {
            files.push(entry(path, m.length));
        } else {
            let size = changed.iter().map(|&b| block_len(m.length, b) as u64).sum();
            files.push(entry(path, size));
            deltas.insert(path.clone(), Delta { length: m.length, blocks: crate::blockmap::to_runs(&changed) });
        }
    }
    let mut manifest = Manifest::new(files, vec![]);
    manifest.reference = Some(ManifestReference { name: "r".into(), metadata_sha256: "cd".repeat(32) });
    manifest.deltas = deltas;
    manifest.unchanged = unchanged;
    manifest
}

/// One change to the files: (kind, file index, length or block, value).
type Op = (u8, usize, u64, u8);

fn apply(files: &mut BTreeMap<String, Model>, extra: &mut BTreeSet<(String, u64)>, (kind, i, n, v): Op, k: usize) {
    let Some(path) = files.keys().nth(i % files.len().max(1)).cloned() else {
        files.insert(format!("base/1/{k}"), Model::new(n, v));
        return;
    };
    let m = files.get_mut(&path).expect("picked");
    let blocks = m.blocks.len() as u64;
    match kind {
        0 if blocks > 0 => m.blocks[(n % blocks) as usize] = v,
        1 => m.resize(n % (m.length + 1), v),
        2 => m.resize(m.length + 1 + n % (3 * BLOCK as u64), v),
        3 => {
            files.remove(&path);
        }
        4 => {
            files.insert(format!("base/2/{k}"), Model::new(n, v));
        }
        5 if blocks > 0 => {
            extra.insert((path, n % blocks));
        }
        6 if blocks > 0 => m.resize((blocks - 1) * BLOCK as u64 + 1 + n % BLOCK as u64, v),
        _ => {}
    }
}

fn link(map: AnyMap, manifest: &Manifest) -> LinkMap<'_> {
    LinkMap { map, manifest, name: "b", object: "map".into() }
}

fn lengths() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4 * BLOCK as u64, Just(0), (1u64..5).prop_map(|b| b * BLOCK as u64)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::wal::follow::model_cases()))]

    /// Backups of randomly changed files (blocks changed, truncated, extended, short last
    /// blocks reshaped, files dropped and created, blocks named that did not change), some
    /// links with a complete map: the merged map of the chain is the complete map of the
    /// files at the last backup.
    #[test]
    fn merged_chain_equals_the_complete_map(
        initial in prop::collection::vec((lengths(), 0u8..4), 0..5),
        steps in prop::collection::vec(
            (prop::collection::vec((0u8..8, 0usize..8, lengths(), 0u8..4), 0..6), 0u8..5),
            1..6,
        ),
    ) {
        let mut d = Digests::default();
        let mut files: BTreeMap<String, Model> =
            initial.iter().enumerate().map(|(i, &(n, v))| (format!("base/1/i{i}"), Model::new(n, v))).collect();
        let full = Manifest::new(files.iter().map(|(p, m)| entry(p, m.length)).collect(), vec![]);
        let mut chain = vec![(full, AnyMap::Complete(d.complete(&files)))];
        for (s, (ops, legacy)) in steps.into_iter().enumerate() {
            let before = files.clone();
            let mut extra = BTreeSet::new();
            for (j, op) in ops.into_iter().enumerate() {
                apply(&mut files, &mut extra, op, s * 10 + j);
            }
            let manifest = incremental(&before, &files, &extra, &mut d);
            let now = d.complete(&files);
            let map = if legacy == 0 {
                AnyMap::Complete(now)
            } else {
                let deltas = manifest
                    .deltas
                    .iter()
                    .map(|(p, delta)| (p.clone(), StoredFile::pick(&now.files[p], delta.blocks.clone()).unwrap_or_default()))
                    .collect();
                let stored = StoredMap::of_backup(now, deltas, &manifest).map_err(|e| TestCaseError::fail(e.to_string()))?;
                AnyMap::decode(&stored.encode(), "map").map_err(|e| TestCaseError::fail(e.to_string()))?
            };
            chain.push((manifest, map));
        }
        let links = chain.iter().map(|(m, map)| link(map.clone(), m)).collect();
        let merged = merge_chain(links).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&merged, &d.complete(&files));
        // The same through a spool, the newest complete map streamed.
        let spooled = spooled(&chain).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(spooled.len(), merged.files.len());
        for (path, f) in &merged.files {
            let got = spooled.file(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.as_deref(), Some(f));
        }
        if let Some((path, m)) = files.iter().next() {
            prop_assert_eq!(&of_bytes(&m.bytes()), &d.of(m), "{}: the model's digests are the bytes'", path);
        }
    }
}

/// The effective map of `chain` as base-backup keeps it: in a spool, the newest complete map
/// read as a stream.
fn spooled(chain: &[(Manifest, AnyMap)]) -> Result<DigestSpool> {
    let start = chain.iter().rposition(|(_, m)| matches!(m, AnyMap::Complete(_))).unwrap_or(0);
    let Some((manifest, AnyMap::Complete(base))) = chain.get(start) else {
        return Err(Error::Internal("no base".into()));
    };
    let bytes = base.encode();
    let want = BlockMap::sha256_hex(&bytes);
    let first = link(AnyMap::Complete(BlockMap::default()), manifest);
    let links = std::iter::once(first).chain(chain[start + 1..].iter().map(|(m, map)| link(map.clone(), m))).collect();
    let reader = CompleteReader::new(bytes.as_slice(), "map")?;
    spool_chain(Merger::new(links), &std::env::temp_dir(), Some((reader, &want)))
}

#[test]
fn kept_blocks_drop_a_last_block_that_changed_length() {
    const B: u64 = BLOCK as u64;
    assert_eq!(kept_blocks(3 * B, 5 * B), 3);
    assert_eq!(kept_blocks(3 * B, 2 * B + 1), 2, "block 2 is now short");
    assert_eq!(kept_blocks(2 * B + 1, 2 * B + 1), 3);
    assert_eq!(kept_blocks(2 * B + 1, 4 * B), 2, "the short block 2 is now whole");
    assert_eq!(kept_blocks(2 * B + 1, 2 * B), 2);
    assert_eq!(kept_blocks(0, 2 * B), 0);
}

#[test]
fn links_that_do_not_fit_are_refused_naming_file_and_backup() {
    const B: u64 = BLOCK as u64;
    let mut d = Digests::default();
    let files = BTreeMap::from([("base/1/a".to_string(), Model::new(2 * B, 1))]);
    let full = Manifest::new(vec![entry("base/1/a", 2 * B)], vec![]);
    let complete = AnyMap::Complete(d.complete(&files));
    let base = || complete.clone();
    let stored = |runs: Vec<[u64; 2]>, length| {
        let f = StoredFile { length, digests: vec![[9; 16]; run_blocks(&runs).count()], runs };
        AnyMap::Stored(StoredMap { files: BTreeMap::from([("base/1/a".to_string(), f)]), ..StoredMap::default() })
    };
    let try_with = |m: Manifest, map: AnyMap, base: AnyMap| {
        let links = vec![link(base, &full), LinkMap { map, manifest: &m, name: "i1", object: "i1/blockmap".into() }];
        merge_chain(links).map_err(|e| e.to_string())
    };
    // Extended by a block the map does not hold.
    let mut m = Manifest::new(vec![entry("base/1/a", B)], vec![]);
    m.deltas.insert("base/1/a".into(), Delta { length: 3 * B, blocks: vec![[0, 1]] });
    let e = try_with(m.clone(), stored(vec![[0, 1]], 3 * B), base());
    assert!(
        e.as_ref().is_err_and(|e| e.contains("i1/blockmap") && e.contains("base/1/a") && e.contains("1 blocks")),
        "{e:?}"
    );
    let mut whole = m.clone();
    whole.deltas.insert("base/1/a".into(), Delta { length: 3 * B, blocks: vec![[0, 1], [2, 1]] });
    assert!(try_with(whole, stored(vec![[0, 1], [2, 1]], 3 * B), base()).is_ok());
    // Another length than the manifest's.
    let e = try_with(m, stored(vec![[0, 1]], 4 * B), base());
    assert!(e.as_ref().is_err_and(|e| e.contains("backup i1") && e.contains("in the manifest")), "{e:?}");
    // Unchanged at another length, and a stored file the manifest does not restore.
    let mut m = Manifest::new(vec![], vec![]);
    m.unchanged.push(Unchanged { path: "base/1/a".into(), length: B, mode: 0o600 });
    let e = try_with(m.clone(), AnyMap::Stored(StoredMap::default()), base());
    assert!(e.as_ref().is_err_and(|e| e.contains("is unchanged but")), "{e:?}");
    m.unchanged[0].length = 2 * B;
    assert!(try_with(m.clone(), AnyMap::Stored(StoredMap::default()), base()).is_ok());
    let e = try_with(m, stored(vec![[0, 1]], 2 * B), base());
    assert!(e.as_ref().is_err_and(|e| e.contains("differ from the blocks its manifest stores")), "{e:?}");
    let e = try_with(Manifest::new(vec![], vec![]), stored(vec![[0, 1]], 2 * B), base());
    assert!(e.as_ref().is_err_and(|e| e.contains("base/1/a is in it but its manifest does not restore it")), "{e:?}");
    // A complete map without a restored file.
    let m = Manifest::new(vec![entry("base/1/b", 5)], vec![]);
    let e = try_with(m, AnyMap::Complete(BlockMap::default()), base());
    assert!(e.as_ref().is_err_and(|e| e.contains("base/1/b is not in it")), "{e:?}");
}
