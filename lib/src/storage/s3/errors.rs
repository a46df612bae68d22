//! Error mapping and attempt counting: the one mapping from a final SDK error to
//! [`Error::Storage`] ([`S3Storage::map_error`]), the service codes no retry fixes, the
//! error text of a cause chain, and the interceptor that counts the SDK's attempts of one
//! operation for the messages. How each operation reads a 404 or a 412 is in its own file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::S3Storage;
use crate::Error;

impl S3Storage {
    pub(super) fn unexpected(&self, op: &'static str, key: &str, reason: &str) -> Error {
        Error::Storage { op, key: self.describe(key), reason: reason.to_string(), permanent: true }
    }

    /// The one mapping from a final SDK error to [`Error::Storage`].
    pub(super) fn map_error<E>(
        &self,
        op: &'static str,
        key: &str,
        err: &SdkError<E, HttpResponse>,
        attempts: u32,
    ) -> Error
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

/// HTTP status and service error code of an SDK error, where there was a response.
pub(super) fn status_and_code<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
) -> (Option<u16>, Option<String>) {
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
pub(in crate::storage) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
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

/// Counts the SDK's attempts of one operation, for error messages.
#[derive(Debug, Clone, Default)]
pub(super) struct Attempts(Arc<AtomicU32>);

impl Attempts {
    pub(super) fn get(&self) -> u32 {
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
