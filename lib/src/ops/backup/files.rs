//! File-storage backups (the runbook's Procedure 3): `files-backup --kind K DIR` streams DIR
//! as one tar through the codec into `files/<env>/<kind>/<kind>_<env>_YYYYMMDD_HHMMSS/`, with a
//! manifest, then the metadata object (which makes it complete) and `latest.json`;
//! `files-restore` extracts one into an empty directory with the same safe extractor as
//! pitr-prepare. Regular files and directories are stored; symlinks and special files are
//! skipped with a warning.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use tokio_util::io::SyncIoBridge;

use crate::codec::{self, Encoder};
use crate::error::IoContext;
use crate::manifest::{EntryKind, Manifest};
use crate::ops::Repo;
use crate::ops::backup::flow::Flow;
use crate::ops::repo::blocking;
use crate::ops::repo::files_catalog::{ARCHIVE, FilesMetadata, MANIFEST, check_kind, files_backups, load_manifest};
use crate::ops::repo::identity;
use crate::ops::repo::place::Logical;
use crate::ops::repo::progress::{Metered, Progress};
use crate::pg::datadir::{DataFile, FileKind};
use crate::{Error, Result, tarball};

/// What `files-restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct FilesRestored {
    pub backup: String,
    pub kind: String,
    pub dir: String,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Back up `dir` as a file backup of `kind`.
///
/// # Errors
/// [`Error::Config`] for an unknown kind; [`Error::Io`] naming the path that cannot be read;
/// an encryption mismatch with the repository; storage and codec failures (the backup then
/// has no metadata object and is not listed). `max_rate` limits reads from `dir` and the
/// upload, each, to that many bytes per second.
pub async fn files_backup(
    repo: &Repo,
    kind: &str,
    dir: &Path,
    spool_dir: Option<PathBuf>,
    max_rate: Option<u64>,
) -> Result<FilesMetadata> {
    let began = Instant::now();
    check_kind(kind)?;
    if !std::fs::metadata(dir).with_path(dir)?.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", dir.display())));
    }
    identity::check_writer(repo).await?;
    let root = dir.to_path_buf();
    let entries = blocking(move || walk(&root)).await?;
    let created = Utc::now();
    let name = repo.layout.files_backup_name(kind, created);
    if repo.storage.head(&repo.layout.files_metadata_key(kind, &name)).await?.is_some() {
        return Err(Error::Refused(format!("a {kind} backup named {name} already exists; run again in a second")));
    }
    let archive_key = repo.layout.files_object(kind, &name, &format!("archive.tar{}", repo.object_ext()));
    let spool_parent = spool_dir.unwrap_or_else(std::env::temp_dir);
    let spool =
        tempfile::Builder::new().prefix("walvault-files-").tempdir_in(&spool_parent).with_path(&spool_parent)?;
    let path = spool.path().join("archive");
    let (settings, key, spool_path) = (repo.codec, repo.keyring.write_key().cloned(), path.clone());
    let context = repo.context(&Logical::Files { kind, backup: &name, file: ARCHIVE }).await?;
    let total = entries.iter().map(|e| e.size).sum();
    let flow = Flow::start(format!("{kind} backup {name}"), total, repo.progress_interval, max_rate);
    let flow_in = flow.clone();
    let stored = blocking(move || {
        let file = std::fs::File::create(&spool_path).with_path(&spool_path)?;
        let out = std::io::BufWriter::with_capacity(1 << 20, file);
        let encoder = flow_in.reading(Encoder::new(out, &settings, key.as_ref(), None, &context)?);
        let (encoder, stored) = tarball::write_tar(encoder, &entries)?;
        encoder.into_inner().finish()?.flush().with_path(&spool_path)?;
        Ok(stored)
    })
    .await?;
    flow.progress.finish();
    let stored_bytes = std::fs::metadata(&path).with_path(&path)?.len();
    flow.upload(repo, &archive_key, &path).await?;
    drop(spool);

    let manifest = Manifest::new(stored, Vec::new());
    let manifest_key = repo.layout.files_object(kind, &name, &format!("manifest.json{}", repo.object_ext()));
    let json = serde_json::to_vec(&manifest).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
    let (settings, key) = (repo.codec, repo.keyring.write_key().cloned());
    let context = repo.context(&Logical::Files { kind, backup: &name, file: MANIFEST }).await?;
    let encoded = blocking(move || codec::encode_to_vec(&json, &settings, key.as_ref(), None, &context)).await?;
    repo.storage.put(&manifest_key, Bytes::from(encoded)).await?;

    let meta = FilesMetadata {
        format: 1,
        name: name.clone(),
        env: repo.layout.env().to_string(),
        kind: kind.to_string(),
        source: dir.display().to_string(),
        created,
        files: manifest.files.iter().filter(|e| e.kind == EntryKind::File).count() as u64,
        dirs: manifest.files.iter().filter(|e| e.kind == EntryKind::Dir).count() as u64,
        bytes: manifest.total_size(),
        stored_bytes,
        archive_key,
        manifest_key,
        compression: repo.codec.compression.name().to_string(),
        encrypted: repo.keyring.is_encrypted(),
        key_fingerprint: repo.keyring.write_key().map(|k| k.fingerprint_hex()),
        seconds: began.elapsed().as_secs_f64(),
    };
    repo.storage.put(&repo.layout.files_metadata_key(kind, &name), json_bytes(&meta)?).await?;
    let latest = serde_json::json!({
        "backup": name,
        "metadata": repo.layout.files_metadata_key(kind, &name),
        "created": created,
    });
    repo.storage.put(&repo.layout.files_latest_key(kind), json_bytes(&latest)?).await?;
    Ok(meta)
}

/// Restore a file backup of `kind` (`None` or `latest`: the newest) into `dir`, which must be
/// absent or empty. On failure `dir` is emptied again.
///
/// # Errors
/// [`Error::NotFound`] for no such backup; [`Error::Refused`] for a non-empty `dir` and for
/// hostile archive entries (naming them); [`Error::Corrupt`]/[`Error::Key`] from the codec.
pub async fn files_restore(repo: &Repo, kind: &str, backup: Option<&str>, dir: &Path) -> Result<FilesRestored> {
    let began = Instant::now();
    let all = files_backups(repo, kind).await?;
    let chosen = match backup.filter(|b| *b != "latest") {
        None => all.last(),
        Some(name) => all.iter().find(|b| b.name == name),
    };
    let meta = chosen.cloned().ok_or_else(|| {
        let what = backup
            .filter(|b| *b != "latest")
            .map_or("a complete file backup".to_string(), |b| format!("file backup {b}"));
        Error::not_found(format!("{what} of kind {kind} in {} ({})", repo.url, repo.layout.files_root(kind)))
    })?;
    if std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(Error::Refused(format!("{} is not empty: refusing to overwrite it", dir.display()))
            .with_hint("restore into an empty directory and move the files into place"));
    }
    std::fs::create_dir_all(dir).with_path(dir)?;
    let manifest = load_manifest(repo, &meta).await?;
    let result = extract(repo, &meta, manifest, dir).await;
    let (files, bytes) = match result {
        Ok(counts) => counts,
        Err(e) => {
            empty_dir(dir);
            return Err(e);
        }
    };
    Ok(FilesRestored {
        backup: meta.name,
        kind: kind.to_string(),
        dir: dir.display().to_string(),
        files,
        bytes,
        seconds: began.elapsed().as_secs_f64(),
    })
}

async fn extract(repo: &Repo, meta: &FilesMetadata, manifest: Manifest, dir: &Path) -> Result<(u64, u64)> {
    let reader = repo.storage.get(&meta.archive_key).await?;
    let what = format!("restore of {} backup {}", meta.kind, meta.name);
    let progress = Progress::start(what, meta.stored_bytes, repo.progress_interval);
    let bridge = Metered::new(SyncIoBridge::new(reader), progress.clone(), None);
    let (object, keyring, dest) = (repo.storage.describe(&meta.archive_key), repo.keyring.clone(), dir.to_path_buf());
    let expect = repo.expect(&Logical::Files { kind: &meta.kind, backup: &meta.name, file: ARCHIVE }).await?;
    blocking(move || {
        let input = std::io::BufReader::with_capacity(1 << 20, bridge);
        let (_, body) = codec::decoder(input, &keyring, &object, false, Some(&expect))?;
        let stats = tarball::extract_tar(body, &dest, &manifest, &BTreeMap::new()).map_err(|e| match e {
            Error::Io { path, source } if path == object => codec::error_from_io(source, &object),
            other => other,
        })?;
        let extracted: HashSet<String> = stats.paths.iter().cloned().collect();
        if let Some(missing) = manifest.missing(0, &extracted).first() {
            return Err(Error::corrupt(&object, format!("{} is in the manifest but not in the archive", missing.path)));
        }
        apply_modes(&dest, &manifest)?;
        progress.finish();
        Ok((stats.files, stats.bytes))
    })
    .await
}

/// The extractor writes 0600/0700; give entries their recorded permission bits back
/// (files first, then directories deepest first, so no directory closes itself off early).
fn apply_modes(dir: &Path, manifest: &Manifest) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = manifest.files.iter().collect();
    entries.sort_by_key(|e| (e.kind == EntryKind::Dir, std::cmp::Reverse(e.path.matches('/').count())));
    for e in entries {
        let path = dir.join(&e.path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(e.mode & 0o777)).with_path(&path)?;
    }
    Ok(())
}

fn empty_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            let _ = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}

/// Every regular file and directory under `root`, sorted, paths relative to it.
fn walk(root: &Path) -> Result<Vec<DataFile>> {
    let mut out = Vec::new();
    walk_dir(root, "", &mut out)?;
    Ok(out)
}

fn walk_dir(abs: &Path, rel: &str, out: &mut Vec<DataFile>) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut names = Vec::new();
    for entry in std::fs::read_dir(abs).with_path(abs)? {
        let entry = entry.with_path(abs)?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| Error::Invalid(format!("{}: file name is not valid utf-8", abs.join(n).display())))?;
        names.push(name);
    }
    names.sort();
    for name in names {
        let path = abs.join(&name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let rel_path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let kind = if meta.is_dir() {
            FileKind::Dir
        } else if meta.is_file() {
            FileKind::File
        } else {
            tracing::warn!("skipping {} (a symlink or special file)", path.display());
            continue;
        };
        let size = if kind == FileKind::File { meta.len() } else { 0 };
        let mode = meta.permissions().mode() & 0o7777;
        out.push(DataFile {
            rel_path: rel_path.clone(),
            abs_path: path.clone(),
            kind: kind.clone(),
            size,
            mode,
            mtime: meta.mtime(),
        });
        if kind == FileKind::Dir {
            walk_dir(&path, &rel_path, out)?;
        }
    }
    Ok(())
}

fn json_bytes(value: &impl Serialize) -> Result<Bytes> {
    serde_json::to_vec_pretty(value).map(Bytes::from).map_err(|e| Error::Invalid(format!("json: {e}")))
}
