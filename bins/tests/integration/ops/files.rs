//! File-storage backups (runbook Procedure 3): a round trip on both backends keeps content
//! and modes and skips symlinks; a hostile archive is refused without writing outside the
//! target; prune keeps file backups for their retention.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::super::common::{Backend, TEST_KEY, TestRepo, shared_tempdir, stderr, walk};
use super::{json, time_from_now};

fn make_tree(dir: &Path) {
    let write = |rel: &str, data: &[u8], mode: u32| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    write("a.txt", b"hello", 0o640);
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    write("sub/b.bin", &big, 0o600);
    write("sub/deeper/empty", b"", 0o644);
    write("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o750);
    std::fs::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o750)).expect("chmod dir");
    std::os::unix::fs::symlink("a.txt", dir.join("link")).expect("symlink");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn restore(repo: &TestRepo, dir: &Path, extra: &[&str]) -> std::process::Output {
    let d = dir.display().to_string();
    let mut args = vec!["files-restore", "--kind", "uploads", "--json"];
    args.extend_from_slice(extra);
    args.push(&d);
    repo.run("walvault", &args)
}

fn round_trip(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let src = shared_tempdir();
    make_tree(src.path());
    let out = repo.run("walvault", &["files-backup", "--kind", "uploads", "--json", &src.path().display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipping") && stderr(&out).contains("link"), "symlink skipped: {}", stderr(&out));
    let first = json(&out);
    let first_name = first["name"].as_str().expect("name").to_string();
    assert!(first_name.starts_with("uploads_production_"), "{first_name}");
    assert_eq!(first["files"], 4);
    let ls = json(&repo.run("walvault", &["ls", "--json", "files/production/uploads/"]));
    let keys: Vec<&str> = ls.as_array().expect("ls").iter().map(|o| o["key"].as_str().expect("key")).collect();
    assert!(keys.contains(&"files/production/uploads/latest.json"), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with(&format!("{first_name}/archive.tar.zst.enc"))), "{keys:?}");

    let dst = shared_tempdir();
    let target = dst.path().join("restored");
    let out = restore(&repo, &target, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (rel, m) in
        [("a.txt", 0o640), ("sub/b.bin", 0o600), ("sub/deeper/empty", 0o644), ("bin/run.sh", 0o750), ("sub", 0o750)]
    {
        let (a, b) = (src.path().join(rel), target.join(rel));
        if a.is_file() {
            assert_eq!(std::fs::read(&a).expect("src"), std::fs::read(&b).expect("restored"), "{rel}");
        }
        assert_eq!(mode(&b), m, "mode of {rel}");
    }
    assert!(!target.join("link").exists(), "symlinks are not stored");

    let out = restore(&repo, &target, &[]);
    assert_eq!(out.status.code(), Some(5), "non-empty target: {}", stderr(&out));
    assert!(stderr(&out).contains("is not empty"));
    let out = restore(&repo, &dst.path().join("x"), &["--backup", "uploads_production_20000101_000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(src.path().join("a.txt"), b"changed").expect("change");
    let out = repo.run("walvault", &["files-backup", "--kind", "uploads", "--json", &src.path().display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = restore(&repo, &dst.path().join("latest"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dst.path().join("latest/a.txt")).expect("read"), b"changed");
    let out = restore(&repo, &dst.path().join("first"), &["--backup", &first_name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dst.path().join("first/a.txt")).expect("read"), b"hello");

    if let Some(root) = &repo.fs_root {
        // verify reads file backups too, and names a damaged archive.
        let second = json(&repo.run(
            "walvault",
            &["files-restore", "--kind", "uploads", "--json", &dst.path().join("v").display().to_string()],
        ));
        let check = |report: &serde_json::Value, name: &str| -> serde_json::Value {
            let checks = report["checks"].as_array().expect("checks");
            checks.iter().find(|c| c["name"] == format!("uploads backup {name}")).cloned().expect("file backup check")
        };
        let report = json(&repo.run("walvault", &["verify", "--json", "--no-report"]));
        assert_eq!(check(&report, &first_name)["status"], "passed", "{report:#}");
        let second_name = second["backup"].as_str().expect("name").to_string();
        let archive_key = format!("files/production/uploads/{second_name}/archive.tar.zst.enc");
        let saved = std::fs::read(root.join(&archive_key)).expect("archive");
        let mut flipped = saved.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        std::fs::write(root.join(&archive_key), flipped).expect("flip");
        let out = repo.run("walvault", &["verify", "--json", "--no-report"]);
        assert_eq!(out.status.code(), Some(8));
        let c = check(&json(&out), &second_name);
        assert_eq!((c["status"].as_str(), c["object"].as_str()), (Some("failed"), Some(archive_key.as_str())), "{c:#}");
        std::fs::write(root.join(&archive_key), saved).expect("put back");

        // 40 days old: past the 30-day retention; the newer one stays, as does latest.json.
        let meta_path = root.join(format!("files/production/uploads/{first_name}_metadata.json"));
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).expect("meta")).expect("json");
        meta["created"] = time_from_now("-40 days").into();
        std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("json")).expect("rewrite");
        let out = repo.run("walvault", &["prune", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let plan = json(&out);
        let fate: Vec<bool> = plan["files"].as_array().expect("files").iter().map(|d| d["keep"] == true).collect();
        assert_eq!(fate, [false, true]);
        assert!(!meta_path.exists());
        assert!(walk(&root.join("files/production/uploads").join(&first_name)).is_empty());
        assert!(root.join("files/production/uploads/latest.json").exists());
        let out = restore(&repo, &dst.path().join("after-prune"), &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn files_backup_and_restore_local_directory() {
    round_trip(Backend::Fs);
}

#[test]
fn files_backup_and_restore_s3() {
    round_trip(Backend::S3);
}

/// An archive with an entry outside the target is refused, naming it; nothing escapes and
/// the target is left empty.
#[test]
fn files_restore_refuses_a_hostile_archive() {
    use walvault::codec::{CodecSettings, Compression, Key, encode_to_vec};
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let src = shared_tempdir();
    make_tree(src.path());
    let out = repo.run("walvault", &["files-backup", "--kind", "config", "--json", &src.path().display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = repo.fs_root.clone().expect("fs").join(json(&out)["archive_key"].as_str().expect("key"));
    let key = Key::from_material(TEST_KEY.as_bytes(), "test").expect("key");
    let settings = CodecSettings { compression: Compression::Zstd, level: 1 };
    let dst = shared_tempdir();
    for hostile in ["../escaped-by-walvault-files", "/tmp/absolute-by-walvault-files", "sub/../../escaped2"] {
        let mut tar = super::super::pitr::raw_tar_entry(hostile, b"owned");
        tar.extend_from_slice(&[0u8; 1024]);
        let name = json(&out)["name"].as_str().expect("name").to_string();
        let place = super::super::binding::place_context(&repo, &format!("files/config/{name}/archive.tar"), false);
        std::fs::write(&archive, encode_to_vec(&tar, &settings, Some(&key), None, &place).expect("encode"))
            .expect("plant");
        let target = dst.path().join("target");
        let t = target.display().to_string();
        let out = repo.run("walvault", &["files-restore", "--kind", "config", &t]);
        assert_eq!(out.status.code(), Some(5), "{hostile}: {}", stderr(&out));
        assert!(stderr(&out).contains(hostile), "names the entry: {}", stderr(&out));
        assert!(walk(&target).is_empty(), "target left empty");
        assert!(!dst.path().join("escaped-by-walvault-files").exists());
        assert!(!Path::new("/tmp/absolute-by-walvault-files").exists());
    }
}
