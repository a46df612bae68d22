//! S3 backend: the only file that knows aws-sdk-s3.
//!
//! One client per [`S3Storage`] (open the storage once per process), built in
//! [`super::s3_config`]: region never from instance metadata, credentials from the standard
//! chain, retries and timeouts from [`S3Options`].
//!
//! Errors are mapped once, in [`map_error`] and the per-operation functions:
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;

use super::s3_config;
use super::{ByteReader, Counters, ListResult, ObjectMeta, Op, RequestStats, S3Options};
use super::{validate_key, validate_prefix};
use crate::throttle::Throttle;
use crate::{Error, Result};

mod multipart;

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

    /// See [`super::Storage::put_if_absent`].
    pub async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()> {
        validate_key(key)?;
        let mut conflicts = 0;
        loop {
            match self.send_put(key, body.clone(), true).await {
                Err(PutFailure::Precondition) => {
                    return Err(Error::AlreadyExists { key: key.to_string() });
                }
                // A concurrent conditional write is in flight: S3 asks for a retry.
                Err(PutFailure::Conflict(e)) => {
                    conflicts += 1;
                    if conflicts >= self.inner.max_attempts {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50 << conflicts.min(6))).await;
                }
                Err(PutFailure::Other(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// See [`super::Storage::put`].
    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        validate_key(key)?;
        match self.send_put(key, body, false).await {
            Ok(()) => Ok(()),
            Err(PutFailure::Precondition) => Err(self.unexpected("put", key, "precondition failed")),
            Err(PutFailure::Conflict(e) | PutFailure::Other(e)) => Err(e),
        }
    }

    /// See [`super::Storage::put_file_limited`]: the body streams from disk, in parallel
    /// parts from the multipart threshold on.
    pub async fn put_file(&self, key: &str, path: &std::path::Path, limit: Option<&Throttle>) -> Result<()> {
        validate_key(key)?;
        let len = tokio::fs::metadata(path).await.map_err(|e| Error::io(path, e))?.len();
        if len >= self.inner.multipart_threshold {
            return self.put_multipart(key, path, len, limit).await;
        }
        if let Some(t) = limit {
            t.take(len).await;
        }
        match self.send_put(key, PutBody::File(path.to_path_buf()), false).await {
            Ok(()) => Ok(()),
            Err(PutFailure::Precondition) => Err(self.unexpected("put", key, "precondition failed")),
            Err(PutFailure::Conflict(e) | PutFailure::Other(e)) => Err(e),
        }
    }

    async fn send_put(&self, key: &str, body: impl Into<PutBody>, if_absent: bool) -> Result<(), PutFailure> {
        let inner = &self.inner;
        let (length, stream) = match body.into() {
            PutBody::Bytes(b) => (b.len() as u64, ByteStream::from(b)),
            PutBody::File(path) => {
                let io = |e: std::io::Error| PutFailure::Other(Error::io(&path, e));
                let len = tokio::fs::metadata(&path).await.map_err(io)?.len();
                let stream = ByteStream::from_path(&path)
                    .await
                    .map_err(|e| PutFailure::Other(Error::io(&path, std::io::Error::other(e))))?;
                (len, stream)
            }
        };
        inner.counters.count(Op::Put);
        let attempts = Attempts::default();
        let mut req = inner
            .client
            .put_object()
            .bucket(&inner.bucket)
            .key(self.full_key(key))
            .content_length(length as i64)
            .body(stream)
            .set_server_side_encryption(inner.sse.clone())
            .set_ssekms_key_id(inner.kms_key_id.clone())
            .set_storage_class(inner.storage_class.clone());
        if if_absent {
            req = req.if_none_match("*");
        }
        let Err(err) = req.customize().interceptor(attempts.clone()).send().await else {
            return Ok(());
        };
        let (status, code) = status_and_code(&err);
        if if_absent && (matches!(status, Some(412 | 304)) || code.as_deref() == Some("PreconditionFailed")) {
            return Err(PutFailure::Precondition);
        }
        let mapped = self.map_error("put", key, &err, attempts.get());
        if status == Some(409) {
            return Err(PutFailure::Conflict(mapped));
        }
        Err(PutFailure::Other(mapped))
    }

    /// See [`super::Storage::get`]. The body is streamed; stalls are cut off by the SDK's
    /// stalled-stream protection, and a body that fails mid-way is resumed where it stopped
    /// (up to `max_attempts` requests for the body in all).
    pub async fn get(&self, key: &str) -> Result<ByteReader> {
        let out = self.get_object(key, None).await?;
        Ok(super::s3_resume::reader(self.clone(), key, out, self.inner.max_attempts))
    }

    /// One GetObject, whole or from `resume = (offset, etag)`, with the error mapping of `get`.
    pub(super) async fn get_object(
        &self,
        key: &str,
        resume: Option<(u64, &str)>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        validate_key(key)?;
        let inner = &self.inner;
        inner.counters.count(Op::Get);
        let attempts = Attempts::default();
        let result = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(self.full_key(key))
            .set_range(resume.map(|(offset, _)| format!("bytes={offset}-")))
            .set_if_match(resume.map(|(_, etag)| etag.to_string()))
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        match result {
            Ok(out) => Ok(out),
            Err(err) => {
                let (status, code) = status_and_code(&err);
                let missing_key = err.as_service_error().is_some_and(|e| e.is_no_such_key())
                    || (status == Some(404) && code.is_none());
                if missing_key {
                    return Err(Error::not_found(self.describe(key)));
                }
                Err(self.map_error("get", key, &err, attempts.get()))
            }
        }
    }

    /// See [`super::Storage::head`].
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        validate_key(key)?;
        let inner = &self.inner;
        inner.counters.count(Op::Head);
        let attempts = Attempts::default();
        let result = inner
            .client
            .head_object()
            .bucket(&inner.bucket)
            .key(self.full_key(key))
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: out.last_modified().and_then(to_chrono),
            })),
            Err(err) => {
                let (status, _) = status_and_code(&err);
                if status == Some(404) || err.as_service_error().is_some_and(|e| e.is_not_found()) {
                    return Ok(None);
                }
                Err(self.map_error("head", key, &err, attempts.get()))
            }
        }
    }

    /// See [`super::Storage::list`]. One `ListObjectsV2` request per page.
    pub async fn list(&self, prefix: &str, delimiter: Option<&str>, start_after: Option<&str>) -> Result<ListResult> {
        validate_prefix(prefix)?;
        let inner = &self.inner;
        let root = self.root_prefix();
        let full_prefix = format!("{root}{prefix}");
        let mut start_after = start_after.map(|s| format!("{root}{s}"));
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut out = ListResult::default();
        let mut token: Option<String> = None;
        loop {
            inner.counters.count(Op::List);
            let attempts = Attempts::default();
            let page = inner
                .client
                .list_objects_v2()
                .bucket(&inner.bucket)
                .prefix(&full_prefix)
                .set_delimiter(delimiter.map(str::to_string))
                .set_start_after(start_after.take())
                .set_continuation_token(token.take())
                .customize()
                .interceptor(attempts.clone())
                .send()
                .await
                .map_err(|err| self.map_error("list", prefix, &err, attempts.get()))?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&root)) else { continue };
                out.objects.push(ObjectMeta {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    last_modified: obj.last_modified().and_then(to_chrono),
                });
            }
            for p in page.common_prefixes() {
                if let Some(p) = p.prefix().and_then(|p| p.strip_prefix(&root)) {
                    out.prefixes.push(p.to_string());
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_string()),
                _ => break,
            }
        }
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        out.prefixes.sort();
        out.prefixes.dedup();
        Ok(out)
    }

    /// See [`super::Storage::delete`].
    pub async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let inner = &self.inner;
        inner.counters.count(Op::Delete);
        let attempts = Attempts::default();
        let result = inner
            .client
            .delete_object()
            .bucket(&inner.bucket)
            .key(self.full_key(key))
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                let (status, code) = status_and_code(&err);
                if status == Some(404) && code.as_deref() != Some("NoSuchBucket") {
                    return Ok(());
                }
                Err(self.map_error("delete", key, &err, attempts.get()))
            }
        }
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

    fn unexpected(&self, op: &'static str, key: &str, reason: &str) -> Error {
        Error::Storage { op, key: self.describe(key), reason: reason.to_string(), permanent: true }
    }

    /// The one mapping from a final SDK error to [`Error::Storage`].
    fn map_error<E>(&self, op: &'static str, key: &str, err: &SdkError<E, HttpResponse>, attempts: u32) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (status, code) = status_and_code(err);
        let reason = match err {
            SdkError::ServiceError(_) => service_reason(status, code.as_deref(), err.message()),
            _ => error_chain(err),
        };
        let access = status == Some(403) || code.as_deref().is_some_and(|c| ACCESS_CODES.contains(&c));
        let reason = if access {
            reason
        } else {
            let plural = if attempts == 1 { "" } else { "s" };
            format!("failed after {attempts} attempt{plural}: {reason}")
        };
        Error::Storage { op, key: self.describe(key), reason, permanent: true }
    }
}

/// Service error codes no retry fixes: access, credentials, a missing bucket.
const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidAccessKeyId",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "InvalidBucketName",
    "PermanentRedirect",
];

/// Why a PutObject failed, as far as the callers care.
/// What a PUT sends: bytes in memory or a file streamed from disk.
enum PutBody {
    Bytes(Bytes),
    File(std::path::PathBuf),
}

impl From<Bytes> for PutBody {
    fn from(b: Bytes) -> Self {
        PutBody::Bytes(b)
    }
}

enum PutFailure {
    Precondition,
    Conflict(Error),
    Other(Error),
}

/// HTTP status and service error code of an SDK error, where there was a response.
fn status_and_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> (Option<u16>, Option<String>) {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = match err {
        SdkError::ServiceError(e) => e.err().code().map(str::to_string),
        _ => None,
    };
    (status, code)
}

/// `Code: message (HTTP status)`, leaving out what the server did not send.
fn service_reason(status: Option<u16>, code: Option<&str>, message: Option<&str>) -> String {
    let mut reason = match (code, message) {
        (Some(c), Some(m)) if !m.is_empty() => format!("{c}: {m}"),
        (Some(c), _) => c.to_string(),
        (None, Some(m)) if !m.is_empty() => m.to_string(),
        _ => "service error".to_string(),
    };
    if let Some(s) = status {
        reason.push_str(&format!(" (HTTP {s})"));
    }
    reason
}

/// `error: source: source ...`, as `DisplayErrorContext` prints it but without the Debug dump
/// it appends (which repeats everything and can be long).
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    // Some causes (the credential chain's) span lines; messages are one line.
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ").replace(":; ", ": ")
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Counts the SDK's attempts of one operation, for error messages.
#[derive(Debug, Clone, Default)]
struct Attempts(Arc<AtomicU32>);

impl Attempts {
    fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Intercept for Attempts {
    fn name(&self) -> &'static str {
        "walvault-attempt-counter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
