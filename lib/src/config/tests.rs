//! Unit tests of the typed settings; `raw` and `err` are shared with `keys`' tests.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::codec::compress::Compression;

/// Settings from `pairs`; without any key setting, unencrypted by explicit choice.
pub(super) fn raw(pairs: &[(&str, &str)]) -> RawSettings {
    let mut env: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    const KEYS: [&str; 5] = [
        "BACKUP_ENCRYPTION_KEY",
        "WALVAULT_KEY_FILE",
        "WALVAULT_READ_KEYS",
        "WALVAULT_READ_KEY_FILES",
        "WALVAULT_ENCRYPTION",
    ];
    if !KEYS.iter().any(|k| env.contains_key(*k)) {
        env.insert("WALVAULT_ENCRYPTION".into(), "none".into());
    }
    RawSettings::load_from(None, &Overrides::new(), |n| env.get(n).cloned()).expect("load")
}

pub(super) fn err(pairs: &[(&str, &str)]) -> String {
    match Config::from_raw(&raw(pairs)) {
        Ok(_) => panic!("expected an error for {pairs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_repo_names_the_setting() {
    assert_eq!(err(&[]), "setting WALVAULT_REPO: not set; expected s3://bucket/prefix or file:///absolute/path");
}

#[test]
fn bad_values_name_the_setting() {
    let repo = ("WALVAULT_REPO", "file:///tmp/r");
    assert!(err(&[repo, ("WALVAULT_COMPRESSION", "lz4")]).starts_with("setting WALVAULT_COMPRESSION:"));
    assert!(err(&[repo, ("WALVAULT_COMPRESSION_LEVEL", "x")]).starts_with("setting WALVAULT_COMPRESSION_LEVEL:"));
    assert!(err(&[repo, ("WALVAULT_COMPRESSION_LEVEL", "40")]).contains("1-19"));
    assert!(err(&[repo, ("WALVAULT_ENV", "../x")]).starts_with("setting WALVAULT_ENV:"));
    assert!(err(&[repo, ("WALVAULT_S3_SSE", "rot13")]).starts_with("setting WALVAULT_S3_SSE:"));
    assert!(err(&[repo, ("WALVAULT_S3_PATH_STYLE", "maybe")]).starts_with("setting WALVAULT_S3_PATH_STYLE:"));
    assert!(err(&[repo, ("WALVAULT_KEY_FILE", "/nonexistent/key")]).starts_with("setting WALVAULT_KEY_FILE:"));
    assert!(err(&[repo, ("WALVAULT_S3_ATTEMPT_TIMEOUT", "0")]).starts_with("setting WALVAULT_S3_ATTEMPT_TIMEOUT:"));
    assert!(err(&[repo, ("WALVAULT_S3_STALL_TIMEOUT", "2.5")]).starts_with("setting WALVAULT_S3_STALL_TIMEOUT:"));
}

#[test]
fn s3_timeouts_have_documented_defaults_and_can_be_set() {
    use crate::storage::S3Options;
    let cfg = Config::from_raw(&raw(&[("WALVAULT_REPO", "s3://bucket/p")])).expect("config");
    assert_eq!(cfg.s3.max_attempts, 5);
    assert_eq!(cfg.s3.connect_timeout, S3Options::DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(cfg.s3.attempt_timeout, Duration::from_secs(300));
    assert_eq!(cfg.s3.operation_timeout, Duration::from_secs(900));
    assert_eq!(cfg.s3.stall_timeout, Duration::from_secs(20));
    let cfg = Config::from_raw(&raw(&[
        ("WALVAULT_REPO", "s3://bucket/p"),
        ("WALVAULT_S3_MAX_ATTEMPTS", "3"),
        ("WALVAULT_S3_CONNECT_TIMEOUT", "2"),
        ("WALVAULT_S3_ATTEMPT_TIMEOUT", "7"),
        ("WALVAULT_S3_TIMEOUT", "30"),
        ("WALVAULT_S3_STALL_TIMEOUT", "3"),
    ]))
    .expect("config");
    assert_eq!(cfg.s3.max_attempts, 3);
    assert_eq!(cfg.s3.connect_timeout, Duration::from_secs(2));
    assert_eq!(cfg.s3.attempt_timeout, Duration::from_secs(7));
    assert_eq!(cfg.s3.operation_timeout, Duration::from_secs(30));
    assert_eq!(cfg.s3.stall_timeout, Duration::from_secs(3));
}

#[test]
fn defaults_and_cluster_from_prefix() {
    let cfg = Config::from_raw(&raw(&[("WALVAULT_REPO", "s3://bucket/mykadoo")])).expect("config");
    assert_eq!(cfg.env, "production");
    assert_eq!(cfg.cluster, "mykadoo");
    assert_eq!(cfg.codec.compression, Compression::Zstd);
    assert!(!cfg.keyring.is_encrypted());
    let cfg = Config::from_raw(&raw(&[("WALVAULT_REPO", "file:///tmp/r")])).expect("config");
    assert_eq!(cfg.cluster, "postgres");
}

#[test]
fn flags_override_env_override_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("walvault.conf");
    std::fs::write(
        &file,
        "# comment\nWALVAULT_ENV=fromfile\nexport WALVAULT_CLUSTER='c1'\nWALVAULT_REPO=\"file:///x\"\n",
    )
    .expect("write");
    let env = |n: &str| (n == "WALVAULT_ENV").then(|| "fromenv".to_string());
    let r = RawSettings::load_from(Some(&file), &Overrides::new(), env).expect("load");
    assert_eq!(r.get("WALVAULT_ENV"), Some("fromenv"));
    assert_eq!(r.get("WALVAULT_CLUSTER"), Some("c1"));
    assert_eq!(r.get("WALVAULT_REPO"), Some("file:///x"));
    let flags = Overrides::from([("WALVAULT_ENV".to_string(), "fromflag".to_string())]);
    let r = RawSettings::load_from(Some(&file), &flags, env).expect("load");
    assert_eq!(r.get("WALVAULT_ENV"), Some("fromflag"));
}

#[test]
fn config_file_typos_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("walvault.conf");
    std::fs::write(&file, "WALVAULT_REPOO=file:///x\n").expect("write");
    let e = RawSettings::load_from(Some(&file), &Overrides::new(), |_| None).expect_err("typo");
    assert!(e.to_string().ends_with(":1: unknown setting WALVAULT_REPOO"), "{e}");
}
