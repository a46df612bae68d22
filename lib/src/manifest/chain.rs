//! Which backup of an incremental chain supplies each block of each restored file: the newest
//! one that stored it (`docs/FORMAT.md`, section 9.3). Computed from the manifests alone,
//! before anything is read, so that every part of every backup can be streamed at once.

use std::collections::{HashMap, HashSet};

use super::{EntryKind, FileDigest, Manifest};
use crate::blockmap::{block_count, run_blocks, to_runs};
use crate::{Error, Result};

/// What one stored entry of one part contributes to the restored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPlan {
    /// The stored entry's size and digest (from its manifest).
    pub size: u64,
    pub digest: FileDigest,
    /// The file length the stored blocks belong to, and their numbers in stream order.
    pub stored_len: u64,
    pub stream: Vec<[u64; 2]>,
    /// The blocks of the stream this entry writes (the rest newer backups hold).
    pub take: Vec<[u64; 2]>,
}

/// For each backup of `chain` (oldest first, the restore target last; `names` for messages):
/// part index → path → what that entry writes. Entries that write nothing are left out.
///
/// # Errors
/// [`Error::Corrupt`] when a file of the target cannot be rebuilt: a backup says a file is
/// unchanged or changed against a reference that does not hold it, or no backup holds some
/// of its blocks.
pub fn plan(chain: &[&Manifest], names: &[&str]) -> Result<Vec<HashMap<u32, HashMap<String, EntryPlan>>>> {
    let mut out: Vec<HashMap<u32, HashMap<String, EntryPlan>>> = vec![HashMap::new(); chain.len()];
    let Some(target) = chain.last() else { return Ok(out) };
    let unchanged: Vec<HashSet<&str>> =
        chain.iter().map(|m| m.unchanged.iter().map(|u| u.path.as_str()).collect()).collect();
    let name = |k: usize| names.get(k).copied().unwrap_or("?");
    for (path, length, _) in target.restored_files() {
        let count = usize::try_from(block_count(length)).map_err(|_| Error::corrupt(path, "too long"))?;
        let mut need = vec![true; count];
        let mut remaining = count;
        let mut k = chain.len();
        while remaining > 0 {
            let Some(kk) = k.checked_sub(1) else {
                return Err(Error::corrupt(path, format!("{remaining} blocks are in no backup of the chain")));
            };
            k = kk;
            let m = chain[k];
            let stored = m.lookup(path).filter(|e| e.kind == EntryKind::File);
            let Some(entry) = stored else {
                if unchanged[k].contains(path) {
                    continue;
                }
                let why = format!("backup {} builds on backup {}, which does not hold it", name(k + 1), name(k));
                return Err(Error::corrupt(path, why));
            };
            let (stored_len, stream) = match m.deltas.get(path) {
                Some(d) => (d.length, d.blocks.clone()),
                None => (entry.size, vec![[0, block_count(entry.size)]]),
            };
            let mut take = Vec::new();
            for b in run_blocks(&stream) {
                if let Some(slot) = usize::try_from(b).ok().and_then(|i| need.get_mut(i))
                    && *slot
                {
                    *slot = false;
                    remaining -= 1;
                    take.push(b);
                }
            }
            let whole = !m.deltas.contains_key(path);
            if whole && remaining > 0 {
                let why = format!("backup {} stores it whole but {remaining} blocks are in no later backup", name(k));
                return Err(Error::corrupt(path, why));
            }
            if !take.is_empty() {
                let plan = EntryPlan {
                    size: entry.size,
                    digest: entry.digest.clone(),
                    stored_len,
                    stream,
                    take: to_runs(&take),
                };
                out[k].entry(entry.part).or_default().insert(path.to_string(), plan);
            }
            if whole {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Delta, ManifestEntry, ManifestReference, Unchanged};
    use super::*;

    fn file(path: &str, size: u64, part: u32) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            size,
            digest: FileDigest::Blake3("ab".repeat(32)),
            mode: 0o600,
            part,
            kind: EntryKind::File,
            link_target: None,
        }
    }

    fn incr(files: Vec<ManifestEntry>, deltas: Vec<(&str, Delta)>, unchanged: &[(&str, u64)]) -> Manifest {
        let mut m = Manifest::new(files, vec![]);
        m.reference = Some(ManifestReference { name: "r".into(), metadata_sha256: "cd".repeat(32) });
        m.deltas = deltas.into_iter().map(|(p, d)| (p.to_string(), d)).collect();
        m.unchanged = unchanged.iter().map(|&(p, l)| Unchanged { path: p.into(), length: l, mode: 0o600 }).collect();
        m
    }

    #[test]
    fn newest_block_wins_and_truncation_and_unchanged() {
        const B: u64 = 8192;
        let full = Manifest::new(vec![file("a", 4 * B, 0), file("b", 2 * B, 1), file("gone", 1, 0)], vec![]);
        // a: blocks 1 and 5 changed (extended to 6 blocks); b unchanged; gone dropped.
        let i1 = incr(
            vec![file("a", 2 * B, 0)],
            vec![("a", Delta { length: 6 * B, blocks: vec![[1, 1], [5, 1]] })],
            &[("b", 2 * B)],
        );
        // a: truncated to 3 blocks, block 1 changed again; b unchanged.
        let i2 =
            incr(vec![file("a", B, 0)], vec![("a", Delta { length: 3 * B, blocks: vec![[1, 1]] })], &[("b", 2 * B)]);
        let p = plan(&[&full, &i1, &i2], &["f", "i1", "i2"]).unwrap_or_default();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2][&0]["a"].take, vec![[1, 1]]);
        assert!(p[1].is_empty(), "block 5 of i1 is past the end now: {:?}", p[1]);
        assert_eq!(p[0][&0]["a"].take, vec![[0, 1], [2, 1]]);
        assert_eq!(p[0][&1]["b"].take, vec![[0, 2]]);
        assert!(!p[0][&0].contains_key("gone"));
    }

    #[test]
    fn a_file_no_backup_holds_is_corrupt() {
        let full = Manifest::new(vec![file("a", 8192, 0)], vec![]);
        let i1 = incr(vec![], vec![], &[("b", 8192)]);
        let err = plan(&[&full, &i1], &["f", "i1"]).map(|_| ()).map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("b") && e.contains("backup i1 builds on backup f")));
    }
}
