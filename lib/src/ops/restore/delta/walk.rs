//! The read-only walk of a delta restore: which local files are candidates to keep (and what
//! each must be), and what goes (with its files and bytes counted). Nothing is changed here:
//! the caller removes what [`Walk::remove`] lists once every check of the restore passed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::DeltaReport;
use super::compare::{Candidate, Expect};
use crate::Result;
use crate::error::IoContext;
use crate::manifest::{EntryKind, Manifest, tablespace_link_oid};

pub struct Walk<'a> {
    pub manifest: &'a Manifest,
    /// Every file the target restores, and what it must be to be kept.
    pub files: HashMap<&'a str, Expect<'a>>,
    pub report: DeltaReport,
    /// Files the target has, to compare.
    pub candidates: Vec<Candidate<'a>>,
    /// What the target does not have, or has at another length: removed after the checks.
    pub remove: Vec<PathBuf>,
}

impl<'a> Walk<'a> {
    pub fn new(manifest: &'a Manifest, files: HashMap<&'a str, Expect<'a>>) -> Walk<'a> {
        Walk { manifest, files, report: DeltaReport::default(), candidates: Vec::new(), remove: Vec::new() }
    }

    pub fn dir(&mut self, at: &Path, rel: &str) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(at).with_path(at)?.collect::<std::io::Result<_>>().with_path(at)?;
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let name = entry.file_name();
            let child = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            self.entry(&entry.path(), &child)?;
        }
        Ok(())
    }

    pub fn entry(&mut self, at: &Path, rel: &str) -> Result<()> {
        let meta = fs::symlink_metadata(at).with_path(at)?;
        let listed = self.manifest.lookup(rel).map(|e| e.kind);
        let utf8 = at.to_str().is_some();
        if meta.is_dir() && listed == Some(EntryKind::Dir) && utf8 {
            return self.dir(at, rel);
        }
        if let Some((path, &expect)) = self.files.get_key_value(rel).filter(|_| meta.is_file() && utf8) {
            if !expect.may_have_length(meta.len()) {
                // Not worth reading: fetched again.
                self.remove.push(at.to_path_buf());
                return Ok(());
            }
            self.candidates.push(Candidate { at: at.to_path_buf(), path: path.to_string(), expect });
            return Ok(());
        }
        if meta.file_type().is_symlink() && tablespace_link_oid(rel).is_some() && listed == Some(EntryKind::Symlink) {
            // The extraction makes the link again, to the place this restore puts the tablespace.
            self.remove.push(at.to_path_buf());
            return Ok(());
        }
        self.count(at, &meta)?;
        self.remove.push(at.to_path_buf());
        Ok(())
    }

    /// Count what removing `at` removes (a directory with everything in it, never following
    /// a link).
    fn count(&mut self, at: &Path, meta: &fs::Metadata) -> Result<()> {
        if meta.is_dir() {
            for entry in fs::read_dir(at).with_path(at)? {
                let path = entry.with_path(at)?.path();
                let inner = fs::symlink_metadata(&path).with_path(&path)?;
                self.count(&path, &inner)?;
            }
            return Ok(());
        }
        self.report.removed_files += 1;
        if meta.is_file() {
            self.report.removed_bytes += meta.len();
        }
        Ok(())
    }
}

/// Remove `at`: a directory with everything in it (never following a link), anything else
/// itself; already gone is fine.
///
/// # Errors
/// [`crate::Error::Io`] naming the path.
pub fn remove(at: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(at) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(at),
        Ok(_) => fs::remove_file(at),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(crate::Error::io(at, e)),
        _ => {
            tracing::debug!("delta: removed {}", at.display());
            Ok(())
        }
    }
}
