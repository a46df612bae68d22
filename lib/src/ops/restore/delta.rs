//! `pitr-prepare --delta`: restore over an existing data directory of the same cluster,
//! fetching only what differs.
//!
//! Before anything is written: no live server holds the directory ([`check_not_running`]) and
//! its `global/pg_control` names the backup's system identifier ([`check_cluster`]); another
//! cluster's directory is refused untouched. Then [`survey`] reads the directory (and the
//! backup's tablespaces) without changing anything, while pitr-prepare checks the archive: a
//! file of a full backup is to be kept when it has the size and digest its authenticated
//! manifest lists (`postgresql.auto.conf` without the recovery block a restore appended); a
//! file of an incremental backup when it has the length and every block digest of the
//! target's effective block map (authenticated, loaded with the chain before anything is
//! written). Once every check passed, [`Survey::apply`] removes every other file, to be
//! fetched, and whatever the backup does not have (`postmaster.pid`, `pg_wal` content, an old
//! `backup_label`, `recovery.signal`, links where the backup has directories...); [`clean`]
//! and [`clean_chain`] do both at once. The extraction then skips the kept files
//! ([`crate::tarball::extract_tar_keeping`], [`super::chain::restore`]) and whole parts that
//! hold nothing to write. If the restore fails halfway, [`disable`] moves `global/pg_control`
//! aside so the directory cannot be started, and a new `--delta` run still recognises it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blockmap::BlockMap;
use crate::error::IoContext;
use crate::manifest::{EntryKind, Manifest, tablespace_content};
use crate::ops::repo::catalog::BackupMetadata;
use crate::pg::control::{self, PG_CONTROL};
use crate::wal::sysid::SystemId;
use crate::{Error, Result};

mod compare;
mod walk;
use compare::{Expect, compare};
use walk::Walk;

/// The configuration file pitr-prepare rewrites (its recovery block): a full backup's is
/// compared without that block ([`Expect::Settings`]).
const SETTINGS_FILE: &str = "postgresql.auto.conf";

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
    /// Bytes of the local files read straight from the device to compare them (the rest were
    /// in the page cache).
    pub read_from_device_bytes: u64,
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

/// What [`survey`] found, before anything was changed: [`Survey::apply`] carries it out.
#[derive(Debug, Default)]
pub struct Survey {
    keep: HashSet<String>,
    remove: Vec<PathBuf>,
    skip_parts: HashSet<u32>,
    report: DeltaReport,
}

impl Survey {
    /// Parts of a full backup with nothing to write (none for a chain: its restore works them
    /// out itself).
    pub fn skip_parts(&self) -> &HashSet<u32> {
        &self.skip_parts
    }

    /// Remove what the target does not have and the files that differ; what is left is kept.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path that could not be removed.
    pub fn apply(self) -> Result<Plan> {
        for at in &self.remove {
            walk::remove(at)?;
        }
        Ok(Plan { keep: Arc::new(self.keep), skip_parts: self.skip_parts, report: self.report })
    }
}

/// Compare `pgdata` (and the tablespaces) with the manifest of a full backup, keep what
/// matches, remove the rest; `jobs` files are hashed at once. Blocking.
///
/// # Errors
/// [`Error::Io`] naming the path that could not be read or removed.
pub fn clean(pgdata: &Path, manifest: &Manifest, remap: &BTreeMap<u32, PathBuf>, jobs: usize) -> Result<Plan> {
    survey(pgdata, manifest, None, remap, jobs)?.apply()
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
    survey(pgdata, manifest, Some(blocks), remap, jobs)?.apply()
}

/// Read `pgdata` (and the tablespaces) against the target (`blocks`: an incremental's
/// effective block map, else the full backup's manifest) without changing anything. Blocking.
///
/// # Errors
/// As [`clean_chain`], reading only.
pub fn survey(
    pgdata: &Path,
    manifest: &Manifest,
    blocks: Option<&BlockMap>,
    remap: &BTreeMap<u32, PathBuf>,
    jobs: usize,
) -> Result<Survey> {
    let mut walk = Walk::new(manifest, expectations(manifest, blocks)?);
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
    let Walk { mut report, candidates, mut remove, .. } = walk;
    let compare::Compared { kept, differs, device_bytes } = compare(candidates, jobs)?;
    remove.extend(differs);
    report.read_from_device_bytes = device_bytes;
    report.kept_files = kept.len() as u64;
    report.kept_bytes = kept.iter().map(|c| c.expect.length()).sum();
    let keep: HashSet<String> = kept.into_iter().map(|c| c.path).collect();
    let skip_parts = match blocks {
        None => skippable_parts(pgdata, manifest, remap, &keep),
        Some(_) => HashSet::new(),
    };
    report.parts_skipped = skip_parts.len() as u64;
    Ok(Survey { keep, remove, skip_parts, report })
}

/// Every file the target restores, and what it must be to be kept.
fn expectations<'a>(manifest: &'a Manifest, blocks: Option<&'a BlockMap>) -> Result<HashMap<&'a str, Expect<'a>>> {
    let Some(map) = blocks else {
        return Ok(manifest
            .files
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| {
                let (size, digest) = (e.size, &e.digest);
                let expect = match e.path == SETTINGS_FILE {
                    true => Expect::Settings { size, digest },
                    false => Expect::Whole { size, digest },
                };
                (e.path.as_str(), expect)
            })
            .collect());
    };
    let mut files = HashMap::new();
    for (path, length, _) in manifest.restored_files() {
        let Some(b) = map.files.get(path).filter(|b| b.length == length) else {
            return Err(Error::corrupt(path, format!("is not in the target's block map at length {length}")));
        };
        files.insert(path, Expect::Blocks(b, map.algo));
    }
    Ok(files)
}

/// [`survey`] on a blocking thread, logged.
///
/// # Errors
/// As [`survey`].
pub async fn survey_async(
    pgdata: &Path,
    manifest: &Manifest,
    blocks: Option<Arc<BlockMap>>,
    remap: &BTreeMap<u32, PathBuf>,
    jobs: usize,
) -> Result<Survey> {
    let (pgdata, manifest, remap) = (pgdata.to_path_buf(), manifest.clone(), remap.clone());
    let began = std::time::Instant::now();
    let survey =
        crate::ops::repo::blocking(move || survey(&pgdata, &manifest, blocks.as_deref(), &remap, jobs)).await?;
    let r = &survey.report;
    let seconds = began.elapsed().as_secs_f64();
    tracing::info!(
        "delta: {} files ({} bytes) to keep, {} files ({} bytes) of the old state to remove, compared in {seconds:.1} s ({:.0} MB/s)",
        r.kept_files,
        r.kept_bytes,
        r.removed_files,
        r.removed_bytes,
        r.kept_bytes as f64 / 1e6 / seconds.max(1e-3)
    );
    Ok(survey)
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
