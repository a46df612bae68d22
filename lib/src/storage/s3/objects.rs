//! Reading and deleting one object: `get` (streamed, resumed mid-body by
//! [`crate::storage::s3_resume`]), the one GetObject behind it, `head` and `delete`, each
//! with its own reading of a 404.

use super::errors::{Attempts, status_and_code};
use super::{S3Storage, to_chrono};
use crate::storage::{ByteReader, ObjectMeta, Op, validate_key};
use crate::{Error, Result};

impl S3Storage {
    /// See [`crate::storage::Storage::get`]. The body is streamed; stalls are cut off by the SDK's
    /// stalled-stream protection, and a body that fails mid-way is resumed where it stopped
    /// (up to `max_attempts` requests for the body in all).
    pub async fn get(&self, key: &str) -> Result<ByteReader> {
        let out = self.get_object(key, None).await?;
        Ok(crate::storage::s3_resume::reader(self.clone(), key, out, self.inner.max_attempts))
    }

    /// See [`crate::storage::Storage::get_prefix`]: one ranged GetObject.
    pub async fn get_prefix(&self, key: &str, len: u64) -> Result<bytes::Bytes> {
        let out = self.get_range(key, &format!("bytes=0-{}", len.saturating_sub(1)), None).await?;
        match out.body.collect().await {
            Ok(body) => Ok(body.into_bytes()),
            Err(e) => Err(Error::Storage {
                op: "get",
                key: self.describe(key),
                reason: format!("reading the body: {e}"),
                permanent: false,
            }),
        }
    }

    /// One GetObject, whole or from `resume = (offset, etag)`, with the error mapping of `get`.
    pub(in crate::storage) async fn get_object(
        &self,
        key: &str,
        resume: Option<(u64, &str)>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        match resume {
            Some((offset, etag)) => self.get_range(key, &format!("bytes={offset}-"), Some(etag)).await,
            None => self.get_range(key, "", None).await,
        }
    }

    /// One GetObject of `range` (all of it when empty), only while the ETag is `if_match`.
    async fn get_range(
        &self,
        key: &str,
        range: &str,
        if_match: Option<&str>,
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
            .set_range((!range.is_empty()).then(|| range.to_string()))
            .set_if_match(if_match.map(str::to_string))
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
                if status == Some(416) && range.starts_with("bytes=0-") {
                    // Nothing from byte 0 on: the object is empty (S3 refuses any range of
                    // it). Its reader sees no bytes, as a whole GET gives.
                    return Ok(aws_sdk_s3::operation::get_object::GetObjectOutput::builder().build());
                }
                Err(self.map_error("get", key, &err, attempts.get()))
            }
        }
    }

    /// See [`crate::storage::Storage::head`].
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

    /// See [`crate::storage::Storage::delete`].
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
}
