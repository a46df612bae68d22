//! `pitr-prepare --delta`: restore over an existing data directory of the same cluster,
//! fetching only what differs.
//!
//! Before anything is written: no live server holds the directory ([`check_not_running`]) and
//! its `global/pg_control` names the backup's system identifier ([`check_cluster`]); another
//! cluster's directory is refused untouched. Then [`clean`] walks the directory (and the
//! backup's tablespaces): a file the authenticated manifest lists with the same size and
//! SHA-256 is kept; every other file is removed, to be fetched, and whatever the backup does
//! not have is removed too (`postmaster.pid`, `pg_wal` content, an old `backup_label`,
//! `recovery.signal`, links where the backup has directories...). The extraction then skips
//! the kept files ([`crate::tarball::extract_tar_keeping`]) and whole parts that hold nothing
//! to write. If the restore fails halfway, [`disable`] moves `global/pg_control` aside so the
//! directory cannot be started, and a new `--delta` run still recognises it.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ring::digest::{Context, SHA256};

use crate::error::IoContext;
use crate::manifest::{EntryKind, Manifest, ManifestEntry, tablespace_content, tablespace_link_oid};
use crate::ops::repo::catalog::BackupMetadata;
use crate::pg::control::{self, PG_CONTROL};
use crate::wal::sysid::SystemId;
use crate::{Error, Result};

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
    /// Parts not downloaded at all: everything in them was kept.
    pub parts_skipped: u64,
    pub parts: u64,
}

/// The outcome of [`clean`]: what the extraction leaves alone.
#[derive(Debug, Default)]
pub struct Plan {
    /// Manifest paths of the files kept.
    pub keep: Arc<HashSet<String>>,
    /// Parts with nothing to write.
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

/// Compare `pgdata` (and the tablespaces) with `manifest`, keep what matches, remove the rest;
/// `jobs` files are hashed at once. Blocking.
///
/// # Errors
/// [`Error::Io`] naming the path that could not be read or removed.
pub fn clean(pgdata: &Path, manifest: &Manifest, remap: &BTreeMap<u32, PathBuf>, jobs: usize) -> Result<Plan> {
    let mut walk = Walk { manifest, report: DeltaReport::default(), candidates: Vec::new() };
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
    report.kept_bytes = kept.iter().map(|(_, e)| e.size).sum();
    let keep: HashSet<String> = kept.into_iter().map(|(_, e)| e.path.clone()).collect();
    let skip_parts = skippable_parts(pgdata, manifest, remap, &keep);
    report.parts_skipped = skip_parts.len() as u64;
    Ok(Plan { keep: Arc::new(keep), skip_parts, report })
}

/// [`clean`] on a blocking thread.
///
/// # Errors
/// As [`clean`].
pub async fn clean_async(
    pgdata: &Path,
    manifest: &Manifest,
    remap: &BTreeMap<u32, PathBuf>,
    jobs: usize,
) -> Result<Plan> {
    let (pgdata, manifest, remap) = (pgdata.to_path_buf(), manifest.clone(), remap.clone());
    let plan = crate::ops::repo::blocking(move || clean(&pgdata, &manifest, &remap, jobs)).await?;
    let r = &plan.report;
    tracing::info!(
        "delta: {} files ({} bytes) kept, {} files ({} bytes) of the old state removed, {} of the parts skipped",
        r.kept_files,
        r.kept_bytes,
        r.removed_files,
        r.removed_bytes,
        r.parts_skipped
    );
    Ok(plan)
}

impl Plan {
    /// The report once the extraction wrote `files` files of `bytes` bytes out of `parts` parts.
    pub fn report_after(self, files: u64, bytes: u64, parts: usize) -> DeltaReport {
        DeltaReport { fetched_files: files, fetched_bytes: bytes, parts: parts as u64, ..self.report }
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
    report: DeltaReport,
    /// Files the manifest lists, to compare: (path on disk, entry).
    candidates: Vec<(PathBuf, &'a ManifestEntry)>,
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
        if meta.is_file() && listed == Some(EntryKind::File) && utf8 {
            if let Some(entry) = self.manifest.lookup(rel) {
                self.candidates.push((at.to_path_buf(), entry));
            }
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

/// Hash the candidates on `jobs` threads; return those equal to their entry, remove the others.
fn compare(candidates: Vec<(PathBuf, &ManifestEntry)>, jobs: usize) -> Result<Vec<(PathBuf, &ManifestEntry)>> {
    let next = AtomicUsize::new(0);
    let verdicts: Vec<Result<Vec<usize>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.clamp(1, 64))
            .map(|_| {
                s.spawn(|| {
                    let mut same = Vec::new();
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, entry)) = candidates.get(i) else { return Ok(same) };
                        if matches(path, entry, &mut buf)? {
                            same.push(i);
                        } else {
                            fs::remove_file(path).with_path(path)?;
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(Error::Invalid("a delta comparison thread panicked".into()))))
            .collect()
    });
    let mut same = HashSet::new();
    for v in verdicts {
        same.extend(v?);
    }
    Ok(candidates.into_iter().enumerate().filter(|(i, _)| same.contains(i)).map(|(_, c)| c).collect())
}

/// The file at `path` has the entry's size and SHA-256.
fn matches(path: &Path, entry: &ManifestEntry, buf: &mut [u8]) -> Result<bool> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    };
    if f.metadata().with_path(path)?.len() != entry.size {
        return Ok(false);
    }
    let mut hash = Context::new(&SHA256);
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => hash.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(hex::encode(hash.finish()).eq_ignore_ascii_case(&entry.sha256))
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
