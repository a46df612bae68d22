//! The tar writer of an incremental backup: every file is read whole and compared block by
//! block with the reference's block map ([`crate::blockmap`]); a file that did not change is
//! listed as unchanged, a changed one stores only its changed blocks (and its new length), a
//! new one is stored whole. Timestamps are never trusted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::{OUTPUT, append_dir, append_file, append_symlink, entry_header};
use crate::blockmap::stream::ReferenceBlocks;
use crate::blockmap::{
    BLOCK, BlockMap, ChangedBlocks, FileBlocks, StoredFile, block_count, digest, kept_blocks, to_runs,
};
use crate::error::IoContext;
use crate::manifest::{Delta, EntryKind, FileHasher, ManifestEntry, Unchanged};
use crate::pg::datadir::{DataFile, FileKind};
use crate::{Error, Result};

/// What an incremental part holds.
#[derive(Debug, Default)]
pub struct IncrementalPart {
    /// Stored entries (whole files, deltas, directories, links), `part` 0.
    pub entries: Vec<ManifestEntry>,
    /// The stored files that are deltas.
    pub deltas: BTreeMap<String, Delta>,
    pub unchanged: Vec<Unchanged>,
    /// Digests of every file stored whole (all of a full backup's files).
    pub blocks: BlockMap,
    /// The stored blocks' digests of the files that are deltas (the block map of an
    /// incremental holds no more than what it stored).
    pub stored: BTreeMap<String, StoredFile>,
    /// File bytes read from the data directory.
    pub read_bytes: u64,
}

/// Write `entries` as a tar stream into `out`, comparing each file with `reference`; changed
/// blocks are gathered in an unnamed temporary file in `spool` first (a tar entry needs its
/// size before its bytes). With `changed` (from WAL summaries), a relation file is not read
/// whole: only the blocks the summaries name, or past the reference's end, are read, and the
/// others keep the reference's digests.
///
/// # Errors
/// [`Error::Io`] naming the file for a read failure, or the output stream / spool.
pub fn write_tar_incremental<W: Write>(
    out: W,
    entries: &[DataFile],
    reference: &(impl ReferenceBlocks + ?Sized),
    changed: Option<&ChangedBlocks>,
    spool: &Path,
) -> Result<(W, IncrementalPart)> {
    let mut builder = tar::Builder::new(out);
    let mut part = IncrementalPart::default();
    for entry in entries {
        match &entry.kind {
            FileKind::Dir => part.entries.push(append_dir(&mut builder, entry)?),
            FileKind::Symlink(target) => part.entries.push(append_symlink(&mut builder, entry, target)?),
            FileKind::File => match reference.file(&entry.rel_path)? {
                None => {
                    if let Some((item, blocks)) = append_file(&mut builder, entry)? {
                        part.read_bytes += item.size;
                        part.blocks.files.insert(item.path.clone(), blocks);
                        part.entries.push(item);
                    }
                }
                Some(old) => compare_file(&mut builder, entry, &old, changed, spool, &mut part)?,
            },
        }
    }
    let out = builder.into_inner().with_path(OUTPUT)?;
    Ok((out, part))
}

/// The changed blocks of one file, gathered while it is read.
struct Changes {
    blocks: Vec<u64>,
    spool: BufWriter<File>,
    hash: FileHasher,
    stored: u64,
}

fn compare_file<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &DataFile,
    old: &FileBlocks,
    changed: Option<&ChangedBlocks>,
    spool: &Path,
    part: &mut IncrementalPart,
) -> Result<()> {
    let path = &entry.abs_path;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = file.metadata().with_path(path)?;
    let (length, mode) = (meta.len(), meta.mode() & 0o7777);
    let tmp = tempfile::tempfile_in(spool).with_path(spool)?;
    let mut changes = Changes {
        blocks: Vec::new(),
        spool: BufWriter::with_capacity(1 << 20, tmp),
        hash: FileHasher::new(),
        stored: 0,
    };
    let to_read =
        changed.and_then(|c| c.blocks_to_read(&entry.rel_path, length, old.digests.len() as u64)).map(|mut list| {
            // A last block that changed length is read too: the reference's digest is of other bytes.
            let common = block_count(old.length).min(block_count(length));
            list.extend(kept_blocks(old.length, length)..common);
            list.sort_unstable();
            list.dedup();
            list
        });
    let digests = match to_read {
        Some(list) => read_listed(&file, path, length, old, &list, &mut changes, spool, part)?,
        None => read_whole(file, path, length, old, &mut changes, spool, part)?,
    };
    if changes.blocks.is_empty() && length == old.length {
        part.unchanged.push(Unchanged { path: entry.rel_path.clone(), length, mode });
        return Ok(());
    }
    let whole = changes.blocks.len() as u64 == block_count(length);
    if whole {
        part.blocks.files.insert(entry.rel_path.clone(), FileBlocks { length, digests });
    } else {
        let runs = to_runs(&changes.blocks);
        let all = FileBlocks { length, digests };
        let stored = StoredFile::pick(&all, runs)
            .ok_or_else(|| Error::Internal(format!("{}: a changed block past its end", entry.rel_path)))?;
        part.stored.insert(entry.rel_path.clone(), stored);
    }
    let mut spooled = changes.spool.into_inner().map_err(|e| Error::io(spool, e.into_error()))?;
    spooled.rewind().with_path(spool)?;
    let mut header = entry_header(tar::EntryType::Regular, entry);
    header.set_mode(mode);
    header.set_size(changes.stored);
    builder.append_data(&mut header, &entry.rel_path, (&mut spooled).take(changes.stored)).with_path(OUTPUT)?;
    if !whole {
        part.deltas.insert(entry.rel_path.clone(), Delta { length, blocks: to_runs(&changes.blocks) });
    }
    part.entries.push(ManifestEntry {
        path: entry.rel_path.clone(),
        size: changes.stored,
        digest: changes.hash.finish(),
        mode,
        part: 0,
        kind: EntryKind::File,
        link_target: None,
    });
    Ok(())
}

impl Changes {
    fn add(&mut self, index: u64, block: &[u8], spool: &Path) -> Result<()> {
        self.blocks.push(index);
        self.spool.write_all(block).with_path(spool)?;
        self.hash.update(block);
        self.stored += block.len() as u64;
        Ok(())
    }
}

/// Read the whole file and keep the blocks whose digest differs from the reference's.
fn read_whole(
    file: File,
    path: &Path,
    length: u64,
    old: &FileBlocks,
    changes: &mut Changes,
    spool: &Path,
    part: &mut IncrementalPart,
) -> Result<Vec<crate::blockmap::Digest>> {
    let mut reader = io::BufReader::with_capacity(super::READ_CHUNK, file);
    let mut digests = Vec::with_capacity(usize::try_from(block_count(length)).unwrap_or(0));
    let mut buf = vec![0u8; BLOCK];
    for index in 0..block_count(length) {
        let len = crate::blockmap::block_len(length, index);
        // A file that shrank while it is read is stored zero-padded to its size at open, as
        // a full backup stores it (WAL replay repairs it).
        read_block(&mut reader, &mut buf[..len]).with_path(path)?;
        let d = digest(&buf[..len]);
        digests.push(d);
        if old.digests.get(index as usize) != Some(&d) {
            changes.add(index, &buf[..len], spool)?;
        }
    }
    part.read_bytes += length;
    Ok(digests)
}

/// Read only the blocks in `list` (ascending); every other block keeps the reference's digest.
#[allow(clippy::too_many_arguments)]
fn read_listed(
    file: &File,
    path: &Path,
    length: u64,
    old: &FileBlocks,
    list: &[u64],
    changes: &mut Changes,
    spool: &Path,
    part: &mut IncrementalPart,
) -> Result<Vec<crate::blockmap::Digest>> {
    let mut digests = old.digests.clone();
    digests.resize(usize::try_from(block_count(length)).unwrap_or(0), [0; 16]);
    let mut buf = vec![0u8; BLOCK];
    for &index in list {
        let len = crate::blockmap::block_len(length, index);
        read_block(&mut At { file, pos: index * BLOCK as u64 }, &mut buf[..len]).with_path(path)?;
        part.read_bytes += len as u64;
        let d = digest(&buf[..len]);
        if let Some(slot) = digests.get_mut(index as usize) {
            *slot = d;
        }
        changes.add(index, &buf[..len], spool)?;
    }
    Ok(digests)
}

/// Positioned reads through [`Read`].
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Fill `buf` from `r`; zeros where the file ended early.
fn read_block(r: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => {
                buf[at..].fill(0);
                break;
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
