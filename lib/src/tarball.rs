//! Tar streams of PGDATA: a streaming writer that records what it stored, and an extractor
//! that trusts nothing but the manifest.
//!
//! Both are plain `std::io` and blocking: callers run them on blocking threads and pipe them
//! through compression and encryption. Entry names are the paths of [`crate::pg::datadir`]
//! (relative to PGDATA, a tablespace's content under `pg_tblspc/<oid>/`); GNU long-name
//! entries carry paths over 100 bytes.
//!
//! The writer never loads a whole file: it reads 1 MiB at a time and hashes as it streams. A
//! file changing under it is normal during an online backup (WAL replay repairs it); the tar
//! header holds the size seen when the file was opened, exactly that many bytes are stored
//! (zero-padded if the file shrank, cut if it grew) and the manifest records the size and
//! digest (BLAKE3) of what was stored.

use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::MetadataExt;

use crate::blockmap::{BlockHasher, BlockMap};
use crate::error::IoContext;
use crate::manifest::{EntryKind, FileDigest, FileHasher, ManifestEntry};
use crate::pg::datadir::{DataFile, FileKind};
use crate::{Error, Result};

mod apply;
mod extract;
mod incremental;
mod verify;

pub use apply::{ApplyStats, apply_tar, lay_out, lay_out_keeping};
pub use incremental::{IncrementalPart, write_tar_incremental};

pub use extract::{ExtractStats, extract_tar, extract_tar_keeping};
pub use verify::{VerifyStats, verify_tar};

/// Read size for files streamed into a tar part.
pub const READ_CHUNK: usize = 1 << 20;

/// What the error of a failed write is about when no file read failed: the output stream.
const OUTPUT: &str = "tar output stream";

/// Append `entries` to a tar stream written into `out` and finish the archive, computing the
/// Digest (BLAKE3) and stored size of every file as it streams. Returns `out` and one manifest entry
/// per stored entry, in order, with `part` 0 (the caller numbers its parts). A file that
/// vanished before it could be opened is left out (PostgreSQL drops relations during backups).
///
/// # Errors
/// [`Error::Io`] naming the file for a read failure, or the output stream for a write failure.
pub fn write_tar<W: Write>(out: W, entries: &[DataFile]) -> Result<(W, Vec<ManifestEntry>)> {
    write_tar_blocks(out, entries).map(|(out, stored, _)| (out, stored))
}

/// [`write_tar`], with the block digests of every stored file ([`crate::blockmap`]).
///
/// # Errors
/// As [`write_tar`].
pub fn write_tar_blocks<W: Write>(out: W, entries: &[DataFile]) -> Result<(W, Vec<ManifestEntry>, BlockMap)> {
    let mut builder = tar::Builder::new(out);
    let mut stored = Vec::with_capacity(entries.len());
    let mut blocks = BlockMap::default();
    for entry in entries {
        let item = match &entry.kind {
            FileKind::File => append_file(&mut builder, entry)?.map(|(item, digests)| {
                blocks.files.insert(item.path.clone(), digests);
                item
            }),
            FileKind::Dir => Some(append_dir(&mut builder, entry)?),
            FileKind::Symlink(target) => Some(append_symlink(&mut builder, entry, target)?),
        };
        stored.extend(item);
    }
    let out = builder.into_inner().with_path(OUTPUT)?;
    Ok((out, stored, blocks))
}

/// Write in-memory files (the stop call's `backup_label` and `tablespace_map`) as a finished
/// tar stream, mode 0600, with their manifest entries (`part` 0).
///
/// # Errors
/// [`Error::Io`] naming the output stream.
pub fn write_tar_bytes<W: Write>(out: W, files: &[(&str, &[u8])]) -> Result<(W, Vec<ManifestEntry>)> {
    let mut builder = tar::Builder::new(out);
    let mtime = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let mut stored = Vec::with_capacity(files.len());
    for &(path, data) in files {
        let mut header = header(tar::EntryType::Regular, 0o600, mtime);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, data).with_path(OUTPUT)?;
        stored.push(ManifestEntry {
            path: path.to_owned(),
            size: data.len() as u64,
            digest: crate::manifest::digest::of_bytes(data),
            mode: 0o600,
            part: 0,
            kind: EntryKind::File,
            link_target: None,
        });
    }
    let out = builder.into_inner().with_path(OUTPUT)?;
    Ok((out, stored))
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_size(0);
    header
}

fn entry_header(kind: tar::EntryType, entry: &DataFile) -> tar::Header {
    header(kind, entry.mode, u64::try_from(entry.mtime).unwrap_or(0))
}

fn empty_entry(entry: &DataFile, kind: EntryKind, link_target: Option<String>) -> ManifestEntry {
    ManifestEntry {
        path: entry.rel_path.clone(),
        size: 0,
        digest: FileDigest::none(),
        mode: entry.mode,
        part: 0,
        kind,
        link_target,
    }
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, entry: &DataFile) -> Result<ManifestEntry> {
    let mut header = entry_header(tar::EntryType::Directory, entry);
    builder.append_data(&mut header, &entry.rel_path, io::empty()).with_path(OUTPUT)?;
    Ok(empty_entry(entry, EntryKind::Dir, None))
}

fn append_symlink<W: Write>(builder: &mut tar::Builder<W>, entry: &DataFile, target: &str) -> Result<ManifestEntry> {
    let mut header = entry_header(tar::EntryType::Symlink, entry);
    builder.append_link(&mut header, &entry.rel_path, target).with_path(OUTPUT)?;
    Ok(empty_entry(entry, EntryKind::Symlink, Some(target.to_owned())))
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &DataFile,
) -> Result<Option<(ManifestEntry, crate::blockmap::FileBlocks)>> {
    let path = &entry.abs_path;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::debug!("{} vanished before it was read, skipped", path.display());
            return Ok(None);
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = file.metadata().with_path(path)?;
    let size = meta.len();
    let mut header = entry_header(tar::EntryType::Regular, entry);
    header.set_mode(meta.mode() & 0o7777);
    header.set_size(size);
    let mut reader = ExactReader {
        inner: BufReader::with_capacity(READ_CHUNK, file),
        remaining: size,
        padded: 0,
        hash: FileHasher::new(),
        blocks: BlockHasher::default(),
        read_error: None,
    };
    if let Err(e) = builder.append_data(&mut header, &entry.rel_path, &mut reader) {
        return Err(match reader.read_error.take() {
            Some(read) => Error::io(path, read),
            None => Error::io(OUTPUT, e),
        });
    }
    if reader.padded > 0 {
        tracing::debug!("{} shrank by {} bytes while it was read", path.display(), reader.padded);
    }
    let item = ManifestEntry {
        path: entry.rel_path.clone(),
        size,
        digest: reader.hash.finish(),
        mode: meta.mode() & 0o7777,
        part: 0,
        kind: EntryKind::File,
        link_target: None,
    };
    Ok(Some((item, reader.blocks.finish())))
}

/// Yields exactly `remaining` bytes: the file's, then zeros if it ended early. Hashes them all.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    padded: u64,
    hash: FileHasher,
    blocks: BlockHasher,
    /// A failure reading the file, kept so it is reported against the file, not the output.
    read_error: Option<io::Error>,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let buf = &mut buf[..want];
        let n = if self.padded > 0 {
            0
        } else {
            loop {
                match self.inner.read(buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let msg = e.to_string();
                        self.read_error = Some(e);
                        return Err(io::Error::other(msg));
                    }
                }
            }
        };
        let n = if n == 0 {
            buf.fill(0);
            self.padded += want as u64;
            want
        } else {
            n
        };
        self.hash.update(&buf[..n]);
        self.blocks.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_incremental;
