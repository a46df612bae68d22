//! `pitr-prepare`: lay a base backup into an empty PGDATA and configure recovery to a target
//! (SPEC section 8). Everything is checked before anything is written: the backup, the WAL
//! chain from its start to the target (and the timeline history on the way), the key, the
//! data directory. Then the parts are extracted and verified against the manifest, and
//! `recovery.signal` plus the recovery settings are written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, FixedOffset, Utc};

use crate::error::IoContext;
use crate::manifest::Manifest;
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, BackupMetadata, ChainEnd, WalArchive};
use crate::ops::repo::local;
use crate::ops::repo::phases::Phases;
use crate::ops::restore::chain::Written;
use crate::pg::recovery::{self, RecoverySettings, RecoveryTarget, TargetAction};
use crate::{Error, Result};

mod extract;
mod owner;
mod sides;
mod stage;
mod tablespaces;
mod target;

use owner::{chown_like_parent, hand_over_listing};
use sides::{Archived, Restored, Sides};

pub use target::TimelineChoice;

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub pgdata: PathBuf,
    pub target: RecoveryTarget,
    /// A backup name, or `None`/`latest` to pick the newest that fits the target.
    pub backup: Option<String>,
    pub action: TargetAction,
    /// Empty a non-empty PGDATA first.
    pub force: bool,
    /// Restore over PGDATA of the same cluster, fetching only what differs ([`super::delta`]).
    pub delta: bool,
    /// Tablespace oid → new location.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// The restore_command to write (without secrets).
    pub restore_command: String,
    /// Where wal-fetch will keep its listing cache (the listing made here is handed over).
    pub cache_dir: Option<PathBuf>,
    /// Parts restored at once.
    pub jobs: usize,
    /// WAL segments fetched into pg_wal while the parts are extracted (and kept ahead by
    /// wal-fetch's worker during recovery); 0 turns it off.
    pub prefetch: usize,
    /// `--target-timeline` (`None`: PostgreSQL's default, latest, refused when two branches
    /// pass through the backup).
    pub timeline: Option<TimelineChoice>,
    /// Whether the restored server archives into the repository (`--archive on`), or never
    /// (`archive_mode = 'off'`: side restores and restore tests).
    pub archive: bool,
}

/// What pitr-prepare did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrepareOutcome {
    pub backup: String,
    pub backup_stop_time: DateTime<Utc>,
    pub pgdata: String,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub wal: ChainEnd,
    /// WAL segments fetched ahead: wal-fetch places them in pg_wal once recovery runs.
    pub wal_staged: usize,
    /// With `--delta`: what was kept, fetched and removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<super::delta::DeltaReport>,
    /// Whether the restored server archives into the repository.
    pub archive: bool,
    /// Replaying every archived file goes past this point (the start of the chain's last
    /// segment, which holds at least one record); a recovery to the end that does not ended
    /// short.
    pub must_reach: Option<crate::wal::Lsn>,
    pub next_command: String,
}

/// Check everything, restore the backup and write the recovery settings.
///
/// # Errors
/// [`Error::NotFound`] for no suitable backup, [`Error::Refused`] for a target the archive
/// cannot reach (with what is missing and the newest reachable point) or a non-empty data
/// directory, key and corruption errors from the manifest and parts.
pub async fn pitr_prepare(repo: &Repo, opts: &PrepareOptions) -> Result<PrepareOutcome> {
    let began = Instant::now();
    let phases = Phases::start();
    match opts.delta {
        true => super::delta::check_not_running(&opts.pgdata)?,
        false => check_pgdata(&opts.pgdata, opts.force)?,
    }
    let backup = choose_backup(repo, opts).await?;
    if opts.delta {
        super::delta::check_cluster(&opts.pgdata, &backup)?;
    }
    phases.end("catalog");
    // The manifest first: the metadata is cross-checked against it before anything uses it.
    let manifest = crate::ops::repo::parts::load_manifest(repo, &backup).await?;
    phases.end("manifest");
    let chain = super::chain::prepare(repo, &backup, &manifest).await?;
    phases.end("chain");
    tablespaces::check(&backup.name, &manifest, &opts.tablespace_map, &opts.pgdata, opts.delta)?;
    let cache = local::cache_dir_for(opts.cache_dir.as_deref(), &opts.pgdata);
    let spool = cache.as_deref().map(|c| local::prefetch_dir(c, repo, &opts.pgdata));
    // Two sides at once: the archive is listed and checked (then the first segments of the
    // recovery download) while a delta restore reads the data directory; nothing in it is
    // changed before the archive side says the checks passed.
    let (checked, checks_passed) = tokio::sync::oneshot::channel();
    let sides = Sides { repo, opts, backup: &backup, phases: &phases };
    let archive_side = sides.archive(cache.as_deref(), spool.as_deref(), checked);
    let data_side = sides.data(&manifest, chain.as_ref(), checks_passed);
    let (restored, archived) = tokio::join!(data_side, archive_side);
    phases.end("wal-stage");
    let clear_spool = || {
        if let Some(dir) = &spool {
            let _ = std::fs::remove_dir_all(dir);
        }
    };
    let (written, delta, archived) = match (restored, archived) {
        (Restored::Done(written, delta), Ok(archived)) => (written, delta, archived),
        (Restored::Failed(e), _) => {
            // Never leave half a data directory that someone might start.
            match opts.delta {
                true => super::delta::disable(&opts.pgdata),
                false => drop(prepare_dir(&opts.pgdata, true)),
            }
            clear_spool();
            return Err(e);
        }
        (_, Err(e)) | (Restored::Refused(e), Ok(_)) => {
            clear_spool();
            return Err(e);
        }
    };
    let Archived { index, wal, plan, staged } = archived;
    // Staging is a head start only: a segment it could not get, wal-fetch fetches (and stops
    // recovery with the right exit code if the archive really fails).
    let wal_staged = match staged {
        Ok(names) => names.len(),
        Err(e) => {
            tracing::warn!("WAL not fetched ahead of recovery: {e}");
            if let Some(dir) = &spool {
                let _ = std::fs::remove_dir_all(local::staged_dir(dir));
            }
            0
        }
    };
    if let (Some(plan), Some(cache)) = (&plan, &cache) {
        plan.save(cache, repo)?;
    }
    chown_like_parent(&opts.pgdata)?;
    hand_over_listing(repo, index, &backup, opts);

    phases.end("finish");
    phases.log();
    let next_command = format!("pg_ctl -D {} start", opts.pgdata.display());
    if !opts.archive {
        tracing::info!(
            "archive_mode = 'off': the restored server never archives into {} (to make it the production server, restore with --archive on)",
            repo.url
        );
    }
    let seg = backup.wal_segment_size;
    let must_reach =
        matches!(opts.target, RecoveryTarget::Latest).then(|| crate::wal::Lsn(wal.last_lsn.0.saturating_sub(seg)));
    Ok(PrepareOutcome {
        backup: backup.name.clone(),
        backup_stop_time: backup.stop_time,
        pgdata: opts.pgdata.display().to_string(),
        files: written.files,
        bytes: written.bytes,
        seconds: began.elapsed().as_secs_f64(),
        wal,
        wal_staged,
        delta: delta.map(|d| d.report_after(&written)),
        archive: opts.archive,
        must_reach,
        next_command,
    })
}

/// What wal-fetch needs to place WAL in pg_wal: the cluster and the timeline path to the
/// timeline recovery follows (the newest, as `recovery_target_timeline = latest`).
pub(super) async fn recovery_plan(
    repo: &Repo,
    archive: &WalArchive,
    b: &BackupMetadata,
    end: &ChainEnd,
    pgdata: &Path,
) -> Result<local::Plan> {
    let history = archive.history(repo, end.timeline)?;
    Ok(local::Plan::new(repo, pgdata, b.system_identifier.0, b.wal_segment_size, end.timeline, history))
}

/// Extract every part, move tablespaces, write the recovery settings.
pub(super) async fn restore_into(
    repo: &Repo,
    backup: &BackupMetadata,
    manifest: &Manifest,
    opts: &PrepareOptions,
    tli: u32,
    chain: Option<&super::chain::ChainRestore>,
    delta: Option<&super::delta::Plan>,
) -> Result<Written> {
    let counts = match chain {
        Some(c) => {
            let keep = delta.map(|d| d.keep.clone()).unwrap_or_default();
            super::chain::restore(repo, c, &opts.pgdata, &opts.tablespace_map, opts.jobs, &keep).await?
        }
        None => extract::extract_parts(repo, backup, manifest, opts, delta).await?,
    };
    if !opts.tablespace_map.is_empty() {
        remap_tablespace_map(&opts.pgdata, &opts.tablespace_map)?;
    }
    let settings = RecoverySettings {
        restore_command: opts.restore_command.clone(),
        target: opts.target.clone(),
        action: opts.action,
        timeline: Some(tli.to_string()),
        archive: opts.archive,
    };
    recovery::write_recovery(&opts.pgdata, &settings)?;
    Ok(counts)
}

/// PGDATA must be absent or empty (or `--force`), and never hold a running server.
fn check_pgdata(pgdata: &Path, force: bool) -> Result<()> {
    if pgdata.join("postmaster.pid").exists() {
        return Err(Error::Refused(format!(
            "{} holds postmaster.pid: stop the server first (pg_ctl -D {} stop)",
            pgdata.display(),
            pgdata.display()
        )));
    }
    let non_empty = std::fs::read_dir(pgdata).map(|mut d| d.next().is_some()).unwrap_or(false);
    if non_empty && !force {
        return Err(Error::Refused(format!("{} is not empty: refusing to overwrite it", pgdata.display()))
            .with_hint("restore into an empty directory, or add --force to delete its contents first"));
    }
    Ok(())
}

pub(super) fn prepare_dir(pgdata: &Path, force: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if force && pgdata.is_dir() {
        for entry in std::fs::read_dir(pgdata).with_path(pgdata)? {
            let path = entry.with_path(pgdata)?.path();
            let removed = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_path(&path)?;
        }
    }
    std::fs::create_dir_all(pgdata).with_path(pgdata)?;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700)).with_path(pgdata)
}

/// The named backup, or the newest that finished before the target.
async fn choose_backup(repo: &Repo, opts: &PrepareOptions) -> Result<BackupMetadata> {
    if let Some(name) = opts.backup.as_deref().filter(|n| *n != "latest" && !n.starts_with("latest.")) {
        return catalog::backup(repo, name).await;
    }
    let all = catalog::backups(repo).await?;
    let fits = |b: &BackupMetadata| match &opts.target {
        RecoveryTarget::Time(t) => b.stop_time <= t.with_timezone(&Utc),
        RecoveryTarget::Lsn(l) => b.stop_lsn <= *l,
        _ => true,
    };
    if let Some(b) = all.iter().rev().find(|b| fits(b)) {
        return Ok(b.clone());
    }
    match all.first() {
        None => Err(Error::not_found(format!("a complete backup in {} ({})", repo.url, repo.layout.database_root()))),
        Some(oldest) => Err(Error::Refused(format!(
            "no backup finished before the target: the earliest restorable point is {} (backup {}, {})",
            oldest.stop_time.format("%Y-%m-%d %H:%M:%S UTC"),
            oldest.name,
            oldest.stop_lsn
        ))),
    }
}

fn remap_tablespace_map(pgdata: &Path, remap: &BTreeMap<u32, PathBuf>) -> Result<()> {
    let path = pgdata.join("tablespace_map");
    let text = std::fs::read_to_string(&path).with_path(&path)?;
    let rewritten = recovery::rewrite_tablespace_map(&text, remap)?;
    crate::fsutil::write_atomic(&path, rewritten.as_bytes(), true)
}

/// Parse a `--target-time` value; see [`recovery::parse_target_time`].
///
/// # Errors
/// [`Error::Config`] naming `--target-time` and the accepted forms.
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>> {
    recovery::parse_target_time(s)
}
