//! Typed settings, from the environment, an optional config file and flags.
//!
//! Precedence, highest first: flags (passed in as [`Overrides`]), the process environment
//! (Kubernetes `envFrom` secrets, the postgres server's environment), the config file
//! (`--config`, else `WALVAULT_CONFIG`, else `/etc/walvault/walvault.conf` if present), defaults.
//! The config file holds `NAME=value` lines with the same names as the environment
//! (`#` comments, optional quotes), so one file serves systemd, Kubernetes and shell.
//! Building a [`Config`] never touches the network; clients are built by `ops`.
//!
//! Here: the setting names and [`Config`], typed from [`RawSettings`]. Beside it: `sources`
//! (the file, the environment and the flags merged), `s3` (the S3 settings), `checks` (names,
//! levels, bounded integers) and `keys` (the keyring and key files).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec::CodecSettings;
use crate::codec::compress::Compression;
use crate::codec::crypt::Keyring;
use crate::storage::{RepoLocation, S3Options};
use crate::{Error, Result};

mod checks;
mod keys;
mod s3;
mod sources;
use checks::{bounded, check_level, check_name, default_cluster};
use keys::keyring;
pub use keys::{MAX_KEY_FILE, NO_KEY, warn_if_readable_by_others};
use s3::s3_options;
pub use sources::{MAX_CONFIG_FILE, Overrides, RawSettings};

/// Default config file, read when present and no other is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/walvault/walvault.conf";

/// Every setting name walvault reads, for `--help` and for rejecting typos in config files.
pub const SETTINGS: &[&str] = &[
    "WALVAULT_REPO",
    "WALVAULT_ENV",
    "WALVAULT_CLUSTER",
    "BACKUP_ENCRYPTION_KEY",
    "WALVAULT_KEY_FILE",
    "WALVAULT_ENCRYPTION",
    "WALVAULT_READ_KEYS",
    "WALVAULT_READ_KEY_FILES",
    "WALVAULT_COMPRESSION",
    "WALVAULT_COMPRESSION_LEVEL",
    "WALVAULT_CACHE_DIR",
    "WALVAULT_PUSH_PARALLEL",
    "WALVAULT_FETCH_PREFETCH",
    "WALVAULT_PROGRESS_INTERVAL",
    "WALVAULT_STANDBY_MAX_LAG",
    "WALVAULT_RESUME_WINDOW",
    "WALVAULT_S3_PATH_STYLE",
    "WALVAULT_S3_SSE",
    "WALVAULT_S3_KMS_KEY_ID",
    "WALVAULT_S3_STORAGE_CLASS",
    "WALVAULT_S3_MAX_ATTEMPTS",
    "WALVAULT_S3_TIMEOUT",
    "WALVAULT_S3_ATTEMPT_TIMEOUT",
    "WALVAULT_S3_CONNECT_TIMEOUT",
    "WALVAULT_S3_STALL_TIMEOUT",
    "WALVAULT_S3_MULTIPART_THRESHOLD",
    "WALVAULT_S3_MULTIPART_PART_SIZE",
    "WALVAULT_LOG",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "PGDATA",
];

/// Everything an operation needs to reach and read or write the repository.
#[derive(Debug, Clone)]
pub struct Config {
    pub repo: RepoLocation,
    pub s3: S3Options,
    /// Environment segment of the layout (`production`, `staging`, ...).
    pub env: String,
    /// Cluster name used in backup names.
    pub cluster: String,
    pub keyring: std::sync::Arc<Keyring>,
    pub codec: CodecSettings,
    /// Where wal-push and wal-fetch keep their listing cache; `None` means beside PGDATA.
    pub cache_dir: Option<PathBuf>,
    /// The config file that was read, if any, so `pitr-prepare` can point wal-fetch at it.
    pub config_file: Option<PathBuf>,
    /// Files wal-push archives at once: the requested one plus `.ready` files read ahead.
    pub push_parallel: usize,
    /// Segments wal-fetch downloads ahead of PostgreSQL's requests.
    pub fetch_prefetch: usize,
    /// Time between two progress lines of a long command when stderr is not a terminal.
    pub progress_interval: Duration,
    /// How far behind its primary a standby may be for base-backup to back it up.
    pub standby_max_lag: Duration,
    /// How long an interrupted base-backup may be resumed (zero: never).
    pub resume_window: Duration,
}

impl Config {
    /// Load and type every setting.
    ///
    /// # Errors
    /// A missing `WALVAULT_REPO`, or any setting with a value that is not allowed: one
    /// [`Error::Config`] naming the setting and what is allowed.
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let raw = RawSettings::load(config_file, overrides)?;
        let mut cfg = Self::from_raw(&raw)?;
        cfg.config_file = config_file.map(Path::to_path_buf).or_else(|| {
            std::env::var_os("WALVAULT_CONFIG")
                .map(PathBuf::from)
                .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()))
        });
        Ok(cfg)
    }

    /// Type already merged settings.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_raw(raw: &RawSettings) -> Result<Self> {
        let repo_url = raw.get("WALVAULT_REPO").ok_or_else(|| {
            Error::config("WALVAULT_REPO", "not set; expected s3://bucket/prefix or file:///absolute/path")
        })?;
        let repo = RepoLocation::parse(repo_url)?;
        let env = raw.get("WALVAULT_ENV").unwrap_or("production").to_string();
        check_name("WALVAULT_ENV", &env)?;
        let cluster = match raw.get("WALVAULT_CLUSTER") {
            Some(c) => c.to_string(),
            None => default_cluster(&repo),
        };
        check_name("WALVAULT_CLUSTER", &cluster)?;
        let compression = match raw.get("WALVAULT_COMPRESSION") {
            Some(c) => Compression::parse(c)?,
            None => Compression::Zstd,
        };
        let level = raw
            .parse::<i32>("WALVAULT_COMPRESSION_LEVEL", "an integer (zstd 1-19, gzip 1-9)")?
            .unwrap_or_else(|| compression.default_level());
        check_level(compression, level)?;
        Ok(Config {
            s3: s3_options(raw)?,
            repo,
            env,
            cluster,
            keyring: std::sync::Arc::new(keyring(raw)?),
            codec: CodecSettings { compression, level },
            cache_dir: raw.get("WALVAULT_CACHE_DIR").map(PathBuf::from),
            config_file: None,
            push_parallel: bounded(raw, "WALVAULT_PUSH_PARALLEL", 2, 1..=16)?,
            fetch_prefetch: bounded(raw, "WALVAULT_FETCH_PREFETCH", 4, 0..=64)?,
            progress_interval: Duration::from_secs(bounded(raw, "WALVAULT_PROGRESS_INTERVAL", 30, 1..=3600)? as u64),
            standby_max_lag: Duration::from_secs(bounded(raw, "WALVAULT_STANDBY_MAX_LAG", 300, 0..=604_800)? as u64),
            resume_window: Duration::from_secs(bounded(raw, "WALVAULT_RESUME_WINDOW", 86_400, 0..=604_800)? as u64),
        })
    }
}

#[cfg(test)]
pub(super) mod tests;
