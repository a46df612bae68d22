//! Typed settings, from the environment, an optional config file and flags.
//!
//! Precedence, highest first: flags (passed in as [`Overrides`]), the process environment
//! (Kubernetes `envFrom` secrets, the postgres server's environment), the config file
//! (`--config`, else `WALVAULT_CONFIG`, else `/etc/walvault/walvault.conf` if present), defaults.
//! The config file holds `NAME=value` lines with the same names as the environment
//! (`#` comments, optional quotes), so one file serves systemd, Kubernetes and shell.
//! Building a [`Config`] never touches the network; clients are built by `ops`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec::CodecSettings;
use crate::codec::compress::Compression;
use crate::codec::crypt::Keyring;
use crate::storage::{RepoLocation, S3Options};
use crate::{Error, Result};

mod keys;
use keys::keyring;
pub use keys::{MAX_KEY_FILE, NO_KEY, warn_if_readable_by_others};

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

/// Settings that hold key material: a config file with one of them should be mode 0600.
const SECRET_SETTINGS: &[&str] = &["BACKUP_ENCRYPTION_KEY", "WALVAULT_READ_KEYS"];

/// Settings whose empty value in the environment is an error rather than "not set": an
/// empty key must never mean "no encryption".
const EMPTY_IS_AN_ERROR: &[&str] = &["BACKUP_ENCRYPTION_KEY", "WALVAULT_KEY_FILE", "WALVAULT_ENCRYPTION"];

/// Largest config file read (it holds a few dozen `NAME=value` lines).
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Flag values that override everything else, keyed by setting name.
pub type Overrides = BTreeMap<String, String>;

/// Raw settings after merging the sources, before typing.
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<String, String>,
}

impl RawSettings {
    /// Merge the config file, the environment and the flags.
    ///
    /// # Errors
    /// A config file that cannot be read or has a malformed line, naming the file and line.
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        Self::load_from(config_file, overrides, |name| std::env::var(name).ok())
    }

    /// As [`RawSettings::load`] with an explicit environment (for tests).
    ///
    /// # Errors
    /// As [`RawSettings::load`].
    pub fn load_from(
        config_file: Option<&Path>,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        // The file, and the setting that named it (for a file that is not there).
        let file = match config_file {
            Some(p) => Some((p.to_path_buf(), "--config")),
            None => match env("WALVAULT_CONFIG") {
                Some(p) if !p.is_empty() => Some((PathBuf::from(p), "WALVAULT_CONFIG")),
                _ => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()).map(|p| (p, "config file")),
            },
        };
        if let Some((path, named_by)) = file {
            let text = read_config_file(&path, named_by)?;
            let parsed = parse_config_file(&text, &path)?;
            if SECRET_SETTINGS.iter().any(|s| parsed.contains_key(*s)) {
                warn_if_readable_by_others(&path);
            }
            values.extend(parsed);
        }
        for name in SETTINGS {
            if let Some(v) = env(name).filter(|v| !v.is_empty() || EMPTY_IS_AN_ERROR.contains(name)) {
                values.insert((*name).to_string(), v);
            }
        }
        values.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(RawSettings { values })
    }

    /// The value of a setting, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, allowed: &str) -> Result<Option<T>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Error::config(name, format!("{v:?} is not allowed; expected {allowed}"))),
        }
    }

    fn flag(&self, name: &str) -> Result<bool> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
            Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
            Some(v) => Err(Error::config(name, format!("{v:?} is not allowed; expected true or false"))),
        }
    }
}

/// The config file's text: a regular file of at most [`MAX_CONFIG_FILE`] bytes, UTF-8 (a
/// FIFO or a device such as `/dev/zero` is refused, never read without bound), or
/// `/dev/null`, the conventional "no config file".
/// A file that is not there is a setting error naming what named it (`--config` or
/// `WALVAULT_CONFIG`).
fn read_config_file(path: &Path, named_by: &str) -> Result<String> {
    if path == Path::new("/dev/null") {
        return Ok(String::new());
    }
    let bytes = match crate::fsutil::read_regular(path, MAX_CONFIG_FILE) {
        Ok((bytes, _)) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::config(named_by, format!("config file {} does not exist", path.display())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(Error::Invalid(format!(
                "config file {}: {e}; expected a file of NAME=value lines",
                path.display()
            )));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    String::from_utf8(bytes).map_err(|_| {
        Error::Invalid(format!("config file {}: not UTF-8 text; expected NAME=value lines", path.display()))
    })
}

/// Parse `NAME=value` lines; unknown names are refused so a typo is not silently ignored.
fn parse_config_file(text: &str, path: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let at = format!("{}:{}", path.display(), i + 1);
        let Some((name, value)) = line.split_once('=') else {
            return Err(Error::config(at, "expected NAME=value"));
        };
        let name = name.trim();
        if !SETTINGS.contains(&name) {
            return Err(Error::config(at, format!("unknown setting {name}")));
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

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

fn bounded(raw: &RawSettings, name: &str, default: usize, range: std::ops::RangeInclusive<usize>) -> Result<usize> {
    let allowed = format!("an integer from {} to {}", range.start(), range.end());
    match raw.parse::<usize>(name, &allowed)? {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(n) => Err(Error::config(name, format!("{n} is not allowed; expected {allowed}"))),
    }
}

/// Names that become path segments: letters, digits, `-` and `_`.
fn check_name(setting: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(setting, format!("{value:?} is not allowed; use 1-64 letters, digits, '-' or '_'")))
    }
}

fn check_level(compression: Compression, level: i32) -> Result<()> {
    let range = match compression {
        Compression::Zstd => 1..=19,
        Compression::Gzip => 1..=9,
        Compression::None => return Ok(()),
    };
    if range.contains(&level) {
        Ok(())
    } else {
        Err(Error::config(
            "WALVAULT_COMPRESSION_LEVEL",
            format!("{level} is not allowed for {}; expected {}-{}", compression.name(), range.start(), range.end()),
        ))
    }
}

/// The cluster name when none is set: the last segment of the repository prefix, else `postgres`.
fn default_cluster(repo: &RepoLocation) -> String {
    let last = match repo {
        RepoLocation::S3 { prefix, .. } => prefix.rsplit('/').find(|s| !s.is_empty()).map(str::to_string),
        RepoLocation::Fs { .. } => None,
    };
    last.filter(|s| check_name("", s).is_ok()).unwrap_or_else(|| "postgres".to_string())
}

fn s3_options(raw: &RawSettings) -> Result<S3Options> {
    let mut s3 = S3Options::defaults();
    s3.region = raw.get("AWS_REGION").map(str::to_string);
    s3.endpoint = raw.get("AWS_ENDPOINT_URL").map(str::to_string);
    s3.path_style = raw.flag("WALVAULT_S3_PATH_STYLE")?;
    s3.sse = match raw.get("WALVAULT_S3_SSE") {
        None => None,
        Some(v @ ("AES256" | "aws:kms")) => Some(v.to_string()),
        Some(v) => {
            return Err(Error::config("WALVAULT_S3_SSE", format!("{v:?} is not allowed; expected AES256 or aws:kms")));
        }
    };
    s3.kms_key_id = raw.get("WALVAULT_S3_KMS_KEY_ID").map(str::to_string);
    if s3.kms_key_id.is_some() && s3.sse.as_deref() != Some("aws:kms") {
        return Err(Error::config("WALVAULT_S3_KMS_KEY_ID", "needs WALVAULT_S3_SSE=aws:kms"));
    }
    s3.storage_class = raw.get("WALVAULT_S3_STORAGE_CLASS").map(str::to_string);
    if let Some(n) = raw.parse::<u32>("WALVAULT_S3_MAX_ATTEMPTS", "an integer from 1 to 20")? {
        if !(1..=20).contains(&n) {
            return Err(Error::config("WALVAULT_S3_MAX_ATTEMPTS", format!("{n} is not allowed; expected 1-20")));
        }
        s3.max_attempts = n;
    }
    let seconds = |name: &str, into: &mut Duration| -> Result<()> {
        match raw.parse::<u64>(name, "whole seconds from 1 to 86400, e.g. 60")? {
            Some(secs @ 1..=86_400) => *into = Duration::from_secs(secs),
            Some(secs) => return Err(Error::config(name, format!("{secs} is not allowed; expected 1-86400 seconds"))),
            None => {}
        }
        Ok(())
    };
    seconds("WALVAULT_S3_TIMEOUT", &mut s3.operation_timeout)?;
    seconds("WALVAULT_S3_ATTEMPT_TIMEOUT", &mut s3.attempt_timeout)?;
    seconds("WALVAULT_S3_CONNECT_TIMEOUT", &mut s3.connect_timeout)?;
    seconds("WALVAULT_S3_STALL_TIMEOUT", &mut s3.stall_timeout)?;
    let min_part = S3Options::MIN_MULTIPART_PART_SIZE;
    if let Some(v) = raw.get("WALVAULT_S3_MULTIPART_THRESHOLD") {
        s3.multipart_threshold = crate::throttle::parse_bytes("WALVAULT_S3_MULTIPART_THRESHOLD", v, min_part)?;
    }
    if let Some(v) = raw.get("WALVAULT_S3_MULTIPART_PART_SIZE") {
        s3.multipart_part_size = crate::throttle::parse_bytes("WALVAULT_S3_MULTIPART_PART_SIZE", v, min_part)?;
    }
    Ok(s3)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Settings from `pairs`; without any key setting, unencrypted by explicit choice.
    pub(super) fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        let mut env: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        const KEYS: [&str; 5] = [
            "BACKUP_ENCRYPTION_KEY",
            "WALVAULT_KEY_FILE",
            "WALVAULT_READ_KEYS",
            "WALVAULT_READ_KEY_FILES",
            "WALVAULT_ENCRYPTION",
        ];
        if !KEYS.iter().any(|k| env.contains_key(*k)) {
            env.insert("WALVAULT_ENCRYPTION".into(), "none".into());
        }
        RawSettings::load_from(None, &Overrides::new(), |n| env.get(n).cloned()).expect("load")
    }

    pub(super) fn err(pairs: &[(&str, &str)]) -> String {
        match Config::from_raw(&raw(pairs)) {
            Ok(_) => panic!("expected an error for {pairs:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_repo_names_the_setting() {
        assert_eq!(err(&[]), "setting WALVAULT_REPO: not set; expected s3://bucket/prefix or file:///absolute/path");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let repo = ("WALVAULT_REPO", "file:///tmp/r");
        assert!(err(&[repo, ("WALVAULT_COMPRESSION", "lz4")]).starts_with("setting WALVAULT_COMPRESSION:"));
        assert!(err(&[repo, ("WALVAULT_COMPRESSION_LEVEL", "x")]).starts_with("setting WALVAULT_COMPRESSION_LEVEL:"));
        assert!(err(&[repo, ("WALVAULT_COMPRESSION_LEVEL", "40")]).contains("1-19"));
        assert!(err(&[repo, ("WALVAULT_ENV", "../x")]).starts_with("setting WALVAULT_ENV:"));
        assert!(err(&[repo, ("WALVAULT_S3_SSE", "rot13")]).starts_with("setting WALVAULT_S3_SSE:"));
        assert!(err(&[repo, ("WALVAULT_S3_PATH_STYLE", "maybe")]).starts_with("setting WALVAULT_S3_PATH_STYLE:"));
        assert!(err(&[repo, ("WALVAULT_KEY_FILE", "/nonexistent/key")]).starts_with("setting WALVAULT_KEY_FILE:"));
        assert!(err(&[repo, ("WALVAULT_S3_ATTEMPT_TIMEOUT", "0")]).starts_with("setting WALVAULT_S3_ATTEMPT_TIMEOUT:"));
        assert!(err(&[repo, ("WALVAULT_S3_STALL_TIMEOUT", "2.5")]).starts_with("setting WALVAULT_S3_STALL_TIMEOUT:"));
    }

    #[test]
    fn s3_timeouts_have_documented_defaults_and_can_be_set() {
        use crate::storage::S3Options;
        let cfg = Config::from_raw(&raw(&[("WALVAULT_REPO", "s3://bucket/p")])).expect("config");
        assert_eq!(cfg.s3.max_attempts, 5);
        assert_eq!(cfg.s3.connect_timeout, S3Options::DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(cfg.s3.attempt_timeout, Duration::from_secs(300));
        assert_eq!(cfg.s3.operation_timeout, Duration::from_secs(900));
        assert_eq!(cfg.s3.stall_timeout, Duration::from_secs(20));
        let cfg = Config::from_raw(&raw(&[
            ("WALVAULT_REPO", "s3://bucket/p"),
            ("WALVAULT_S3_MAX_ATTEMPTS", "3"),
            ("WALVAULT_S3_CONNECT_TIMEOUT", "2"),
            ("WALVAULT_S3_ATTEMPT_TIMEOUT", "7"),
            ("WALVAULT_S3_TIMEOUT", "30"),
            ("WALVAULT_S3_STALL_TIMEOUT", "3"),
        ]))
        .expect("config");
        assert_eq!(cfg.s3.max_attempts, 3);
        assert_eq!(cfg.s3.connect_timeout, Duration::from_secs(2));
        assert_eq!(cfg.s3.attempt_timeout, Duration::from_secs(7));
        assert_eq!(cfg.s3.operation_timeout, Duration::from_secs(30));
        assert_eq!(cfg.s3.stall_timeout, Duration::from_secs(3));
    }

    #[test]
    fn defaults_and_cluster_from_prefix() {
        let cfg = Config::from_raw(&raw(&[("WALVAULT_REPO", "s3://bucket/mykadoo")])).expect("config");
        assert_eq!(cfg.env, "production");
        assert_eq!(cfg.cluster, "mykadoo");
        assert_eq!(cfg.codec.compression, Compression::Zstd);
        assert!(!cfg.keyring.is_encrypted());
        let cfg = Config::from_raw(&raw(&[("WALVAULT_REPO", "file:///tmp/r")])).expect("config");
        assert_eq!(cfg.cluster, "postgres");
    }

    #[test]
    fn flags_override_env_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("walvault.conf");
        std::fs::write(
            &file,
            "# comment\nWALVAULT_ENV=fromfile\nexport WALVAULT_CLUSTER='c1'\nWALVAULT_REPO=\"file:///x\"\n",
        )
        .expect("write");
        let env = |n: &str| (n == "WALVAULT_ENV").then(|| "fromenv".to_string());
        let r = RawSettings::load_from(Some(&file), &Overrides::new(), env).expect("load");
        assert_eq!(r.get("WALVAULT_ENV"), Some("fromenv"));
        assert_eq!(r.get("WALVAULT_CLUSTER"), Some("c1"));
        assert_eq!(r.get("WALVAULT_REPO"), Some("file:///x"));
        let flags = Overrides::from([("WALVAULT_ENV".to_string(), "fromflag".to_string())]);
        let r = RawSettings::load_from(Some(&file), &flags, env).expect("load");
        assert_eq!(r.get("WALVAULT_ENV"), Some("fromflag"));
    }

    #[test]
    fn config_file_typos_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("walvault.conf");
        std::fs::write(&file, "WALVAULT_REPOO=file:///x\n").expect("write");
        let e = RawSettings::load_from(Some(&file), &Overrides::new(), |_| None).expect_err("typo");
        assert!(e.to_string().ends_with(":1: unknown setting WALVAULT_REPOO"), "{e}");
    }
}
