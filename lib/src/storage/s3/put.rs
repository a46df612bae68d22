//! Writing objects: `put_if_absent` (a conditional PUT, `If-None-Match: *`, whose 409
//! conflicts are retried), `put` and `put_file` (one PutObject, or a multipart upload from the
//! threshold on), all through one [`S3Storage::send_put`].

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::S3Storage;
use super::errors::{Attempts, status_and_code};
use crate::storage::{Op, validate_key};
use crate::throttle::Throttle;
use crate::{Error, Result};

impl S3Storage {
    /// See [`crate::storage::Storage::put_if_absent`].
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

    /// See [`crate::storage::Storage::put`].
    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        validate_key(key)?;
        match self.send_put(key, body, false).await {
            Ok(()) => Ok(()),
            Err(PutFailure::Precondition) => Err(self.unexpected("put", key, "precondition failed")),
            Err(PutFailure::Conflict(e) | PutFailure::Other(e)) => Err(e),
        }
    }

    /// See [`crate::storage::Storage::put_file_limited`]: the body streams from disk, in parallel
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
}

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

/// Why a PutObject failed, as far as the callers care.
enum PutFailure {
    Precondition,
    Conflict(Error),
    Other(Error),
}
