//! Unit tests for the pure parts: locations, key rules, delimiter roll-up. The behaviour of
//! the backends is covered by `lib/tests/storage_conformance.rs`.

use std::time::Duration;

use super::*;

#[test]
fn parses_file_and_s3_locations() {
    let cases = [
        ("file:///var/lib/walvault", RepoLocation::Fs { root: "/var/lib/walvault".into() }),
        ("file:///var/lib/walvault/", RepoLocation::Fs { root: "/var/lib/walvault".into() }),
        ("s3://bucket", RepoLocation::S3 { bucket: "bucket".into(), prefix: String::new() }),
        ("s3://bucket/", RepoLocation::S3 { bucket: "bucket".into(), prefix: String::new() }),
        ("s3://my.bucket-1/a/b", RepoLocation::S3 { bucket: "my.bucket-1".into(), prefix: "a/b".into() }),
        ("s3://bucket/a/b/", RepoLocation::S3 { bucket: "bucket".into(), prefix: "a/b".into() }),
    ];
    for (url, expected) in cases {
        assert_eq!(RepoLocation::parse(url).expect(url), expected, "{url}");
    }
}

#[test]
fn location_displays_as_its_url() {
    for url in ["file:///var/lib/walvault", "s3://bucket", "s3://bucket/a/b"] {
        assert_eq!(RepoLocation::parse(url).expect(url).to_string(), url);
    }
}

#[test]
fn refuses_bad_locations_naming_the_setting() {
    for url in [
        "",
        "/var/lib/walvault",
        "file://relative/path",
        "file:relative",
        "s3://",
        "s3:///prefix",
        "s3://b",
        "s3://bad bucket/x",
        "s3://bucket/a/../b",
        "s3://bucket//a",
        "gs://bucket",
        "S3://bucket",
    ] {
        match RepoLocation::parse(url) {
            Err(Error::Config { setting, reason }) => {
                assert_eq!(setting, "WALVAULT_REPO");
                assert!(reason.contains("s3://bucket/prefix or file:///absolute/path"), "{reason}");
            }
            other => panic!("{url:?}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn accepts_ordinary_keys() {
    for key in [
        "walvault.json",
        "wal/prod/2024/01/15/000000010000000000000001.zst.enc",
        "database/prod/c_prod_20240115_103000/part-0001.tar.zst",
        ".hidden",
        "a/.b",
        "a/..b/c...",
        "spaces are fine/ünïcode",
    ] {
        validate_key(key).expect(key);
    }
}

#[test]
fn refuses_hostile_keys() {
    let long = "k".repeat(MAX_KEY_LEN + 1);
    for key in [
        "",
        "/abs",
        "..",
        ".",
        "../x",
        "a/../../x",
        "a/./b",
        "a/..",
        "a//b",
        "a/",
        "a\\b",
        "a\0b",
        "dir/.name.tmp.abcdefgh",
        long.as_str(),
    ] {
        match validate_key(key) {
            Err(Error::Invalid(message)) => assert!(message.starts_with("invalid object key")),
            other => panic!("{key:?}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn listing_prefixes() {
    for ok in ["", "wal/", "wal/prod", "wal/prod/2024/0", "a/..partial", "a/."] {
        validate_prefix(ok).expect(ok);
    }
    for bad in ["/", "/wal", "../", "a/../", "./a", "a//b", "a\\b", "\0"] {
        assert!(matches!(validate_prefix(bad), Err(Error::Invalid(_))), "{bad:?}");
    }
}

#[test]
fn temp_names() {
    assert!(is_temp_name(".000000010000000000000001.tmp.Ab12Cd34"));
    assert!(!is_temp_name("000000010000000000000001.tmp.Ab12Cd34"));
    assert!(!is_temp_name(".hidden"));
    assert!(!is_temp_name(".tmp.x"));
}

#[test]
fn rolls_up_like_s3() {
    assert_eq!(common_prefix("wal/prod/2024/x", "wal/", Some("/")), Some("wal/prod/"));
    assert_eq!(common_prefix("wal/prod", "wal/", Some("/")), None);
    assert_eq!(common_prefix("wal/prod/x", "wal/pr", Some("/")), Some("wal/prod/"));
    assert_eq!(common_prefix("a-b-c", "", Some("-")), Some("a-"));
    assert_eq!(common_prefix("a/b", "", Some("")), None);
    assert_eq!(common_prefix("a/b", "", None), None);
}

#[test]
fn documented_defaults() {
    let d = S3Options::defaults();
    assert_eq!(d.max_attempts, 5);
    assert_eq!(d.connect_timeout, Duration::from_secs(10));
    assert_eq!(d.attempt_timeout, Duration::from_secs(300));
    assert_eq!(d.operation_timeout, Duration::from_secs(900));
    assert!(d.region.is_none() && d.endpoint.is_none() && !d.path_style);
}
