//! The keep/compare phase of a delta restore: is a local file exactly what the target restores?
//!
//! A file of a full backup is compared with its manifest entry (size and whole-file digest);
//! a file of an incremental backup with the target's effective block map (length and the
//! digest of every 8 KiB block), which is all a chain knows about files it did not store whole.
//! A file whose length differs is removed without being read. The rest is hashed by 8 x `jobs`
//! threads (8 to 16), streaming: a whole-file comparison is one unit of work, a block
//! comparison one unit per [`CHUNK_BLOCKS`] blocks, so the blocks of one large relation segment
//! are hashed on every thread at once, and a file stops being read at its first differing block. A large file with
//! a BLAKE3 digest is one unit per 64 MiB piece too ([`pieces`]): its pieces' values are joined
//! into the file's digest once the last one is in.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use blake3::hazmat::ChainingValue;

use crate::blockmap::{BLOCK, DigestAlgo, FileBlocks, block_count, block_len};
use crate::error::IoContext;
use crate::fsutil::cold_read::{AlignedBuf, ColdReader};
use crate::manifest::digest::pieces;
use crate::manifest::{FileDigest, FileHasher};
use crate::{Error, Result};

/// Blocks hashed as one unit of work, and the size of every read (16 MiB). A piece not in the
/// page cache is read from the device in one read of this size: the larger the reads, the
/// faster this virtual disk answers (the 15.7 GB test cluster, page cache dropped, 16 readers:
/// 4 MiB reads 0.7 GB/s, 16 MiB 0.9-1.0 GB/s; 32 MiB 1.1-1.2 GB/s, but that is 512 MiB of
/// buffers, half the restore Job's memory limit).
pub(super) const CHUNK_BLOCKS: u64 = 2048;

/// Reading threads per `--jobs`, and their bounds: at most 16 reads of 16 MiB (256 MiB of
/// buffers, touched only by reads from the device) are in flight.
const READERS_PER_JOB: usize = 8;
const READERS: (usize, usize) = (8, 16);

/// What a local file must be to be kept.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Size and digest of the whole file (a full backup's manifest).
    Whole { size: u64, digest: &'a FileDigest },
    /// Length and block digests (an incremental backup's effective block map), and their hash.
    Blocks(&'a FileBlocks, DigestAlgo),
    /// `postgresql.auto.conf` of a full backup: size and digest once the recovery block a
    /// restore appended is taken out (pitr-prepare replaces that block anyway).
    Settings { size: u64, digest: &'a FileDigest },
}

/// How much longer than the backup's `postgresql.auto.conf` a local one with a recovery block
/// may be.
const SETTINGS_SLACK: u64 = 64 * 1024;

impl Expect<'_> {
    /// The length the file must have.
    pub fn length(&self) -> u64 {
        match self {
            Expect::Whole { size, .. } | Expect::Settings { size, .. } => *size,
            Expect::Blocks(b, _) => b.length,
        }
    }

    /// Whether a local file of `len` bytes may match (a settings file may hold a recovery
    /// block more).
    pub fn may_have_length(&self, len: u64) -> bool {
        match self {
            Expect::Settings { size, .. } => len >= *size && len <= size.saturating_add(SETTINGS_SLACK),
            _ => len == self.length(),
        }
    }

    /// Units of work: one for a whole file (one per piece when hashed in pieces), one per chunk
    /// of blocks (at least one).
    fn units(&self) -> usize {
        match self {
            Expect::Whole { size, .. } if self.in_pieces() => {
                usize::try_from(pieces::count(*size, pieces::PIECE_LEN)).unwrap_or(1)
            }
            Expect::Whole { .. } | Expect::Settings { .. } => 1,
            Expect::Blocks(b, _) => usize::try_from(block_count(b.length).div_ceil(CHUNK_BLOCKS)).unwrap_or(1).max(1),
        }
    }

    /// A large file with a BLAKE3 digest: hashed in pieces, on several threads at once.
    fn in_pieces(&self) -> bool {
        matches!(self, Expect::Whole { size, digest: FileDigest::Blake3(_) } if pieces::in_pieces(*size, pieces::PIECE_LEN))
    }
}

/// The pieces' values of a file hashed in pieces, as they come in.
struct Gathered {
    left: AtomicUsize,
    values: Mutex<Vec<Option<ChainingValue>>>,
}

/// A local file the target has: where it is, its manifest path, and what it must be.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub at: PathBuf,
    pub path: String,
    pub expect: Expect<'a>,
}

/// The outcome of [`compare`].
#[derive(Debug)]
pub struct Compared<'a> {
    /// The candidates that match.
    pub kept: Vec<Candidate<'a>>,
    /// The paths of those that differ.
    pub differs: Vec<PathBuf>,
    /// Bytes read straight from the device (the rest came from the page cache).
    pub device_bytes: u64,
}

/// Compare every candidate on 8 x `jobs` threads (8 to 16), reading only.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be read.
pub fn compare(mut candidates: Vec<Candidate<'_>>, jobs: usize) -> Result<Compared<'_>> {
    // Longest first: a large file compared whole (one thread) started last would keep one
    // thread busy while the others have nothing left.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.expect.length()));
    let mut starts = Vec::with_capacity(candidates.len());
    let mut total = 0usize;
    for c in &candidates {
        starts.push(total);
        total += c.expect.units();
    }
    let differ: Vec<AtomicBool> = candidates.iter().map(|_| AtomicBool::new(false)).collect();
    let gathered: Vec<Gathered> = candidates
        .iter()
        .map(|c| Gathered { left: AtomicUsize::new(c.expect.units()), values: Mutex::new(Vec::new()) })
        .collect();
    let (next, failed, device) = (AtomicUsize::new(0), AtomicBool::new(false), AtomicU64::new(0));
    let buf_len = usize::try_from(CHUNK_BLOCKS).unwrap_or(2048) * BLOCK;
    let outcomes: Vec<Result<()>> = std::thread::scope(|s| {
        // More threads than cores: a piece not in the page cache waits on the device, not on a
        // core, and a disk (or a network volume) answers many large reads in flight much faster
        // than a few ([`CHUNK_BLOCKS`]). A piece in the page cache is hashed at once; the extra
        // threads take turns.
        let workers: Vec<_> = (0..jobs.saturating_mul(READERS_PER_JOB).clamp(READERS.0, READERS.1))
            .map(|_| {
                s.spawn(|| {
                    yield_to_others();
                    let mut buf = AlignedBuf::new(buf_len);
                    while !failed.load(Ordering::Relaxed) {
                        let unit = next.fetch_add(1, Ordering::Relaxed);
                        if unit >= total {
                            break;
                        }
                        let i = starts.partition_point(|&s| s <= unit).saturating_sub(1);
                        let (Some(c), Some(flag), Some(first), Some(g)) =
                            (candidates.get(i), differ.get(i), starts.get(i), gathered.get(i))
                        else {
                            break;
                        };
                        if flag.load(Ordering::Relaxed) {
                            continue;
                        }
                        match same(c, (unit - first) as u64, &mut buf, g, &device) {
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
    let (mut kept, mut differs) = (Vec::new(), Vec::new());
    for (c, flag) in candidates.into_iter().zip(differ) {
        if flag.into_inner() {
            tracing::debug!("delta: {} differs", c.path);
            differs.push(c.at);
        } else {
            kept.push(c);
        }
    }
    Ok(Compared { kept, differs, device_bytes: device.into_inner() })
}

/// Lower this thread's priority (nice 10, best effort): the comparison is bulk work, and the
/// restore's other work meanwhile (listing and checking the archive, a storage server on the
/// same host) is short and on the way to the end.
fn yield_to_others() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

/// Whether unit `unit` of the candidate matches (a file that vanished or shrank does not).
/// Pieces in the page cache are read from it, the others straight from the device
/// ([`ColdReader`]).
fn same(c: &Candidate<'_>, unit: u64, buf: &mut AlignedBuf, g: &Gathered, device: &AtomicU64) -> Result<bool> {
    let f = match ColdReader::open(&c.at) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(&c.at, e)),
    };
    if !c.expect.may_have_length(f.file_len().with_path(&c.at)?) {
        return Ok(false);
    }
    let outcome = match c.expect {
        Expect::Whole { size, digest } if c.expect.in_pieces() => piece(&f, c, (size, digest), unit, buf, g),
        Expect::Whole { digest, .. } => whole(&f, c, buf, digest.hasher()).map(|found| digest.matches(&found)),
        Expect::Settings { size, digest } => settings(c, size, digest),
        Expect::Blocks(blocks, algo) => same_blocks(&f, c, (blocks, algo), unit, buf),
    };
    device.fetch_add(f.direct_bytes(), Ordering::Relaxed);
    outcome
}

fn whole(f: &ColdReader, c: &Candidate<'_>, buf: &mut AlignedBuf, mut hash: FileHasher) -> Result<FileDigest> {
    read_range(f, c, buf, 0, u64::MAX, |bytes| hash.update(bytes))?;
    Ok(hash.finish())
}

/// Hand bytes `from..end` of the file (fewer at its end) to `sink` in order, in reads of
/// [`CHUNK_BLOCKS`] blocks; returns how many there were.
fn read_range(
    f: &ColdReader,
    c: &Candidate<'_>,
    buf: &mut AlignedBuf,
    from: u64,
    end: u64,
    mut sink: impl FnMut(&[u8]),
) -> Result<u64> {
    let step = usize::try_from(CHUNK_BLOCKS).unwrap_or(2048) * BLOCK;
    let mut at = from;
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(step).min(step);
        let got = f
            .read_each(buf, at, want, |bytes| {
                sink(bytes);
                true
            })
            .with_path(&c.at)?;
        at += got as u64;
        if got < want {
            break;
        }
    }
    Ok(at - from)
}

/// Piece `unit` of a file hashed in pieces: its value kept; the last piece in joins them and
/// compares the file's digest.
fn piece(
    f: &ColdReader,
    c: &Candidate<'_>,
    (size, digest): (u64, &FileDigest),
    unit: u64,
    buf: &mut AlignedBuf,
    g: &Gathered,
) -> Result<bool> {
    let offset = unit * pieces::PIECE_LEN;
    let end = size.min(offset + pieces::PIECE_LEN);
    let mut h = pieces::piece_hasher(offset);
    if read_range(f, c, buf, offset, end, |bytes| {
        h.update(bytes);
    })? != end.saturating_sub(offset)
    {
        return Ok(false);
    }
    let Ok(mut values) = g.values.lock() else { return Ok(false) };
    if values.is_empty() {
        values.resize(c.expect.units(), None);
    }
    let Some(slot) = usize::try_from(unit).ok().and_then(|u| values.get_mut(u)) else { return Ok(false) };
    *slot = Some(pieces::value(&h));
    if g.left.fetch_sub(1, Ordering::AcqRel) != 1 {
        return Ok(true);
    }
    let all: Option<Vec<ChainingValue>> = std::mem::take(&mut *values).into_iter().collect();
    Ok(all.and_then(|v| pieces::merge(size, pieces::PIECE_LEN, &v)).is_some_and(|found| digest.matches(&found)))
}

/// A local `postgresql.auto.conf` without its recovery block against the backup's.
fn settings(c: &Candidate<'_>, size: u64, digest: &FileDigest) -> Result<bool> {
    let text = match fs::read(&c.at) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(&c.at, e)),
    };
    let Ok(text) = String::from_utf8(text) else { return Ok(false) };
    let bare = crate::pg::recovery::strip_block(&text);
    let mut hash = digest.hasher();
    hash.update(bare.as_bytes());
    Ok(bare.len() as u64 == size && digest.matches(&hash.finish()))
}

/// Blocks `unit * CHUNK_BLOCKS ..` of the file against their digests.
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
    let (mut b, mut same) = (first, true);
    // Every piece but the file's last is whole blocks (pieces are multiples of 8 KiB).
    let got = f
        .read_each(buf, from, len, |piece| {
            let mut at = 0;
            while at < piece.len() && b < end {
                let n = block_len(blocks.length, b);
                let want = usize::try_from(b).ok().and_then(|i| blocks.digests.get(i));
                if want.is_none() || want != piece.get(at..at + n).map(|bytes| algo.digest(bytes)).as_ref() {
                    same = false;
                    return false;
                }
                at += n;
                b += 1;
            }
            true
        })
        .with_path(&c.at)?;
    Ok(same && got == len && b == end)
}
