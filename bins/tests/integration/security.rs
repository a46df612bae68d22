//! Security review checks (issue #4): secrets never reach arguments, logs or error messages;
//! config files holding keys are expected to be private; a WAL object under another
//! segment's name is never restored as that segment.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::common::{Backend, TEST_KEY, TestRepo, stderr, walk};

const SEG: u32 = 1 << 20;
const SYSID: u64 = 7_300_000_000_000_000_005;

fn segment(dir: &Path, name_segno: u64, content_segno: u64) -> std::path::PathBuf {
    let magic = walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("magic");
    std::fs::create_dir_all(dir).expect("mkdir");
    let name = walvault::wal::WalFileName::from_segno(1, name_segno, u64::from(SEG)).to_string();
    let path = dir.join(name);
    let bytes = walvault::wal::synthetic_segment(SYSID, 1, content_segno, SEG, magic, 3);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).expect("name").to_string()
}

/// Object names are not authenticated: an object copied or renamed to another segment's
/// name decodes fine. wal-fetch checks the page address against the name and refuses it
/// (exit 204, no %p), where PostgreSQL would have read the wrong page address as the end of
/// WAL and promoted early. wal-push refuses a file whose header is another segment's.
#[test]
fn segment_under_another_name_is_refused() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let seven = segment(&work, 7, 7);
    let out = repo.run("wal-push", &[seven.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let root = repo.fs_root.clone().expect("fs");
    let object = walk(&root.join("wal")).into_iter().find(|p| name(p).starts_with(&name(&seven))).expect("object");
    let eight = walvault::wal::WalFileName::from_segno(1, 8, u64::from(SEG)).to_string();
    let renamed = object.with_file_name(name(&object).replace(&name(&seven), &eight));
    std::fs::copy(&object, &renamed).expect("copy");
    let dest = work.join("restored");
    let out = repo.run("wal-fetch", &[&eight, dest.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(204), "{}", stderr(&out));
    assert!(stderr(&out).contains("the object was renamed or copied"), "{}", stderr(&out));
    assert!(!dest.exists(), "nothing written at %p");
    std::fs::remove_file(&renamed).expect("rm");

    let misnamed = segment(&work.join("other"), 9, 10);
    let before = repo.raw_objects().len();
    let out = repo.run("wal-push", &[misnamed.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("the page header says this is the segment at 0/A00000"), "{}", stderr(&out));
    assert_eq!(repo.raw_objects().len(), before, "nothing archived");
}

/// Key material and AWS secrets appear in no message, at the debug log level, on success
/// and on the failures most likely to echo settings back.
#[test]
fn secrets_never_reach_logs_or_errors() {
    const SECRET: &str = "SeCrEtAccessKey-9c0f27a1-must-never-be-printed";
    const PASSPHRASE: &str = "passphrase-4b1d-must-never-be-printed-either";
    let repo = TestRepo::new(Backend::S3, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let seg = segment(&work, 3, 3);
    let seg_s = seg.to_str().expect("utf8");
    let dest = work.join("restored");
    let dest_s = dest.to_str().expect("utf8");
    let unreachable = "http://127.0.0.1:9";
    let seg_name = name(&seg);
    let pgdata = work.join("pgdata");
    let pgdata_s = pgdata.to_str().expect("utf8");
    let declared = format!("passphrase:{PASSPHRASE}");
    type Run<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let runs: Vec<Run> = vec![
        ("wal-push", vec![], vec![seg_s]),
        ("wal-fetch", vec![], vec![&seg_name, dest_s]),
        ("wal-fetch", vec![("BACKUP_ENCRYPTION_KEY", PASSPHRASE)], vec![&seg_name, dest_s]),
        ("wal-fetch", vec![("BACKUP_ENCRYPTION_KEY", &declared)], vec![&seg_name, dest_s]),
        ("wal-push", vec![("BACKUP_ENCRYPTION_KEY", &declared)], vec![seg_s]),
        ("wal-push", vec![("AWS_ENDPOINT_URL", unreachable), ("WALVAULT_S3_MAX_ATTEMPTS", "1")], vec![seg_s]),
        ("wal-fetch", vec![("WALVAULT_COMPRESSION_LEVEL", "99")], vec![&seg_name, dest_s]),
        ("walvault", vec![("BACKUP_ENCRYPTION_KEY", PASSPHRASE)], vec!["ls"]),
        ("pitr-prepare", vec![], vec!["--pgdata", pgdata_s, "--latest"]),
    ];
    for (bin, env, args) in runs {
        let out = repo
            .command(bin)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_SESSION_TOKEN", SECRET)
            .env("WALVAULT_LOG", "debug")
            .envs(env.iter().copied())
            .args(&args)
            .output()
            .expect("run");
        let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        for secret in [SECRET, PASSPHRASE, TEST_KEY] {
            assert!(!text.contains(secret), "{bin} {env:?} printed a secret:\n{text}");
        }
    }
}

/// A config file that holds key material and is readable by others draws a warning naming
/// the file (the README asks for mode 0600); a private one does not.
#[test]
fn config_file_with_a_key_readable_by_others_is_warned_about() {
    let mut repo = TestRepo::new(Backend::Fs, None);
    // The key comes from the config file only.
    repo.env.retain(|(k, _)| k != "WALVAULT_ENCRYPTION");
    let conf = repo.dir().join("walvault.conf");
    std::fs::write(&conf, format!("BACKUP_ENCRYPTION_KEY={TEST_KEY}\n")).expect("write");
    let seg = segment(&repo.dir().join("work"), 4, 4);
    let run = |mode: u32| {
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let out = repo.command("wal-push").arg("--config").arg(&conf).arg(&seg).output().expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let warned = run(0o644);
    assert!(warned.contains(&format!("{} is readable by group or others; chmod 600 it", conf.display())), "{warned}");
    assert!(!warned.contains(TEST_KEY), "{warned}");
    let quiet = run(0o600);
    assert!(!quiet.contains("readable by group or others"), "{quiet}");
}

/// A damaged copy already in the archive (here: truncated on disk) is never taken for an
/// identical duplicate: wal-push fails (exit 4, PostgreSQL keeps its file and retries), and
/// once the damaged object is removed the push stores a good copy.
#[test]
fn damaged_duplicate_is_not_accepted_as_identical() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let seg = segment(&repo.dir().join("work"), 12, 12);
    let seg_s = seg.to_str().expect("utf8");
    assert!(repo.run("wal-push", &[seg_s]).status.success());
    let root = repo.fs_root.clone().expect("fs");
    let object = walk(&root.join("wal")).into_iter().find(|p| name(p).starts_with(&name(&seg))).expect("object");
    let bytes = std::fs::read(&object).expect("read");
    std::fs::write(&object, &bytes[..bytes.len() / 2]).expect("truncate");
    let out = repo.run("wal-push", &[seg_s]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("the archived copy of"), "{}", stderr(&out));
    std::fs::remove_file(&object).expect("rm");
    let out = repo.run("wal-push", &[seg_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = repo.dir().join("restored");
    let out = repo.run("wal-fetch", &[&name(&seg), dest.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).expect("read"), std::fs::read(&seg).expect("read"));
}
