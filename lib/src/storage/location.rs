//! Where the repository lives: [`RepoLocation`], parsed from `WALVAULT_REPO`
//! (`file:///abs/path`, `s3://bucket`, `s3://bucket/prefix`) and printed back the same way.

use std::fmt;
use std::path::PathBuf;

use super::validate_key;
use crate::{Error, Result};

/// Where the repository lives, parsed from `WALVAULT_REPO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A local directory (`file:///abs/path`).
    Fs { root: PathBuf },
    /// An S3 bucket and a key prefix without leading or trailing `/` (may be empty).
    S3 { bucket: String, prefix: String },
}

const REPO_SETTING: &str = "WALVAULT_REPO";
const REPO_ALLOWED: &str = "expected s3://bucket, s3://bucket/prefix or file:///absolute/path";

impl RepoLocation {
    /// Parse `file:///abs/path`, `s3://bucket` or `s3://bucket/some/prefix`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `WALVAULT_REPO` and what is allowed.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::config(REPO_SETTING, format!("{why} in {url:?}: {REPO_ALLOWED}"));
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("the path of a file:// URL must be absolute (three slashes)"));
            }
            if path.contains('\0') {
                return Err(bad("NUL byte"));
            }
            let trimmed = path.trim_end_matches('/');
            let root = if trimmed.is_empty() { "/" } else { trimmed };
            return Ok(RepoLocation::Fs { root: PathBuf::from(root) });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=255).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !bucket_ok {
                return Err(bad("bucket names are 3 to 255 letters, digits, '.', '-' or '_'"));
            }
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty() {
                validate_key(prefix)
                    .map_err(|_| bad("the prefix must be '/'-separated names without '.', '..', '//', '\\' or NUL"))?;
            }
            return Ok(RepoLocation::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() });
        }
        Err(bad("unknown scheme"))
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Fs { root } => write!(f, "file://{}", root.display()),
            RepoLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}
