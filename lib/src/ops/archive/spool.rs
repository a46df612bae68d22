//! Prefetched segments on the local disk (paths in [`crate::ops::repo::local`]): served from
//! the spool, placed into pg_wal (marked archived), adopted from pitr-prepare's staging, and
//! cleaned up (consumed, abandoned, discarded, or left by a killed writer). The worker that
//! fills the spool is [`crate::ops::archive::prefetch`].

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::error::IoContext;
use crate::ops::repo::local::{self, Plan, staged_dir};
use crate::ops::repo::wal_file;
use crate::wal::WalFileName;
use crate::{Error, Result};

/// Move a prefetched `name` into `dest` after [`wal_file::verify_segment`]; `None` if it was not
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

/// Record the segment PostgreSQL asked for last (best effort), for the worker to follow.
pub fn set_position(dir: &Path, name: &str) {
    if crate::fsutil::create_private_dir_all(dir).is_ok() {
        let _ = crate::fsutil::write_atomic(&local::position_file(dir), name.as_bytes(), false);
    }
}

pub(super) fn position(dir: &Path) -> Option<WalFileName> {
    std::fs::read_to_string(local::position_file(dir)).ok().and_then(|s| WalFileName::parse(s.trim()).ok())
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

/// Discard everything prefetched into `dir` (spooled and staged): it came from a repository
/// whose identity no longer holds.
pub fn discard_spool(dir: &Path) {
    remove_spooled(dir);
    let _ = std::fs::remove_dir_all(staged_dir(dir));
}

/// Remove every spooled segment.
pub(super) fn remove_spooled(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(|f| WalFileName::parse(f).is_ok()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove spooled files up to `requested` (PostgreSQL has asked for it): consumed or abandoned.
pub(super) fn remove_older(dir: &Path, requested: &WalFileName) {
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
