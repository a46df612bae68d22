//! Block maps: the digest of every 8 KiB block of every file a backup stored
//! (`docs/FORMAT.md`, section 9).
//!
//! Every backup keeps one (`blockmap.bin` beside its manifest, its SHA-256 in the manifest) so
//! that the next incremental backup compares each file block by block with what the previous
//! backup holds, without reading that backup: a block whose digest differs, or that lies past
//! the old end of the file, is stored again. Nothing trusts timestamps. A restore checks every
//! block it writes against the target backup's map.
//!
//! A full backup's map is complete ([`BlockMap`], `WVBLKMAP1`); an incremental's holds only
//! what it stored ([`StoredMap`], `WVBLKMAP2`), and the map of what it restores is merged from
//! its chain ([`effective`]).
//!
//! Complete binary form: `WVBLKMAP3` NUL, the file count (u64 big-endian), then per file in path order:
//! the path length (u32 BE), the path (UTF-8), the file length (u64 BE) and
//! `ceil(length / 8192)` digests of 16 bytes (the first half of the BLAKE3 of the block; the
//! last block of a file may be shorter than 8192 bytes and is hashed as it is). Maps written
//! before BLAKE3 (`WVBLKMAP1`, and `WVBLKMAP2` for incrementals) hold SHA-256 halves: they are
//! read and checked as such ([`DigestAlgo`]); a chain never mixes the two (an incremental
//! backup whose reference chain has SHA-256 maps is taken full instead).

use std::collections::BTreeMap;

use ring::digest::SHA256;

use crate::manifest::check_relative_path;

mod changed;
pub mod effective;
mod stored;
pub mod stream;
use crate::{Error, Result};
pub use changed::{ChangedBlocks, RelationChanges, relation_segment};
pub use effective::{LinkMap, Merger, kept_blocks, merge_chain};
pub use stored::{AnyMap, StoredFile, StoredMap};

/// The block size: PostgreSQL's page.
pub const BLOCK: usize = 8192;
/// First bytes of the complete binary form, by digest algorithm.
const MAGIC: &[u8] = b"WVBLKMAP3\0";
const MAGIC_SHA256: &[u8] = b"WVBLKMAP1\0";

/// A block's digest: the first 16 bytes of its BLAKE3 (or SHA-256, in old maps).
pub type Digest = [u8; 16];

/// Which hash a block map's digests are halves of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestAlgo {
    /// Maps written since `WVBLKMAP3`/`WVBLKMAP4`.
    #[default]
    Blake3,
    /// Maps written before (`WVBLKMAP1`/`WVBLKMAP2`): read, never written.
    Sha256,
}

impl DigestAlgo {
    /// The digest of one block (full, or the short last block of a file).
    pub fn digest(self, block: &[u8]) -> Digest {
        let mut out = [0u8; 16];
        match self {
            DigestAlgo::Blake3 => out.copy_from_slice(&blake3::hash(block).as_bytes()[..16]),
            DigestAlgo::Sha256 => out.copy_from_slice(&ring::digest::digest(&SHA256, block).as_ref()[..16]),
        }
        out
    }

    /// The first bytes of a complete map.
    pub fn complete_magic(self) -> &'static [u8] {
        match self {
            DigestAlgo::Blake3 => MAGIC,
            DigestAlgo::Sha256 => MAGIC_SHA256,
        }
    }

    /// The algorithm of a complete map that starts with `magic`.
    pub fn of_complete(magic: &[u8]) -> Option<DigestAlgo> {
        [DigestAlgo::Blake3, DigestAlgo::Sha256].into_iter().find(|a| magic.starts_with(a.complete_magic()))
    }
}

/// The digest of one block as new maps hold it (BLAKE3).
pub fn digest(block: &[u8]) -> Digest {
    DigestAlgo::Blake3.digest(block)
}

/// How many blocks a file of `length` bytes has (the last may be short).
pub fn block_count(length: u64) -> u64 {
    length.div_ceil(BLOCK as u64)
}

/// The byte length of block `index` of a file of `length` bytes.
pub fn block_len(length: u64, index: u64) -> usize {
    let start = index.saturating_mul(BLOCK as u64);
    usize::try_from(length.saturating_sub(start).min(BLOCK as u64)).unwrap_or(BLOCK)
}

/// The digests of a file held in memory.
pub fn of_bytes(data: &[u8]) -> FileBlocks {
    let mut h = BlockHasher::default();
    h.update(data);
    h.finish()
}

/// Digests of one file as it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileBlocks {
    pub length: u64,
    pub digests: Vec<Digest>,
}

/// Digests a stream block by block (BLAKE3), whatever the sizes of the pieces it is given:
/// whole blocks are hashed where they lie, only pieces of one are gathered first.
#[derive(Clone, Default)]
pub struct BlockHasher {
    part: Vec<u8>,
    length: u64,
    digests: Vec<Digest>,
}

impl BlockHasher {
    /// Add the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if !self.part.is_empty() {
            let take = (BLOCK - self.part.len()).min(data.len());
            self.part.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.part.len() == BLOCK {
                self.close_part();
            }
        }
        let mut blocks = data.chunks_exact(BLOCK);
        self.digests.extend(blocks.by_ref().map(digest));
        self.part.extend_from_slice(blocks.remainder());
    }

    fn close_part(&mut self) {
        self.digests.push(digest(&self.part));
        self.part.clear();
    }

    /// The digests of everything added (a short last block included).
    pub fn finish(mut self) -> FileBlocks {
        if !self.part.is_empty() {
            self.close_part();
        }
        FileBlocks { length: self.length, digests: self.digests }
    }
}

/// The block digests of every file of one backup, by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockMap {
    pub files: BTreeMap<String, FileBlocks>,
    pub algo: DigestAlgo,
}

impl BlockMap {
    /// The binary form (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let blocks: usize = self.files.values().map(|f| f.digests.len()).sum();
        let mut out = Vec::with_capacity(32 + self.files.len() * 64 + blocks * 16);
        out.extend_from_slice(self.algo.complete_magic());
        out.extend_from_slice(&(self.files.len() as u64).to_be_bytes());
        for (path, f) in &self.files {
            out.extend_from_slice(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&f.length.to_be_bytes());
            for d in &f.digests {
                out.extend_from_slice(d);
            }
        }
        out
    }

    /// Parse the binary form, checking every path and digest count.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object` and what is wrong.
    pub fn decode(bytes: &[u8], object: &str) -> Result<BlockMap> {
        let bad = |why: String| Error::corrupt(object, format!("block map: {why}"));
        let mut r = Reader { bytes, at: 0 };
        let (algo, count) = r.header([MAGIC, MAGIC_SHA256], "a block map").map_err(bad)?;
        let mut files = BTreeMap::new();
        for i in 0..count {
            let path = r.path(i).map_err(bad)?;
            let length = r.u64().ok_or_else(|| bad(format!("{path}: truncated length")))?;
            let n = usize::try_from(block_count(length)).map_err(|_| bad(format!("{path}: length {length}")))?;
            let raw = r
                .take(n.checked_mul(16).ok_or_else(|| bad(format!("{path}: length {length}")))?)
                .ok_or_else(|| bad(format!("{path}: truncated digests")))?;
            let digests = raw.chunks_exact(16).map(|c| c.try_into().unwrap_or([0; 16])).collect();
            if files.last_key_value().is_some_and(|(last, _): (&String, _)| last.as_str() >= path) {
                return Err(bad(format!("{path} is out of order (or appears twice)")));
            }
            files.insert(path.to_string(), FileBlocks { length, digests });
        }
        if r.at != bytes.len() {
            return Err(bad(format!("{} bytes after the last file", bytes.len() - r.at)));
        }
        Ok(BlockMap { files, algo })
    }

    /// Lowercase hex SHA-256 of the binary form (what the manifest records).
    pub fn sha256_hex(encoded: &[u8]) -> String {
        hex::encode(ring::digest::digest(&SHA256, encoded))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
    }

    /// The magic (one of `[BLAKE3's, SHA-256's]`; `what` names the format in the refusal):
    /// the digest algorithm, and the file count.
    fn header(&mut self, magics: [&[u8]; 2], what: &str) -> std::result::Result<(DigestAlgo, u64), String> {
        let found = self.take(MAGIC.len()).ok_or("too short")?;
        let algo = match magics.iter().position(|m| *m == found) {
            Some(0) => DigestAlgo::Blake3,
            Some(_) => DigestAlgo::Sha256,
            None => return Err(format!("not {what} (magic)")),
        };
        let count = self.u64().ok_or_else(|| "truncated file count".to_string())?;
        Ok((algo, count))
    }

    /// The path of file `i`, checked as a manifest path.
    fn path(&mut self, i: u64) -> std::result::Result<&'a str, String> {
        let len = self.u32().ok_or_else(|| format!("file {i}: truncated"))? as usize;
        let raw = self.take(len).ok_or_else(|| format!("file {i}: truncated path"))?;
        let path = std::str::from_utf8(raw).map_err(|_| format!("file {i}: path is not utf-8"))?;
        check_relative_path(path).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

/// Sorted block numbers as `[start, count]` runs.
pub fn to_runs(blocks: &[u64]) -> Vec<[u64; 2]> {
    let mut runs: Vec<[u64; 2]> = Vec::new();
    for &b in blocks {
        match runs.last_mut() {
            Some(last) if last[0] + last[1] == b => last[1] += 1,
            _ => runs.push([b, 1]),
        }
    }
    runs
}

/// The block numbers of `[start, count]` runs, in order.
pub fn run_blocks(runs: &[[u64; 2]]) -> impl Iterator<Item = u64> + '_ {
    runs.iter().flat_map(|&[s, n]| s..s.saturating_add(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_splits_blocks_whatever_the_pieces() {
        let data: Vec<u8> = (0..(BLOCK * 3 + 100)).map(|i| (i % 251) as u8).collect();
        let mut one = BlockHasher::default();
        one.update(&data);
        let mut many = BlockHasher::default();
        for piece in data.chunks(1000) {
            many.update(piece);
        }
        let (one, many) = (one.finish(), many.finish());
        assert_eq!(one, many);
        assert_eq!(one.length, data.len() as u64);
        assert_eq!(one.digests.len(), 4);
        assert_eq!(one.digests[3], digest(&data[BLOCK * 3..]));
        assert_eq!(one.digests[1], digest(&data[BLOCK..BLOCK * 2]));
        assert_eq!(block_count(0), 0);
        assert_eq!(block_len(BLOCK as u64 * 3 + 100, 3), 100);
        assert_eq!(block_len(BLOCK as u64 * 3 + 100, 2), BLOCK);
    }

    #[test]
    fn encode_decode_round_trip_and_refusals() {
        let mut map = BlockMap::default();
        map.files.insert("base/1/1259".into(), FileBlocks { length: 8193, digests: vec![[1; 16], [2; 16]] });
        map.files.insert("PG_VERSION".into(), FileBlocks { length: 3, digests: vec![[3; 16]] });
        map.files.insert("empty".into(), FileBlocks { length: 0, digests: vec![] });
        let bytes = map.encode();
        assert_eq!(BlockMap::decode(&bytes, "o").ok(), Some(map));
        let cut = BlockMap::decode(&bytes[..bytes.len() - 1], "o").map_err(|e| e.to_string());
        assert!(cut.is_err_and(|e| e.contains("o") && e.contains("block map")));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(BlockMap::decode(&extra, "o").is_err());
        let mut bad = BlockMap::default();
        bad.files.insert("../x".into(), FileBlocks { length: 0, digests: vec![] });
        assert!(BlockMap::decode(&bad.encode(), "o").is_err());
    }

    #[test]
    fn old_sha256_maps_read_as_such_and_a_chain_never_mixes_hashes() {
        // Known answers: BLAKE3 and SHA-256 of "abc", first 16 bytes.
        assert_eq!(hex::encode(DigestAlgo::Blake3.digest(b"abc")), "6437b3ac38465133ffb63b75273a8db5");
        assert_eq!(hex::encode(DigestAlgo::Sha256.digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223");
        let mut old = BlockMap { algo: DigestAlgo::Sha256, ..BlockMap::default() };
        old.files.insert("a".into(), FileBlocks { length: 3, digests: vec![DigestAlgo::Sha256.digest(b"abc")] });
        let bytes = old.encode();
        assert!(bytes.starts_with(b"WVBLKMAP1\0"), "the layout written before BLAKE3");
        assert_eq!(BlockMap::decode(&bytes, "o").ok(), Some(old.clone()));
        let new = BlockMap { algo: DigestAlgo::Blake3, ..old.clone() };
        assert!(new.encode().starts_with(b"WVBLKMAP3\0"));
        let manifest = crate::manifest::Manifest::new(
            vec![crate::manifest::ManifestEntry {
                path: "a".into(),
                size: 3,
                digest: crate::manifest::FileDigest::Blake3("ab".repeat(32)),
                mode: 0o600,
                part: 0,
                kind: crate::manifest::EntryKind::File,
                link_target: None,
            }],
            vec![],
        );
        let link =
            |map: BlockMap| LinkMap { map: AnyMap::Complete(map), manifest: &manifest, name: "b", object: "m".into() };
        assert!(merge_chain(vec![link(old.clone()), link(old.clone())]).is_ok_and(|m| m.algo == DigestAlgo::Sha256));
        let mixed = merge_chain(vec![link(old), link(new)]).map_err(|e| e.to_string());
        assert!(mixed.is_err_and(|e| e.contains("not of the same hash")), "a chain mixing hashes is refused");
    }

    #[test]
    fn runs() {
        assert_eq!(to_runs(&[0, 1, 2, 5, 7, 8]), vec![[0, 3], [5, 1], [7, 2]]);
        assert_eq!(run_blocks(&[[0, 3], [5, 1]]).collect::<Vec<_>>(), vec![0, 1, 2, 5]);
        assert!(to_runs(&[]).is_empty());
    }
}
