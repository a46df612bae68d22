//! Multipart upload of a large file (AWS takes at most 5 GiB in one PUT and 10,000 parts in
//! one upload): parts streamed from disk at their offsets, a few at a time, each retried on
//! its own (the SDK's attempts, then whole rounds here) so a failure never sends the parts
//! already stored again; on a final failure the upload is aborted, leaving no hidden parts.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;
use futures_util::{StreamExt, TryStreamExt};

use super::{Attempts, S3Storage};
use crate::storage::Op;
use crate::throttle::Throttle;
use crate::{Error, Result};

/// Parts in flight at once.
const PARALLEL_PARTS: usize = 4;
/// Rounds of a part's upload (each with the SDK's own attempts) before the upload fails.
const PART_ROUNDS: u32 = 3;
/// Most parts S3 takes in one upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for `len` bytes: at least `configured`, large enough for [`MAX_PARTS`],
/// in whole MiB.
pub(super) fn part_size(len: u64, configured: u64) -> u64 {
    let needed = len.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    configured.max(needed).max(1)
}

impl S3Storage {
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        path: &std::path::Path,
        len: u64,
        limit: Option<&Throttle>,
    ) -> Result<()> {
        let inner = &self.inner;
        let full_key = self.full_key(key);
        let attempts = Attempts::default();
        inner.counters.count(Op::Put);
        let created = inner
            .client
            .create_multipart_upload()
            .bucket(&inner.bucket)
            .key(&full_key)
            .set_server_side_encryption(inner.sse.clone())
            .set_ssekms_key_id(inner.kms_key_id.clone())
            .set_storage_class(inner.storage_class.clone())
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await
            .map_err(|e| self.map_error("put", key, &e, attempts.get()))?;
        let upload_id = created
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| self.unexpected("put", key, "the server started a multipart upload without an upload id"))?;
        let size = part_size(len, inner.multipart_part_size);
        let count = len.div_ceil(size);
        tracing::debug!("uploading {} in {count} parts of {size} bytes", self.describe(key));
        let parts = futures_util::stream::iter(0..count)
            .map(|i| {
                let (offset, upload_id) = (i * size, upload_id.as_str());
                let part_len = size.min(len - offset);
                async move {
                    if let Some(t) = limit {
                        t.take(part_len).await;
                    }
                    self.upload_part(key, path, upload_id, i + 1, offset, part_len).await
                }
            })
            .buffer_unordered(PARALLEL_PARTS)
            .try_collect::<Vec<CompletedPart>>()
            .await;
        let result = match parts {
            Ok(mut parts) => {
                parts.sort_by_key(|p| p.part_number());
                self.complete(key, &upload_id, parts, len).await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let abort = inner.client.abort_multipart_upload().bucket(&inner.bucket).key(&full_key);
            if let Err(e) = abort.upload_id(&upload_id).send().await {
                tracing::warn!("cannot abort the multipart upload of {}: {e}", self.describe(key));
            }
        }
        result
    }

    async fn upload_part(
        &self,
        key: &str,
        path: &std::path::Path,
        upload_id: &str,
        number: u64,
        offset: u64,
        part_len: u64,
    ) -> Result<CompletedPart> {
        let inner = &self.inner;
        let part_number = i32::try_from(number).map_err(|_| self.unexpected("put", key, "too many parts"))?;
        let mut round = 0;
        loop {
            round += 1;
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(part_len))
                .build()
                .await
                .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
            inner.counters.count(Op::Put);
            let attempts = Attempts::default();
            let sent = inner
                .client
                .upload_part()
                .bucket(&inner.bucket)
                .key(self.full_key(key))
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(part_len as i64)
                .body(body)
                .customize()
                .interceptor(attempts.clone())
                .send()
                .await;
            match sent {
                Ok(out) => {
                    let etag = out.e_tag().map(str::to_string);
                    return Ok(CompletedPart::builder().set_e_tag(etag).part_number(part_number).build());
                }
                Err(e) if round < PART_ROUNDS => {
                    let why = self.map_error("put", key, &e, attempts.get());
                    tracing::warn!("part {number} of {}: {why}; sending it again", self.describe(key));
                }
                Err(e) => return Err(self.map_error("put", key, &e, attempts.get())),
            }
        }
    }

    async fn complete(&self, key: &str, upload_id: &str, parts: Vec<CompletedPart>, len: u64) -> Result<()> {
        let inner = &self.inner;
        inner.counters.count(Op::Put);
        let attempts = Attempts::default();
        let count = parts.len();
        let sent = inner
            .client
            .complete_multipart_upload()
            .bucket(&inner.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        let Err(e) = sent else {
            return Ok(());
        };
        // A 200 whose body the SDK cannot read (moto answers `CompleteMultipartUploadResponse`):
        // done if the object is there, whole, made of these parts.
        if e.raw_response().is_some_and(|r| r.status().as_u16() == 200) && self.is_whole(key, len, count).await {
            return Ok(());
        }
        Err(self.map_error("put", key, &e, attempts.get()))
    }

    /// `key` is `len` bytes long and its ETag is that of a `count`-part upload.
    async fn is_whole(&self, key: &str, len: u64, count: usize) -> bool {
        let inner = &self.inner;
        inner.counters.count(Op::Head);
        let head = inner.client.head_object().bucket(&inner.bucket).key(self.full_key(key)).send().await;
        head.is_ok_and(|h| {
            let suffix = format!("-{count}\"");
            h.content_length() == i64::try_from(len).ok() && h.e_tag().is_some_and(|t| t.ends_with(&suffix))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::part_size;

    #[test]
    fn parts_never_exceed_ten_thousand() {
        assert_eq!(part_size(100 << 20, 32 << 20), 32 << 20);
        let five_tib = 5u64 << 40;
        let size = part_size(five_tib, 32 << 20);
        assert!(five_tib.div_ceil(size) <= 10_000 && size.is_multiple_of(1 << 20), "{size}");
        assert_eq!(part_size(0, 5 << 20), 5 << 20);
    }
}
