//! One wal-push call, decided in one place: the push-ahead helper's run, a file the helper
//! already stored, the helper started for a backlog, or the file pushed now; each with its
//! exit status. `wal-push`'s `main` parses its arguments, calls [`run`], prints and exits
//! with [`PushAnswer::exit_code`].

use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::error::ExitCode;
use crate::ops::Repo;
use crate::ops::archive::claims;
use crate::ops::archive::push::{self, PushOutcome};
use crate::ops::archive::push_ahead::{self, HelperStats};
use crate::ops::repo::local;
use crate::ops::repo::runtime::block_on;
use crate::{Error, Result};

/// What PostgreSQL asked (`%p`), or the helper's run.
pub struct PushRequest<'a> {
    /// The WAL file (`%p`, relative to the data directory); the pg_wal directory for the helper.
    pub path: &'a Path,
    /// Run as the detached push-ahead helper.
    pub helper: bool,
}

/// What wal-push answers.
#[derive(Debug)]
pub enum PushAnswer {
    /// Durably stored now, or an identical copy already was: exit 0.
    Pushed(PushOutcome),
    /// The push-ahead helper stored this file already: exit 0.
    PushedAhead { name: String },
    /// The helper ran (its own process): exit 0.
    HelperDone(HelperStats),
    /// Not stored: PostgreSQL keeps the file and retries. The error's code.
    Failed(Error),
}

impl PushAnswer {
    /// The process status: 0 only once the file is durably stored.
    pub fn exit_code(&self) -> u8 {
        match self {
            PushAnswer::Failed(e) => e.exit_code().code(),
            _ => ExitCode::Success.code(),
        }
    }
}

/// Push `req.path` (or run the helper). `launch` gives a detached copy of this binary (own
/// process group, stdin and stdout closed, the flags naming the repository): with
/// push-ahead on and a backlog waiting, the helper is started from it before this file is
/// pushed.
pub fn run(config: &Config, req: &PushRequest<'_>, launch: &dyn Fn() -> Option<Command>) -> PushAnswer {
    decide(config, req, launch).unwrap_or_else(PushAnswer::Failed)
}

fn decide(config: &Config, req: &PushRequest<'_>, launch: &dyn Fn() -> Option<Command>) -> Result<PushAnswer> {
    let cache = local::cache_dir(config.cache_dir.as_deref());
    if req.helper {
        // Here the path is the pg_wal directory.
        let Some(cache) = cache.as_deref() else { return Ok(PushAnswer::HelperDone(HelperStats::default())) };
        return block_on(async {
            let repo = Repo::open(config).await?;
            let stats = push_ahead::run_helper(&repo, cache, req.path, config.push_parallel).await?;
            tracing::debug!("push-ahead helper done: {stats:?}");
            Ok(PushAnswer::HelperDone(stats))
        });
    }
    // Push-ahead needs a cache directory, more than one file at a time, and a file in a
    // pg_wal (with archive_status beside it).
    let pg_wal = req.path.parent().filter(|p| p.join("archive_status").is_dir());
    let ahead = match (&cache, pg_wal) {
        (Some(c), Some(_)) if config.push_parallel > 1 => {
            Some(local::push_ahead_dir(c, &config.repo.to_string(), &config.env))
        }
        _ => None,
    };
    if let (Some(dir), Some(pg_wal)) = (&ahead, pg_wal) {
        // The common case in a backlog: the helper stored this file already. No runtime,
        // no storage client, no read of the file.
        if claims::take_done(dir, req.path) {
            let name = req.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            tracing::debug!("{name} was pushed ahead by the push-ahead helper");
            return Ok(PushAnswer::PushedAhead { name });
        }
        let name = req.path.file_name().and_then(|n| n.to_str());
        if !push_ahead::ready_files(pg_wal, name).is_empty() && !push_ahead::helper_running(dir) {
            let _ = crate::fsutil::create_private_dir_all(dir);
            start_helper(dir, pg_wal, launch);
        }
    }
    block_on(async {
        let repo = Repo::open(config).await?;
        let out = push::wal_push(&repo, req.path, cache.as_deref(), ahead.as_deref()).await?;
        tracing::debug!("requests: {}", serde_json::to_string(&out.requests).unwrap_or_default());
        Ok(PushAnswer::Pushed(out))
    })
}

/// Start the push-ahead helper detached, stderr into `helper.log` in its directory, so that
/// it keeps pushing the backlog after this call returns. Secrets stay in the environment it
/// inherits.
fn start_helper(dir: &Path, pg_wal: &Path, launch: &dyn Fn() -> Option<Command>) {
    use std::os::unix::fs::OpenOptionsExt;
    let log = local::helper_log(dir);
    // Keep the log small: the last run's lines only once it passes 1 MiB.
    let truncate = std::fs::metadata(&log).is_ok_and(|m| m.len() > 1 << 20);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .truncate(truncate)
        .mode(0o600)
        .open(&log)
        .map_or_else(|_| Stdio::null(), Stdio::from);
    let Some(mut cmd) = launch() else { return };
    cmd.arg("--push-ahead-helper");
    cmd.arg(std::path::absolute(pg_wal).unwrap_or_else(|_| pg_wal.to_path_buf())).stderr(stderr);
    if let Err(e) = cmd.spawn() {
        tracing::debug!("push-ahead helper not started: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stored_file_exits_zero() {
        assert_eq!(PushAnswer::PushedAhead { name: "f".into() }.exit_code(), 0);
        assert_eq!(PushAnswer::HelperDone(HelperStats::default()).exit_code(), 0);
        assert_eq!(PushAnswer::Failed(Error::Refused("other content".into())).exit_code(), 5);
        let transient = Error::Storage { op: "put", key: "k".into(), reason: "503".into(), permanent: false };
        assert_eq!(PushAnswer::Failed(transient).exit_code(), 3);
    }
}
