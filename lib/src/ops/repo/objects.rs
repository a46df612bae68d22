//! Raw object access for operators: `walvault ls` and `walvault get --raw`.

use tokio::io::AsyncWriteExt;

use crate::ops::Repo;
use crate::{Error, Result};

/// One object as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every object under `prefix` (all of the repository for "").
///
/// # Errors
/// Storage failures.
pub async fn list(repo: &Repo, prefix: &str) -> Result<Vec<Listed>> {
    let listing = repo.storage.list(prefix, None, None).await?;
    Ok(listing
        .objects
        .into_iter()
        .map(|o| Listed { key: o.key, size: o.size, last_modified: o.last_modified })
        .collect())
}

/// Copy the stored bytes of `key`, undecoded, to stdout (to decrypt elsewhere, or to keep).
///
/// # Errors
/// Not found, storage failures, a closed stdout.
pub async fn get_raw(repo: &Repo, key: &str) -> Result<u64> {
    let mut reader = repo.storage.get(key).await?;
    let mut stdout = tokio::io::stdout();
    let n = tokio::io::copy(&mut reader, &mut stdout).await.map_err(|e| Error::Storage {
        op: "get",
        key: repo.storage.describe(key),
        reason: e.to_string(),
        permanent: true,
    })?;
    stdout.flush().await.map_err(|e| Error::io("standard output", e))?;
    Ok(n)
}
