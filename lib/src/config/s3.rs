//! The S3 settings (`AWS_REGION`, `AWS_ENDPOINT_URL`, `WALVAULT_S3_*`) typed into
//! [`S3Options`], from its documented defaults.

use std::time::Duration;

use super::RawSettings;
use crate::storage::S3Options;
use crate::{Error, Result};

pub(super) fn s3_options(raw: &RawSettings) -> Result<S3Options> {
    let mut s3 = S3Options::defaults();
    s3.region = raw.get("AWS_REGION").map(str::to_string);
    s3.endpoint = raw.get("AWS_ENDPOINT_URL").map(str::to_string);
    s3.path_style = raw.flag("WALVAULT_S3_PATH_STYLE")?;
    s3.sse = match raw.get("WALVAULT_S3_SSE") {
        None => None,
        Some(v @ ("AES256" | "aws:kms")) => Some(v.to_string()),
        Some(v) => {
            return Err(Error::config("WALVAULT_S3_SSE", format!("{v:?} is not allowed; expected AES256 or aws:kms")));
        }
    };
    s3.kms_key_id = raw.get("WALVAULT_S3_KMS_KEY_ID").map(str::to_string);
    if s3.kms_key_id.is_some() && s3.sse.as_deref() != Some("aws:kms") {
        return Err(Error::config("WALVAULT_S3_KMS_KEY_ID", "needs WALVAULT_S3_SSE=aws:kms"));
    }
    s3.storage_class = raw.get("WALVAULT_S3_STORAGE_CLASS").map(str::to_string);
    if let Some(n) = raw.parse::<u32>("WALVAULT_S3_MAX_ATTEMPTS", "an integer from 1 to 20")? {
        if !(1..=20).contains(&n) {
            return Err(Error::config("WALVAULT_S3_MAX_ATTEMPTS", format!("{n} is not allowed; expected 1-20")));
        }
        s3.max_attempts = n;
    }
    let seconds = |name: &str, into: &mut Duration| -> Result<()> {
        match raw.parse::<u64>(name, "whole seconds from 1 to 86400, e.g. 60")? {
            Some(secs @ 1..=86_400) => *into = Duration::from_secs(secs),
            Some(secs) => return Err(Error::config(name, format!("{secs} is not allowed; expected 1-86400 seconds"))),
            None => {}
        }
        Ok(())
    };
    seconds("WALVAULT_S3_TIMEOUT", &mut s3.operation_timeout)?;
    seconds("WALVAULT_S3_ATTEMPT_TIMEOUT", &mut s3.attempt_timeout)?;
    seconds("WALVAULT_S3_CONNECT_TIMEOUT", &mut s3.connect_timeout)?;
    seconds("WALVAULT_S3_STALL_TIMEOUT", &mut s3.stall_timeout)?;
    let min_part = S3Options::MIN_MULTIPART_PART_SIZE;
    if let Some(v) = raw.get("WALVAULT_S3_MULTIPART_THRESHOLD") {
        s3.multipart_threshold = crate::throttle::parse_bytes("WALVAULT_S3_MULTIPART_THRESHOLD", v, min_part)?;
    }
    if let Some(v) = raw.get("WALVAULT_S3_MULTIPART_PART_SIZE") {
        s3.multipart_part_size = crate::throttle::parse_bytes("WALVAULT_S3_MULTIPART_PART_SIZE", v, min_part)?;
    }
    Ok(s3)
}
