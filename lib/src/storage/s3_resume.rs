//! Resuming S3 downloads. The SDK retries a GetObject until its response headers arrive;
//! after that the body is ours to read, and a connection reset, an early close or a stall
//! (cut off by the SDK's stalled-stream protection) would fail the whole read. Here such a
//! body is continued with a ranged GET from the first byte not yet delivered, pinned to the
//! object's ETag with `If-Match` so that bytes of two versions are never spliced together.
//! The object's own checks (AES-GCM tags, digest, length) still see every byte.

use std::io;
use std::time::Duration;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::ByteReader;
use super::s3::S3Storage;
use crate::Error;

/// One download in progress.
struct Download {
    storage: S3Storage,
    key: String,
    etag: Option<String>,
    /// Object length from the first response, when the server sent one.
    len: Option<u64>,
    /// Bytes delivered to the reader so far.
    offset: u64,
    /// Bytes of the current body to drop (a server that ignored the Range header).
    skip: u64,
    body: ByteStream,
    /// Requests for this body so far, the first GET included.
    requests: u32,
    max_requests: u32,
}

/// A reader of `out`'s body that resumes after mid-body failures, with at most
/// `max_requests` GETs in all.
pub(super) fn reader(storage: S3Storage, key: &str, out: GetObjectOutput, max_requests: u32) -> ByteReader {
    let download = Download {
        storage,
        key: key.to_string(),
        etag: out.e_tag().map(str::to_string),
        len: out.content_length().and_then(|l| u64::try_from(l).ok()),
        offset: 0,
        skip: 0,
        body: out.body,
        requests: 1,
        max_requests: max_requests.max(1),
    };
    let chunks = futures_util::stream::unfold(Some(download), |state| async move {
        let mut d = state?;
        match d.next_chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(d))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    Box::pin(tokio_util::io::StreamReader::new(chunks))
}

impl Download {
    /// The next non-empty chunk, `None` at the end of the object, resuming on failures.
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let failure = match self.body.next().await {
                Some(Ok(mut bytes)) => {
                    if self.skip > 0 {
                        let drop = self.skip.min(bytes.len() as u64);
                        self.skip -= drop;
                        bytes = bytes.slice(drop as usize..);
                    }
                    if bytes.is_empty() {
                        continue;
                    }
                    self.offset += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
                None => match self.len {
                    Some(len) if self.offset < len => format!("the body ended after {} of {len} bytes", self.offset),
                    _ => return Ok(None),
                },
                // Every byte arrived; only the end of the response went wrong.
                Some(Err(_)) if self.len.is_some_and(|len| self.offset >= len) => return Ok(None),
                Some(Err(e)) => super::s3::error_chain(&e),
            };
            self.resume(failure).await?;
        }
    }

    /// Open the rest of the object from `offset`, or fail for good once the requests are spent.
    async fn resume(&mut self, failure: String) -> io::Result<()> {
        let describe = self.storage.describe(&self.key);
        if self.requests >= self.max_requests || self.etag.is_none() {
            let plural = if self.requests == 1 { "" } else { "s" };
            return Err(io::Error::other(Error::Storage {
                op: "get",
                key: describe,
                reason: format!("reading the body failed after {} request{plural}: {failure}", self.requests),
                permanent: true,
            }));
        }
        tracing::debug!("{describe}: {failure}; resuming at byte {}", self.offset);
        tokio::time::sleep(Duration::from_millis(100u64 << self.requests.min(5))).await;
        self.requests += 1;
        let etag = self.etag.clone().unwrap_or_default();
        let out = self.storage.get_object(&self.key, Some((self.offset, &etag))).await.map_err(|e| {
            // The object was there a moment ago: gone now is a failure, never "not found"
            // (which wal-fetch would report as the end of the archive).
            let e = match e {
                Error::NotFound { .. } => Error::Storage {
                    op: "get",
                    key: describe.clone(),
                    reason: format!("the object disappeared after {} bytes were read", self.offset),
                    permanent: true,
                },
                other => other,
            };
            io::Error::other(e)
        })?;
        // A server that ignores Range sends the whole object again: drop what we have.
        let ranged = out.content_range().is_some_and(|r| r.starts_with(&format!("bytes {}-", self.offset)));
        self.skip = if ranged { 0 } else { self.offset };
        self.body = out.body;
        Ok(())
    }
}
