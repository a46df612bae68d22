//! The catalog of file-storage backups (`files/<env>/<kind>/`): their metadata, their
//! manifests, and reading one back in full. Shared by `files-backup`/`files-restore`,
//! `verify` and `prune`.

use crate::codec;
use crate::manifest::{EntryKind, Manifest};
use crate::{Error, Result, tarball};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::place::Logical;
use super::{Repo, blocking};

/// The logical names of a file backup's two objects (what they are bound to).
pub const ARCHIVE: &str = "archive.tar";
pub const MANIFEST: &str = "manifest.json";

/// The kinds of the runbook's file backups.
pub const KINDS: &[&str] = &["uploads", "assets", "config"];

/// `files/<env>/<kind>/<name>_metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilesMetadata {
    pub format: u32,
    pub name: String,
    pub env: String,
    pub kind: String,
    /// The directory that was backed up.
    pub source: String,
    pub created: DateTime<Utc>,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub stored_bytes: u64,
    pub archive_key: String,
    pub manifest_key: String,
    pub compression: String,
    pub encrypted: bool,
    pub key_fingerprint: Option<String>,
    pub seconds: f64,
}

/// `kind` is one of [`KINDS`].
///
/// # Errors
/// [`Error::Config`] naming `--kind`.
pub fn check_kind(kind: &str) -> Result<()> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(Error::config("--kind", format!("{kind:?} is not allowed; expected {}", KINDS.join(", "))))
    }
}

/// Every complete file backup of `kind`, oldest first.
///
/// # Errors
/// Storage failures; a metadata object that is not valid JSON (named).
pub async fn files_backups(repo: &Repo, kind: &str) -> Result<Vec<FilesMetadata>> {
    check_kind(kind)?;
    let listing = repo.storage.list(&repo.layout.files_root(kind), Some("/"), None).await?;
    let mut out = Vec::new();
    for object in listing.objects {
        if repo.layout.parse_files_metadata_key(kind, &object.key).is_some() {
            let bytes = repo.storage.get_bytes(&object.key).await?;
            let meta: FilesMetadata =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(repo.storage.describe(&object.key), e))?;
            out.push(meta);
        }
    }
    out.sort_by_key(|a| a.created);
    Ok(out)
}

/// Read a file backup in full against its manifest (for `verify`); errors come with the key
/// of the object they are about.
///
/// # Errors
/// The manifest or archive missing, undecodable, or not matching.
pub async fn verify_files_backup(
    repo: &Repo,
    meta: &FilesMetadata,
) -> std::result::Result<tarball::VerifyStats, (Error, String)> {
    let manifest = load_manifest(repo, meta).await.map_err(|e| (e, meta.manifest_key.clone()))?;
    let archive = Logical::Files { kind: &meta.kind, backup: &meta.name, file: ARCHIVE };
    let what = format!("verify {} backup {}", meta.kind, meta.name);
    let progress = super::progress::Progress::start(what, meta.stored_bytes, repo.progress_interval);
    let result =
        super::parts::verify_part(repo, &meta.archive_key, 0, archive, std::sync::Arc::new(manifest), &progress)
            .await
            .map_err(|e| (e, meta.archive_key.clone()));
    progress.finish();
    result
}

/// The manifest of file backup `meta`, decoded and validated.
///
/// # Errors
/// Storage, key and corruption errors naming the manifest; [`Error::Refused`] for symlinks or tablespaces.
pub async fn load_manifest(repo: &Repo, meta: &FilesMetadata) -> Result<Manifest> {
    let body = repo.storage.get_bytes(&meta.manifest_key).await?;
    let object = repo.storage.describe(&meta.manifest_key);
    let (keyring, obj) = (repo.keyring.clone(), object.clone());
    let expect = repo.expect(&Logical::Files { kind: &meta.kind, backup: &meta.name, file: MANIFEST }).await?;
    let json = blocking(move || {
        let mut out = Vec::new();
        codec::decode_to(body.as_ref(), &keyring, &obj, Some(&expect), false, &mut out, "memory")?;
        Ok(out)
    })
    .await?;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| Error::corrupt(&object, e))?;
    manifest.validate().map_err(|e| Error::corrupt(&object, e))?;
    if let Some(link) = manifest.files.iter().find(|e| e.kind == EntryKind::Symlink) {
        return Err(Error::Refused(format!(
            "manifest {object} lists the symlink {}: file backups hold none",
            link.path
        )));
    }
    if !manifest.tablespaces.is_empty() {
        return Err(Error::Refused(format!("manifest {object} lists tablespaces: file backups hold none")));
    }
    Ok(manifest)
}
