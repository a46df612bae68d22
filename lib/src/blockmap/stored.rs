//! `WVBLKMAP4` (`WVBLKMAP2` with SHA-256 digests, before BLAKE3): the block map of an
//! incremental backup, holding only what that backup stored (`docs/FORMAT.md`, section 9.1): all the digests of a file stored whole, the length and the
//! digests of exactly the stored blocks of a file with a `deltas` entry, nothing for an
//! `unchanged` file. What the backup restores is the chain's maps merged
//! ([`super::effective`]).
//!
//! Binary form: `WVBLKMAP4` NUL, the file count (u64 big-endian), then per file in path order:
//! the path length (u32 BE), the path (UTF-8), the file length (u64 BE), the run count (u32 BE),
//! the runs (`first`, `count`: u64 BE each; ascending, disjoint, non-empty, below the file's
//! block count), then one 16-byte digest per block of the runs, in block order.

use std::collections::BTreeMap;

use super::{BlockMap, Digest, DigestAlgo, FileBlocks, Reader, block_count, run_blocks};
use crate::manifest::{EntryKind, Manifest};
use crate::{Error, Result};

/// First bytes of the binary form.
const MAGIC: &[u8] = b"WVBLKMAP4\0";
/// The same form with SHA-256 digests (written before BLAKE3; read only).
const MAGIC_SHA256: &[u8] = b"WVBLKMAP2\0";

/// The stored blocks of one file: its length, and the digests of the blocks of `runs`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredFile {
    pub length: u64,
    /// `[first, count]` runs, ascending and disjoint (`[[0, n]]` for a file stored whole).
    pub runs: Vec<[u64; 2]>,
    /// One digest per block of `runs`, in block order.
    pub digests: Vec<Digest>,
}

/// The block map of an incremental backup: its stored files by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredMap {
    pub files: BTreeMap<String, StoredFile>,
    pub algo: DigestAlgo,
}

/// A block map as read from the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyMap {
    /// `WVBLKMAP1`: every file as the backup restores it (full backups, and incremental ones
    /// written before `WVBLKMAP2`).
    Complete(BlockMap),
    /// `WVBLKMAP2`: only what an incremental backup stored.
    Stored(StoredMap),
}

impl AnyMap {
    /// Parse either binary form (by its magic).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object` and what is wrong.
    pub fn decode(bytes: &[u8], object: &str) -> Result<AnyMap> {
        if bytes.starts_with(MAGIC) || bytes.starts_with(MAGIC_SHA256) {
            StoredMap::decode(bytes, object).map(AnyMap::Stored)
        } else {
            BlockMap::decode(bytes, object).map(AnyMap::Complete)
        }
    }
}

impl StoredMap {
    /// What `manifest` (an incremental backup's) stores: each file stored whole with its
    /// digests from `whole`, each file with a `deltas` entry with its stored blocks from
    /// `deltas`.
    ///
    /// # Errors
    /// [`Error::Internal`] when a stored file's digests are missing or are not of its blocks.
    pub fn of_backup(
        mut whole: BlockMap,
        mut deltas: BTreeMap<String, StoredFile>,
        manifest: &Manifest,
    ) -> Result<StoredMap> {
        let mut files = BTreeMap::new();
        for e in manifest.files.iter().filter(|e| e.kind == EntryKind::File) {
            let wrong = || Error::Internal(format!("block map: no digests for the stored blocks of {}", e.path));
            let file = match manifest.deltas.get(&e.path) {
                None => whole
                    .files
                    .remove(&e.path)
                    .map(|f| StoredFile { length: f.length, runs: whole_runs(f.length), digests: f.digests })
                    .filter(|f| f.runs.iter().map(|r| r[1]).sum::<u64>() == f.digests.len() as u64),
                Some(d) => deltas.remove(&e.path).filter(|f| f.runs == d.blocks && f.length == d.length),
            };
            files.insert(e.path.clone(), file.ok_or_else(wrong)?);
        }
        Ok(StoredMap { files, algo: whole.algo })
    }

    /// The binary form (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let blocks: usize = self.files.values().map(|f| f.digests.len()).sum();
        let mut out = Vec::with_capacity(32 + self.files.len() * 80 + blocks * 16);
        out.extend_from_slice(match self.algo {
            DigestAlgo::Blake3 => MAGIC,
            DigestAlgo::Sha256 => MAGIC_SHA256,
        });
        out.extend_from_slice(&(self.files.len() as u64).to_be_bytes());
        for (path, f) in &self.files {
            out.extend_from_slice(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&f.length.to_be_bytes());
            out.extend_from_slice(&u32::try_from(f.runs.len()).unwrap_or(u32::MAX).to_be_bytes());
            for [first, count] in &f.runs {
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            for d in &f.digests {
                out.extend_from_slice(d);
            }
        }
        out
    }

    /// Parse the binary form, checking every path, run and digest count.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object` and what is wrong.
    pub fn decode(bytes: &[u8], object: &str) -> Result<StoredMap> {
        let bad = |why: String| Error::corrupt(object, format!("block map: {why}"));
        let mut r = Reader { bytes, at: 0 };
        let (algo, count) = r.header([MAGIC, MAGIC_SHA256], "an incremental block map").map_err(bad)?;
        let mut files = BTreeMap::new();
        for i in 0..count {
            let path = r.path(i).map_err(bad)?;
            let file = decode_file(&mut r).map_err(|why| bad(format!("{path}: {why}")))?;
            if files.last_key_value().is_some_and(|(last, _): (&String, _)| last.as_str() >= path) {
                return Err(bad(format!("{path} is out of order (or appears twice)")));
            }
            files.insert(path.to_string(), file);
        }
        if r.at != bytes.len() {
            return Err(bad(format!("{} bytes after the last file", bytes.len() - r.at)));
        }
        Ok(StoredMap { files, algo })
    }
}

impl StoredFile {
    /// The blocks `runs` of a file whose digests are `all`; `None` when a run is past its end.
    pub fn pick(all: &FileBlocks, runs: Vec<[u64; 2]>) -> Option<StoredFile> {
        let at = |b: u64| usize::try_from(b).ok().and_then(|i| all.digests.get(i)).copied();
        let digests = run_blocks(&runs).map(at).collect::<Option<Vec<_>>>()?;
        Some(StoredFile { length: all.length, runs, digests })
    }
}

/// One file after its path: length, runs, digests.
fn decode_file(r: &mut Reader<'_>) -> std::result::Result<StoredFile, String> {
    let length = r.u64().ok_or("truncated length")?;
    let runs_len = r.u32().ok_or("truncated run count")?;
    let blocks = block_count(length);
    let (mut runs, mut total, mut next) = (Vec::new(), 0u64, 0u64);
    for _ in 0..runs_len {
        let (first, count) = (r.u64().ok_or("truncated run")?, r.u64().ok_or("truncated run")?);
        let end = first.checked_add(count).filter(|&e| count > 0 && first >= next && e <= blocks);
        let Some(end) = end else {
            return Err(format!("run [{first}, {count}] is empty, out of order or past its {blocks} blocks"));
        };
        runs.push([first, count]);
        total += count;
        next = end;
    }
    let n = usize::try_from(total).map_err(|_| format!("{total} blocks"))?;
    let raw = r.take(n.checked_mul(16).ok_or("too many blocks")?).ok_or("truncated digests")?;
    let digests = raw.chunks_exact(16).map(|c| c.try_into().unwrap_or([0; 16])).collect();
    Ok(StoredFile { length, runs, digests })
}

/// The runs of a whole file of `length` bytes.
pub fn whole_runs(length: u64) -> Vec<[u64; 2]> {
    match block_count(length) {
        0 => Vec::new(),
        n => vec![[0, n]],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockmap::FileBlocks;
    use crate::manifest::{Delta, ManifestEntry, ManifestReference, Unchanged};

    fn file(path: &str, size: u64) -> ManifestEntry {
        let digest = crate::manifest::FileDigest::Blake3("ab".repeat(32));
        ManifestEntry {
            path: path.into(),
            size,
            digest,
            mode: 0o600,
            part: 0,
            kind: EntryKind::File,
            link_target: None,
        }
    }

    #[test]
    fn of_backup_keeps_only_what_was_stored_and_round_trips() {
        const B: u64 = 8192;
        let mut now = BlockMap::default();
        let fb = |length, n: u8| FileBlocks { length, digests: (0..n).map(|i| [i; 16]).collect() };
        now.files.insert("base/1/delta".into(), fb(4 * B, 4));
        now.files.insert("base/1/same".into(), fb(2 * B, 2));
        now.files.insert("base/1/whole".into(), fb(B + 1, 2));
        now.files.insert("empty".into(), fb(0, 0));
        let mut m =
            Manifest::new(vec![file("base/1/delta", 2 * B), file("base/1/whole", B + 1), file("empty", 0)], vec![]);
        m.reference = Some(ManifestReference { name: "r".into(), metadata_sha256: "cd".repeat(32) });
        m.deltas.insert("base/1/delta".into(), Delta { length: 4 * B, blocks: vec![[1, 1], [3, 1]] });
        m.unchanged.push(Unchanged { path: "base/1/same".into(), length: 2 * B, mode: 0o600 });
        let delta = StoredFile::pick(&now.files["base/1/delta"], vec![[1, 1], [3, 1]]);
        let deltas = BTreeMap::from([("base/1/delta".to_string(), delta.unwrap_or_default())]);
        let map = StoredMap::of_backup(now.clone(), deltas.clone(), &m).map_err(|e| e.to_string());
        let Ok(map) = map else { panic!("{map:?}") };
        assert_eq!(map.files.len(), 3, "the unchanged file is not in it");
        assert_eq!(map.files["base/1/delta"].digests, vec![[1; 16], [3; 16]]);
        assert_eq!(map.files["base/1/whole"].runs, vec![[0, 2]]);
        assert!(map.files["empty"].runs.is_empty());
        let bytes = map.encode();
        assert_eq!(AnyMap::decode(&bytes, "o").ok(), Some(AnyMap::Stored(map.clone())));
        // 10 + 8, then per file 4 + path + 8 + 4 + 16 per run + 16 per digest.
        assert_eq!(bytes.len(), 18 + (4 + 12 + 8 + 4 + 32 + 32) + (4 + 12 + 8 + 4 + 16 + 32) + (4 + 5 + 8 + 4));
        assert!(StoredMap::decode(&bytes[..bytes.len() - 1], "o").is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(StoredMap::decode(&extra, "o").is_err());
        assert!(StoredMap::of_backup(now.clone(), BTreeMap::new(), &m).is_err(), "a delta's digests missing");
        now.files.remove("base/1/whole");
        assert!(StoredMap::of_backup(now, deltas, &m).is_err(), "a whole file's digests missing");
    }

    #[test]
    fn the_worked_example_of_format_md() {
        let delta = StoredFile { length: 245_760, runs: vec![[2, 1], [27, 3]], digests: vec![[1; 16]; 4] };
        let control = StoredFile { length: 8192, runs: whole_runs(8192), digests: vec![[2; 16]] };
        let files = BTreeMap::from([("base/5/16384".to_string(), delta), ("global/pg_control".to_string(), control)]);
        let bytes = StoredMap { files, algo: DigestAlgo::Blake3 }.encode();
        assert_eq!(bytes.len(), 207);
        let head = "57 56 42 4c 4b 4d 41 50 34 00 00 00 00 00 00 00 00 02 00 00 00 0c";
        assert_eq!(hex::encode(&bytes[..22]), head.replace(' ', ""));
        let length = "00 00 00 00 00 03 c0 00 00 00 00 02 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 01";
        assert_eq!(hex::encode(&bytes[34..62]), length.replace(' ', ""));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::wal::follow::model_cases()))]

        /// Damaged maps of either form are refused or read, never a panic; a complete map read
        /// as a stream is exactly what decoding it whole gives (or both refuse it).
        #[test]
        fn damaged_maps_never_panic_and_streaming_agrees(
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let delta = StoredFile { length: 245_760, runs: vec![[2, 1], [27, 3]], digests: vec![[1; 16]; 4] };
            let files = BTreeMap::from([("base/5/16384".to_string(), delta)]);
            let mut complete = BlockMap::default();
            complete.files.insert("base/5/1".into(), FileBlocks { length: 8193, digests: vec![[5; 16], [6; 16]] });
            complete.files.insert("global/pg_control".into(), FileBlocks { length: 8192, digests: vec![[7; 16]] });
            for mut bytes in [StoredMap { files, algo: DigestAlgo::Blake3 }.encode(), complete.encode()] {
                let i = at.index(bytes.len());
                bytes[i] ^= byte.max(1);
                bytes.truncate(bytes.len() - cut.index(3));
                let whole = AnyMap::decode(&bytes, "o");
                let mut streamed = BlockMap::default();
                let read = (|| -> Result<String> {
                    let mut r = crate::blockmap::stream::CompleteReader::new(bytes.as_slice(), "o")?;
                    streamed.algo = r.algo();
                    while let Some((p, f)) = r.next_file()? {
                        streamed.files.insert(p, f);
                    }
                    r.finish()
                })();
                if let Ok(AnyMap::Complete(m)) = &whole {
                    proptest::prop_assert!(read.is_ok());
                    proptest::prop_assert_eq!(m, &streamed);
                } else {
                    proptest::prop_assert!(read.is_err());
                }
            }
        }
    }

    #[test]
    fn decode_refuses_bad_runs() {
        let one = |runs: Vec<[u64; 2]>, length: u64| {
            let n = runs.iter().map(|r| r[1] as usize).sum::<usize>().min(100);
            let f = StoredFile { length, runs, digests: vec![[7; 16]; n] };
            let map = StoredMap { files: BTreeMap::from([("base/1/1".to_string(), f)]), algo: DigestAlgo::Blake3 };
            StoredMap::decode(&map.encode(), "obj").map_err(|e| e.to_string())
        };
        assert!(one(vec![[0, 1], [2, 2]], 4 * 8192).is_ok());
        for (runs, length) in [(vec![[0, 2], [1, 1]], 4 * 8192), (vec![[3, 2]], 4 * 8192), (vec![[0, 0]], 8192)] {
            let e = one(runs.clone(), length);
            assert!(e.as_ref().is_err_and(|e| e.contains("obj") && e.contains("base/1/1")), "{runs:?}: {e:?}");
        }
        let e = one(vec![[u64::MAX, 2]], 8192);
        assert!(e.is_err());
    }
}
