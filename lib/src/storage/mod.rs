//! Repository storage: a local directory ([`fs`]) or an S3 bucket ([`s3`]) behind one
//! [`Storage`] enum with the same contract.
//!
//! Contract, for both backends:
//! - Keys are `/`-separated relative paths (see [`validate_key`]); hostile keys are refused
//!   with [`Error::Invalid`] before any I/O, so no key can escape the repository root.
//! - [`Storage::put_if_absent`] is the no-overwrite primitive: of N racing writers of one key
//!   exactly one succeeds, the others get [`Error::AlreadyExists`], and nobody ever sees half
//!   an object.
//! - [`Storage::put`] replaces atomically and durably.
//! - A missing object is [`Error::NotFound`] from `get` and `None` from `head`; every other
//!   failure of the backend is [`Error::Storage`] (S3, after the SDK's retries) or
//!   [`Error::Io`] (local files).
//! - [`Storage::list`] follows S3's `ListObjectsV2` semantics (string prefix, delimiter,
//!   `StartAfter`), returns every page, and sorts by key.

pub mod fs;
mod fs_list;
pub mod s3;
mod s3_config;
mod s3_resume;

pub use s3_config::FALLBACK_REGION;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::{Error, Result};

/// A streaming object body.
pub type ByteReader = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// What `head` and `list` know about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the backend reports one.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// The result of a complete listing (all pages).
#[derive(Debug, Default, Clone)]
pub struct ListResult {
    /// Objects, sorted by key; keys relative to the repository root.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes when a delimiter was given, sorted, each ending with the delimiter.
    pub prefixes: Vec<String>,
}

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

/// S3 client settings. Start from [`S3Options::defaults`] and override fields.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Region; `None` means `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile, else `us-east-1`
    /// (never instance metadata).
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible servers; `None` lets aws-config read `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), needed by most S3-compatible servers.
    pub path_style: bool,
    /// Server-side encryption for puts: `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// KMS key id for `aws:kms`.
    pub kms_key_id: Option<String>,
    /// Storage class for puts (`STANDARD_IA`, ...).
    pub storage_class: Option<String>,
    /// Attempts per request, including the first (SDK standard retry: exponential backoff
    /// with jitter on timeouts, 5xx, throttling and connection errors). 0 means 1.
    pub max_attempts: u32,
    /// TCP + TLS connect limit per attempt.
    pub connect_timeout: Duration,
    /// Limit for one request including all its retries.
    pub operation_timeout: Duration,
    /// Limit for one attempt (sending the whole body, or receiving the response headers).
    pub attempt_timeout: Duration,
    /// A request or response body that moves no data for this long fails its attempt (the
    /// SDK's stalled-stream protection); a download is then resumed where it stopped.
    pub stall_timeout: Duration,
    /// Files at least this large are uploaded in parts (multipart upload); 0 means the default.
    pub multipart_threshold: u64,
    /// Bytes per part of a multipart upload (grown so that no upload needs more than 10,000
    /// parts); 0 means the default.
    pub multipart_part_size: u64,
}

impl S3Options {
    /// Default attempts per request.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default per-attempt timeout: room for a large part on a slow link.
    pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
    /// Default per-operation timeout (all attempts and back-offs).
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(900);
    /// Default stall limit: the SDK's own grace period.
    pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(20);
    /// Default multipart threshold: 128 MiB (one PUT takes at most 5 GiB on AWS).
    pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 128 << 20;
    /// Default part size of a multipart upload: 32 MiB (AWS: at least 5 MiB but the last).
    pub const DEFAULT_MULTIPART_PART_SIZE: u64 = 32 << 20;
    /// Smallest part S3 accepts (but the last).
    pub const MIN_MULTIPART_PART_SIZE: u64 = 5 << 20;

    /// Documented defaults: 5 attempts, connect 10 s, attempt 300 s, operation 900 s, stall
    /// 20 s, no region/endpoint override, virtual-hosted style, no SSE or storage class.
    ///
    /// Bodies are guarded by the SDK's stalled-stream protection (a transfer that moves
    /// nothing for `stall_timeout` fails instead of hanging); a download that fails
    /// mid-body is resumed from where it stopped, up to `max_attempts` times in all.
    pub fn defaults() -> Self {
        S3Options {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            attempt_timeout: Self::DEFAULT_ATTEMPT_TIMEOUT,
            stall_timeout: Self::DEFAULT_STALL_TIMEOUT,
            multipart_threshold: Self::DEFAULT_MULTIPART_THRESHOLD,
            multipart_part_size: Self::DEFAULT_MULTIPART_PART_SIZE,
            ..S3Options::default()
        }
    }
}

/// Request counters per operation (for tests and `--json` stats). A listing of N pages
/// counts N; `put` counts `put` and `put_if_absent`. SDK-internal retries are not counted.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
}

/// Shared atomic counters behind [`RequestStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

/// Which counter a request bumps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Put,
    Get,
    Head,
    List,
    Delete,
}

impl Counters {
    pub(crate) fn count(&self, op: Op) {
        let counter = match op {
            Op::Put => &self.put,
            Op::Get => &self.get,
            Op::Head => &self.head,
            Op::List => &self.list,
            Op::Delete => &self.delete,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestStats {
        RequestStats {
            put: self.put.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

/// The repository backend. Cheap to clone: each variant holds an `Arc`.
#[derive(Debug, Clone)]
pub enum Storage {
    Fs(fs::FsStorage),
    S3(s3::S3Storage),
}

impl Storage {
    /// Open the repository at `location`. The S3 client is built here, once per process.
    ///
    /// # Errors
    /// [`Error::Config`] for a relative root or a bad S3 setting.
    pub async fn open(location: &RepoLocation, s3: &S3Options) -> Result<Storage> {
        match location {
            RepoLocation::Fs { root } => Ok(Storage::Fs(fs::FsStorage::new(root.clone())?)),
            RepoLocation::S3 { bucket, prefix } => Ok(Storage::S3(s3::S3Storage::new(bucket, prefix, s3).await?)),
        }
    }

    /// Create `key` only if nothing is there.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when an object is already at `key` (S3: 412 or 304 to
    /// `If-None-Match: *`; fs: the final name exists); otherwise as for `put`.
    pub async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()> {
        match self {
            Storage::Fs(s) => s.put_if_absent(key, body).await,
            Storage::S3(s) => s.put_if_absent(key, body).await,
        }
    }

    /// Create or replace `key` (durable: fs temp + fsync + rename + fsync dir).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad key, [`Error::Storage`] or [`Error::Io`] on failure.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        match self {
            Storage::Fs(s) => s.put(key, body).await,
            Storage::S3(s) => s.put(key, body).await,
        }
    }

    /// Make a new repository writable: the local backend creates its root directory (0700);
    /// S3 needs nothing. Writers call this before their first read, so that a missing root
    /// is a new repository for them while readers still treat it as an error.
    ///
    /// # Errors
    /// The root cannot be created.
    pub async fn prepare_for_writes(&self) -> Result<()> {
        match self {
            Storage::Fs(s) => s.create_root(),
            Storage::S3(_) => Ok(()),
        }
    }

    /// Create or replace `key` with the content of a local file, streamed from disk (base
    /// backup parts spooled to a temporary file, so memory stays bounded).
    ///
    /// # Errors
    /// As for `put`, and [`Error::Io`] naming `path` when it cannot be read.
    pub async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        self.put_file_limited(key, path, None).await
    }

    /// As [`Storage::put_file`], uploading no faster than `limit` (S3: paced part by part
    /// for a file over the multipart threshold, which goes up in parallel parts; the local
    /// backend and a single PUT wait for the whole file's share first).
    ///
    /// # Errors
    /// As for `put_file`.
    pub async fn put_file_limited(
        &self,
        key: &str,
        path: &std::path::Path,
        limit: Option<&crate::throttle::Throttle>,
    ) -> Result<()> {
        match self {
            Storage::Fs(s) => {
                if let Some(t) = limit {
                    t.take(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)).await;
                }
                s.put_file(key, path).await
            }
            Storage::S3(s) => s.put_file(key, path, limit).await,
        }
    }

    /// Streaming read of `key`.
    ///
    /// # Errors
    /// [`Error::NotFound`] with `describe(key)` when absent; [`Error::Storage`] (missing
    /// bucket or repository directory, access denied, ...) or [`Error::Io`] otherwise.
    pub async fn get(&self, key: &str) -> Result<ByteReader> {
        match self {
            Storage::Fs(s) => s.get(key).await,
            Storage::S3(s) => s.get(key).await,
        }
    }

    /// Read all of `key` into memory.
    ///
    /// # Errors
    /// As for [`Storage::get`], plus [`Error::Storage`] (S3) or [`Error::Io`] (fs) when the
    /// body fails mid-stream.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let mut reader = self.get(key).await?;
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf).await.map_err(|e| match self {
            Storage::Fs(_) => Error::io(self.describe(key), e),
            Storage::S3(_) => Error::Storage {
                op: "get",
                key: self.describe(key),
                reason: format!("reading the body: {e}"),
                permanent: true,
            },
        })?;
        Ok(Bytes::from(buf))
    }

    /// Size and time of `key`, or `None` when absent.
    ///
    /// S3 answers a HEAD without a body, so a missing bucket also reads as `None`; use
    /// `get` or `list` where that difference matters.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad key, [`Error::Storage`] or [`Error::Io`] on failure.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self {
            Storage::Fs(s) => s.head(key).await,
            Storage::S3(s) => s.head(key).await,
        }
    }

    /// List every object whose key starts with `prefix` (a string prefix, not a directory),
    /// all pages. With `delimiter` (e.g. `Some("/")`), keys with the delimiter after the
    /// prefix are rolled up into `prefixes`. `start_after` keeps keys strictly greater.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad prefix, [`Error::Storage`] or [`Error::Io`] on failure.
    pub async fn list(&self, prefix: &str, delimiter: Option<&str>, start_after: Option<&str>) -> Result<ListResult> {
        match self {
            Storage::Fs(s) => s.list(prefix, delimiter, start_after).await,
            Storage::S3(s) => s.list(prefix, delimiter, start_after).await,
        }
    }

    /// Delete `key`; deleting a missing key is `Ok`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad key, [`Error::Storage`] or [`Error::Io`] on failure.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Storage::Fs(s) => s.delete(key).await,
            Storage::S3(s) => s.delete(key).await,
        }
    }

    /// Requests made so far through this storage (and its clones).
    pub fn stats(&self) -> RequestStats {
        match self {
            Storage::Fs(s) => s.stats(),
            Storage::S3(s) => s.stats(),
        }
    }

    /// Human name for messages: `s3://bucket/prefix/key` or `/abs/root/key`.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Storage::Fs(s) => s.describe(key),
            Storage::S3(s) => s.describe(key),
        }
    }
}

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

#[cfg(test)]
mod tests;
