//! The environments a repository holds (`database/<env>/`, `wal/<env>/`): what `walvault list`
//! names when the configured `WALVAULT_ENV` has nothing, so that a wrong or forgotten
//! environment is never mistaken for an empty repository.

use std::collections::BTreeSet;

use crate::Result;
use crate::ops::Repo;

/// Every environment with WAL or base backups, sorted.
///
/// # Errors
/// Storage failures listing the two roots.
pub async fn environments(repo: &Repo) -> Result<Vec<String>> {
    let mut envs = BTreeSet::new();
    for root in ["database/", "wal/"] {
        let listing = repo.storage.list(root, Some("/"), None).await?;
        for prefix in listing.prefixes {
            if let Some(env) = prefix.strip_prefix(root).and_then(|p| p.strip_suffix('/')).filter(|e| !e.is_empty()) {
                envs.insert(env.to_string());
            }
        }
    }
    Ok(envs.into_iter().collect())
}

/// The environments other than `env` the repository holds, as a hint line, or `None`.
pub fn hint(env: &str, others: &[String]) -> Option<String> {
    match others {
        [] => None,
        [one] => {
            Some(format!("HINT: this repository holds environment {one}: set WALVAULT_ENV={one} (or --env {one})"))
        }
        many => Some(format!(
            "HINT: this repository holds environments {}: set WALVAULT_ENV (or --env) to one of them; {env} has none",
            many.join(", ")
        )),
    }
}
