//! What an incremental backup's manifest adds (`docs/FORMAT.md`, section 9): its reference, the
//! files stored as changed blocks only, and the files not stored again.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{EntryKind, Manifest, check_relative_path};
use crate::blockmap::{block_count, block_len, run_blocks};
use crate::{Error, Result};

/// The backup an incremental builds on, and the digest of that backup's metadata's canonical
/// form, so that a restore uses exactly the backup the increment was computed against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestReference {
    pub name: String,
    pub metadata_sha256: String,
}

/// A file stored as its changed blocks: the stored bytes are those blocks in ascending order
/// (8192 bytes each, the file's last block as long as it is); every other block below
/// `length` is the reference's. The file is `length` bytes long (shorter: truncated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    pub length: u64,
    /// Changed blocks as `[first, count]` runs, ascending and disjoint.
    pub blocks: Vec<[u64; 2]>,
}

/// A file identical to the reference's file at the same path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unchanged {
    pub path: String,
    pub length: u64,
    pub mode: u32,
}

impl Delta {
    /// How many bytes the stored entry holds.
    pub fn stored_size(&self) -> u64 {
        run_blocks(&self.blocks).map(|b| block_len(self.length, b) as u64).sum()
    }

    /// Why the runs are malformed, if they are.
    fn problem(&self) -> Option<String> {
        let count = block_count(self.length);
        let mut next = 0u64;
        for &[first, n] in &self.blocks {
            let end = first.saturating_add(n);
            if n == 0 || first < next || end > count {
                return Some(format!(
                    "block run [{first}, {n}] is empty, out of order or past the end ({count} blocks)"
                ));
            }
            next = end;
        }
        None
    }
}

impl Manifest {
    /// Whether this is the manifest of an incremental backup.
    pub fn is_incremental(&self) -> bool {
        self.reference.is_some()
    }

    /// Every file of the backup as restored: (path, length, mode).
    pub fn restored_files(&self) -> impl Iterator<Item = (&str, u64, u32)> {
        let stored = self.files.iter().filter(|e| e.kind == EntryKind::File).map(|e| {
            let length = self.deltas.get(&e.path).map_or(e.size, |d| d.length);
            (e.path.as_str(), length, e.mode)
        });
        stored.chain(self.unchanged.iter().map(|u| (u.path.as_str(), u.length, u.mode)))
    }

    pub(super) fn validate_incremental(&self, stored: &HashSet<&str>) -> Result<()> {
        if self.reference.is_none() && (!self.deltas.is_empty() || !self.unchanged.is_empty()) {
            return Err(Error::Refused("manifest has deltas or unchanged files but no reference".into()));
        }
        if let Some(r) = &self.reference {
            check_name(&r.name)?;
            if r.metadata_sha256.len() != 64 || hex::decode(&r.metadata_sha256).is_err() {
                return Err(Error::Refused(format!("manifest reference {} has a malformed metadata_sha256", r.name)));
            }
        }
        for (path, delta) in &self.deltas {
            let entry = self.lookup(path).filter(|e| e.kind == EntryKind::File);
            let Some(entry) = entry else {
                return Err(Error::Refused(format!("manifest delta {path} is not a stored file")));
            };
            if let Some(why) = delta.problem() {
                return Err(Error::Refused(format!("manifest delta {path}: {why}")));
            }
            if delta.stored_size() != entry.size {
                let why = format!("its blocks make {} bytes but {} are stored", delta.stored_size(), entry.size);
                return Err(Error::Refused(format!("manifest delta {path}: {why}")));
            }
        }
        let mut seen = HashSet::with_capacity(self.unchanged.len());
        for u in &self.unchanged {
            check_relative_path(&u.path)?;
            if stored.contains(u.path.as_str()) || !seen.insert(u.path.as_str()) {
                return Err(Error::Refused(format!("manifest lists {} twice", u.path)));
            }
        }
        Ok(())
    }
}

/// A backup name as a reference: one path component of safe characters.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && name != "."
        && name != "..";
    if ok { Ok(()) } else { Err(Error::Refused(format!("manifest reference {name:?} is not a backup name"))) }
}

#[cfg(test)]
mod tests {
    use super::super::ManifestEntry;
    use super::*;

    fn manifest(size: u64, delta: Delta) -> Manifest {
        let entry = ManifestEntry {
            path: "base/1/2".into(),
            size,
            digest: crate::manifest::FileDigest::Blake3("ab".repeat(32)),
            mode: 0o600,
            part: 0,
            kind: EntryKind::File,
            link_target: None,
        };
        let mut m = Manifest::new(vec![entry], vec![]);
        m.reference =
            Some(ManifestReference { name: "main_x_20260101_000000".into(), metadata_sha256: "cd".repeat(32) });
        m.deltas.insert("base/1/2".into(), delta);
        m
    }

    #[test]
    fn deltas_are_checked() {
        let ok = manifest(8192 + 10, Delta { length: 3 * 8192 + 10, blocks: vec![[1, 1], [3, 1]] });
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
        assert_eq!(ok.restored_files().next(), Some(("base/1/2", 3 * 8192 + 10, 0o600)));
        let wrong_size = manifest(8192, Delta { length: 3 * 8192 + 10, blocks: vec![[1, 1], [3, 1]] });
        assert!(wrong_size.validate().is_err());
        let overlap = manifest(3 * 8192, Delta { length: 4 * 8192, blocks: vec![[1, 2], [2, 1]] });
        assert!(overlap.validate().is_err());
        let past_end = manifest(8192, Delta { length: 8192, blocks: vec![[1, 1]] });
        assert!(past_end.validate().is_err());
        let mut no_ref = ok.clone();
        no_ref.reference = None;
        assert!(no_ref.validate().is_err());
        let mut dup = ok.clone();
        dup.unchanged.push(Unchanged { path: "base/1/2".into(), length: 0, mode: 0o600 });
        assert!(dup.validate().is_err());
        let mut bad_name = ok;
        bad_name.reference = Some(ManifestReference { name: "../x".into(), metadata_sha256: "cd".repeat(32) });
        assert!(bad_name.validate().is_err());
    }
}
