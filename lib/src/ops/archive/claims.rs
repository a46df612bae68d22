//! Push-ahead's claims and done markers (layout in [`crate::ops::repo::local`]): how a
//! wal-push call and the push-ahead helper agree on who pushes a file, and how a call learns
//! that the helper stored its file already.
//!
//! - `claim/NAME`: the [`PidFile`] of the process pushing NAME now (the helper or a wal-push
//!   call). Nobody pushes a claimed file; a claim left by a killed process is stale.
//! - `done/NAME`: NAME was durably stored (or an identical copy already was). It holds the
//!   identity of the file as it was read (device, inode, size, modification and change
//!   times). It is written only after storage acknowledged the object, before the claim is
//!   released; wal-push for NAME accepts it only while the file still has that identity, and
//!   removes it. PostgreSQL never changes a file it has marked `.ready`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Result;
use crate::fsutil::PidFile;
use crate::ops::repo::local;

/// How long a wal-push call waits for another process's claim on its file before pushing
/// the file itself (as pgBackRest's archive-timeout): a helper stuck in retries during an
/// outage shows up as archive_command failures within a minute.
const CLAIM_WAIT: Duration = Duration::from_secs(60);

/// The identity of a file as read: a marker holds it.
pub(super) fn file_identity(meta: &std::fs::Metadata) -> String {
    format!(
        "dev {} ino {} size {} mtime {}.{:09} ctime {}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// True (and the marker removed) when `path` was pushed ahead and has not changed since.
pub fn take_done(dir: &Path, path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    let marker = local::done_dir(dir).join(name);
    let Ok(recorded) = std::fs::read_to_string(&marker) else { return false };
    let matches = std::fs::metadata(path).is_ok_and(|m| file_identity(&m) == recorded);
    let _ = std::fs::remove_file(&marker);
    matches
}

/// Record that `name`, with identity `meta` when it was read, is durably stored.
pub(super) fn mark_done(dir: &Path, name: &str, meta: &std::fs::Metadata) -> Result<()> {
    crate::fsutil::write_atomic(&local::done_dir(dir).join(name), file_identity(meta).as_bytes(), false)
}

/// What a wal-push call may do about its file.
pub enum Turn {
    /// Pushed by another process since the call started: nothing to do.
    Done,
    /// This call holds the claim and pushes the file itself.
    Claimed(Claim),
    /// No claim could be had (the directory is unusable, or another process held the file
    /// past [`CLAIM_WAIT`]): push the file anyway; a duplicate is harmless.
    Unclaimed,
}

/// A claim on one file: nobody else pushes it while this is held.
pub struct Claim {
    _held: PidFile,
}

/// Claim `path` for this call, or wait while another live process pushes it. Bounded by
/// [`CLAIM_WAIT`].
pub async fn claim_or_wait(dir: &Path, path: &Path) -> Turn {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Turn::Unclaimed };
    let claims = local::claims_dir(dir);
    if crate::fsutil::create_private_dir_all(&claims).is_err() {
        return Turn::Unclaimed;
    }
    let deadline = Instant::now() + CLAIM_WAIT;
    while Instant::now() < deadline {
        if take_done(dir, path) {
            return Turn::Done;
        }
        if let Some(c) = PidFile::acquire(&claims.join(name)) {
            // The holder may have finished between the two looks.
            if take_done(dir, path) {
                return Turn::Done;
            }
            return Turn::Claimed(Claim { _held: c });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!("{name} was claimed by another process for {} s; pushing it anyway", CLAIM_WAIT.as_secs());
    Turn::Unclaimed
}
