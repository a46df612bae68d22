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
//!
//! Here: the [`Storage`] enum and the types of its answers. Beside it: [`fs`] and [`s3`] (the
//! backends), `keys` (the key and prefix rules), `location` ([`RepoLocation`]), `options`
//! ([`S3Options`]) and `stats` ([`RequestStats`]).

pub mod fs;
mod fs_list;
mod keys;
mod location;
mod options;
pub mod s3;
mod s3_config;
mod s3_resume;
mod stats;

pub use keys::{MAX_KEY_LEN, validate_key, validate_prefix};
pub(crate) use keys::{common_prefix, is_temp_name};
pub use location::RepoLocation;
pub use options::S3Options;
pub use s3_config::FALLBACK_REGION;
pub use stats::RequestStats;
pub(crate) use stats::{Counters, Op};

use std::pin::Pin;

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

    /// The first `len` bytes of `key` (all of it when shorter): one ranged request.
    ///
    /// # Errors
    /// As for [`Storage::get_bytes`].
    pub async fn get_prefix(&self, key: &str, len: u64) -> Result<Bytes> {
        match self {
            Storage::Fs(_) => {
                let reader = self.get(key).await?;
                let mut buf = Vec::new();
                reader.take(len).read_to_end(&mut buf).await.map_err(|e| Error::io(self.describe(key), e))?;
                Ok(Bytes::from(buf))
            }
            Storage::S3(s) => s.get_prefix(key, len).await,
        }
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

#[cfg(test)]
mod tests;
