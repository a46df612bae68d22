//! The effective block map of a backup: every file it restores, with all its digests, merged
//! from the block maps of its chain (`docs/FORMAT.md`, section 9.1). Oldest first, each link
//! cuts every file at the length its manifest gives and overlays the blocks it stored (newest
//! wins); a file it lists as unchanged keeps what the chain held; a file it does not restore
//! is dropped. A complete (`WVBLKMAP1`) map starts afresh. Pure: the loader is
//! [`crate::ops::repo::chain::effective_map`].

use super::stored::{AnyMap, StoredFile, whole_runs};
use super::{BlockMap, FileBlocks, block_count, block_len, run_blocks};
use crate::manifest::{EntryKind, Manifest};
use crate::{Error, Result};

/// One link of a chain, as the merge sees it.
pub struct LinkMap<'a> {
    pub map: AnyMap,
    /// The link's manifest: what it restores, at which lengths.
    pub manifest: &'a Manifest,
    /// For messages: the backup's name and its block map object.
    pub name: &'a str,
    pub object: String,
}

/// How many leading blocks of a file of `old` bytes are still whole blocks of the same
/// length once it is `new` bytes long (all blocks below both ends, except a last block that
/// changed length).
pub fn kept_blocks(old: u64, new: u64) -> u64 {
    let common = block_count(old).min(block_count(new));
    match common.checked_sub(1) {
        Some(last) if block_len(old, last) != block_len(new, last) => last,
        _ => common,
    }
}

/// The effective map of the last link of `links` (oldest first).
///
/// # Errors
/// [`Error::Corrupt`] naming the link's block map when it does not fit its manifest or the
/// chain: a file at another length, a stored file its manifest does not restore, an unchanged
/// file the chain does not hold, blocks no backup of the chain holds.
pub fn merge_chain(links: Vec<LinkMap<'_>>) -> Result<BlockMap> {
    let mut map = BlockMap::default();
    for link in links {
        map = advance(map, link)?;
    }
    Ok(map)
}

/// The effective map of `link`, given `prev`, the effective map of the backup it builds on.
///
/// # Errors
/// As [`merge_chain`].
pub fn advance(mut prev: BlockMap, link: LinkMap<'_>) -> Result<BlockMap> {
    let bad = |why: String| Error::corrupt(&link.object, format!("block map of backup {}: {why}", link.name));
    let mut out = BlockMap::default();
    match link.map {
        AnyMap::Complete(mut all) => {
            for (path, length, _) in link.manifest.restored_files() {
                match all.files.remove(path) {
                    Some(f) if f.length == length => out.files.insert(path.to_string(), f),
                    _ => return Err(bad(format!("{path} is not in it at length {length}"))),
                };
            }
        }
        AnyMap::Stored(mut stored) => {
            for (path, length, _) in link.manifest.restored_files() {
                let old = prev.files.remove(path);
                let file = match (stored.files.remove(path), runs_stored(link.manifest, path, length)) {
                    (Some(s), Some(runs)) if s.runs == runs => {
                        overlay(old, s, length).map_err(|why| bad(format!("{path}: {why}")))?
                    }
                    (None, None) => old.filter(|f| f.length == length).ok_or_else(|| {
                        bad(format!(
                            "{path} is unchanged but the backup it builds on does not hold it at length {length}"
                        ))
                    })?,
                    _ => return Err(bad(format!("{path}: its blocks differ from the blocks its manifest stores"))),
                };
                out.files.insert(path.to_string(), file);
            }
            if let Some(path) = stored.files.keys().next() {
                return Err(bad(format!("{path} is in it but its manifest does not restore it")));
            }
        }
    }
    Ok(out)
}

/// The runs `manifest` stores of `path` (restored at `length`): its `deltas` runs, all its
/// blocks when it is stored whole, `None` when it is unchanged.
fn runs_stored(manifest: &Manifest, path: &str, length: u64) -> Option<Vec<[u64; 2]>> {
    manifest.lookup(path).filter(|e| e.kind == EntryKind::File)?;
    Some(manifest.deltas.get(path).map_or_else(|| whole_runs(length), |d| d.blocks.clone()))
}

/// `old` (the file as the chain held it) cut at `length`, with the blocks of `stored` laid
/// over it; every block must come from one or the other.
fn overlay(old: Option<FileBlocks>, stored: StoredFile, length: u64) -> std::result::Result<FileBlocks, String> {
    if stored.length != length {
        return Err(format!("length {} in the block map but {length} in the manifest", stored.length));
    }
    let n = usize::try_from(block_count(length)).map_err(|_| format!("length {length}"))?;
    let (mut digests, kept) = match old {
        Some(f) => {
            let kept = usize::try_from(kept_blocks(f.length, length)).unwrap_or(0).min(f.digests.len());
            let mut d = f.digests;
            d.truncate(kept);
            (d, kept)
        }
        None => (Vec::new(), 0),
    };
    digests.resize(n, [0; 16]);
    let runs = run_blocks(&stored.runs).count();
    if runs != stored.digests.len() {
        return Err(format!("{runs} blocks stored but {} digests", stored.digests.len()));
    }
    let mut fresh = 0;
    for (b, d) in run_blocks(&stored.runs).zip(stored.digests) {
        let i = usize::try_from(b).ok().filter(|&i| i < n).ok_or_else(|| format!("block {b} is past its end"))?;
        digests[i] = d;
        fresh += usize::from(i >= kept);
    }
    if fresh != n - kept {
        return Err(format!("{} blocks are in no backup of the chain", n - kept - fresh));
    }
    Ok(FileBlocks { length, digests })
}

#[cfg(test)]
#[path = "effective_tests.rs"]
mod tests;
