//! pitr-prepare's head start: the first WAL segments of the recovery, downloaded and
//! verified while the base backup is extracted; wal-fetch places them in pg_wal once
//! PostgreSQL's recovery runs (see `crate::ops::repo::local`).

use std::path::Path;

use crate::Result;
use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::repo::local::Plan;
use crate::ops::repo::wal_file::{self, fetch_object};

/// Segments downloaded at once.
const AT_ONCE: usize = 4;

/// Download the chain's segments `first..first + count` that the archive holds (in order,
/// stopping at the first it does not) into `dir`, verified, [`AT_ONCE`] at a time.
/// pitr-prepare runs this while the base backup is still being extracted. Returns the names
/// staged.
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
    use futures_util::{StreamExt, TryStreamExt};
    crate::fsutil::create_private_dir_all(dir).with_path(dir)?;
    let mut wanted = Vec::new();
    for segno in (first..).take(count) {
        let Some(name) = plan.name_for(segno) else { break };
        let Some(key) = files.get(&name.to_string()) else { break };
        wanted.push((name, key));
    }
    futures_util::stream::iter(wanted)
        .map(|(name, key)| async move {
            let file = name.to_string();
            let dest = dir.join(&file);
            fetch_object(repo, key, &name, &dest, Some(plan.system_identifier)).await?;
            wal_file::verify_segment(&dest, &name, Some(plan.system_identifier))?;
            Ok::<_, crate::Error>(file)
        })
        .buffered(AT_ONCE)
        .try_collect()
        .await
}
