//! Restoring an incremental chain straight into PGDATA: the target backup's tree is laid out
//! first (directories, tablespace links, every file created at its final length), then the
//! parts of every backup of the chain are streamed, in any order and in parallel, each writing
//! only the blocks it owns (the newest backup that stored a block owns it) at their offsets.
//! Every block written is checked against the target backup's block map (authenticated by its
//! manifest), so each byte of the result is checked once; blocks a newer backup supersedes are
//! read past without being hashed (`verify` checks every stored entry's digest). Runs of
//! consecutive blocks are written in one call. Nothing is staged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::extract::Extractor;
use crate::blockmap::{BLOCK, BlockMap, DigestAlgo, FileBlocks, block_len, run_blocks};
use crate::error::IoContext;
use crate::manifest::chain::EntryPlan;
use crate::manifest::{EntryKind, Manifest};
use crate::{Error, Result};

/// Lay out the tree of `target` (the newest manifest of the chain) under `dest`: directories
/// and tablespace links, and each file to restore created empty at its final length. Returns
/// where each file is.
///
/// # Errors
/// As [`super::extract_tar`] for hostile paths; [`Error::Io`] naming the path.
pub fn lay_out(dest: &Path, target: &Manifest, remap: &BTreeMap<u32, PathBuf>) -> Result<HashMap<String, PathBuf>> {
    lay_out_keeping(dest, target, remap, &HashSet::new())
}

/// As [`lay_out`], but the files named in `keep` (manifest paths a delta restore found equal
/// to the target on disk) are left as they are and not returned: nothing is written to them.
///
/// # Errors
/// As [`lay_out`].
pub fn lay_out_keeping(
    dest: &Path,
    target: &Manifest,
    remap: &BTreeMap<u32, PathBuf>,
    keep: &HashSet<String>,
) -> Result<HashMap<String, PathBuf>> {
    target.validate()?;
    let mut x = Extractor::new(dest, target, remap);
    for e in &target.files {
        match e.kind {
            EntryKind::Dir => x.dir(&e.path)?,
            EntryKind::Symlink => x.symlink(&e.path, e, e.link_target.clone())?,
            EntryKind::File => {}
        }
    }
    let mut out = HashMap::new();
    for (path, length, _) in target.restored_files().filter(|(p, _, _)| !keep.contains(*p)) {
        let at = x.resolve(path)?;
        let file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&at).map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::Refused(format!("{path} would replace {}", at.display())),
                _ => Error::io(&at, e),
            })?;
        file.set_len(length).with_path(&at)?;
        out.insert(path.to_string(), at);
    }
    Ok(out)
}

/// What applying one part wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    pub blocks: u64,
    pub bytes: u64,
}

/// Stream one part (a decoded tar stream) and write the blocks `plan` gives it into the files
/// laid out at `places`, each checked against `target` (the target backup's block map). Entries
/// the plan does not name are read and skipped.
///
/// # Errors
/// [`Error::Corrupt`] for a malformed stream, an entry whose size differs from its
/// manifest, a block that differs from the block map, or a planned entry the part lacks.
pub fn apply_tar<R: Read>(
    input: R,
    plan: &HashMap<String, EntryPlan>,
    places: &HashMap<String, PathBuf>,
    target: &BlockMap,
) -> Result<ApplyStats> {
    let mut stats = ApplyStats::default();
    let mut archive = tar::Archive::new(input);
    let mut buf = vec![0u8; BLOCK];
    let mut seen = std::collections::HashSet::new();
    for entry in archive.entries().map_err(|e| Error::corrupt("tar stream", e))? {
        let mut entry = entry.map_err(|e| Error::corrupt("tar stream", e))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let Some((path, p)) = plan.get_key_value(&name) else {
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| Error::corrupt("tar stream", e))?;
            continue;
        };
        let (Some(at), Some(blocks)) = (places.get(path), target.files.get(path)) else {
            return Err(Error::corrupt(path, "planned but not in the target backup's tree or block map"));
        };
        if !seen.insert(path) {
            return Err(Error::corrupt(path, "appears twice in the part"));
        }
        if entry.size() != p.size {
            let why = format!("size {} in the archive but {} in the manifest", entry.size(), p.size);
            return Err(Error::corrupt(path, why));
        }
        stats.blocks += apply_entry(&mut entry, path, p, at, (blocks, target.algo), &mut buf)?;
        stats.entries += 1;
    }
    if let Some(missing) = plan.keys().find(|k| !seen.contains(k)) {
        return Err(Error::corrupt(missing, "is in the manifest but not in the part"));
    }
    stats.bytes = stats.blocks * BLOCK as u64;
    Ok(stats)
}

fn apply_entry(
    data: &mut impl Read,
    path: &str,
    p: &EntryPlan,
    at: &Path,
    (target, algo): (&FileBlocks, DigestAlgo),
    buf: &mut [u8],
) -> Result<u64> {
    let file = OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(at).with_path(at)?;
    let mut run = Run { file: &file, at, start: 0, bytes: Vec::with_capacity(RUN_BYTES) };
    let mut take = run_blocks(&p.take).peekable();
    let mut written = 0;
    for b in run_blocks(&p.stream) {
        let len = block_len(p.stored_len, b);
        data.read_exact(&mut buf[..len]).map_err(|e| Error::corrupt(path, format!("archive ended early: {e}")))?;
        if take.peek() != Some(&b) {
            continue;
        }
        take.next();
        let ok =
            len == block_len(target.length, b) && target.digests.get(b as usize) == Some(&algo.digest(&buf[..len]));
        if !ok {
            return Err(Error::corrupt(path, format!("block {b} differs from the target backup's block map")));
        }
        run.push(b, &buf[..len])?;
        written += 1;
    }
    run.flush()?;
    if take.next().is_some() {
        return Err(Error::corrupt(path, "planned blocks are not in the stored entry"));
    }
    let mut rest = 0u64;
    loop {
        match data.read(buf) {
            Ok(0) => break,
            Ok(n) => rest += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::corrupt("tar stream", e)),
        }
    }
    if rest > 0 {
        return Err(Error::corrupt(path, format!("{rest} bytes more than the manifest's blocks")));
    }
    Ok(written)
}

/// Bytes of consecutive blocks gathered before one write.
const RUN_BYTES: usize = 1 << 20;

/// Consecutive checked blocks waiting to be written with one call.
struct Run<'a> {
    file: &'a std::fs::File,
    at: &'a Path,
    /// The block the gathered bytes start at.
    start: u64,
    bytes: Vec<u8>,
}

impl Run<'_> {
    fn push(&mut self, block: u64, data: &[u8]) -> Result<()> {
        let next = self.start + (self.bytes.len() / BLOCK) as u64;
        if !self.bytes.is_empty() && (block != next || self.bytes.len() + data.len() > RUN_BYTES) {
            self.flush()?;
        }
        if self.bytes.is_empty() {
            self.start = block;
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.bytes.is_empty() {
            self.file.write_all_at(&self.bytes, self.start * BLOCK as u64).with_path(self.at)?;
            self.bytes.clear();
        }
        Ok(())
    }
}
