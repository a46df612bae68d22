//! pitr-prepare: restore a base backup into an empty PGDATA and configure recovery.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, ValueEnum};
use walvault::config::Config;
use walvault::ops::restore::pitr_prepare::{PrepareOptions, PrepareOutcome, TimelineChoice, parse_time};
use walvault::pg::recovery::{RecoveryTarget, TargetAction};

use walvault_bins::common;

/// Lay a base backup into an empty data directory and configure recovery to a target.
///
/// Before anything is written it checks the backup, the key, and that the archive holds every
/// WAL file from the backup's start to the target. Then start the server with the printed
/// command; it replays WAL through wal-fetch up to the target.
#[derive(Parser)]
#[command(version, group(ArgGroup::new("target").args(["target_time", "target_lsn", "target_xid", "target_name", "latest", "immediate"])),
    after_help = "Examples:\n  pitr-prepare --pgdata /var/lib/postgresql/data --target-time '2024-01-15 10:30:00'\n  pitr-prepare --pgdata /srv/restore --latest --backup mykadoo_production_20240115_020000\n  pitr-prepare --pgdata /srv/restore --target-lsn 0/3000060 --target-action pause\n  pitr-prepare --pgdata /var/lib/postgresql/data --latest --archive on   (replacing production)\n  pitr-prepare --pgdata /srv/side --target-time '2024-01-15 10:30:00' --target-timeline 1")]
struct Cli {
    /// Data directory to restore into (must be empty unless --force)
    #[arg(long, env = "PGDATA")]
    pgdata: PathBuf,
    /// Recover to this time (PostgreSQL's recovery_target_time forms; no zone = UTC)
    #[arg(long)]
    target_time: Option<String>,
    /// Recover to this LSN (e.g. 0/3000060)
    #[arg(long)]
    target_lsn: Option<String>,
    /// Recover to this transaction id
    #[arg(long)]
    target_xid: Option<u64>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long)]
    target_name: Option<String>,
    /// Replay every archived WAL file (the default)
    #[arg(long)]
    latest: bool,
    /// Stop as soon as the backup is consistent
    #[arg(long)]
    immediate: bool,
    /// Backup name, or latest (default: the newest that finished before the target)
    #[arg(long)]
    backup: Option<String>,
    /// What the server does at the target
    #[arg(long, value_enum, default_value = "promote")]
    target_action: Action,
    /// Delete the contents of a non-empty PGDATA first
    #[arg(long, conflicts_with = "delta")]
    force: bool,
    /// Restore over PGDATA of the same cluster: keep files whose size and SHA-256 match the
    /// backup (for an incremental backup: length and every block digest of its block map),
    /// fetch the others, remove what the backup does not have
    #[arg(long)]
    delta: bool,
    /// Restore tablespace OID into DIR instead of its original location (repeatable)
    #[arg(long, value_name = "OID=DIR")]
    tablespace_map: Vec<String>,
    /// Parts restored at once (and files compared at once with --delta); default: the
    /// machine's available cores
    #[arg(long)]
    jobs: Option<usize>,
    /// Timeline to recover along: latest (PostgreSQL's default: the highest timeline after the
    /// backup's), current (the backup's) or a timeline id; checked and written as a number
    #[arg(long, value_name = "latest|current|N")]
    target_timeline: Option<String>,
    /// on: the restored server archives into the repository as its configuration says
    /// (replacing production); off: archive_mode = 'off' (side restores, rehearsals, tests)
    #[arg(long, value_enum, default_value = "off")]
    archive: OnOff,
    #[command(flatten)]
    common: common::Common,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum Action {
    Promote,
    Pause,
    Shutdown,
}

fn target(cli: &Cli) -> Result<RecoveryTarget, walvault::Error> {
    Ok(if let Some(t) = &cli.target_time {
        RecoveryTarget::Time(parse_time(t)?)
    } else if let Some(l) = &cli.target_lsn {
        RecoveryTarget::Lsn(l.parse().map_err(|e| walvault::Error::config("--target-lsn", e))?)
    } else if let Some(x) = cli.target_xid {
        RecoveryTarget::Xid(x)
    } else if let Some(n) = &cli.target_name {
        RecoveryTarget::Name(n.clone())
    } else if cli.immediate {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::Latest
    })
}

fn tablespace_map(items: &[String]) -> Result<BTreeMap<u32, PathBuf>, walvault::Error> {
    items
        .iter()
        .map(|item| {
            let bad = || walvault::Error::config("--tablespace-map", format!("{item:?} is not OID=DIR"));
            let (oid, dir) = item.split_once('=').ok_or_else(bad)?;
            Ok((oid.parse().map_err(|_| bad())?, PathBuf::from(dir)))
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(), walvault::Error> {
        let config = cli.common.load("pitr-prepare")?;
        let opts = options(&cli, &config)?;
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            let out = walvault::ops::restore::pitr_prepare::pitr_prepare(&repo, &opts).await?;
            match cli.common.json {
                true => common::print_json(&out),
                false => report(&out),
            }
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => common::fail("pitr-prepare", &e, e.exit_code().code()),
    }
}

/// The restore asked for on the command line, with the configuration's settings.
fn options(cli: &Cli, config: &Config) -> Result<PrepareOptions, walvault::Error> {
    Ok(PrepareOptions {
        pgdata: std::path::absolute(&cli.pgdata).map_err(|e| walvault::Error::io(&cli.pgdata, e))?,
        target: target(cli)?,
        backup: cli.backup.clone(),
        action: match cli.target_action {
            Action::Promote => TargetAction::Promote,
            Action::Pause => TargetAction::Pause,
            Action::Shutdown => TargetAction::Shutdown,
        },
        force: cli.force,
        delta: cli.delta,
        tablespace_map: tablespace_map(&cli.tablespace_map)?,
        restore_command: walvault::ops::restore::restore_command::restore_command(config)?,
        cache_dir: config.cache_dir.clone(),
        jobs: cli.jobs.unwrap_or_else(walvault::ops::restore::default_jobs),
        prefetch: config.fetch_prefetch,
        timeline: cli.target_timeline.as_deref().map(str::parse::<TimelineChoice>).transpose()?,
        archive: cli.archive == OnOff::On,
    })
}

/// The outcome as log lines: what was restored, the delta, the next step.
fn report(out: &PrepareOutcome) {
    tracing::info!(
        "restored {} ({} files, {} bytes) in {:.1} s; WAL reaches {} on timeline {}; archiving {}",
        out.backup,
        out.files,
        out.bytes,
        out.seconds,
        out.wal.last_lsn,
        out.wal.timeline,
        if out.archive { "on" } else { "off" }
    );
    if let Some(d) = &out.delta {
        tracing::info!(
            "delta: {} files ({} bytes) kept, {} files ({} bytes) fetched, {} files ({} bytes) removed; {} of {} parts not downloaded; {} bytes of the local files read from the disk (the rest from the page cache)",
            d.kept_files,
            d.kept_bytes,
            d.fetched_files,
            d.fetched_bytes,
            d.removed_files,
            d.removed_bytes,
            d.parts_skipped,
            d.parts,
            d.read_from_device_bytes
        );
    }
    tracing::info!("next: {}", out.next_command);
}
