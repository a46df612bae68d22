//! `pitr-prepare --delta`: restore over an existing data directory of the same cluster,
//! fetching only what differs.
//!
//! Before anything is written: no live server holds the directory ([`check_not_running`]) and
//! its `global/pg_control` names the backup's system identifier ([`check_cluster`]); another
//! cluster's directory is refused untouched. Then [`clean`] walks the directory (and the
//! backup's tablespaces): a file of a full backup is kept when it has the size and digest its
//! authenticated manifest lists; a file of an incremental backup when it has the length and
//! every block digest of the target's effective block map (authenticated, loaded with the
//! chain before anything is written: [`clean_chain`]). Every other file is removed, to be
//! fetched, and whatever the backup does not have is removed too (`postmaster.pid`, `pg_wal`
//! content, an old `backup_label`, `recovery.signal`, links where the backup has
//! directories...). The extraction then skips the kept files
//! ([`crate::tarball::extract_tar_keeping`], [`super::chain::restore`]) and whole parts that
//! hold nothing to write. If the restore fails halfway, [`disable`] moves `global/pg_control`
//! aside so the directory cannot be started, and a new `--delta` run still recognises it.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blockmap::BlockMap;
use crate::error::IoContext;
use crate::manifest::{EntryKind, Manifest, tablespace_content, tablespace_link_oid};
use crate::ops::repo::catalog::BackupMetadata;
use crate::pg::control::{self, PG_CONTROL};
use crate::wal::sysid::SystemId;
use crate::{Error, Result};

mod compare;
use compare::{Candidate, Expect, compare};

/// The advice when --delta refuses a data directory.
const FORCE_INSTEAD: &str = "use --force to delete its contents and restore everything";

/// Where [`disable`] moves the control file of a delta restore that failed.
pub const PG_CONTROL_ASIDE: &str = "global/pg_control.walvault-delta";

/// What a delta restore kept, fetched and removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeltaReport {
    pub kept_files: u64,
    pub kept_bytes: u64,
    pub fetched_files: u64,
    pub fetched_bytes: u64,
    /// Files (and links) the backup does not have, removed, and their bytes.
    pub removed_files: u64,
    pub removed_bytes: u64,
    /// Parts not downloaded at all: everything in them was kept (for a chain: parts of all
    /// its backups, `parts` counting every part of the chain).
    pub parts_skipped: u64,
    pub parts: u64,
}

/// The outcome of [`clean`]: what the extraction leaves alone.
#[derive(Debug, Default)]
pub struct Plan {
    /// Manifest paths of the files kept.
    pub keep: Arc<HashSet<String>>,
    /// Parts with nothing to write (of a full backup; a chain restore works them out itself).
    pub skip_parts: HashSet<u32>,
    pub report: DeltaReport,
}

/// No PostgreSQL server runs on `pgdata` (a stale `postmaster.pid` is fine: it is removed).
///
/// # Errors
/// [`Error::Refused`] naming the directory and the server's process id.
pub fn check_not_running(pgdata: &Path) -> Result<()> {
    match control::live_postmaster(pgdata) {
        Some(pid) => Err(Error::Refused(format!(
            "{} is in use by the running server with process id {pid}: stop it first (pg_ctl -D {} stop)",
            pgdata.display(),
            pgdata.display()
        ))),
        None => Ok(()),
    }
}

/// `pgdata` is absent, empty, or a data directory of the backup's cluster (its control file,
/// or the one a failed delta restore moved aside, names the backup's system identifier).
///
/// # Errors
/// [`Error::Refused`] for another cluster's directory or a non-empty directory without a
/// control file; [`Error::Io`]/[`Error::Invalid`] for an unreadable control file.
pub fn check_cluster(pgdata: &Path, backup: &BackupMetadata) -> Result<()> {
    check_identifier(pgdata, &backup.name, backup.system_identifier)
}

fn check_identifier(pgdata: &Path, backup: &str, system_identifier: SystemId) -> Result<()> {
    let empty = fs::read_dir(pgdata).map(|mut d| d.next().is_none()).unwrap_or(true);
    if empty {
        return Ok(());
    }
    let found = match control::system_identifier_in(pgdata, PG_CONTROL)? {
        Some(id) => Some(id),
        None => control::system_identifier_in(pgdata, PG_CONTROL_ASIDE)?,
    };
    let Some(ours) = found else {
        return Err(Error::Refused(format!(
            "{} has no {PG_CONTROL}: cannot tell which cluster it belongs to, so --delta leaves it alone",
            pgdata.display()
        ))
        .with_hint(FORCE_INSTEAD));
    };
    if ours != system_identifier.0 {
        return Err(Error::Refused(format!(
            "{} belongs to the cluster with system identifier {ours}, backup {} to system identifier {}: --delta restores only over the same cluster (nothing was changed)",
            pgdata.display(),
            backup,
            system_identifier
        ))
        .with_hint(FORCE_INSTEAD));
    }
    Ok(())
}

/// Compare `pgdata` (and the tablespaces) with the manifest of a full backup, keep what
/// matches, remove the rest; `jobs` files are hashed at once. Blocking.
///
/// # Errors
/// [`Error::Io`] naming the path that could not be read or removed.
pub fn clean(pgdata: &Path, manifest: &Manifest, remap: &BTreeMap<u32, PathBuf>, jobs: usize) -> Result<Plan> {
    clean_with(pgdata, manifest, None, remap, jobs)
}

/// As [`clean`] for an incremental backup: `manifest` is its manifest (its tree) and `blocks`
/// its effective block map (every restored file's length and block digests), which decides
/// each file. Blocking.
///
/// # Errors
/// [`Error::Corrupt`] for a file of the manifest the map lacks; as [`clean`].
pub fn clean_chain(
    pgdata: &Path,
    manifest: &Manifest,
    blocks: &BlockMap,
    remap: &BTreeMap<u32, PathBuf>,
    jobs: usize,
) -> Result<Plan> {
    clean_with(pgdata, manifest, Some(blocks), remap, jobs)
}

fn clean_with(
    pgdata: &Path,
    manifest: &Manifest,
    blocks: Option<&BlockMap>,
    remap: &BTreeMap<u32, PathBuf>,
    jobs: usize,
) -> Result<Plan> {
    let files = match blocks {
        None => manifest
            .files
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| (e.path.as_str(), Expect::Whole { size: e.size, digest: &e.digest }))
            .collect(),
        Some(map) => {
            let mut files = std::collections::HashMap::new();
            for (path, length, _) in manifest.restored_files() {
                let Some(b) = map.files.get(path).filter(|b| b.length == length) else {
                    return Err(Error::corrupt(path, format!("is not in the target's block map at length {length}")));
                };
                files.insert(path, Expect::Blocks(b, map.algo));
            }
            files
        }
    };
    let mut walk = Walk { manifest, files, report: DeltaReport::default(), candidates: Vec::new() };
    fs::create_dir_all(pgdata).with_path(pgdata)?;
    walk.dir(pgdata, "")?;
    for ts in &manifest.tablespaces {
        let link = format!("pg_tblspc/{}", ts.oid);
        if !manifest.lookup(&link).is_some_and(|e| e.kind == EntryKind::Symlink) {
            continue;
        }
        let base = remap.get(&ts.oid).cloned().unwrap_or_else(|| PathBuf::from(&ts.location));
        // Only the directories the backup puts there (`PG_<version>_<catalog>`): another
        // version's directory in the same location is not ours to touch.
        let Ok(entries) = fs::read_dir(&base) else { continue };
        for entry in entries {
            let entry = entry.with_path(&base)?;
            let rel = format!("{link}/{}", entry.file_name().to_string_lossy());
            if manifest.lookup(&rel).is_some_and(|e| e.kind == EntryKind::Dir) {
                walk.entry(&entry.path(), &rel)?;
            }
        }
    }
    let Walk { mut report, candidates, .. } = walk;
    let kept = compare(candidates, jobs)?;
    report.kept_files = kept.len() as u64;
    report.kept_bytes = kept.iter().map(|c| c.expect.length()).sum();
    let keep: HashSet<String> = kept.into_iter().map(|c| c.path).collect();
    let skip_parts = match blocks {
        None => skippable_parts(pgdata, manifest, remap, &keep),
        Some(_) => HashSet::new(),
    };
    report.parts_skipped = skip_parts.len() as u64;
    Ok(Plan { keep: Arc::new(keep), skip_parts, report })
}

/// [`clean`] (`blocks` `None`) or [`clean_chain`] on a blocking thread.
///
/// # Errors
/// As [`clean`].
pub async fn clean_async(
    pgdata: &Path,
    manifest: &Manifest,
    blocks: Option<Arc<BlockMap>>,
    remap: &BTreeMap<u32, PathBuf>,
    jobs: usize,
) -> Result<Plan> {
    let (pgdata, manifest, remap) = (pgdata.to_path_buf(), manifest.clone(), remap.clone());
    let began = std::time::Instant::now();
    let plan =
        crate::ops::repo::blocking(move || clean_with(&pgdata, &manifest, blocks.as_deref(), &remap, jobs)).await?;
    let r = &plan.report;
    let seconds = began.elapsed().as_secs_f64();
    tracing::info!(
        "delta: {} files ({} bytes) kept, {} files ({} bytes) of the old state removed, in {seconds:.1} s ({:.0} MB/s compared)",
        r.kept_files,
        r.kept_bytes,
        r.removed_files,
        r.removed_bytes,
        r.kept_bytes as f64 / 1e6 / seconds.max(1e-3)
    );
    Ok(plan)
}

impl Plan {
    /// The report once the restore wrote what `w` says.
    pub fn report_after(self, w: &super::chain::Written) -> DeltaReport {
        DeltaReport {
            fetched_files: w.files,
            fetched_bytes: w.bytes,
            parts: w.parts,
            parts_skipped: w.parts_skipped,
            ..self.report
        }
    }
}

/// A restore over `pgdata` failed: move the control file aside so that nobody starts what is
/// there (a later `--delta` still recognises the cluster by it).
pub fn disable(pgdata: &Path) {
    let from = pgdata.join(PG_CONTROL);
    if from.exists() {
        let _ = fs::rename(&from, pgdata.join(PG_CONTROL_ASIDE));
    }
}

struct Walk<'a> {
    manifest: &'a Manifest,
    /// Every file the target restores, and what it must be to be kept.
    files: std::collections::HashMap<&'a str, Expect<'a>>,
    report: DeltaReport,
    /// Files the target has, to compare.
    candidates: Vec<Candidate<'a>>,
}

impl<'a> Walk<'a> {
    fn dir(&mut self, at: &Path, rel: &str) -> Result<()> {
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

    fn entry(&mut self, at: &Path, rel: &str) -> Result<()> {
        let meta = fs::symlink_metadata(at).with_path(at)?;
        let listed = self.manifest.lookup(rel).map(|e| e.kind);
        let utf8 = at.to_str().is_some();
        if meta.is_dir() && listed == Some(EntryKind::Dir) && utf8 {
            return self.dir(at, rel);
        }
        if let Some((path, expect)) = self.files.get_key_value(rel).filter(|_| meta.is_file() && utf8) {
            let at = at.to_path_buf();
            if meta.len() != expect.length() {
                // Not worth reading: fetched again.
                return fs::remove_file(&at).with_path(&at);
            }
            self.candidates.push(Candidate { at, path: path.to_string(), expect: *expect });
            return Ok(());
        }
        if meta.file_type().is_symlink() && tablespace_link_oid(rel).is_some() && listed == Some(EntryKind::Symlink) {
            // The extraction makes the link again, to the place this restore puts the tablespace.
            return fs::remove_file(at).with_path(at);
        }
        self.remove(at, &meta)
    }

    /// Remove what the backup does not have (a directory with everything in it, never
    /// following a link).
    fn remove(&mut self, at: &Path, meta: &fs::Metadata) -> Result<()> {
        if meta.is_dir() {
            for entry in fs::read_dir(at).with_path(at)? {
                let path = entry.with_path(at)?.path();
                let inner = fs::symlink_metadata(&path).with_path(&path)?;
                self.remove(&path, &inner)?;
            }
            return fs::remove_dir(at).with_path(at);
        }
        self.report.removed_files += 1;
        if meta.is_file() {
            self.report.removed_bytes += meta.len();
        }
        tracing::debug!("delta: removing {}", at.display());
        fs::remove_file(at).with_path(at)
    }
}

/// Parts whose every entry is a kept file or a directory already there.
fn skippable_parts(
    pgdata: &Path,
    manifest: &Manifest,
    remap: &BTreeMap<u32, PathBuf>,
    keep: &HashSet<String>,
) -> HashSet<u32> {
    let mut needed = HashSet::new();
    let mut all = HashSet::new();
    for e in &manifest.files {
        all.insert(e.part);
        let ready = match e.kind {
            EntryKind::File => keep.contains(&e.path),
            EntryKind::Dir => on_disk(pgdata, manifest, remap, &e.path).is_some_and(|p| p.is_dir() && !p.is_symlink()),
            EntryKind::Symlink => false,
        };
        if !ready {
            needed.insert(e.part);
        }
    }
    all.difference(&needed).copied().collect()
}

/// Where the extraction puts manifest path `path`.
fn on_disk(pgdata: &Path, manifest: &Manifest, remap: &BTreeMap<u32, PathBuf>, path: &str) -> Option<PathBuf> {
    match tablespace_content(path) {
        Some((oid, inner)) if manifest.lookup(&format!("pg_tblspc/{oid}")).is_some() => {
            let base =
                remap.get(&oid).cloned().or_else(|| manifest.tablespace(oid).map(|t| PathBuf::from(&t.location)))?;
            Some(base.join(inner))
        }
        _ => Some(pgdata.join(path)),
    }
}

#[cfg(test)]
mod tests;
