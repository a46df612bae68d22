//! Building the S3 client from [`S3Options`] (the S3 half of `storage::s3`).
//!
//! Start-up never waits on instance metadata for the region: the region comes from
//! [`S3Options`], `AWS_REGION` / `AWS_DEFAULT_REGION` or the profile, else `us-east-1`.
//! Credentials follow the standard chain (env, profile, web identity / IRSA, ECS, IMDS), which
//! stops at the first source that has them, so env credentials never touch IMDS. The HTTP
//! client is hyper + rustls with ring crypto (the SDK's lean features bring none of their own).
//! Retries are the SDK's standard mode with `max_attempts`; timeouts and the stalled-stream
//! grace period come from [`S3Options`].

use aws_config::BehaviorVersion;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, StalledStreamProtectionConfig};
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::S3Options;
use crate::{Error, Result};

/// Region used when no setting names one (instead of asking instance metadata).
pub const FALLBACK_REGION: &str = "us-east-1";

pub(super) async fn build_client(opts: &S3Options, max_attempts: u32) -> Result<Client> {
    let region = resolve_region(opts.region.as_deref()).await;
    let http_client =
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(opts.connect_timeout)
        .operation_timeout(opts.operation_timeout)
        .operation_attempt_timeout(opts.attempt_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .http_client(http_client)
        .timeout_config(timeouts)
        .stalled_stream_protection(StalledStreamProtectionConfig::enabled().grace_period(opts.stall_timeout).build())
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts));
    if let Some(endpoint) = opts.endpoint.as_deref().filter(|e| !e.is_empty()) {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::config("AWS_ENDPOINT_URL", format!("{endpoint:?} is not an http:// or https:// URL")));
        }
        loader = loader.endpoint_url(endpoint);
    }
    let sdk_config = loader.load().await;
    let config = aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(opts.path_style).build();
    Ok(Client::from_conf(config))
}

/// Options, then `AWS_REGION` / `AWS_DEFAULT_REGION`, then the profile, then us-east-1:
/// never the instance-metadata endpoint, which costs seconds off EC2.
async fn resolve_region(configured: Option<&str>) -> Region {
    if let Some(r) = configured.filter(|r| !r.is_empty()) {
        return Region::new(r.to_string());
    }
    let chain = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new());
    match chain.region().await {
        Some(region) => region,
        None => {
            tracing::debug!(
                "no region in the settings, AWS_REGION, AWS_DEFAULT_REGION or the AWS profile: using {FALLBACK_REGION}"
            );
            Region::from_static(FALLBACK_REGION)
        }
    }
}

pub(super) fn sse_settings(opts: &S3Options) -> Result<(Option<ServerSideEncryption>, Option<String>)> {
    let kms = opts.kms_key_id.clone().filter(|k| !k.is_empty());
    let sse = match opts.sse.as_deref().filter(|s| !s.is_empty()) {
        None if kms.is_some() => Some(ServerSideEncryption::AwsKms),
        None => None,
        Some("AES256") if kms.is_some() => {
            return Err(Error::config("WALVAULT_S3_KMS_KEY_ID", "needs WALVAULT_S3_SSE=aws:kms, not AES256"));
        }
        Some("AES256") => Some(ServerSideEncryption::Aes256),
        Some("aws:kms") => Some(ServerSideEncryption::AwsKms),
        Some("aws:kms:dsse") => Some(ServerSideEncryption::AwsKmsDsse),
        Some(other) => {
            return Err(Error::config(
                "WALVAULT_S3_SSE",
                format!("{other:?} is not one of AES256, aws:kms, aws:kms:dsse"),
            ));
        }
    };
    Ok((sse, kms))
}

pub(super) fn storage_class(configured: Option<&str>) -> Result<Option<StorageClass>> {
    let Some(name) = configured.filter(|s| !s.is_empty()) else { return Ok(None) };
    if !StorageClass::values().contains(&name) {
        return Err(Error::config(
            "WALVAULT_S3_STORAGE_CLASS",
            format!("{name:?} is not one of {}", StorageClass::values().join(", ")),
        ));
    }
    Ok(Some(StorageClass::from(name)))
}
