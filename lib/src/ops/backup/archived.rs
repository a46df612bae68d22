//! The end of a base backup: waiting until the WAL that makes it consistent is in the archive.

use std::time::{Duration, Instant};

use crate::ops::Repo;
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::WalFileName;
use crate::{Error, Result};

/// Wait until every segment from `first` to `last` on `timeline` is in the archive.
pub(super) async fn wait_for_archive(
    repo: &Repo,
    timeline: u32,
    first: u64,
    last: u64,
    seg: u64,
    timeout: Duration,
) -> Result<()> {
    // Saturating: a caller's huge timeout means "no deadline", never an overflow panic.
    let deadline = Instant::now().checked_add(timeout).unwrap_or_else(crate::ops::repo::far_future);
    let mut index = WalIndex::load(None, repo);
    let mut next = first;
    // The stop segment is usually archived within a few tens of milliseconds of the switch:
    // look again soon, then back off to half a second.
    let mut pause = Duration::from_millis(20);
    while next <= last {
        let name = WalFileName::from_segno(timeline, next, seg).to_string();
        if index.find(repo, &name, false).await?.is_some() {
            next += 1;
            continue;
        }
        if Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "WAL file {name}, needed to make the backup consistent, was not archived within {} s",
                timeout.as_secs()
            ))
            .with_hint(
                "check archive_command and pg_stat_archiver; the backup is incomplete and latest.json was not changed",
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    Ok(())
}
