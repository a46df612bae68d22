//! Merging the sources of settings into [`RawSettings`]: the config file (read with a size
//! bound, `NAME=value` lines, unknown names refused), the environment and the flags, and
//! the untyped reads (`parse`, `flag`) the typed settings are built with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{DEFAULT_CONFIG_FILE, SETTINGS, warn_if_readable_by_others};
use crate::{Error, Result};

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

    pub(super) fn parse<T: std::str::FromStr>(&self, name: &str, allowed: &str) -> Result<Option<T>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Error::config(name, format!("{v:?} is not allowed; expected {allowed}"))),
        }
    }

    pub(super) fn flag(&self, name: &str) -> Result<bool> {
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
