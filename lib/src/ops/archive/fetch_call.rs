//! One wal-fetch call, decided in one place: what PostgreSQL is answered (and with which exit
//! status), and whether the prefetch worker is to be started. `wal-fetch`'s `main` parses its
//! arguments, calls [`run`], prints and exits with [`FetchCall::exit_code`].

use std::path::Path;

use crate::config::Config;
use crate::error::ExitCode;
use crate::ops::Repo;
use crate::ops::archive::fetch::{self, FetchOutcome, Source};
use crate::ops::archive::prefetch;
use crate::ops::repo::local;
use crate::ops::repo::runtime::block_on;
use crate::{Error, Result};

/// What PostgreSQL asked (`%f`, `%p`), or the worker's run.
pub struct FetchRequest<'a> {
    /// The WAL file name (`%f`).
    pub name: &'a str,
    /// Where to write it (`%p`, relative to the data directory).
    pub dest: &'a Path,
    /// Run as the detached prefetch worker (for segments of this size) instead.
    pub worker: Option<u64>,
}

/// What wal-fetch answers.
#[derive(Debug)]
pub enum Answer {
    /// The file is at `%p`, complete and verified: exit 0.
    Restored(FetchOutcome),
    /// The file is in pg_wal, complete and verified, for PostgreSQL to read there: exit 1.
    InPgWal(FetchOutcome),
    /// The archive does not hold it (the true end): exit 1.
    NotFound(String),
    /// Recovery must stop: 200 + the error's code. In standby mode (`standby.signal`) a
    /// storage failure or a hole is answered with the plain code (below 126) instead, so that
    /// PostgreSQL retries (or streams): an outage or a hole later archiving may fill must not
    /// shut a standby down; it stays fatal in archive recovery toward a target.
    Failed { error: Error, standby: bool },
    /// The prefetch worker ran (its own process): exit 0.
    WorkerDone { prefetched: usize },
}

/// One call's answer, and the segment size to start the prefetch worker with, if one is to
/// be started (prefetch on, a cache directory, no worker serving this data directory yet).
#[derive(Debug)]
pub struct FetchCall {
    pub answer: Answer,
    pub start_worker: Option<u64>,
}

impl FetchCall {
    /// The call for an error raised before or outside [`run`] (configuration, runtime).
    pub fn failed(error: Error, dest: &Path) -> FetchCall {
        FetchCall { answer: failed(error, dest), start_worker: None }
    }

    /// The process status PostgreSQL gets: 0, 1, or above 125 for every other failure
    /// (below 126 for a standby's retryable failure).
    pub fn exit_code(&self) -> u8 {
        match &self.answer {
            Answer::Restored(_) | Answer::WorkerDone { .. } => ExitCode::Success.code(),
            Answer::InPgWal(_) | Answer::NotFound(_) => ExitCode::NotFound.code(),
            Answer::Failed { error, standby: true } => error.exit_code().code(),
            Answer::Failed { error, standby: false } => error.exit_code().fetch_code(),
        }
    }
}

fn failed(error: Error, dest: &Path) -> Answer {
    match error {
        Error::NotFound { what } => Answer::NotFound(what),
        error => {
            let retryable = matches!(error, Error::Storage { .. } | Error::Hole(_));
            Answer::Failed { standby: retryable && local::in_standby_mode(dest), error }
        }
    }
}

/// Answer PostgreSQL's request (see [`fetch::restore`]), or run the prefetch worker.
pub fn run(config: &Config, req: &FetchRequest<'_>) -> FetchCall {
    let cache = local::cache_dir(config.cache_dir.as_deref());
    let mut start_worker = None;
    let result = block_on(async {
        let repo = Repo::open(config).await?;
        if let (Some(seg), Some(cache)) = (req.worker, cache.as_deref()) {
            let n = prefetch::run_worker(&repo, cache, req.name, req.dest, seg, config.fetch_prefetch).await?;
            tracing::debug!("prefetched {n} segments after {}", req.name);
            return Ok(Answer::WorkerDone { prefetched: n });
        }
        let out = fetch::restore(&repo, req.name, req.dest, cache.as_deref()).await?;
        if let (true, Some(cache)) = (config.fetch_prefetch > 0, cache.as_deref()) {
            start_worker = worker_wanted(&repo, cache, req.dest, &out);
        }
        answer(&repo, req, out, cache.as_deref()).await
    });
    let answer = result.unwrap_or_else(|e| failed(e, req.dest));
    log(req.name, &answer);
    FetchCall { answer, start_worker }
}

/// Exit 1 ("read it from pg_wal") only for a file that is there right now: one that left
/// pg_wal after it was verified is fetched from the archive after all.
async fn answer(repo: &Repo, req: &FetchRequest<'_>, out: FetchOutcome, cache: Option<&Path>) -> Result<Answer> {
    if out.source != Source::PgWal {
        return Ok(Answer::Restored(out));
    }
    if fetch::still_in_pg_wal(req.dest, req.name, out.bytes) {
        return Ok(Answer::InPgWal(out));
    }
    tracing::warn!("{} left pg_wal after it was verified: fetching it from the archive", req.name);
    Ok(Answer::Restored(fetch::wal_fetch(repo, req.name, req.dest, cache).await?))
}

/// The segment size to start a worker with after `out`, unless one already serves `dest`.
fn worker_wanted(repo: &Repo, cache: &Path, dest: &Path, out: &FetchOutcome) -> Option<u64> {
    let seg = match out.source {
        Source::PgWal => Some(out.bytes),
        _ => prefetch::seg_size_of(dest),
    };
    seg.filter(|_| !prefetch::worker_serves(cache, repo, dest))
}

fn log(name: &str, answer: &Answer) {
    match answer {
        Answer::Restored(out) | Answer::InPgWal(out) => {
            let verb = if out.source == Source::PgWal { "verified" } else { "fetched" };
            tracing::debug!("{verb} {} from {} ({} bytes, {} ms)", out.name, out.object, out.bytes, out.millis);
            tracing::debug!("requests: {}", serde_json::to_string(&out.requests).unwrap_or_default());
            if out.source == Source::PgWal {
                tracing::debug!("{name} is in pg_wal, complete and verified: PostgreSQL reads it there");
            }
        }
        Answer::NotFound(what) => tracing::debug!("{what} not found"),
        Answer::Failed { .. } | Answer::WorkerDone { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> Error {
        Error::Storage { op: "get", key: "k".into(), reason: "timeout".into(), permanent: true }
    }

    /// What PostgreSQL is answered for each failure, in archive recovery and in standby mode.
    #[test]
    fn each_failure_gets_its_exit_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pgdata = dir.path().join("pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
        let dest = pgdata.join("pg_wal/RECOVERYXLOG");
        let code = |e: Error| FetchCall::failed(e, &dest).exit_code();
        let archive_recovery = [
            (Error::not_found("x"), 1),
            (storage(), 203),
            (Error::Hole("hole".into()), 205),
            (Error::corrupt("o", "bad"), 204),
            (Error::config("WALVAULT_REPO", "not set"), 202),
        ];
        for (e, want) in archive_recovery {
            assert_eq!(code(e), want);
        }
        // A standby retries what an outage or later archiving may cure, nothing else.
        std::fs::write(pgdata.join("standby.signal"), "").expect("standby.signal");
        let standby = [(storage(), 3), (Error::Hole("hole".into()), 5), (Error::corrupt("o", "bad"), 204)];
        for (e, want) in standby {
            assert_eq!(code(e), want);
        }
        // Outside a data directory (wal-fetch by hand) there is no standby.
        assert_eq!(FetchCall::failed(storage(), &dir.path().join("x")).exit_code(), 203);
    }
}
