//! wal-fetch's prefetch: segments after the one PostgreSQL asked for are downloaded,
//! verified and written atomically (temporary name, fsync, rename) by a detached worker
//! process, so that the next restore_command call costs no download.
//!
//! Two places, one rule each:
//!
//! - **pg_wal, for a recovery pitr-prepare planned.** pitr-prepare leaves a [`Plan`] (the
//!   cluster's system identifier and the timeline path to the recovery target). The worker
//!   then places the next segments *of that path* directly in `pg_wal/` (with
//!   `archive_status/NAME.done`, so they are never archived again), and wal-fetch, asked for
//!   a segment that is there, complete and verified, exits 1: PostgreSQL's archive recovery
//!   then reads `pg_wal/NAME` itself (`XLogFileReadAnyTLI` tries restore_command, then
//!   pg_wal, for each timeline newest first), with no copy and no fsync per segment. Exit 1
//!   is never given for a file that is not there (checked again right before exiting), and
//!   every placed file is the archive's own content for its name, so what PostgreSQL reads
//!   is exactly what restore_command would have given it.
//! - **a spool directory beside PGDATA, otherwise.** The next call is a rename.
//!
//! Either way a file is only ever served after [`wal_file::verify_segment`] (length equal to the
//! segment size in its header, this cluster's system identifier, a page address matching
//! its name); anything else is removed and fetched from the archive. A killed worker leaves
//! at most a temporary file, never served and removed by the next worker.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Result;
use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::archive::spool;
use crate::ops::repo::local::{self, Plan};
use crate::ops::repo::wal_file::{self, fetch_object};
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::{self, WalFileName};

/// A worker with nothing left to do exits after PostgreSQL has asked for nothing new this long.
const IDLE: Duration = Duration::from_secs(5);
/// How often an idle worker looks at PostgreSQL's position.
const POLL: Duration = Duration::from_millis(50);
/// Segments one worker downloads at once (at most the prefetch depth). Four: on S3 with tens
/// of milliseconds per request and a per-connection bandwidth cap, two in flight capped replay
/// at ~6.7 segments/s here (30 ms, 100 MB/s per connection) while replay from loopback ran at
/// ~8.7.
const PARALLEL: usize = 4;
/// Hard bound on one worker's life.
const MAX_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Segment size of a restored segment file, from its page header.
pub fn seg_size_of(path: &Path) -> Option<u64> {
    let mut head = vec![0u8; wal::header::LONG_HEADER_LEN];
    let mut f = std::fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    wal::parse_long_header(&head).ok().map(|h| u64::from(h.seg_size))
}

/// True while a worker holds `dir`'s lock.
pub fn worker_running(dir: &Path) -> bool {
    crate::fsutil::PidFile::held(&local::lock_file(dir))
}

/// Where the worker puts what it fetches.
pub enum Target {
    /// The spool directory (no plan): the next segments on the same timeline.
    Spool { seg_size: u64 },
    /// `pg_wal` of the planned recovery.
    PgWal { pg_wal: PathBuf, plan: Plan },
}

/// The detached worker's run for `%p` = `dest`, after PostgreSQL asked for `name`: follow
/// its position, keeping the next `depth` segments ready (in pg_wal along pitr-prepare's
/// plan, else in the spool, as segments of `seg_size`). Returns how many it fetched.
///
/// # Errors
/// As [`fill`].
pub async fn run_worker(
    repo: &Repo,
    cache_dir: &Path,
    name: &str,
    dest: &Path,
    seg_size: u64,
    depth: usize,
) -> Result<usize> {
    let Some(owner) = local::owner_of(dest) else { return Ok(0) };
    let dir = local::prefetch_dir(cache_dir, repo, &owner);
    let target = match Plan::for_dest(Some(cache_dir), repo, dest) {
        Some(plan) => Target::PgWal { pg_wal: plan.pgdata.join("pg_wal"), plan },
        None => Target::Spool { seg_size },
    };
    fill(repo, cache_dir, &dir, name, depth, &target).await
}

/// True while a worker serves `dest`'s data directory.
pub fn worker_serves(cache_dir: &Path, repo: &Repo, dest: &Path) -> bool {
    local::owner_of(dest).is_some_and(|d| worker_running(&local::prefetch_dir(cache_dir, repo, &d)))
}

/// The worker: keep the `depth` segments after PostgreSQL's position fetched and verified
/// (in the spool, or placed in pg_wal along the plan's path), following the position
/// wal-fetch records; stop at the first segment the archive does not hold yet, or once
/// PostgreSQL has asked for nothing new for a while. Only one worker runs per directory
/// (its `.lock`, a [`crate::fsutil::PidFile`]).
///
/// # Errors
/// Storage, key and corruption errors (the worker logs them; recovery is unaffected: a
/// segment not placed is fetched by wal-fetch itself).
pub async fn fill(
    repo: &Repo,
    cache_dir: &Path,
    dir: &Path,
    name: &str,
    depth: usize,
    target: &Target,
) -> Result<usize> {
    crate::fsutil::create_private_dir_all(dir).with_path(dir)?;
    let Some(_lock) = crate::fsutil::PidFile::acquire(&local::lock_file(dir)) else { return Ok(0) };
    let mut index = WalIndex::load(Some(cache_dir), repo);
    if let Some(id) = index.identity().filter(|id| id.repository_id.is_some()) {
        repo.set_place(Some(id));
    }
    let sysid = match target {
        Target::PgWal { plan, .. } => Some(plan.system_identifier),
        Target::Spool { .. } => match spool_sysid(repo, &mut index).await? {
            Some(sysid) => sysid,
            None => return Ok(0),
        },
    };
    if let Target::PgWal { pg_wal, .. } = target {
        spool::remove_dead_temps(pg_wal, false);
    }
    spool::remove_dead_temps(dir, true);
    let mut pos = spool::position(dir).unwrap_or(WalFileName::parse(name)?);
    let mut last_change = Instant::now();
    let started = Instant::now();
    let mut fetched = 0;
    while started.elapsed() < MAX_LIFE {
        if let Target::PgWal { pg_wal, .. } = target
            && !pg_wal.is_dir()
        {
            // The data directory is gone (removed once its recovery was over): stop, and
            // never recreate it.
            break;
        }
        if let Target::Spool { .. } = target {
            spool::remove_older(dir, &pos);
        }
        let (wanted, at_end) =
            missing_next(repo, &mut index, dir, upcoming(&pos, depth, target), target, sysid).await?;
        let did = !wanted.is_empty();
        let results = futures_util::future::join_all(
            wanted
                .into_iter()
                .map(|(next, key, final_path)| fetch_one(repo, dir, target, next, key, final_path, sysid)),
        )
        .await;
        for r in results {
            r?;
            fetched += 1;
        }
        if at_end && !did {
            // The archive holds nothing more yet: wal-fetch starts a new worker when asked again.
            break;
        }
        match spool::position(dir) {
            Some(p) if p != pos => {
                pos = p;
                last_change = Instant::now();
            }
            _ if !did && last_change.elapsed() > IDLE => {
                // PostgreSQL stopped asking: what it never asked for is not kept.
                if let Target::Spool { .. } = target {
                    spool::remove_spooled(dir);
                }
                break;
            }
            _ if !did => tokio::time::sleep(POLL).await,
            _ => {}
        }
    }
    index.save();
    Ok(fetched)
}

/// The system identifier spooled files are checked against: the cached identity's, else
/// learnt once (one GET) and left in the cache where wal-fetch looks. `None` when the
/// repository has no identity yet (nothing can be checked: the worker stops).
async fn spool_sysid(repo: &Repo, index: &mut WalIndex) -> Result<Option<Option<u64>>> {
    if let Some(sysid) = identity_sysid(index, repo) {
        return Ok(Some(Some(sysid)));
    }
    let Some(id) = crate::ops::repo::identity::load(repo).await? else { return Ok(None) };
    index.set_identity(id);
    index.save();
    Ok(Some(identity_sysid(index, repo)))
}

/// The segments among `next` not already in place (verified), in order, as far as the
/// archive holds them, at most [`PARALLEL`]: each with its object key and final path; and
/// whether the archive ended before them.
async fn missing_next(
    repo: &Repo,
    index: &mut WalIndex,
    dir: &Path,
    next: Vec<WalFileName>,
    target: &Target,
    sysid: Option<u64>,
) -> Result<(Vec<(WalFileName, String, PathBuf)>, bool)> {
    let mut wanted = Vec::new();
    for next in next {
        let final_path = match target {
            Target::Spool { .. } => local::spooled(dir, &next.to_string()),
            Target::PgWal { pg_wal, .. } => pg_wal.join(next.to_string()),
        };
        if wal_file::verify_segment(&final_path, &next, sysid).is_ok() {
            continue;
        }
        let Some(found) = index.find(repo, &next.to_string(), false).await? else { return Ok((wanted, true)) };
        wanted.push((next, found.key, final_path));
        if wanted.len() == PARALLEL {
            break;
        }
    }
    Ok((wanted, false))
}

/// Download one segment into the spool, verify it, move it into place.
async fn fetch_one(
    repo: &Repo,
    dir: &Path,
    target: &Target,
    name: WalFileName,
    key: String,
    final_path: PathBuf,
    sysid: Option<u64>,
) -> Result<()> {
    let file = name.to_string();
    let staged = local::spooling(dir, &file);
    fetch_object(repo, &key, &name, &staged, sysid).await?;
    let placed = wal_file::verify_segment(&staged, &name, sysid).and_then(|_| match target {
        Target::Spool { .. } => wal_file::move_file(&staged, &final_path),
        Target::PgWal { pg_wal, .. } => spool::place(&staged, pg_wal, &file),
    });
    if placed.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    placed
}

fn identity_sysid(index: &WalIndex, repo: &Repo) -> Option<u64> {
    index.identity().and_then(|id| id.envs.get(repo.layout.env())).map(|e| e.system_identifier.0)
}

/// The `depth` segments after `pos`: along the plan's path, or on `pos`'s timeline.
fn upcoming(pos: &WalFileName, depth: usize, target: &Target) -> Vec<WalFileName> {
    match target {
        Target::PgWal { plan, .. } => {
            let Some(segno) = pos.segno(plan.seg_size) else { return Vec::new() };
            (segno.saturating_add(1)..).take(depth).filter_map(|s| plan.name_for(s)).collect()
        }
        Target::Spool { seg_size } => {
            let mut out = Vec::with_capacity(depth);
            let mut next = pos.clone();
            for _ in 0..depth {
                let Some(n) = next.next_segment(*seg_size) else { break };
                out.push(n.clone());
                next = n;
            }
            out
        }
    }
}
