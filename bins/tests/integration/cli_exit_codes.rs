//! Exit codes and one-line errors for bad settings and bad input.

use super::common::{Backend, TestRepo, bin, stderr};

#[test]
fn missing_repository_setting_is_named() {
    let out = std::process::Command::new(bin("wal-push"))
        .env_remove("WALVAULT_REPO")
        .env("WALVAULT_CONFIG", "/dev/null")
        .arg("pg_wal/000000010000000000000001")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "wal-push: error: setting WALVAULT_REPO: not set; expected s3://bucket/prefix or file:///absolute/path"
    );
    let out = std::process::Command::new(bin("wal-fetch"))
        .env_remove("WALVAULT_REPO")
        .env("WALVAULT_CONFIG", "/dev/null")
        .args(["000000010000000000000001", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(202), "wal-fetch config errors abort recovery: {}", stderr(&out));
}

#[test]
fn bad_arguments_and_names() {
    let repo = TestRepo::new(Backend::Fs, None);
    let out = repo.run("wal-fetch", &[]);
    assert_eq!(out.status.code(), Some(202), "wal-fetch usage errors abort recovery, never look like not-found");
    let out = repo.run("wal-fetch", &["not-a-wal-file", "x"]);
    assert_eq!(out.status.code(), Some(202), "{}", stderr(&out));
    let f = repo.dir().join("README");
    std::fs::write(&f, "x").expect("write");
    let out = repo.run("wal-push", &[f.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a wal file name"), "{}", stderr(&out));
    let out = repo.run("wal-push", &["/nonexistent/000000010000000000000001"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/000000010000000000000001"), "{}", stderr(&out));
    for b in ["wal-push", "wal-fetch", "walvault"] {
        let out = std::process::Command::new(bin(b)).arg("--version").output().expect("run");
        assert!(out.status.success());
        let out = std::process::Command::new(bin(b)).arg("--help").output().expect("run");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"), "{b} --help has examples");
    }
}

#[test]
fn bad_setting_values_are_named() {
    let repo = TestRepo::new(Backend::Fs, None);
    for (name, value) in
        [("WALVAULT_COMPRESSION", "lz4"), ("WALVAULT_REPO", "ftp://x"), ("BACKUP_ENCRYPTION_KEY", "  ")]
    {
        let out =
            repo.command("wal-push").env(name, value).arg("pg_wal/000000010000000000000001").output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("setting {name}")), "{name}: {}", stderr(&out));
    }
}
