//! The backup manifest: every stored entry with its size and content digest (BLAKE3 since
//! manifest version 2, SHA-256 before: [`FileDigest`]), and the tablespaces.
//!
//! Written by `base-backup` beside the tar parts and read by `pitr-prepare`, which extracts
//! nothing that the manifest does not list ([`crate::tarball::extract_tar`]). A manifest read
//! from a repository is input like any other: [`Manifest::validate`] refuses hostile paths
//! before anything looks a path up.
//!
//! Paths are relative to PGDATA with `/` separators and no trailing slash; a tablespace's
//! content is listed under `pg_tblspc/<oid>/...` (see [`crate::pg::datadir`]).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub mod chain;
pub mod digest;
mod incremental;
pub use digest::{FileDigest, FileHasher};
pub use incremental::{Delta, ManifestReference, Unchanged};

/// The manifest format version this build writes: 2 lists BLAKE3 digests. Version 1 (SHA-256)
/// is read as well.
pub const MANIFEST_VERSION: u32 = 2;

/// Every stored entry of one base backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub files: Vec<ManifestEntry>,
    pub tablespaces: Vec<ManifestTablespace>,
    /// The backup this manifest belongs to, as its metadata states it (written since metadata
    /// format 2; absent in older manifests). See [`ManifestBackup`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ManifestBackup>,
    /// An incremental backup's reference: the backup its deltas and unchanged files build on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ManifestReference>,
    /// Lowercase hex SHA-256 of the backup's block map (`blockmap.bin`, decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_map_sha256: Option<String>,
    /// Stored files that hold only changed blocks, by path (see [`Delta`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub deltas: std::collections::BTreeMap<String, Delta>,
    /// Files identical to the reference's, not stored again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<Unchanged>,
    /// Path to index in `files`, built on first lookup.
    #[serde(skip)]
    index: OnceLock<HashMap<String, usize>>,
}

/// What kind of entry a manifest line describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One stored entry: what was written into the tar part, not what the file looked like before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    /// Bytes stored (0 for directories and links).
    pub size: u64,
    /// Digest of the stored bytes (empty for directories and links), listed under its
    /// algorithm's name (`blake3`, or `sha256` in version-1 manifests).
    #[serde(flatten)]
    pub digest: FileDigest,
    /// The mode the entry had in the cluster (restores use 0600 files and 0700 directories).
    pub mode: u32,
    /// Which tar part holds the entry.
    pub part: u32,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// What a backup's plain-JSON metadata says about the backup, kept inside the authenticated
/// manifest so that a restore can cross-check the metadata before it writes anything
/// (`docs/FORMAT.md`, section 7; checked in `ops/repo/metadata_auth.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBackup {
    pub name: String,
    pub env: String,
    pub system_identifier: crate::wal::SystemId,
    pub timeline: u32,
    pub start_lsn: crate::wal::Lsn,
    pub stop_lsn: crate::wal::Lsn,
    /// How many tar parts the backup has.
    pub parts: u32,
    /// Lowercase hex SHA-256 of the metadata's canonical form (every field but `seconds` and `mac`).
    pub metadata_sha256: String,
}

/// A tablespace as it was when the backup was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTablespace {
    pub oid: u32,
    pub name: String,
    /// The tablespace directory (`pg_tablespace_location`), absolute.
    pub location: String,
}

impl Manifest {
    /// An empty manifest of the current version.
    pub fn new(files: Vec<ManifestEntry>, tablespaces: Vec<ManifestTablespace>) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            files,
            tablespaces,
            backup: None,
            reference: None,
            block_map_sha256: None,
            deltas: Default::default(),
            unchanged: Vec::new(),
            index: OnceLock::new(),
        }
    }

    /// Check everything a reader relies on: the version, every path (relative, no `..`, `.`
    /// or empty components, no NUL, no duplicates), links only as `pg_tblspc/<oid>`, and
    /// tablespace locations absolute.
    ///
    /// # Errors
    /// [`Error::Refused`] naming the first offending path; [`Error::Invalid`] for an unknown
    /// version.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MANIFEST_VERSION).contains(&self.version) {
            return Err(Error::Invalid(format!(
                "manifest version {} is not supported (expected 1 to {MANIFEST_VERSION})",
                self.version
            )));
        }
        let mut seen = HashSet::with_capacity(self.files.len());
        for entry in &self.files {
            check_relative_path(&entry.path)?;
            if !seen.insert(entry.path.as_str()) {
                return Err(Error::Refused(format!("manifest lists {} twice", entry.path)));
            }
            if entry.kind == EntryKind::Symlink && tablespace_link_oid(&entry.path).is_none() {
                return Err(Error::Refused(format!("manifest entry {} is a symlink outside pg_tblspc", entry.path)));
            }
            if entry.kind != EntryKind::File && entry.size != 0 {
                return Err(Error::Refused(format!(
                    "manifest entry {} is not a file but has size {}",
                    entry.path, entry.size
                )));
            }
            if entry.kind == EntryKind::File && !entry.digest.is_well_formed() {
                return Err(Error::Refused(format!(
                    "manifest entry {} has a malformed {}",
                    entry.path,
                    entry.digest.algorithm()
                )));
            }
        }
        let mut oids = HashSet::new();
        for ts in &self.tablespaces {
            if !oids.insert(ts.oid) {
                return Err(Error::Refused(format!("manifest lists tablespace {} twice", ts.oid)));
            }
            let loc = &ts.location;
            let bad = !loc.starts_with('/') || loc.contains('\0') || loc.split('/').any(|c| c == "..");
            if bad {
                return Err(Error::Refused(format!("manifest tablespace {} has an unsafe location {loc:?}", ts.oid)));
            }
        }
        self.validate_incremental(&seen)
    }

    /// The entry stored at `path`, if any. The index is built on the first call; if `files`
    /// changed since, a stale hit is detected and a miss falls back to a scan, so the answer
    /// is always right.
    pub fn lookup(&self, path: &str) -> Option<&ManifestEntry> {
        let index =
            self.index.get_or_init(|| self.files.iter().enumerate().map(|(i, e)| (e.path.clone(), i)).collect());
        let hit = index.get(path).and_then(|&i| self.files.get(i)).filter(|e| e.path == path);
        hit.or_else(|| self.files.iter().find(|e| e.path == path))
    }

    /// The tablespace with this oid, if the manifest lists it.
    pub fn tablespace(&self, oid: u32) -> Option<&ManifestTablespace> {
        self.tablespaces.iter().find(|t| t.oid == oid)
    }

    /// The entries of `part` that are not in `extracted`: what a complete restore still lacks.
    pub fn missing<'a>(&'a self, part: u32, extracted: &HashSet<String>) -> Vec<&'a ManifestEntry> {
        self.files.iter().filter(|e| e.part == part && !extracted.contains(&e.path)).collect()
    }

    /// Total bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|e| e.size).sum()
    }
}

/// Refuse a path that is empty, absolute, contains NUL, or has an empty, `.` or `..` component.
///
/// # Errors
/// [`Error::Refused`] naming the path.
pub fn check_relative_path(path: &str) -> Result<()> {
    match path_problem(path) {
        Some(r) => Err(Error::Refused(format!("path {path:?} {r}"))),
        None => Ok(()),
    }
}

/// Why `path` is not a safe relative path, if it is not.
pub fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("is empty")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else if path.starts_with('/') {
        Some("is absolute")
    } else if path.split('/').any(|c| c == "..") {
        Some("contains '..'")
    } else if path.split('/').any(|c| c.is_empty() || c == ".") {
        Some("has an empty or '.' component")
    } else {
        None
    }
}

/// The oid of a `pg_tblspc/<oid>` path (the tablespace link itself), else `None`.
pub fn tablespace_link_oid(path: &str) -> Option<u32> {
    let rest = path.strip_prefix("pg_tblspc/")?;
    parse_oid(rest)
}

/// `(oid, rest)` for a path inside a tablespace, `pg_tblspc/<oid>/<rest>`, else `None`.
pub fn tablespace_content(path: &str) -> Option<(u32, &str)> {
    let rest = path.strip_prefix("pg_tblspc/")?;
    let (oid, inner) = rest.split_once('/')?;
    Some((parse_oid(oid)?, inner))
}

fn parse_oid(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            size: 3,
            digest: FileDigest::Blake3("ab".repeat(32)),
            mode: 0o600,
            part: 0,
            kind: EntryKind::File,
            link_target: None,
        }
    }

    fn refused(m: &Manifest) -> String {
        match m.validate() {
            Err(Error::Refused(msg)) => msg,
            other => format!("not refused: {other:?}"),
        }
    }

    #[test]
    fn validate_accepts_normal_and_looks_up() {
        let m = Manifest::new(vec![file("base/1/1259"), file("PG_VERSION")], vec![]);
        assert!(m.validate().is_ok());
        assert_eq!(m.lookup("PG_VERSION").map(|e| e.size), Some(3));
        assert!(m.lookup("nope").is_none());
        let json = serde_json::to_string(&m).unwrap_or_default();
        let back: Manifest = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back.lookup("base/1/1259"), m.lookup("base/1/1259"));
    }

    #[test]
    fn validate_refuses_hostile_paths() {
        for (path, want) in [
            ("/etc/passwd", "path \"/etc/passwd\" is absolute"),
            ("../x", "path \"../x\" contains '..'"),
            ("a/../../x", "path \"a/../../x\" contains '..'"),
            ("", "path \"\" is empty"),
            ("a\0b", "path \"a\\0b\" contains a NUL byte"),
            ("a//b", "path \"a//b\" has an empty or '.' component"),
            ("./a", "path \"./a\" has an empty or '.' component"),
        ] {
            assert_eq!(refused(&Manifest::new(vec![file(path)], vec![])), want);
        }
        let dup = Manifest::new(vec![file("a"), file("a")], vec![]);
        assert_eq!(refused(&dup), "manifest lists a twice");
        let mut link = file("base/evil");
        link.kind = EntryKind::Symlink;
        link.size = 0;
        assert_eq!(
            refused(&Manifest::new(vec![link], vec![])),
            "manifest entry base/evil is a symlink outside pg_tblspc"
        );
        let ts = ManifestTablespace { oid: 1, name: "t".into(), location: "rel/dir".into() };
        assert_eq!(
            refused(&Manifest::new(vec![], vec![ts])),
            "manifest tablespace 1 has an unsafe location \"rel/dir\""
        );
    }

    #[test]
    fn tablespace_paths() {
        assert_eq!(tablespace_link_oid("pg_tblspc/16384"), Some(16384));
        assert_eq!(tablespace_link_oid("pg_tblspc/16384/x"), None);
        assert_eq!(tablespace_link_oid("pg_tblspc/abc"), None);
        assert_eq!(tablespace_content("pg_tblspc/16384/PG_15/1"), Some((16384, "PG_15/1")));
        assert_eq!(tablespace_content("base/1"), None);
    }
}
