//! The keep/compare phase of a delta restore: is a local file exactly what the target restores?
//!
//! A file of a full backup is compared with its manifest entry (size and whole-file digest);
//! a file of an incremental backup with the target's effective block map (length and the
//! digest of every 8 KiB block), which is all a chain knows about files it did not store whole.
//! A file whose length differs is removed without being read. The rest is hashed by 8 x `jobs`
//! threads, streaming: a whole-file comparison is one unit of work, a block comparison one unit
//! per [`CHUNK_BLOCKS`] blocks, so the blocks of one large relation segment are hashed on every
//! thread at once, and a file stops being read at its first differing block.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::blockmap::{BLOCK, DigestAlgo, FileBlocks, block_count, block_len};
use crate::error::IoContext;
use crate::fsutil::cold_read::{AlignedBuf, ColdReader};
use crate::manifest::{FileDigest, FileHasher};
use crate::{Error, Result};

/// Blocks hashed as one unit of work, and the size of every read (4 MiB).
const CHUNK_BLOCKS: u64 = 512;

/// Reading threads per `--jobs` (at least 8, at most 32).
const READERS_PER_JOB: usize = 8;

/// What a local file must be to be kept.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Size and digest of the whole file (a full backup's manifest).
    Whole { size: u64, digest: &'a FileDigest },
    /// Length and block digests (an incremental backup's effective block map), and their hash.
    Blocks(&'a FileBlocks, DigestAlgo),
}

impl Expect<'_> {
    /// The length the file must have.
    pub fn length(&self) -> u64 {
        match self {
            Expect::Whole { size, .. } => *size,
            Expect::Blocks(b, _) => b.length,
        }
    }

    /// Units of work: one for a whole file, one per chunk of blocks (at least one).
    fn units(&self) -> usize {
        match self {
            Expect::Whole { .. } => 1,
            Expect::Blocks(b, _) => usize::try_from(block_count(b.length).div_ceil(CHUNK_BLOCKS)).unwrap_or(1).max(1),
        }
    }
}

/// A local file the target has: where it is, its manifest path, and what it must be.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub at: PathBuf,
    pub path: String,
    pub expect: Expect<'a>,
}

/// Compare every candidate on 8 x `jobs` threads (8 to 32); remove those that differ and
/// return the others.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be read or removed.
pub fn compare(candidates: Vec<Candidate<'_>>, jobs: usize) -> Result<Vec<Candidate<'_>>> {
    let mut starts = Vec::with_capacity(candidates.len());
    let mut total = 0usize;
    for c in &candidates {
        starts.push(total);
        total += c.expect.units();
    }
    let differ: Vec<AtomicBool> = candidates.iter().map(|_| AtomicBool::new(false)).collect();
    let (next, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
    let buf_len = usize::try_from(CHUNK_BLOCKS).unwrap_or(512) * BLOCK;
    let outcomes: Vec<Result<()>> = std::thread::scope(|s| {
        // Many more threads than cores: a piece not in the page cache waits on the device, not
        // on a core, and the device answers many reads in flight much faster than a few (this
        // virtual disk: 4 reads of 2 MiB at a time ~400 MB/s, 16 of 4-8 MiB ~700-900 MB/s). A
        // piece in the page cache is hashed at once; the extra threads then only take turns.
        // more reads in flight is what a disk (or a network volume) answers fastest.
        let workers: Vec<_> = (0..jobs.saturating_mul(READERS_PER_JOB).clamp(8, 32))
            .map(|_| {
                s.spawn(|| {
                    let mut buf = AlignedBuf::new(buf_len);
                    while !failed.load(Ordering::Relaxed) {
                        let unit = next.fetch_add(1, Ordering::Relaxed);
                        if unit >= total {
                            break;
                        }
                        let i = starts.partition_point(|&s| s <= unit).saturating_sub(1);
                        let (Some(c), Some(flag), Some(first)) = (candidates.get(i), differ.get(i), starts.get(i))
                        else {
                            break;
                        };
                        if flag.load(Ordering::Relaxed) {
                            continue;
                        }
                        match same(c, (unit - first) as u64, &mut buf) {
                            Ok(true) => {}
                            Ok(false) => flag.store(true, Ordering::Relaxed),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(Error::Invalid("a delta comparison thread panicked".into()))))
            .collect()
    });
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    let mut kept = Vec::new();
    for (c, flag) in candidates.into_iter().zip(differ) {
        if !flag.into_inner() {
            kept.push(c);
            continue;
        }
        tracing::debug!("delta: {} differs", c.path);
        match fs::remove_file(&c.at) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(&c.at, e)),
            _ => {}
        }
    }
    Ok(kept)
}

/// Whether unit `unit` of the candidate matches (a file that vanished or shrank does not).
/// Pieces in the page cache are read from it, the others straight from the device
/// ([`ColdReader`]).
fn same(c: &Candidate<'_>, unit: u64, buf: &mut AlignedBuf) -> Result<bool> {
    let f = match ColdReader::open(&c.at) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(&c.at, e)),
    };
    if f.file_len().with_path(&c.at)? != c.expect.length() {
        return Ok(false);
    }
    match c.expect {
        Expect::Whole { digest, .. } => whole(&f, c, buf, digest.hasher()).map(|found| digest.matches(&found)),
        Expect::Blocks(blocks, algo) => same_blocks(&f, c, (blocks, algo), unit, buf),
    }
}

fn whole(f: &ColdReader, c: &Candidate<'_>, buf: &mut AlignedBuf, mut hash: FileHasher) -> Result<FileDigest> {
    let step = usize::try_from(CHUNK_BLOCKS).unwrap_or(512) * BLOCK;
    let mut at = 0u64;
    loop {
        let piece = f.read_at(buf, at, step).with_path(&c.at)?;
        if piece.is_empty() {
            return Ok(hash.finish());
        }
        hash.update(piece);
        at += piece.len() as u64;
    }
}

/// Blocks `unit * CHUNK_BLOCKS ..` of the file against their digests, read in one piece.
fn same_blocks(
    f: &ColdReader,
    c: &Candidate<'_>,
    (blocks, algo): (&FileBlocks, DigestAlgo),
    unit: u64,
    buf: &mut AlignedBuf,
) -> Result<bool> {
    let first = unit * CHUNK_BLOCKS;
    let end = (first + CHUNK_BLOCKS).min(block_count(blocks.length));
    if first >= end {
        return Ok(true);
    }
    let from = first * BLOCK as u64;
    let len = usize::try_from(blocks.length.min(end * BLOCK as u64) - from).unwrap_or(usize::MAX);
    let piece = f.read_at(buf, from, len).with_path(&c.at)?;
    if piece.len() != len {
        return Ok(false);
    }
    let mut at = 0;
    for b in first..end {
        let n = block_len(blocks.length, b);
        let want = usize::try_from(b).ok().and_then(|i| blocks.digests.get(i));
        if want.is_none() || want != piece.get(at..at + n).map(|b| algo.digest(b)).as_ref() {
            return Ok(false);
        }
        at += n;
    }
    Ok(true)
}
