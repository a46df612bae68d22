//! The effective block map of a backup: every file it restores, with all its digests, merged
//! from the block maps of its chain (`docs/FORMAT.md`, section 9.1). Oldest first, each link
//! cuts every file at the length its manifest gives and overlays the blocks it stored (newest
//! wins); a file it lists as unchanged keeps what the chain held; a file it does not restore
//! is dropped. A complete (`WVBLKMAP1`) map starts afresh. Merged one file at a time through
//! every link, so that the complete map at the chain's start can be streamed ([`Merger`]).
//! Pure: the loaders are in [`crate::ops::repo::chain`].

use std::collections::{BTreeSet, HashMap};

use super::stored::{AnyMap, StoredFile, whole_runs};
use super::{BlockMap, DigestAlgo, FileBlocks, block_count, block_len, run_blocks};
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

/// The effective map of the last link of `links` (oldest first), all in memory.
///
/// # Errors
/// [`Error::Corrupt`] naming the link's block map when it does not fit its manifest or the
/// chain: a file at another length, a stored file its manifest does not restore, an unchanged
/// file the chain does not hold, blocks no backup of the chain holds.
pub fn merge_chain(links: Vec<LinkMap<'_>>) -> Result<BlockMap> {
    let mut merger = Merger::new(links);
    let mut out = BlockMap { algo: merger.algo()?, ..BlockMap::default() };
    for path in merger.paths() {
        if let Some(f) = merger.file(&path)? {
            out.files.insert(path, f);
        }
    }
    merger.finish()?;
    Ok(out)
}

/// The merge of a chain, one file at a time (so that a complete map can be streamed through
/// it: [`Merger::feed`]).
pub struct Merger<'a> {
    links: Vec<(LinkMap<'a>, HashMap<&'a str, u64>)>,
}

impl<'a> Merger<'a> {
    /// The chain's links, oldest first.
    pub fn new(links: Vec<LinkMap<'a>>) -> Merger<'a> {
        let links = links
            .into_iter()
            .map(|l| {
                let restores = l.manifest.restored_files().map(|(p, len, _)| (p, len)).collect();
                (l, restores)
            })
            .collect();
        Merger { links }
    }

    /// The algorithm of every link's digests (the first link's, a streamed one's placeholder
    /// included).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the first link whose digests are of another hash.
    pub fn algo(&self) -> Result<DigestAlgo> {
        let algo = |l: &LinkMap<'_>| match &l.map {
            AnyMap::Complete(m) => m.algo,
            AnyMap::Stored(m) => m.algo,
        };
        let first = self.links.first().map_or(DigestAlgo::default(), |(l, _)| algo(l));
        match self.links.iter().find(|(l, _)| algo(l) != first) {
            Some((l, _)) => Err(bad(l, "its digests are not of the same hash as the rest of its chain".into())),
            None => Ok(first),
        }
    }

    /// Every path some link restores, in order.
    pub fn paths(&self) -> BTreeSet<String> {
        self.links.iter().flat_map(|(_, r)| r.keys().map(|p| p.to_string())).collect()
    }

    /// File `path` as the last link restores it (`None`: it does not).
    ///
    /// # Errors
    /// As [`merge_chain`].
    pub fn file(&mut self, path: &str) -> Result<Option<FileBlocks>> {
        let mut file = None;
        for (link, restores) in &mut self.links {
            file = match restores.get(path) {
                None => None,
                Some(&length) => Some(step(link, path, length, file)?),
            };
        }
        Ok(file)
    }

    /// [`Merger::file`] of `path` whose entry `f` is read from the first link's complete map
    /// (streamed rather than held: that link's map is empty in memory).
    ///
    /// # Errors
    /// As [`merge_chain`].
    pub fn feed(&mut self, path: &str, f: FileBlocks) -> Result<Option<FileBlocks>> {
        if let Some((LinkMap { map: AnyMap::Complete(all), .. }, _)) = self.links.first_mut() {
            all.files.clear();
            all.files.insert(path.to_string(), f);
        }
        self.file(path)
    }

    /// Once every path was merged: no link may hold a file its manifest does not restore.
    ///
    /// # Errors
    /// As [`merge_chain`].
    pub fn finish(self) -> Result<()> {
        for (link, _) in self.links {
            if let AnyMap::Stored(stored) = &link.map
                && let Some(path) = stored.files.keys().next()
            {
                return Err(bad(&link, format!("{path} is in it but its manifest does not restore it")));
            }
        }
        Ok(())
    }
}

fn bad(link: &LinkMap<'_>, why: String) -> Error {
    Error::corrupt(&link.object, format!("block map of backup {}: {why}", link.name))
}

/// File `path` as `link` restores it at `length`, given `old` (as the chain held it before).
fn step(link: &mut LinkMap<'_>, path: &str, length: u64, old: Option<FileBlocks>) -> Result<FileBlocks> {
    let file = match &mut link.map {
        AnyMap::Complete(all) => all.files.remove(path).filter(|f| f.length == length),
        AnyMap::Stored(stored) => match (stored.files.remove(path), runs_stored(link.manifest, path, length)) {
            (Some(s), Some(runs)) if s.runs == runs => {
                Some(overlay(old, s, length).map_err(|why| bad(link, format!("{path}: {why}")))?)
            }
            (None, None) => old.filter(|f| f.length == length),
            _ => return Err(bad(link, format!("{path}: its blocks differ from the blocks its manifest stores"))),
        },
    };
    file.ok_or_else(|| match link.map {
        AnyMap::Complete(_) => bad(link, format!("{path} is not in it at length {length}")),
        AnyMap::Stored(_) => {
            bad(link, format!("{path} is unchanged but the backup it builds on does not hold it at length {length}"))
        }
    })
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
