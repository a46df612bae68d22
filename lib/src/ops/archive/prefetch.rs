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
//! Either way a file is only ever served after [`verify_segment`] (length equal to the
//! segment size in its header, this cluster's system identifier, a page address matching
//! its name); anything else is removed and fetched from the archive. A killed worker leaves
//! at most a temporary file, never served and removed by the next worker.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::repo::local::{self, Plan, staged_dir};
use crate::ops::repo::wal_file::{self, fetch_object};
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::{self, WalFileName};
use crate::{Error, Result};

/// A worker with nothing left to do exits after PostgreSQL has asked for nothing new this long.
const IDLE: Duration = Duration::from_secs(5);
/// How often an idle worker looks at PostgreSQL's position.
const POLL: Duration = Duration::from_millis(50);
/// Segments one worker downloads at once.
const PARALLEL: usize = 2;
/// Hard bound on one worker's life.
const MAX_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Move a prefetched `name` into `dest` after [`verify_segment`]; `None` if it was not
/// prefetched or did not verify (then it is removed and the caller fetches it).
///
/// # Errors
/// I/O errors naming the file (the caller then fetches from the archive instead).
pub fn take(dir: &Path, name: &str, dest: &Path, sysid: Option<u64>) -> Result<Option<u64>> {
    let src = local::spooled(dir, name);
    if !src.exists() {
        return Ok(None);
    }
    let Some(sysid) = sysid else {
        tracing::debug!("not serving the spooled {name}: the cluster's system identifier is not known yet");
        return Ok(None);
    };
    let sysid = Some(sysid);
    let parsed = WalFileName::parse(name)?;
    let len = match wal_file::verify_segment(&src, &parsed, sysid) {
        Ok(len) => len,
        Err(e) => {
            tracing::warn!("not serving the spooled {name}: {e}; fetching it from the archive");
            let _ = std::fs::remove_file(&src);
            return Ok(None);
        }
    };
    wal_file::move_file(&src, dest)?;
    Ok(Some(len))
}

/// Segment size of a restored segment file, from its page header.
pub fn seg_size_of(path: &Path) -> Option<u64> {
    let mut head = vec![0u8; wal::header::LONG_HEADER_LEN];
    let mut f = std::fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    wal::parse_long_header(&head).ok().map(|h| u64::from(h.seg_size))
}

/// Record the segment PostgreSQL asked for last (best effort), for the worker to follow.
pub fn set_position(dir: &Path, name: &str) {
    if crate::fsutil::create_private_dir_all(dir).is_ok() {
        let _ = crate::fsutil::write_atomic(&local::position_file(dir), name.as_bytes(), false);
    }
}

fn position(dir: &Path) -> Option<WalFileName> {
    std::fs::read_to_string(local::position_file(dir)).ok().and_then(|s| WalFileName::parse(s.trim()).ok())
}

/// True while a worker holds `dir`'s lock.
pub fn worker_running(dir: &Path) -> bool {
    crate::fsutil::PidFile::held(&local::lock_file(dir))
}

/// Mark `name` archived in `pg_wal/archive_status`, as PostgreSQL does for a file restored
/// from the archive, so that it is never archived again after promotion.
fn mark_done(pg_wal: &Path, name: &str) -> Result<()> {
    let status = pg_wal.join("archive_status");
    // Never recursive: a pg_wal that is gone (its data directory removed) is not recreated.
    match std::fs::DirBuilder::new().mode(0o700).create(&status) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(Error::io(&status, e)),
        _ => {}
    }
    let done = status.join(format!("{name}.done"));
    // Private, like every file PostgreSQL creates in its data directory.
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&done).with_path(&done)?;
    Ok(())
}

/// Place `name` (a verified file at `src`) into `pg_wal`, marked archived.
///
/// # Errors
/// I/O errors; the `.done` mark is removed again if the file could not be placed.
pub fn place(src: &Path, pg_wal: &Path, name: &str) -> Result<()> {
    mark_done(pg_wal, name)?;
    let moved = wal_file::move_file(src, &pg_wal.join(name));
    if moved.is_err() {
        let _ = std::fs::remove_file(pg_wal.join("archive_status").join(format!("{name}.done")));
    }
    moved
}

/// Place the segments pitr-prepare staged into pg_wal (each verified and on the plan's path;
/// anything else is dropped), then remove the staging directory. Best effort: a segment not
/// placed is fetched through `%p`.
pub fn adopt_staged(dir: &Path, plan: &Plan) {
    let staged = staged_dir(dir);
    let Ok(entries) = std::fs::read_dir(&staged) else { return };
    let pg_wal = plan.pgdata.join("pg_wal");
    let mut placed = 0;
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().and_then(|f| WalFileName::parse(f).ok()) else { continue };
        let ok =
            plan.on_path(&name) && wal_file::verify_segment(&e.path(), &name, Some(plan.system_identifier)).is_ok();
        if ok && !pg_wal.join(name.to_string()).exists() {
            match place(&e.path(), &pg_wal, &name.to_string()) {
                Ok(()) => placed += 1,
                Err(err) => tracing::warn!("{name} not placed in pg_wal: {err}"),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&staged);
    tracing::debug!("{placed} segments fetched by pitr-prepare placed in pg_wal");
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
        Target::Spool { .. } => match identity_sysid(&index, repo) {
            Some(s) => Some(s),
            None => {
                // Spooled files are served only when checked against the cluster's system
                // identifier: learn it once (one GET) and leave it where wal-fetch looks.
                let Some(id) = crate::ops::repo::identity::load(repo).await? else { return Ok(0) };
                index.set_identity(id);
                index.save();
                identity_sysid(&index, repo)
            }
        },
    };
    if let Target::PgWal { pg_wal, .. } = target {
        remove_dead_temps(pg_wal, false);
    }
    remove_dead_temps(dir, true);
    let mut pos = position(dir).unwrap_or(WalFileName::parse(name)?);
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
            remove_older(dir, &pos);
        }
        // The missing ones among the next `depth`, in order, as far as the archive holds them.
        let mut wanted = Vec::new();
        let mut at_end = false;
        for next in upcoming(&pos, depth, target) {
            let final_path = match target {
                Target::Spool { .. } => local::spooled(dir, &next.to_string()),
                Target::PgWal { pg_wal, .. } => pg_wal.join(next.to_string()),
            };
            if wal_file::verify_segment(&final_path, &next, sysid).is_ok() {
                continue;
            }
            match index.find(repo, &next.to_string(), false).await? {
                Some(found) => wanted.push((next, found.key, final_path)),
                None => {
                    at_end = true;
                    break;
                }
            }
            if wanted.len() == PARALLEL {
                break;
            }
        }
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
        match position(dir) {
            Some(p) if p != pos => {
                pos = p;
                last_change = Instant::now();
            }
            _ if !did && last_change.elapsed() > IDLE => {
                // PostgreSQL stopped asking: what it never asked for is not kept.
                if let Target::Spool { .. } = target {
                    remove_spooled(dir);
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
        Target::PgWal { pg_wal, .. } => place(&staged, pg_wal, &file),
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

/// Discard everything prefetched into `dir` (spooled and staged): it came from a repository
/// whose identity no longer holds.
pub fn discard_spool(dir: &Path) {
    remove_spooled(dir);
    let _ = std::fs::remove_dir_all(staged_dir(dir));
}

/// Remove every spooled segment.
fn remove_spooled(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(|f| WalFileName::parse(f).is_ok()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove spooled files up to `requested` (PostgreSQL has asked for it): consumed or abandoned.
fn remove_older(dir: &Path, requested: &WalFileName) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let old = e
            .file_name()
            .to_str()
            .and_then(|f| WalFileName::parse(f).ok())
            .is_some_and(|w| w.sort_key() <= requested.sort_key());
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove temporary files (ours: `.NAME.walvault.PID.N.tmp`, and in the spool `NAME.staged`)
/// whose writer is gone: a worker or wal-fetch killed mid-download. A live writer's file is
/// left alone; in pg_wal nothing else is ever removed. Called by the worker holding the lock.
pub fn remove_dead_temps(dir: &Path, staged_too: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Some(f) = e.file_name().to_str().map(str::to_string) else { continue };
        let dead = if staged_too && f.ends_with(".staged") {
            true
        } else if f.starts_with('.') && f.ends_with(".tmp") && f.contains(".walvault.") {
            let pid = f.rsplit('.').nth(2).and_then(|p| p.parse::<u32>().ok());
            !pid.is_some_and(pid_alive)
        } else {
            false
        };
        if dead {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
