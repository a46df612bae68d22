//! SSE-KMS and S3 Object Lock against the S3 test server (docs/SECURITY.md): puts carry the
//! KMS settings, and on a bucket with Object Lock and a default retention every object
//! walvault writes is locked, replacing a mutable object keeps the locked version, and
//! deleting a locked version is refused.

use aws_sdk_s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
};
use bytes::Bytes;
use walvault::storage::{RepoLocation, S3Options, Storage};

fn endpoint() -> String {
    std::env::var("WALVAULT_TEST_S3_ENDPOINT")
        .expect("WALVAULT_TEST_S3_ENDPOINT is not set: run the tests through scripts/test.sh")
}

fn bucket(test: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("wv-{test}-{}-{nanos}", std::process::id())
}

async fn open(bucket: &str, opts: S3Options) -> (Storage, aws_sdk_s3::Client) {
    let options = S3Options {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint()),
        path_style: true,
        max_attempts: 3,
        ..opts
    };
    let s =
        Storage::open(&RepoLocation::parse(&format!("s3://{bucket}/pg")).expect("url"), &options).await.expect("open");
    let Storage::S3(s3) = &s else { unreachable!() };
    let client = s3.client().clone();
    (s, client)
}

#[tokio::test]
async fn sse_kms_settings_are_sent_with_every_put() {
    let b = bucket("kms");
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-walvault-test";
    let opts = S3Options { sse: Some("aws:kms".into()), kms_key_id: Some(key_id.into()), ..S3Options::defaults() };
    let (s, client) = open(&b, opts).await;
    client.create_bucket().bucket(&b).send().await.expect("create bucket");
    s.put_if_absent("wal/a", Bytes::from_static(b"a")).await.expect("put_if_absent");
    s.put("latest.json", Bytes::from_static(b"{}")).await.expect("put");
    for key in ["pg/wal/a", "pg/latest.json"] {
        let head = client.head_object().bucket(&b).key(key).send().await.expect("head");
        assert_eq!(head.server_side_encryption().map(|e| e.as_str()), Some("aws:kms"), "{key}");
        assert_eq!(head.ssekms_key_id(), Some(key_id), "{key}");
    }
}

#[tokio::test]
async fn object_lock_default_retention_locks_what_walvault_writes() {
    let b = bucket("lock");
    let (s, client) = open(&b, S3Options::defaults()).await;
    client.create_bucket().bucket(&b).object_lock_enabled_for_bucket(true).send().await.expect("create bucket");
    let rule = ObjectLockRule::builder()
        .default_retention(DefaultRetention::builder().mode(ObjectLockRetentionMode::Governance).days(1).build())
        .build();
    client
        .put_object_lock_configuration()
        .bucket(&b)
        .object_lock_configuration(
            ObjectLockConfiguration::builder().object_lock_enabled(ObjectLockEnabled::Enabled).rule(rule).build(),
        )
        .send()
        .await
        .expect("object lock configuration");

    // WAL objects are created once; latest.json is replaced.
    s.put_if_absent("wal/000000010000000000000001", Bytes::from_static(b"segment")).await.expect("put_if_absent");
    s.put("latest.json", Bytes::from_static(b"{\"backup\":\"one\"}")).await.expect("put");
    s.put("latest.json", Bytes::from_static(b"{\"backup\":\"two\"}")).await.expect("replace");
    assert_eq!(s.get_bytes("latest.json").await.expect("get"), Bytes::from_static(b"{\"backup\":\"two\"}"));

    for key in ["pg/wal/000000010000000000000001", "pg/latest.json"] {
        let head = client.head_object().bucket(&b).key(key).send().await.expect("head");
        assert_eq!(head.object_lock_mode().map(|m| m.as_str()), Some("GOVERNANCE"), "{key} is locked");
        assert!(head.object_lock_retain_until_date().is_some(), "{key} has a retention date");
    }
    let versions = client.list_object_versions().bucket(&b).prefix("pg/latest.json").send().await.expect("versions");
    let ids: Vec<String> = versions.versions().iter().filter_map(|v| v.version_id().map(str::to_string)).collect();
    assert_eq!(ids.len(), 2, "the replaced latest.json is kept as a locked version: {ids:?}");
    for id in &ids {
        let deleted = client.delete_object().bucket(&b).key("pg/latest.json").version_id(id).send().await;
        assert!(deleted.is_err(), "a locked version cannot be deleted");
    }
}
