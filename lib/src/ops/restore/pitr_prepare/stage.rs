//! pitr-prepare's head start: the first WAL segments of the recovery, downloaded and
//! verified while the base backup is extracted; wal-fetch places them in pg_wal once
//! PostgreSQL's recovery runs (see `crate::ops::repo::local`).

use std::path::Path;

use crate::Result;
use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::repo::local::Plan;
use crate::ops::repo::wal_file::{self, fetch_object};

/// Download the chain's segments `first..first + count` that the archive holds (in order,
/// stopping at the first it does not) into `dir`, verified. pitr-prepare runs this while
/// the base backup is still being extracted. Returns the names staged.
///
/// # Errors
/// Storage, key and corruption errors.
pub(super) async fn stage(
    repo: &Repo,
    plan: &Plan,
    files: &std::collections::BTreeMap<String, String>,
    dir: &Path,
    first: u64,
    count: usize,
) -> Result<Vec<String>> {
    crate::fsutil::create_private_dir_all(dir).with_path(dir)?;
    let mut staged = Vec::new();
    for segno in (first..).take(count) {
        let Some(name) = plan.name_for(segno) else { break };
        let file = name.to_string();
        let Some(key) = files.get(&file) else { break };
        let dest = dir.join(&file);
        fetch_object(repo, key, &name, &dest, Some(plan.system_identifier)).await?;
        wal_file::verify_segment(&dest, &name, Some(plan.system_identifier))?;
        staged.push(file);
    }
    Ok(staged)
}
