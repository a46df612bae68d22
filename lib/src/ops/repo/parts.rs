//! The stored parts of a backup, read back: its manifest, authenticated against the metadata,
//! and each part decoded and every tar entry hashed against the manifest (nothing written).
//! Shared by verify, the files backups and pitr-prepare.

use std::sync::Arc;

use tokio_util::io::SyncIoBridge;

use super::catalog::BackupMetadata;
use super::place::Logical;
use super::progress::{Metered, Progress};
use super::{Repo, blocking};
use crate::manifest::Manifest;
use crate::{Error, Result, codec, tarball};

/// The manifest of backup `b`, decoded, validated and cross-checked with its metadata.
///
/// # Errors
/// Not found, storage, key and corruption errors naming the manifest.
pub async fn load_manifest(repo: &Repo, b: &BackupMetadata) -> Result<Manifest> {
    let json = repo.read_object(&b.manifest_key, &Logical::Manifest(&b.name), false).await?;
    let object = repo.storage.describe(&b.manifest_key);
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| Error::corrupt(&object, e))?;
    manifest.validate().map_err(|e| Error::corrupt(&object, e))?;
    let metadata = repo.storage.describe(&repo.layout.backup_metadata_key(&b.name));
    super::metadata_auth::cross_check(b, &manifest, &metadata, &repo.keyring)?;
    Ok(manifest)
}

/// Read part `index` of a backup at `key` (bound to `what`) and check every entry against
/// `manifest`, counting the stored bytes read into `progress`.
///
/// # Errors
/// Storage and key errors; [`Error::Corrupt`] naming the part and the entry.
pub async fn verify_part(
    repo: &Repo,
    key: &str,
    index: u32,
    what: Logical<'_>,
    manifest: Arc<Manifest>,
    progress: &Progress,
) -> Result<tarball::VerifyStats> {
    let expect = repo.expect(&what).await?;
    let reader = repo.storage.get(key).await?;
    let bridge = Metered::new(SyncIoBridge::new(reader), progress.clone(), None);
    let (object, keyring) = (repo.storage.describe(key), repo.keyring.clone());
    blocking(move || {
        let input = std::io::BufReader::with_capacity(1 << 20, bridge);
        let (_, body) = codec::decoder(input, &keyring, &object, false, Some(&expect))?;
        tarball::verify_tar(body, &manifest, index).map_err(|e| match e {
            // An entry's problem, named inside the part.
            Error::Corrupt { object: entry, reason } if entry != object && !reason.contains(&object) => {
                Error::corrupt(&object, format!("{entry}: {reason}"))
            }
            Error::Refused(why) => Error::corrupt(&object, why),
            other => other,
        })
    })
    .await
}
