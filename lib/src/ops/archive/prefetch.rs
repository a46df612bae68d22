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

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::archive::fetch::fetch_object;
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::timeline::HistoryEntry;
use crate::wal::{self, WalFileName, follow};
use crate::{Error, Result};

const PLAN_VERSION: u32 = 2;
/// A worker with nothing left to do exits after PostgreSQL has asked for nothing new this long.
const IDLE: Duration = Duration::from_secs(5);
/// How often an idle worker looks at PostgreSQL's position.
const POLL: Duration = Duration::from_millis(50);
/// Segments one worker downloads at once.
const PARALLEL: usize = 2;
/// Hard bound on one worker's life.
const MAX_LIFE: Duration = Duration::from_secs(24 * 3600);

fn short_hash(parts: &[&str]) -> String {
    let digest = crate::codec::sha256_hex(parts.join("\n").as_bytes());
    digest[..16].to_string()
}

/// The data directory as PostgreSQL sees it (its working directory is the resolved path).
pub fn canonical_pgdata(pgdata: &Path) -> PathBuf {
    std::fs::canonicalize(pgdata).or_else(|_| std::path::absolute(pgdata)).unwrap_or_else(|_| pgdata.to_path_buf())
}

/// The prefetch directory of `repo` for the data directory `pgdata` under `cache_dir`: the
/// spool, the worker's lock and PostgreSQL's last position. One per data directory, so a
/// spool left by a restore into another directory is never looked at.
pub fn dir(cache_dir: &Path, repo: &Repo, pgdata: &Path) -> PathBuf {
    let pgdata = canonical_pgdata(pgdata);
    let key = short_hash(&[&repo.url, repo.layout.env(), &pgdata.display().to_string()]);
    cache_dir.join(format!("prefetch-{key}"))
}

/// The directory whose spool serves `dest`: the data directory for PostgreSQL's
/// `pg_wal/RECOVERYXLOG`, else `dest`'s own directory (wal-fetch run by hand).
pub fn owner_of(dest: &Path) -> Option<PathBuf> {
    pgdata_of(dest).or_else(|| {
        let abs = std::path::absolute(dest).ok()?;
        Some(canonical_pgdata(abs.parent()?))
    })
}

/// The data directory a `%p` belongs to: `%p` is `pg_wal/RECOVERYXLOG`, relative to PGDATA,
/// PostgreSQL's working directory.
pub fn pgdata_of(dest: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(dest).ok()?;
    let pg_wal = abs.parent()?;
    if pg_wal.file_name()? != "pg_wal" {
        return None;
    }
    Some(canonical_pgdata(pg_wal.parent()?))
}

/// What pitr-prepare knows about the recovery it configured, for wal-fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub repo: String,
    pub env: String,
    /// The data directory (canonical path).
    pub pgdata: PathBuf,
    pub system_identifier: u64,
    pub seg_size: u64,
    /// The timeline recovery follows and its history: the path PostgreSQL reads.
    pub target_timeline: u32,
    pub history: Vec<HistoryEntry>,
}

impl Plan {
    /// A plan for `pgdata`.
    pub fn new(
        repo: &Repo,
        pgdata: &Path,
        system_identifier: u64,
        seg_size: u64,
        target_timeline: u32,
        history: Vec<HistoryEntry>,
    ) -> Plan {
        Plan {
            version: PLAN_VERSION,
            repo: repo.url.clone(),
            env: repo.layout.env().to_string(),
            pgdata: canonical_pgdata(pgdata),
            system_identifier,
            seg_size,
            target_timeline,
            history,
        }
    }

    fn file(cache_dir: &Path, repo: &Repo, pgdata: &Path) -> PathBuf {
        dir(cache_dir, repo, pgdata).join("plan.json")
    }

    /// The plan for `pgdata` in this repository, if pitr-prepare left one.
    pub fn load(cache_dir: &Path, repo: &Repo, pgdata: &Path) -> Option<Plan> {
        let pgdata = canonical_pgdata(pgdata);
        let bytes = std::fs::read(Self::file(cache_dir, repo, &pgdata)).ok()?;
        let plan: Plan = serde_json::from_slice(&bytes).ok()?;
        let ok = plan.version == PLAN_VERSION
            && plan.repo == repo.url
            && plan.env == repo.layout.env()
            && plan.pgdata == pgdata
            && wal::is_valid_seg_size(plan.seg_size)
            && plan.target_timeline > 0;
        ok.then_some(plan)
    }

    /// Save beside the spool.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save(&self, cache_dir: &Path, repo: &Repo) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::fsutil::write_atomic(&Self::file(cache_dir, repo, &self.pgdata), &bytes, true)
    }

    /// The file PostgreSQL reads for segment `segno`: the newest timeline on the path begun
    /// by it (`XLogFileReadAnyTLI`).
    pub fn name_for(&self, segno: u64) -> Option<WalFileName> {
        Some(WalFileName::from_segno(self.path().reader(segno), segno, self.seg_size))
    }

    /// The timelines PostgreSQL follows in this recovery.
    pub fn path(&self) -> follow::Path {
        follow::Path::new(&self.history, self.target_timeline, self.seg_size)
    }

    /// True when `name` is the file of its segment on the path.
    pub fn on_path(&self, name: &WalFileName) -> bool {
        name.is_segment() && name.segno(self.seg_size).and_then(|s| self.name_for(s)).as_ref() == Some(name)
    }
}

/// Check that `path` is a complete copy of segment `name` of this cluster: its length is
/// the segment size of its long page header, the header's page address is the start of
/// segment `name`, its timeline is not newer than the name's, and its system identifier is
/// `sysid` (when known). Returns the length.
///
/// # Errors
/// [`Error::Corrupt`] saying what is wrong; I/O errors.
pub fn verify_segment(path: &Path, name: &WalFileName, sysid: Option<u64>) -> Result<u64> {
    use std::io::Read;
    let what = path.display().to_string();
    let f = std::fs::File::open(path).with_path(path)?;
    let len = f.metadata().with_path(path)?.len();
    let mut head = Vec::with_capacity(wal::header::LONG_HEADER_LEN);
    f.take(wal::header::LONG_HEADER_LEN as u64).read_to_end(&mut head).with_path(path)?;
    wal::check::check_segment(&head, Some(len), name, sysid).map_err(|f| f.into_error(&what, name))
}

/// Move a prefetched `name` into `dest` after [`verify_segment`]; `None` if it was not
/// prefetched or did not verify (then it is removed and the caller fetches it).
///
/// # Errors
/// I/O errors naming the file (the caller then fetches from the archive instead).
pub fn take(dir: &Path, name: &str, dest: &Path, sysid: Option<u64>) -> Result<Option<u64>> {
    let src = dir.join(name);
    if !src.exists() {
        return Ok(None);
    }
    let Some(sysid) = sysid else {
        tracing::debug!("not serving the spooled {name}: the cluster's system identifier is not known yet");
        return Ok(None);
    };
    let sysid = Some(sysid);
    let parsed = WalFileName::parse(name)?;
    let len = match verify_segment(&src, &parsed, sysid) {
        Ok(len) => len,
        Err(e) => {
            tracing::warn!("not serving the spooled {name}: {e}; fetching it from the archive");
            let _ = std::fs::remove_file(&src);
            return Ok(None);
        }
    };
    move_file(&src, dest)?;
    Ok(Some(len))
}

/// Rename `src` to `dest` (copying durably across filesystems), then fsync `dest`'s directory.
fn move_file(src: &Path, dest: &Path) -> Result<()> {
    match std::fs::rename(src, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            crate::fsutil::write_atomic_with(dest, true, |out| {
                let mut input = std::fs::File::open(src).with_path(src)?;
                std::io::copy(&mut input, out).with_path(dest)?;
                out.flush().with_path(dest)
            })?;
            let _ = std::fs::remove_file(src);
        }
        Err(e) => return Err(Error::io(src, e)),
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::fsutil::sync_dir(parent).with_path(parent)
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
        let _ = crate::fsutil::write_atomic(&dir.join("position"), name.as_bytes(), false);
    }
}

fn position(dir: &Path) -> Option<WalFileName> {
    std::fs::read_to_string(dir.join("position")).ok().and_then(|s| WalFileName::parse(s.trim()).ok())
}

/// True while a worker holds `dir`'s lock.
pub fn worker_running(dir: &Path) -> bool {
    Lock::holder(&dir.join(".lock")).is_some_and(pid_alive)
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
    let moved = move_file(src, &pg_wal.join(name));
    if moved.is_err() {
        let _ = std::fs::remove_file(pg_wal.join("archive_status").join(format!("{name}.done")));
    }
    moved
}

/// The directory where pitr-prepare leaves the first segments of a planned recovery.
pub fn staged_dir(dir: &Path) -> PathBuf {
    dir.join("staged")
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
        let ok = plan.on_path(&name) && verify_segment(&e.path(), &name, Some(plan.system_identifier)).is_ok();
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

/// Download the chain's segments `first..first + count` that the archive holds (in order,
/// stopping at the first it does not) into `dir`, verified. pitr-prepare runs this while
/// the base backup is still being extracted. Returns the names staged.
///
/// # Errors
/// Storage, key and corruption errors.
pub async fn stage(
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
        verify_segment(&dest, &name, Some(plan.system_identifier))?;
        staged.push(file);
    }
    Ok(staged)
}

/// Where the worker puts what it fetches.
pub enum Target {
    /// The spool directory (no plan): the next segments on the same timeline.
    Spool { seg_size: u64 },
    /// `pg_wal` of the planned recovery.
    PgWal { pg_wal: PathBuf, plan: Plan },
}

/// The worker: keep the `depth` segments after PostgreSQL's position fetched and verified
/// (in the spool, or placed in pg_wal along the plan's path), following the position
/// wal-fetch records; stop at the first segment the archive does not hold yet, or once
/// PostgreSQL has asked for nothing new for a while. Only one worker runs per directory
/// (a lock file with its pid).
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
    let Some(_lock) = Lock::acquire(dir) else { return Ok(0) };
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
                Target::Spool { .. } => dir.join(next.to_string()),
                Target::PgWal { pg_wal, .. } => pg_wal.join(next.to_string()),
            };
            if verify_segment(&final_path, &next, sysid).is_ok() {
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
    let staged = dir.join(format!("{file}.staged"));
    fetch_object(repo, &key, &name, &staged, sysid).await?;
    let placed = verify_segment(&staged, &name, sysid).and_then(|_| match target {
        Target::Spool { .. } => move_file(&staged, &final_path),
        Target::PgWal { pg_wal, .. } => place(&staged, pg_wal, &file),
    });
    if placed.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    placed
}

fn identity_sysid(index: &WalIndex, repo: &Repo) -> Option<u64> {
    index.identity().and_then(|id| id.envs.get(repo.layout.env())).and_then(|e| e.system_identifier.parse::<u64>().ok())
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

/// `dir/.lock` holding the worker's pid; a lock whose pid is gone is stale.
struct Lock(PathBuf);

impl Lock {
    fn holder(path: &Path) -> Option<u32> {
        std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u32>().ok())
    }

    fn acquire(dir: &Path) -> Option<Lock> {
        let path = dir.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Some(Lock(path));
                }
                Err(_) => {
                    if Self::holder(&path).is_some_and(pid_alive) {
                        return None;
                    }
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        None
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;
    const SYSID: u64 = 7_000_000_000_000_000_042;

    fn magic() -> u16 {
        wal::header::KNOWN_MAGICS[1].0
    }

    fn plan(path: Vec<(u32, u64)>) -> Plan {
        // Switchpoints in the middle of each begin segment.
        let history = path
            .windows(2)
            .map(|w| HistoryEntry { tli: w[0].0, switchpoint: wal::Lsn(w[1].1 * SEG + 100), reason: String::new() })
            .collect();
        Plan {
            version: PLAN_VERSION,
            repo: "file:///r".into(),
            env: "production".into(),
            pgdata: PathBuf::from("/d"),
            system_identifier: SYSID,
            seg_size: SEG,
            target_timeline: path.last().map_or(1, |p| p.0),
            history,
        }
    }

    #[test]
    fn the_path_names_the_newest_timeline_begun_by_each_segment() {
        // Timeline 2 begins in segment 5 (its switchpoint's), timeline 3 in segment 9.
        let p = plan(vec![(1, 0), (2, 5), (3, 9)]);
        let name = |s| p.name_for(s).map(|n| n.to_string());
        assert_eq!(name(4).as_deref(), Some("000000010000000000000004"));
        assert_eq!(name(5).as_deref(), Some("000000020000000000000005"));
        assert_eq!(name(8).as_deref(), Some("000000020000000000000008"));
        assert_eq!(name(9).as_deref(), Some("000000030000000000000009"));
        assert!(p.on_path(&WalFileName::from_segno(2, 6, SEG)));
        assert!(!p.on_path(&WalFileName::from_segno(1, 6, SEG)), "timeline 1 after its switch is off the path");
        assert!(!p.on_path(&WalFileName::from_segno(3, 6, SEG)), "timeline 3 before it began is off the path");
    }

    #[test]
    fn only_a_whole_segment_of_this_cluster_for_its_name_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = wal::synthetic_segment(SYSID, 1, 7, SEG as u32, magic(), 7);
        let name = WalFileName::from_segno(1, 7, SEG);
        let check = |bytes: &[u8], name: &WalFileName, sysid| {
            let p = dir.path().join("f");
            std::fs::write(&p, bytes).expect("write");
            verify_segment(&p, name, sysid)
        };
        assert_eq!(check(&good, &name, Some(SYSID)).expect("good"), SEG);
        assert!(check(&good[..good.len() - 1], &name, Some(SYSID)).is_err(), "truncated");
        assert!(check(&good[..20], &name, Some(SYSID)).is_err(), "shorter than a header");
        assert!(check(&good, &name, Some(SYSID + 1)).is_err(), "another cluster");
        assert!(check(&good, &WalFileName::from_segno(1, 8, SEG), Some(SYSID)).is_err(), "another segment");
        let newer = wal::synthetic_segment(SYSID, 2, 7, SEG as u32, magic(), 7);
        assert!(check(&newer, &name, Some(SYSID)).is_err(), "pages of a newer timeline");
        // The first segment of timeline 2 starts as a copy of timeline 1's.
        assert!(check(&good, &WalFileName::from_segno(2, 7, SEG), Some(SYSID)).is_ok());
        assert!(check(&vec![0u8; SEG as usize], &name, Some(SYSID)).is_err(), "a zero-filled (preallocated) file");
        assert!(verify_segment(&dir.path().join("absent"), &name, Some(SYSID)).is_err());
    }
}
