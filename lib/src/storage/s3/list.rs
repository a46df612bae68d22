//! Listing: `ListObjectsV2` page after page, keys made relative to the repository prefix,
//! sorted as the storage contract asks.

use super::errors::Attempts;
use super::{S3Storage, to_chrono};
use crate::Result;
use crate::storage::{ListResult, ObjectMeta, Op, validate_prefix};

impl S3Storage {
    /// See [`crate::storage::Storage::list`]. One `ListObjectsV2` request per page.
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
}
