//! S3 backend: the only files that know aws-sdk-s3 (this one and its submodules).
//!
//! One client per [`S3Storage`] (open the storage once per process), built in
//! [`super::s3_config`]: region never from instance metadata, credentials from the standard
//! chain, retries and timeouts from [`S3Options`].
//!
//! Here: the storage handle and its key naming. Beside it: `put` (PutObject, conditional
//! or not), `multipart` (large files in parts), `objects` (get, head, delete), `list`
//! (ListObjectsV2 pages) and `errors` (the error mapping and the attempt counter).
//!
//! Errors are mapped once, in `S3Storage::map_error` and the per-operation functions:
//! - `get`: `NoSuchKey` (or a 404 without an error code) => [`Error::NotFound`];
//! - `head`: 404 => `Ok(None)`;
//! - `put_if_absent`: 412 or 304 => [`Error::AlreadyExists`]; 409 `ConditionalRequestConflict`
//!   is retried (up to `max_attempts` sends);
//! - `delete`: 404 => `Ok(())`;
//! - 403, `NoSuchBucket`, invalid or expired credentials => [`Error::Storage`] permanent, with
//!   the service code and message;
//! - anything else, after the SDK's retries => [`Error::Storage`] permanent, reason
//!   `failed after N attempts: <cause>`.
//!
//! The SDK retries a request until its response headers arrive; a body that fails after that
//! (reset, early close, stall) is resumed by [`super::s3_resume`] with a ranged GET.
//!
//! [`Error::NotFound`]: crate::Error::NotFound
//! [`Error::AlreadyExists`]: crate::Error::AlreadyExists
//! [`Error::Storage`]: crate::Error::Storage

use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};

use super::s3_config;
use super::{Counters, RequestStats, S3Options};

mod errors;
mod list;
mod multipart;
mod objects;
mod put;

use crate::Result;
use errors::Attempts;
pub(super) use errors::error_chain;

fn nonzero(v: u64, default: u64) -> u64 {
    if v == 0 { default } else { v }
}

/// A repository in an S3 bucket under a key prefix.
#[derive(Debug, Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    prefix: String,
    sse: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    storage_class: Option<StorageClass>,
    max_attempts: u32,
    multipart_threshold: u64,
    multipart_part_size: u64,
    counters: Counters,
}

impl S3Storage {
    /// Build the client for `bucket`/`prefix`. No request is sent.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown SSE mode or storage class or a bad endpoint URL.
    ///
    /// [`Error::Config`]: crate::Error::Config
    pub async fn new(bucket: &str, prefix: &str, opts: &S3Options) -> Result<Self> {
        let (sse, kms_key_id) = s3_config::sse_settings(opts)?;
        let storage_class = s3_config::storage_class(opts.storage_class.as_deref())?;
        let max_attempts = opts.max_attempts.max(1);
        let client = s3_config::build_client(opts, max_attempts).await?;
        let prefix = prefix.trim_matches('/').to_string();
        Ok(S3Storage {
            inner: Arc::new(Inner {
                client,
                bucket: bucket.to_string(),
                prefix,
                sse,
                kms_key_id,
                storage_class,
                max_attempts,
                multipart_threshold: nonzero(opts.multipart_threshold, S3Options::DEFAULT_MULTIPART_THRESHOLD),
                multipart_part_size: nonzero(opts.multipart_part_size, S3Options::DEFAULT_MULTIPART_PART_SIZE)
                    .max(S3Options::MIN_MULTIPART_PART_SIZE),
                counters: Counters::default(),
            }),
        })
    }

    /// The underlying SDK client (for tests and tools that need a call the contract lacks).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// See [`super::Storage::stats`].
    pub fn stats(&self) -> RequestStats {
        self.inner.counters.snapshot()
    }

    /// See [`super::Storage::describe`].
    pub fn describe(&self, key: &str) -> String {
        format!("s3://{}/{}", self.inner.bucket, self.full_key(key))
    }

    /// `prefix/` or the empty string.
    fn root_prefix(&self) -> String {
        if self.inner.prefix.is_empty() { String::new() } else { format!("{}/", self.inner.prefix) }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.root_prefix())
    }
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}
