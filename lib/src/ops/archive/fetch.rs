//! `wal-fetch %f %p`: restore one WAL file (SPEC section 6).
//!
//! Find the object by name (see [`crate::ops::repo::wal_index`]), stream it through the decoder into a
//! temporary file beside `%p`, check the plaintext digest and, for segments, the page header
//! against the repository identity, fsync, rename into place, fsync the directory. On any
//! error no file is left at `%p`.

use std::path::Path;
use std::time::Instant;

use crate::ops::Repo;
use crate::ops::archive::fetch_place::{self, Reloaded};
use crate::ops::archive::spool;
use crate::ops::repo::local::{self, Plan};
use crate::ops::repo::wal_file::{self, fetch_object};
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::WalFileName;
use crate::{Error, Result};

/// Where the file PostgreSQL asked for came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Downloaded now.
    Archive,
    /// Renamed from the prefetch spool.
    Spool,
    /// Already in `pg_wal`, complete and verified: PostgreSQL reads it there (exit 1).
    PgWal,
}

/// What wal-fetch did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FetchOutcome {
    pub name: String,
    pub object: String,
    pub source: Source,
    pub bytes: u64,
    pub millis: u64,
    pub requests: crate::storage::RequestStats,
}

/// Fetch WAL file `name` for `dest` (`%p`): [`Source::PgWal`] when a recovery planned by
/// pitr-prepare already has it in `pg_wal` (verified; nothing is written), else from the
/// spool when a worker prefetched it (verified), else from the archive.
///
/// # Errors
/// As [`wal_fetch`].
pub async fn restore(repo: &Repo, name: &str, dest: &Path, cache_dir: Option<&Path>) -> Result<FetchOutcome> {
    let started = Instant::now();
    let parsed = WalFileName::parse(name)?;
    let plan = Plan::for_dest(cache_dir, repo, dest);
    if let Some(plan) = &plan {
        refuse_off_path(plan, &parsed, name)?;
    }
    // Identity on every call: the place objects must be bound to, and the data directory's
    // cluster against it (a stale cache of another repository at this URL is dropped).
    let owner = local::owner_of(dest);
    let spool = cache_dir.zip(owner.as_deref()).map(|(cache, owner)| local::prefetch_dir(cache, repo, owner));
    let mut index = WalIndex::load(cache_dir, repo);
    let mut known = fetch_place::known(repo, &mut index).await?;
    if let Some(pgdata) = local::pgdata_of(dest) {
        fetch_place::check_data_directory(repo, &mut index, &mut known, &pgdata, spool.as_deref()).await?;
    }
    if let (Some(plan), Some(cache)) = (&plan, cache_dir) {
        // PostgreSQL runs restore_command: archive recovery has begun, so the segments
        // pitr-prepare fetched ahead may go into pg_wal now (never before: a data directory
        // without recovery.signal must not find WAL to start from).
        spool::adopt_staged(&local::prefetch_dir(cache, repo, &plan.pgdata), plan);
    }
    if let (Some(dir), true) = (&spool, parsed.is_segment()) {
        spool::set_position(dir, name);
        let sysid = Some(known.place.system_identifier).filter(|s| *s != 0);
        if let Some((source, object, bytes)) = served_locally(plan.as_ref(), dir, &parsed, name, dest, sysid) {
            let millis = started.elapsed().as_millis() as u64;
            let requests = repo.storage.stats();
            return Ok(FetchOutcome { name: name.to_string(), object, source, bytes, millis, requests });
        }
    }
    from_archive(repo, name, dest, index, plan.as_ref(), spool.as_deref()).await
}

/// PostgreSQL tries an older timeline's file only when the newer one was not found: past
/// the fork that file holds the parent's WAL, never this recovery's. Such a request is "not
/// found".
fn refuse_off_path(plan: &Plan, parsed: &WalFileName, name: &str) -> Result<()> {
    let path = plan.path();
    match parsed.segno(plan.seg_size).map(|s| path.reader(s)) {
        Some(reader) if parsed.is_segment() && path.has(parsed.tli()) && reader != parsed.tli() => {
            Err(Error::not_found(format!(
                "{name} for this recovery (it follows timeline {reader} there, whose file is not archived)"
            )))
        }
        _ => Ok(()),
    }
}

/// The segment already here: in pg_wal of a planned recovery (verified, placed from the
/// archive), else in the spool of prefetch directory `dir` (verified, then moved to `dest`).
/// Where it came from, what to call it, and its length.
fn served_locally(
    plan: Option<&Plan>,
    dir: &Path,
    parsed: &WalFileName,
    name: &str,
    dest: &Path,
    sysid: Option<u64>,
) -> Option<(Source, String, u64)> {
    if let Some(plan) = plan {
        let pgdata = &plan.pgdata;
        let in_pg_wal = pgdata.join("pg_wal").join(name);
        // Only a segment the archive gave (placed by the worker, or restored earlier
        // through %p: both leave `.done`) is vouched for; a file copied into pg_wal by
        // hand is left to PostgreSQL's own order, archive first.
        let from_archive = pgdata.join("pg_wal/archive_status").join(format!("{name}.done")).exists();
        match wal_file::verify_segment(&in_pg_wal, parsed, Some(plan.system_identifier)) {
            Ok(bytes) if from_archive => return Some((Source::PgWal, in_pg_wal.display().to_string(), bytes)),
            Ok(_) => tracing::debug!("{name} is in pg_wal but was not placed from the archive"),
            Err(e) if in_pg_wal.exists() => tracing::debug!("not reading {name} from pg_wal: {e}"),
            Err(_) => {}
        }
    }
    match spool::take(dir, name, dest, sysid) {
        Ok(Some(bytes)) => {
            Some((Source::Spool, format!("{} (prefetched)", local::spooled(dir, name).display()), bytes))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("prefetched {name} unusable, fetching it again: {e}");
            None
        }
    }
}

/// True when `pg_wal/name` of `dest`'s data directory is still there, whole: checked right
/// before wal-fetch answers "read it from pg_wal" (exit 1), which must never be said of a
/// file that is not there.
pub fn still_in_pg_wal(dest: &Path, name: &str, bytes: u64) -> bool {
    let Some(pgdata) = local::pgdata_of(dest) else { return false };
    std::fs::metadata(pgdata.join("pg_wal").join(name)).is_ok_and(|m| m.is_file() && m.len() == bytes && bytes > 0)
}

/// Fetch WAL file `name` into `dest` from the archive.
///
/// # Errors
/// [`Error::NotFound`] when the archive does not hold `name` (and only then); corruption,
/// key, storage and I/O errors otherwise.
pub async fn wal_fetch(repo: &Repo, name: &str, dest: &Path, cache_dir: Option<&Path>) -> Result<FetchOutcome> {
    let plan = Plan::for_dest(cache_dir, repo, dest);
    from_archive(repo, name, dest, WalIndex::load(cache_dir, repo), plan.as_ref(), None).await
}

/// [`wal_fetch`] with the listing cache already loaded (a call reads it once).
async fn from_archive(
    repo: &Repo,
    name: &str,
    dest: &Path,
    mut index: WalIndex,
    plan: Option<&Plan>,
    spool: Option<&Path>,
) -> Result<FetchOutcome> {
    let started = Instant::now();
    let parsed = WalFileName::parse(name)?;
    let known = fetch_place::known(repo, &mut index).await?;
    let mut expected_sysid = Some(known.place.system_identifier).filter(|s| *s != 0);
    let (mut attempt, mut reloaded) = (0, !known.cached);
    let result = loop {
        attempt += 1;
        let Some(found) = index.find(repo, name, false).await? else {
            break Err(crate::ops::archive::missing::missing(repo, &parsed, &mut index, plan).await);
        };
        match fetch_object(repo, &found.key, &parsed, dest, expected_sysid).await {
            // A stale cache entry (the object was pruned): forget it and look again once.
            Err(Error::NotFound { .. }) if attempt == 1 => index.forget(found.day, name),
            // Misplaced by the cached identity: read walvault.json once more before saying so.
            Err(e @ Error::Misplaced { .. }) if !reloaded => {
                reloaded = true;
                match fetch_place::reload(repo, &mut index, &known.place, spool).await {
                    Ok(Reloaded::Updated) => {
                        let now = repo.place().await?;
                        expected_sysid = Some(now.system_identifier).filter(|s| *s != 0);
                    }
                    Ok(Reloaded::Same) => break Err(e),
                    Err(refused) => break Err(refused),
                }
            }
            other => break other.map(|bytes| (found.key, bytes)),
        }
    };
    index.save();
    let (key, bytes) = result?;
    Ok(FetchOutcome {
        name: name.to_string(),
        object: repo.storage.describe(&key),
        source: Source::Archive,
        bytes,
        millis: started.elapsed().as_millis() as u64,
        requests: repo.storage.stats(),
    })
}
