//! [`S3Options`]: the S3 client's settings (region, endpoint, SSE, storage class, retries,
//! timeouts, multipart sizes) and their documented defaults. Typed from the environment by
//! `config`; the client is built from them in [`super::s3_config`].

use std::time::Duration;

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
