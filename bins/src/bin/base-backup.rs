//! base-backup: an online physical backup of a running cluster into the repository.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use walvault::ops::backup::base::{BackupOptions, Checkpoint, DEFAULT_PART_SIZE};
use walvault::pg::backup_api::ConnParams;

use walvault_bins::common;

/// Take an online, consistent physical backup (non-exclusive backup API, PGDATA read
/// locally, compressed and encrypted tar parts, manifest). Complete only once the WAL that
/// makes it consistent is archived; then `latest.json` points at it.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  PGHOST=/var/run/postgresql PGDATA=/var/lib/postgresql/data base-backup\n  base-backup --host /tmp --port 5433 --pgdata /srv/pg --checkpoint fast --json"
)]
struct Cli {
    /// Server host or socket directory (PGHOST)
    #[arg(long)]
    host: Option<String>,
    /// Server port (PGPORT)
    #[arg(long)]
    port: Option<u16>,
    /// User name (PGUSER)
    #[arg(long)]
    user: Option<String>,
    /// Database to connect to (PGDATABASE)
    #[arg(long)]
    dbname: Option<String>,
    /// Data directory of the server, read locally (PGDATA; default: the server's data_directory)
    #[arg(long, env = "PGDATA")]
    pgdata: Option<PathBuf>,
    /// File bytes per tar part before compression
    #[arg(long, default_value_t = DEFAULT_PART_SIZE)]
    part_size: u64,
    /// Parts compressed and uploaded at once
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// How long to wait for the WAL that makes the backup consistent to be archived: seconds,
    /// or a duration such as 10m or 2h (at most 7d)
    #[arg(long, value_name = "DURATION", default_value = "600")]
    archive_timeout: String,
    /// The checkpoint that starts the backup: spread (no I/O burst on the server; may take up to
    /// checkpoint_timeout x checkpoint_completion_target) or fast (immediate)
    #[arg(long, value_name = "MODE", value_parser = ["fast", "spread"], default_value = "spread")]
    checkpoint: String,
    /// Most bytes per second read from the data directory, and uploaded (each): a number with
    /// an optional K, M or G suffix (powers of 1024), e.g. 20M; default: no limit
    #[arg(long, value_name = "RATE")]
    max_rate: Option<String>,
    /// Where parts are spooled before upload, and block digests while the backup runs (up to
    /// 0.4% of the data directory); default: $TMPDIR
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// full (everything), diff (what changed since the newest full backup) or incr (what
    /// changed since the newest backup of any type); without a backup to build on, full
    #[arg(long = "type", value_name = "TYPE", default_value = "full")]
    backup_type: String,
    /// With --type diff or incr: take a full backup instead when the newest full backup is
    /// this old (e.g. 7d for a weekly full from a nightly schedule)
    #[arg(long, value_name = "DURATION")]
    full_every: Option<String>,
    #[command(flatten)]
    common: common::Common,
}

/// `--archive-timeout`: from 1 second to 7 days (a larger value is a typo, and would
/// overflow the clock).
fn archive_timeout(value: &str) -> Result<Duration, walvault::Error> {
    const MAX: Duration = Duration::from_secs(7 * 86_400);
    let d = walvault::ops::repo::human::parse_duration("--archive-timeout", value)?.to_std().unwrap_or(Duration::ZERO);
    if d < Duration::from_secs(1) || d > MAX {
        return Err(walvault::Error::config(
            "--archive-timeout",
            format!("{value:?} is not allowed; expected from 1 second to 7 days (e.g. 600, 10m, 2h)"),
        ));
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(), walvault::Error> {
        let config = cli.common.load("base-backup")?;
        let archive_timeout = archive_timeout(&cli.archive_timeout)?;
        let backup_type = walvault::ops::repo::catalog::BackupType::parse(&cli.backup_type)?;
        let max_rate = cli.max_rate.as_deref().map(|r| walvault::throttle::parse_rate("--max-rate", r)).transpose()?;
        let full_every = match &cli.full_every {
            Some(v) => Some(walvault::ops::repo::human::parse_duration("--full-every", v)?),
            None => None,
        };
        let conn = ConnParams::from_env_and_flags(cli.host.clone(), cli.port, cli.user.clone(), cli.dbname.clone())?;
        let opts = BackupOptions {
            conn,
            pgdata: cli.pgdata.clone(),
            part_size: cli.part_size,
            jobs: cli.jobs,
            archive_timeout,
            spool_dir: cli.spool_dir.clone(),
            cluster: config.cluster.clone(),
            backup_type,
            max_rate,
            max_standby_lag: config.standby_max_lag,
            resume_window: config.resume_window,
            checkpoint: if cli.checkpoint == "fast" { Checkpoint::Fast } else { Checkpoint::Spread },
            full_every,
        };
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            let meta = walvault::ops::backup::base::base_backup(&repo, &opts).await?;
            if cli.common.json {
                common::print_json(&meta);
            }
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => common::fail("base-backup", &e, e.exit_code().code()),
    }
}
