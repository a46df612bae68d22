//! `walvault key add` and `walvault key list`: the write keys a repository accepts.
//!
//! `walvault.json` lists the fingerprint of every key allowed to write. The first write of a
//! new repository registers its key; any other key joins only through [`add`], run on purpose
//! (a key rotation), so that a mistyped or wrong key makes writers fail loudly instead of
//! starting a second key nobody can restore with.

use serde::Serialize;

use crate::layout::IDENTITY_KEY;
use crate::ops::Repo;
use crate::ops::repo::identity::{self, Identity};
use crate::{Error, Result};

/// What `walvault key list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct KeyList {
    pub repository: String,
    pub encrypted: bool,
    pub keys: Vec<KeyEntry>,
}

/// One registered key and whether this process has it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyEntry {
    pub fingerprint: String,
    /// `write` (the configured write key), `read` (a configured read key), or `null`.
    pub configured: Option<&'static str>,
}

/// What `walvault key add` did.
#[derive(Debug, Clone, Serialize)]
pub struct KeyAdded {
    pub repository: String,
    pub fingerprint: String,
    /// False when the key was registered already.
    pub added: bool,
    pub keys: Vec<String>,
}

/// The registered keys, and which of them this process has.
///
/// # Errors
/// [`Error::NotFound`] when the repository has no identity yet; storage failures.
pub async fn list(repo: &Repo) -> Result<KeyList> {
    let id = existing(repo).await?;
    let write = repo.keyring.write_key().map(|k| k.fingerprint_hex());
    let keys = id
        .key_fingerprints
        .iter()
        .map(|fp| {
            let configured = if write.as_ref() == Some(fp) {
                Some("write")
            } else if repo.keyring.keys().any(|k| &k.fingerprint_hex() == fp) {
                Some("read")
            } else {
                None
            };
            KeyEntry { fingerprint: fp.clone(), configured }
        })
        .collect();
    Ok(KeyList { repository: repo.url.clone(), encrypted: id.encrypted, keys })
}

/// Register the configured write key in `walvault.json` (nothing when it is already).
///
/// # Errors
/// [`Error::Config`] without a write key; [`Error::NotFound`] when the repository has no
/// identity yet (its first write registers its key); [`Error::Refused`] for an unencrypted
/// repository or concurrent writers that keep changing the identity; storage failures.
pub async fn add(repo: &Repo) -> Result<KeyAdded> {
    let Some(key) = repo.keyring.write_key() else {
        return Err(Error::config(
            "BACKUP_ENCRYPTION_KEY",
            "not set: `walvault key add` registers the write key configured in BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE",
        ));
    };
    let fingerprint = key.fingerprint_hex();
    if key.is_passphrase() {
        tracing::warn!("key {fingerprint} is a passphrase; a random key (openssl rand -base64 32) is recommended");
    }
    for _ in 0..5 {
        let mut id = existing(repo).await?;
        if !id.encrypted {
            return Err(Error::Refused(format!("repository {} is unencrypted: it takes no key", repo.url))
                .with_hint(super::identity::NEW_REPOSITORY));
        }
        let added = !id.key_fingerprints.contains(&fingerprint);
        if !added {
            return Ok(KeyAdded { repository: repo.url.clone(), fingerprint, added, keys: id.key_fingerprints });
        }
        id.key_fingerprints.push(fingerprint.clone());
        repo.storage.put(IDENTITY_KEY, to_bytes(&id)?).await?;
        // Read-modify-write: re-read afterwards to detect a concurrent writer that won.
        if identity::load(repo).await?.as_ref() == Some(&id) {
            tracing::info!("registered key {fingerprint} in {}", repo.storage.describe(IDENTITY_KEY));
            return Ok(KeyAdded { repository: repo.url.clone(), fingerprint, added, keys: id.key_fingerprints });
        }
    }
    Err(Error::Refused(format!(
        "{} keeps changing under concurrent writers; retry",
        repo.storage.describe(IDENTITY_KEY)
    )))
}

async fn existing(repo: &Repo) -> Result<Identity> {
    identity::load(repo).await?.ok_or_else(|| {
        Error::not_found(format!(
            "{} (nothing was written yet: the first wal-push or base-backup creates it and registers its key)",
            repo.storage.describe(IDENTITY_KEY)
        ))
    })
}

fn to_bytes(id: &Identity) -> Result<bytes::Bytes> {
    serde_json::to_vec_pretty(id)
        .map(bytes::Bytes::from)
        .map_err(|e| Error::Invalid(format!("cannot serialise identity: {e}")))
}
