//! The key rules both backends share: which object keys and listing prefixes are accepted
//! (checked before any I/O, so no key escapes the repository root), the fs backend's
//! temporary names, and the S3-style delimiter roll-up of a listing.

use crate::{Error, Result};

/// Longest key accepted (S3's limit, in bytes).
pub const MAX_KEY_LEN: usize = 1024;

/// Check that `key` is a safe relative object key.
///
/// Refused: empty, longer than [`MAX_KEY_LEN`], starting or ending with `/`, empty, `.` or
/// `..` components, backslashes, NUL, and names of the fs backend's temporary files
/// (`.<name>.tmp.<random>`), so both backends accept exactly the same keys.
///
/// # Errors
/// [`Error::Invalid`] naming the key and the rule.
pub fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if key.len() > MAX_KEY_LEN {
        Some("longer than 1024 bytes")
    } else if key.contains('\0') {
        Some("contains NUL")
    } else if key.contains('\\') {
        Some("contains a backslash")
    } else if key.starts_with('/') {
        Some("absolute")
    } else if key.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        Some("has an empty, '.' or '..' component")
    } else if key.rsplit('/').next().is_some_and(is_temp_name) {
        Some("reserved for temporary files")
    } else {
        None
    };
    match reason {
        Some(why) => Err(Error::Invalid(format!("invalid object key {key:?}: {why}"))),
        None => Ok(()),
    }
}

/// Check a listing prefix: empty, or a key-like string whose last component may be partial.
///
/// # Errors
/// [`Error::Invalid`] naming the prefix.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let bad = prefix.len() > MAX_KEY_LEN
        || prefix.contains('\0')
        || prefix.contains('\\')
        || prefix.starts_with('/')
        || prefix
            .rsplit_once('/')
            .is_some_and(|(dirs, _)| dirs.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
    if bad {
        return Err(Error::Invalid(format!(
            "invalid listing prefix {prefix:?}: must be a relative '/'-separated path without '.', '..', '//', '\\' or NUL"
        )));
    }
    Ok(())
}

/// True for the fs backend's temporary file names: `.<name>.tmp.<random>`.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name[1..].contains(".tmp.")
}

/// Roll `key` up at `delimiter` after `prefix`, S3 style: `Some(common_prefix)` when the
/// rest of the key contains the delimiter.
pub(crate) fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    rest.find(d).map(|i| &key[..prefix.len() + i + d.len()])
}
