//! The library's one error type and the one exit-code table.
//!
//! Policy: library code returns [`Error`]; it never prints and never exits. Each variant
//! names the thing that went wrong (an object key, a file path, a setting) so that a binary
//! can print `error.to_string()` as its one log line. Operator advice, where there is some,
//! is a hint on the error, never text in its message: a variant's own advice, or one attached
//! where the error is made ([`Error::with_hint`]); [`Error::hint`] returns it and the binaries
//! print it on its own `HINT:` line.
//! Messages are lowercase and have no final period.

use std::fmt;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object or file does not exist. wal-fetch turns this, and only this, into exit 1.
    #[error("{what} not found")]
    NotFound { what: String },

    /// `put_if_absent` found an object already at `key`.
    #[error("object {key} already exists")]
    AlreadyExists { key: String },

    /// An object failed authentication, decompression or a length/format check.
    #[error("object {object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },

    /// The object is bound (format 2) to another repository, environment, cluster or name
    /// than the one it was read for: renamed, copied or planted. Also a format-1 object where
    /// only format 2 can be trusted (`docs/FORMAT.md`, section 6).
    #[error("object {object} is bound to another place: {reason}")]
    Misplaced { object: String, reason: String },

    /// The object was written with a key we do not have, or needs a key and none is configured
    /// (or is unencrypted and a key is required).
    #[error("object {object}: {reason}")]
    Key { object: String, reason: String },

    /// A setting is missing or has a value that is not allowed.
    #[error("setting {setting}: {reason}")]
    Config { setting: String, reason: String },

    /// The storage backend failed. `permanent` is false for faults worth retrying
    /// (timeouts, 5xx, throttling, connection resets) and true once retries are exhausted
    /// or for faults no retry fixes (access denied, no such bucket).
    #[error("storage {op} {key}: {reason}")]
    Storage { op: &'static str, key: String, reason: String, permanent: bool },

    /// The operation was refused to protect the repository or the cluster: a WAL file with
    /// the same name and other content, WAL from another cluster, a repository mismatch.
    #[error("{0}")]
    Refused(String),

    /// A WAL file is missing although later WAL of the recovery's timeline path is
    /// archived: a hole, never the end (wal-fetch must not answer "not found").
    #[error("{0}")]
    Hole(String),

    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Input that is not what it claims to be: a WAL file name, an LSN, a page header.
    #[error("{0}")]
    Invalid(String),

    /// PostgreSQL (a connection, a query, a server binary) failed.
    #[error("postgresql: {0}")]
    Postgres(String),

    /// A fault of walvault itself (a worker task panicked), not of the input or the repository.
    #[error("internal error: {0}")]
    Internal(String),

    /// `inner` with the operator advice known where it was made.
    #[error("{inner}")]
    Hinted { inner: Box<Error>, hint: String },
}

/// Exit codes, one table for every binary (documented in the README and `lib.rs`).
///
/// PostgreSQL reads any restore_command status up to 125 as "file not available", which
/// can end recovery early; a status above 125 aborts recovery. So wal-fetch reports every
/// failure other than "not in the archive" as `200 + code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    NotFound = 1,
    Config = 2,
    Storage = 3,
    Corrupt = 4,
    Refused = 5,
    Io = 6,
    Postgres = 7,
    /// `verify` found a problem, or `status` is past a threshold (the check itself ran).
    Unhealthy = 8,
    /// A fault of walvault itself (a panicked worker): report it as a bug.
    Internal = 9,
}

/// Offset added to every wal-fetch failure other than "not found".
pub const FETCH_HARD_FAILURE_BASE: u8 = 200;

impl ExitCode {
    /// The process status for a general binary.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The process status for `wal-fetch`: 0, 1, or above 125 for everything else.
    pub fn fetch_code(self) -> u8 {
        match self {
            ExitCode::Success | ExitCode::NotFound => self as u8,
            other => FETCH_HARD_FAILURE_BASE + other as u8,
        }
    }
}

impl Error {
    /// The exit-code class of this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::NotFound { .. } => ExitCode::NotFound,
            Error::Config { .. } | Error::Invalid(_) => ExitCode::Config,
            Error::Storage { .. } => ExitCode::Storage,
            Error::Corrupt { .. } | Error::Key { .. } | Error::Misplaced { .. } => ExitCode::Corrupt,
            Error::AlreadyExists { .. } | Error::Refused(_) | Error::Hole(_) => ExitCode::Refused,
            Error::Io { .. } => ExitCode::Io,
            Error::Postgres(_) => ExitCode::Postgres,
            Error::Internal(_) => ExitCode::Internal,
            Error::Hinted { inner, .. } => inner.exit_code(),
        }
    }

    /// The error itself, without an attached hint: what to match on.
    pub fn root(&self) -> &Error {
        match self {
            Error::Hinted { inner, .. } => inner.root(),
            other => other,
        }
    }

    /// This error with operator advice `hint` (one line, no `HINT:` prefix).
    #[must_use]
    pub fn with_hint(self, hint: impl Into<String>) -> Error {
        Error::Hinted { inner: Box::new(self), hint: hint.into() }
    }

    /// Operator advice for this error, if there is any: the hint attached where it was made,
    /// else the advice of its kind.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Hinted { hint, .. } => Some(hint),
            Error::Key { .. } => {
                Some("check BACKUP_ENCRYPTION_KEY / WALVAULT_KEY_FILE; WALVAULT_READ_KEYS may list older keys")
            }
            Error::Misplaced { .. } => Some(
                "this object is not the file it is stored as (renamed, copied from another repository, environment or cluster, or planted); nothing was restored from it: find the right copy, or restore from another backup",
            ),
            Error::Hole(_) => Some(
                "restore the missing file into the repository (from another copy of the archive or the primary's pg_wal), or choose a target before the hole",
            ),
            Error::Storage { permanent: true, .. } => {
                Some("check WALVAULT_REPO, AWS_ENDPOINT_URL, credentials and network")
            }
            Error::Internal(_) => Some("this is a bug in walvault: please report it with the lines above"),
            _ => None,
        }
    }

    /// True when retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.root(), Error::Storage { permanent: false, .. })
    }

    /// Shorthand for a missing object.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::NotFound { what: what.to_string() }
    }

    /// Shorthand for a corrupt object.
    pub fn corrupt(object: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Corrupt { object: object.to_string(), reason: reason.to_string() }
    }

    /// Shorthand for a bad setting.
    pub fn config(setting: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Config { setting: setting.to_string(), reason: reason.to_string() }
    }

    /// Shorthand for a local I/O failure on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    /// Map an I/O error into [`Error::Io`] naming `path`.
    fn with_path(self, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
