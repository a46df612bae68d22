//! The checks of the general settings: bounded integers, names that become path segments
//! (`WALVAULT_ENV`, `WALVAULT_CLUSTER`), compression levels, and the default cluster name.

use crate::codec::compress::Compression;
use crate::storage::RepoLocation;
use crate::{Error, Result};

use super::RawSettings;

pub(super) fn bounded(
    raw: &RawSettings,
    name: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize> {
    let allowed = format!("an integer from {} to {}", range.start(), range.end());
    match raw.parse::<usize>(name, &allowed)? {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(n) => Err(Error::config(name, format!("{n} is not allowed; expected {allowed}"))),
    }
}

/// Names that become path segments: letters, digits, `-` and `_`.
pub(super) fn check_name(setting: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(setting, format!("{value:?} is not allowed; use 1-64 letters, digits, '-' or '_'")))
    }
}

pub(super) fn check_level(compression: Compression, level: i32) -> Result<()> {
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
pub(super) fn default_cluster(repo: &RepoLocation) -> String {
    let last = match repo {
        RepoLocation::S3 { prefix, .. } => prefix.rsplit('/').find(|s| !s.is_empty()).map(str::to_string),
        RepoLocation::Fs { .. } => None,
    };
    last.filter(|s| check_name("", s).is_ok()).unwrap_or_else(|| "postgres".to_string())
}
