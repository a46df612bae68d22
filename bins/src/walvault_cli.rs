//! The flags of `walvault`'s operations subcommands, and their translation into the options
//! structs of `walvault::ops`. No logic beyond parsing.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use walvault::Error;
use walvault::config::Config;
use walvault::ops::repo::human::{parse_duration, parse_limit, parse_now};
use walvault::ops::report::status::StatusOptions;
use walvault::ops::retention::prune::{PruneOptions, PrunePolicy};
use walvault::ops::verify::VerifyOptions;
use walvault::ops::verify::restore_test::RestoreTestOptions;

fn seconds(setting: &str, value: &str) -> Result<Duration, Error> {
    Ok(parse_duration(setting, value)?.to_std().unwrap_or(Duration::ZERO))
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also restore the newest backup into a scratch PGDATA, replay the archive, start
    /// PostgreSQL on a private socket, run the checks and measure the time to recover
    #[arg(long)]
    pub restore_test: bool,
    /// PostgreSQL server binaries (default /usr/lib/postgresql/<major>/bin, else pg_config --bindir)
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Where the scratch PGDATA is made (default the system temp directory; needs room for the backup)
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// SQL to run after the restore (repeatable; default: row counts of the largest tables of every database)
    #[arg(long, value_name = "SQL")]
    pub check_sql: Vec<String>,
    /// Database the --check-sql queries run in
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    pub check_db: String,
    /// Database user for the checks (the restored cluster's superuser)
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    pub check_user: String,
    /// Extra setting for the scratch server, e.g. shared_buffers=256MB (repeatable)
    #[arg(long, value_name = "NAME=VALUE")]
    pub pg_setting: Vec<String>,
    /// Largest tables counted per database when no --check-sql is given
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub check_tables: usize,
    /// Give up on replay after this long
    #[arg(long, value_name = "DURATION", default_value = "4h")]
    pub restore_timeout: String,
    /// Fail when the measured time to recover exceeds this (the runbook's RTO), or off
    #[arg(long, value_name = "DURATION", default_value = "4h")]
    pub max_rto: String,
    /// Parts read at once
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Do not write the report into verification_reports/<env>/ (nor the progress the next run
    /// starts from)
    #[arg(long)]
    pub no_report: bool,
    /// Backups to read in full: a name, latest or all (default: those no run has read yet and
    /// the newest, then older ones within --max-bytes, read longest ago first)
    #[arg(long, value_name = "NAME|latest|all")]
    pub backup: Option<String>,
    /// Stored bytes of backups to read this run, e.g. 500G: the new ones and the newest always,
    /// then older ones, read longest ago first, while the total stays within it (successive
    /// runs rotate through them); default 0
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<String>,
    /// Read every backup and decode every WAL object again (default: what is new since the
    /// last run that wrote its report)
    #[arg(long)]
    pub full: bool,
    /// Pretend the time is T (RFC 3339), for drills and tests
    #[arg(long, value_name = "T")]
    pub now: Option<String>,
}

impl VerifyArgs {
    pub fn options(&self, config: &Config) -> Result<VerifyOptions, Error> {
        if let Some(bad) = self.pg_setting.iter().find(|s| s.split_once('=').is_none_or(|(k, _)| k.trim().is_empty())) {
            return Err(Error::config("--pg-setting", format!("{bad:?} is not NAME=VALUE")));
        }
        let restore_test = if self.restore_test {
            Some(RestoreTestOptions {
                pg_bin: self.pg_bin.clone(),
                scratch_dir: self.scratch_dir.clone(),
                restore_command: walvault::ops::restore::restore_command::restore_command(config)?,
                check_sql: self.check_sql.clone(),
                check_db: self.check_db.clone(),
                check_user: self.check_user.clone(),
                tables: self.check_tables,
                settings: self.pg_setting.clone(),
                timeout: seconds("--restore-timeout", &self.restore_timeout)?,
                max_rto: parse_limit("--max-rto", &self.max_rto)?.map(|d| d.to_std().unwrap_or(Duration::ZERO)),
                jobs: self.jobs,
            })
        } else {
            None
        };
        Ok(VerifyOptions {
            now: parse_now(self.now.as_deref())?,
            jobs: self.jobs,
            write_report: !self.no_report,
            restore_test,
            which: match &self.backup {
                Some(b) => b.parse()?,
                None => walvault::ops::verify::scope::Which::Default,
            },
            full: self.full,
            max_bytes: self.max_bytes.as_deref().map(|s| parse_size("--max-bytes", s)).transpose()?,
        })
    }
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep base backups that finished within this long
    #[arg(long, value_name = "DURATION", default_value = "90d", env = "WALVAULT_RETAIN_BACKUPS")]
    pub retain_backups: String,
    /// Keep WAL archived within this long (WAL a kept backup needs is always kept)
    #[arg(long, value_name = "DURATION", default_value = "7d", env = "WALVAULT_RETAIN_WAL")]
    pub retain_wal: String,
    /// Keep file-storage backups made within this long
    #[arg(long, value_name = "DURATION", default_value = "30d", env = "WALVAULT_RETAIN_FILES")]
    pub retain_files: String,
    /// Keep verification reports written within this long
    #[arg(long, value_name = "DURATION", default_value = "90d", env = "WALVAULT_RETAIN_REPORTS")]
    pub retain_reports: String,
    /// Always keep the newest N backups of each sort
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub keep_last: usize,
    /// Keep this backup whatever its age (repeatable; put it in the CronJob's arguments)
    #[arg(long, value_name = "NAME")]
    pub keep: Vec<String>,
    /// Print the plan, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after N changes (spread a large first prune over several runs)
    #[arg(long, value_name = "N")]
    pub max_deletes: Option<usize>,
    /// Pretend the time is T (RFC 3339), for drills and tests
    #[arg(long, value_name = "T")]
    pub now: Option<String>,
}

impl PruneArgs {
    pub fn options(&self) -> Result<PruneOptions, Error> {
        Ok(PruneOptions {
            policy: PrunePolicy {
                backups: parse_duration("--retain-backups", &self.retain_backups)?,
                wal: parse_duration("--retain-wal", &self.retain_wal)?,
                files: parse_duration("--retain-files", &self.retain_files)?,
                reports: parse_duration("--retain-reports", &self.retain_reports)?,
                keep_last: self.keep_last.max(1),
                keep: self.keep.clone(),
            },
            now: parse_now(self.now.as_deref())?,
            dry_run: self.dry_run,
            max_deletes: self.max_deletes,
            // Set from WALVAULT_RESUME_WINDOW by the caller, which has the configuration.
            resume_window: std::time::Duration::ZERO,
        })
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Unhealthy when the newest archived WAL is older than this (the RPO), or off
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub max_wal_age: String,
    /// Unhealthy when the newest base backup is older than this, or off
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    pub max_backup_age: String,
    /// Unhealthy when the newest verification report is older than this (default: only its result counts)
    #[arg(long, value_name = "DURATION", default_value = "off")]
    pub max_verify_age: String,
    /// Also count WAL files waiting for archive_command in PGDATA/pg_wal/archive_status
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Print Prometheus text format (for node_exporter's textfile collector)
    #[arg(long)]
    pub prometheus: bool,
    /// List the whole WAL archive (finds gaps; one LIST per 1000 objects) instead of reading
    /// the repository summary and the newest day partition (a few requests)
    #[arg(long)]
    pub full: bool,
    /// Pretend the time is T (RFC 3339), for drills and tests
    #[arg(long, value_name = "T")]
    pub now: Option<String>,
}

impl StatusArgs {
    pub fn options(&self) -> Result<StatusOptions, Error> {
        Ok(StatusOptions {
            now: parse_now(self.now.as_deref())?,
            max_wal_age: parse_limit("--max-wal-age", &self.max_wal_age)?,
            max_backup_age: parse_limit("--max-backup-age", &self.max_backup_age)?,
            max_verify_age: parse_limit("--max-verify-age", &self.max_verify_age)?,
            pgdata: self.pgdata.clone(),
            full: self.full,
        })
    }
}

/// The runbook's file-storage kinds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Uploads,
    Assets,
    Config,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Uploads => "uploads",
            Kind::Assets => "assets",
            Kind::Config => "config",
        }
    }
}

#[derive(Debug, Args)]
pub struct FilesBackupArgs {
    /// What the directory holds
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// Directory to back up
    pub dir: PathBuf,
    /// Where the archive is spooled before upload (default the system temp directory)
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes per second read from DIR, and uploaded (each): a number with an optional K,
    /// M or G suffix (powers of 1024), e.g. 20M; default: no limit
    #[arg(long, value_name = "RATE")]
    pub max_rate: Option<String>,
}

impl FilesBackupArgs {
    /// `--max-rate` in bytes per second.
    pub fn max_rate(&self) -> Result<Option<u64>, walvault::Error> {
        self.max_rate.as_deref().map(|r| walvault::throttle::parse_rate("--max-rate", r)).transpose()
    }
}

#[derive(Debug, Args)]
pub struct FilesRestoreArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// Backup name, or latest
    #[arg(long, value_name = "NAME", default_value = "latest")]
    pub backup: String,
    /// Empty (or new) directory to restore into
    pub dir: PathBuf,
}

/// A byte count: digits with an optional unit K, M, G or T (powers of 1024, an optional B or
/// iB after it), e.g. 500G.
pub fn parse_size(setting: &str, text: &str) -> Result<u64, Error> {
    let bad = || Error::config(setting, format!("{text:?} is not a size such as 500G or 1048576"));
    let t = text.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}
