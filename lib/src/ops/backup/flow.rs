//! How the bytes of a backup flow: counted into a [`Progress`], and with `--max-rate` no
//! faster than the rate on reads (the tar stream read from the directory) and, separately,
//! on uploads. Shared by base-backup and files-backup.

use std::sync::Arc;

use crate::ops::Repo;
use crate::ops::repo::progress::{Metered, Progress};
use crate::throttle::Throttle;

/// The progress and the rate limits of one backup run.
#[derive(Clone)]
pub struct Flow {
    pub progress: Progress,
    read: Option<Arc<Throttle>>,
    upload: Option<Arc<Throttle>>,
}

impl Flow {
    /// Progress of `what` towards `total` bytes read, shown every `every` without a terminal;
    /// reads and uploads each limited to `max_rate` bytes per second when given.
    pub fn start(what: impl Into<String>, total: u64, every: std::time::Duration, max_rate: Option<u64>) -> Flow {
        let limit = || max_rate.map(|r| Arc::new(Throttle::new(r)));
        Flow { progress: Progress::start(what, total, every), read: limit(), upload: limit() }
    }

    /// `out` with the bytes written into it counted and paced as reads from the directory.
    pub fn reading<W: std::io::Write>(&self, out: W) -> Metered<W> {
        Metered::new(out, self.progress.clone(), self.read.clone())
    }

    /// Upload the spooled file `path` to `key` within the upload limit.
    ///
    /// # Errors
    /// As [`crate::storage::Storage::put_file`].
    pub async fn upload(&self, repo: &Repo, key: &str, path: &std::path::Path) -> crate::Result<()> {
        repo.storage.put_file_limited(key, path, self.upload.as_deref()).await
    }
}
