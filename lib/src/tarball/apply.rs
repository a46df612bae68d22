//! Restoring an incremental chain straight into PGDATA: the target backup's tree is laid out
//! first (directories, tablespace links, every file created at its final length), then the
//! parts of every backup of the chain are streamed, in any order and in parallel, each writing
//! only the blocks it owns (the newest backup that stored a block owns it) at their offsets.
//! Every block written is checked against the target backup's block map, and every stored
//! entry against its manifest's SHA-256. Nothing is staged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use super::extract::Extractor;
use crate::blockmap::{BLOCK, FileBlocks, block_len, digest, run_blocks};
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
/// [`Error::Corrupt`] for a malformed stream, an entry whose size or SHA-256 differs from its
/// manifest, a block that differs from the block map, or a planned entry the part lacks.
pub fn apply_tar<R: Read>(
    input: R,
    plan: &HashMap<String, EntryPlan>,
    places: &HashMap<String, PathBuf>,
    target: &BTreeMap<String, FileBlocks>,
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
        let (Some(at), Some(blocks)) = (places.get(path), target.get(path)) else {
            return Err(Error::corrupt(path, "planned but not in the target backup's tree or block map"));
        };
        if !seen.insert(path) {
            return Err(Error::corrupt(path, "appears twice in the part"));
        }
        if entry.size() != p.size {
            let why = format!("size {} in the archive but {} in the manifest", entry.size(), p.size);
            return Err(Error::corrupt(path, why));
        }
        stats.blocks += apply_entry(&mut entry, path, p, at, blocks, &mut buf)?;
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
    target: &FileBlocks,
    buf: &mut [u8],
) -> Result<u64> {
    let file = OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(at).with_path(at)?;
    let mut hash = Context::new(&SHA256);
    let mut take = run_blocks(&p.take).peekable();
    let mut written = 0;
    for b in run_blocks(&p.stream) {
        let len = block_len(p.stored_len, b);
        data.read_exact(&mut buf[..len]).map_err(|e| Error::corrupt(path, format!("archive ended early: {e}")))?;
        hash.update(&buf[..len]);
        if take.peek() != Some(&b) {
            continue;
        }
        take.next();
        let ok = len == block_len(target.length, b) && target.digests.get(b as usize) == Some(&digest(&buf[..len]));
        if !ok {
            return Err(Error::corrupt(path, format!("block {b} differs from the target backup's block map")));
        }
        file.write_all_at(&buf[..len], b * BLOCK as u64).with_path(at)?;
        written += 1;
    }
    if take.next().is_some() {
        return Err(Error::corrupt(path, "planned blocks are not in the stored entry"));
    }
    let mut rest = 0u64;
    loop {
        match data.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                rest += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::corrupt("tar stream", e)),
        }
    }
    if rest > 0 || !hex::encode(hash.finish()).eq_ignore_ascii_case(&p.sha256) {
        return Err(Error::corrupt(path, "sha-256 differs from the manifest"));
    }
    Ok(written)
}
