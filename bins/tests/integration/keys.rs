//! Keys and history files (issue #11, items 7 and 8): no key is a configuration error unless
//! `WALVAULT_ENCRYPTION=none` asks for unencrypted objects; empty or malformed key material is
//! refused naming the setting, never silently a passphrase; a new write key joins the
//! repository only through `walvault key add`; a `.history` file is parsed, and checked
//! against its name, before it is archived.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::common::{Backend, OTHER_KEY, TEST_KEY, TestRepo, stderr, walk};

const SEG: u32 = 1 << 20;
const SYSID: u64 = 7_300_000_000_000_000_011;

fn segment(dir: &Path, segno: u64) -> PathBuf {
    let magic = walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("magic");
    let wal = dir.join("pg_wal");
    std::fs::create_dir_all(&wal).expect("mkdir");
    let path = wal.join(walvault::wal::WalFileName::from_segno(1, segno, u64::from(SEG)).to_string());
    std::fs::write(&path, walvault::wal::synthetic_segment(SYSID, 1, segno, SEG, magic, segno as u8)).expect("write");
    path
}

fn name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).expect("name").to_string()
}

fn fingerprint(material: &str) -> String {
    walvault::codec::Key::from_material(material.as_bytes(), "test").expect("key").fingerprint_hex()
}

/// Files in the local repository.
fn stored(repo: &TestRepo) -> Vec<PathBuf> {
    repo.fs_root.as_deref().map(walk).unwrap_or_default()
}

/// Run `bin` without the repository's key, with `env` instead.
fn without_key(repo: &TestRepo, bin: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    repo.command(bin).env_remove("BACKUP_ENCRYPTION_KEY").envs(env.iter().copied()).args(args).output().expect("run")
}

#[test]
fn no_key_or_an_empty_key_is_a_configuration_error() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    let seg = segment(&work, 1);
    let seg_s = seg.to_str().expect("utf8");
    let empty = work.join("empty.key");
    std::fs::write(&empty, "\n").expect("write");
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let empty_s = empty.to_str().expect("utf8");
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[],
            "setting BACKUP_ENCRYPTION_KEY: not set: walvault encrypts every object; set BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE to a random key (openssl rand -base64 32), or WALVAULT_ENCRYPTION=none to store objects unencrypted",
        ),
        (&[("BACKUP_ENCRYPTION_KEY", "")], "setting BACKUP_ENCRYPTION_KEY: key material is empty"),
        (&[("BACKUP_ENCRYPTION_KEY", " \t ")], "setting BACKUP_ENCRYPTION_KEY: key material is empty"),
        (&[("WALVAULT_KEY_FILE", empty_s)], "setting WALVAULT_KEY_FILE: key material is empty"),
        (&[("WALVAULT_KEY_FILE", "")], "setting WALVAULT_KEY_FILE: is set but empty"),
        (
            &[("WALVAULT_ENCRYPTION", "none"), ("BACKUP_ENCRYPTION_KEY", TEST_KEY)],
            "setting WALVAULT_ENCRYPTION: is none but a key is configured",
        ),
    ];
    for (env, want) in cases {
        let out = without_key(&repo, "wal-push", env, &[seg_s]);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(&format!("wal-push: error: {want}")), "{env:?}: {err}");
        assert!(!err.contains(TEST_KEY), "{err}");
        let out = without_key(&repo, "wal-fetch", env, &[&name(&seg), work.join("out").to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(202), "wal-fetch aborts recovery: {env:?}: {}", stderr(&out));
    }
    assert!(stored(&repo).is_empty(), "nothing archived: {:?}", stored(&repo));

    // Unencrypted when asked for explicitly.
    let out = without_key(&repo, "wal-push", &[("WALVAULT_ENCRYPTION", "none")], &[seg_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = stored(&repo);
    assert!(objects.iter().any(|p| name(p).starts_with(&name(&seg)) && !name(p).ends_with(".enc")), "{objects:?}");
    let out = repo.run("walvault", &["get", "--raw", "walvault.json"]);
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(id["encrypted"], false);
}

#[test]
fn malformed_key_material_is_refused_and_never_registered() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let work = repo.dir().join("work");
    assert!(repo.run("wal-push", &[segment(&work, 1).to_str().expect("utf8")]).status.success());
    let identity = || repo.run("walvault", &["get", "--raw", "walvault.json"]).stdout;
    let before = identity();
    let seg2 = segment(&work, 2);
    let hex64 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let bad = [
        (format!("{hex64}0"), "key material is 65 hex digits, not 64"),
        (format!("\"{TEST_KEY}"), "key material contains a quote (\")"),
        (format!("{TEST_KEY}'"), "key material contains a quote (')"),
        (format!("{} {}", &hex64[..32], &hex64[32..]), "key material contains whitespace"),
        (TEST_KEY[..40].to_string(), "key material looks like base64 but is not the encoding of exactly 32 bytes"),
        ("correct horse battery staple".to_string(), "key material contains whitespace"),
        ("hunter2!".to_string(), "key material is neither hex nor base64"),
    ];
    for (material, why) in &bad {
        let out =
            without_key(&repo, "wal-push", &[("BACKUP_ENCRYPTION_KEY", material)], &[seg2.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(2), "{material:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with(&format!("wal-push: error: setting BACKUP_ENCRYPTION_KEY: {why}")), "{err}");
        assert!(err.contains("or passphrase:<text> for a passphrase"), "says what is allowed: {err}");
        assert!(!err.contains(material.as_str()) && !err.contains(TEST_KEY), "never prints the material: {err}");
        let out = repo
            .command("wal-fetch")
            .env("WALVAULT_READ_KEYS", material)
            .args([&name(&seg2), work.join("out").to_str().expect("utf8")])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(202), "{}", stderr(&out));
        assert!(stderr(&out).contains("setting WALVAULT_READ_KEYS: key material"), "{}", stderr(&out));
    }
    assert_eq!(identity(), before, "walvault.json untouched");
}

#[test]
fn a_new_write_key_joins_only_through_key_add() {
    for backend in [Backend::Fs, Backend::S3] {
        let repo = TestRepo::new(backend, Some(TEST_KEY));
        let work = repo.dir().join("work");
        assert!(repo.run("wal-push", &[segment(&work, 1).to_str().expect("utf8")]).status.success());
        let seg2 = segment(&work, 2);
        let (old_fp, new_fp) = (fingerprint(TEST_KEY), fingerprint(OTHER_KEY));
        let with_new = |bin: &str, args: &[&str]| {
            repo.command(bin)
                .env("BACKUP_ENCRYPTION_KEY", OTHER_KEY)
                .env("WALVAULT_READ_KEYS", TEST_KEY)
                .args(args)
                .output()
                .expect("run")
        };
        let out = with_new("wal-push", &[seg2.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(4), "{backend:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("walvault.json: write key {new_fp} is not registered in this repository (registered: {old_fp}); a new key joins only through `walvault key add`")),
            "{err}"
        );
        assert!(
            err.contains("HINT: if this is the new key of a rotation, register it once with `walvault key add`"),
            "{err}"
        );
        let dest = work.join("restored");
        let out = repo.run("wal-fetch", &[&name(&seg2), dest.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(1), "not archived: {}", stderr(&out));

        let out = with_new("walvault", &["key", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(list["keys"], serde_json::json!([{"fingerprint": old_fp, "configured": "read"}]));
        let out = with_new("walvault", &["key", "add"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("registered key {new_fp} in {}\n", repo.url));
        let out = with_new("walvault", &["key", "add"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("key {new_fp} is already registered in {}\n", repo.url)
        );
        let out = with_new("walvault", &["key", "list"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{old_fp}  read\n{new_fp}  write\n"));

        let out = with_new("wal-push", &[seg2.to_str().expect("utf8")]);
        assert!(out.status.success(), "{}", stderr(&out));
        for seg in [1, 2] {
            let seg_name = walvault::wal::WalFileName::from_segno(1, seg, u64::from(SEG)).to_string();
            let out = with_new("wal-fetch", &[&seg_name, dest.to_str().expect("utf8")]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        }
        // The old key stays registered: a writer not restarted yet keeps archiving.
        let out = repo.run("wal-push", &[segment(&work, 3).to_str().expect("utf8")]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn a_passphrase_is_declared_and_matches_the_undeclared_one_of_before() {
    // The same passphrase gives the same key as before the prefix was required, so a
    // repository written with one stays readable once the prefix is added.
    let repo = TestRepo::new(Backend::Fs, Some("passphrase:walvault test passphrase"));
    let work = repo.dir().join("work");
    let seg = segment(&work, 1);
    let out = repo.run("wal-push", &[seg.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = repo.run("walvault", &["key", "list"]);
    let want = include_str!("../../../testdata/codec/passphrase.fingerprint").trim();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{want}  write\n"), "{}", stderr(&out));
    let out = without_key(
        &repo,
        "wal-push",
        &[("BACKUP_ENCRYPTION_KEY", "walvault test passphrase")],
        &[seg.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(2), "undeclared: {}", stderr(&out));
}

#[test]
fn history_files_are_parsed_and_checked_against_their_name_before_archiving() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let wal = repo.dir().join("work/pg_wal");
    std::fs::create_dir_all(&wal).expect("mkdir");
    let cases: [(&str, &[u8], &str); 7] = [
        (
            "00000002.history",
            b"garbage\n",
            r#"syntax error in history file: "garbage": expected a numeric timeline id"#,
        ),
        ("00000002.history", b"1\t0/30000X0\tr\n", "syntax error in history file"),
        ("00000002.history", b"", "it lists no parent timeline, but timeline 2 has one"),
        ("00000002.history", b"# a comment only\n", "it lists no parent timeline, but timeline 2 has one"),
        (
            "00000002.history",
            b"2\t0/3000000\tself\n",
            "it lists timeline 2, but the history of timeline 2 lists only timelines below 2",
        ),
        (
            "00000003.history",
            b"1\t0/3000000\ta\n\n4\t0/5000000\tb\n",
            "it lists timeline 4, but the history of timeline 3 lists only timelines below 3",
        ),
        ("00000002.history", b"\xff\xfe1\t0/3000000\n", "not UTF-8 text"),
    ];
    for (file, content, why) in cases {
        let path = wal.join(file);
        std::fs::write(&path, content).expect("write");
        let out = repo.run("wal-push", &[path.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(2), "{file} {content:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with(&format!("wal-push: error: {file}: not a valid timeline history file: {why}")),
            "{err}"
        );
    }
    assert!(stored(&repo).iter().all(|p| !name(p).contains(".history")), "nothing archived");
    let good = [
        ("00000002.history", "1\t0/3000000\tno recovery target specified\n"),
        ("00000003.history", "1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tbefore 2024-01-15\n"),
        ("00000005.history", "1\t0/3000000\ta\n\n3\t0/4000000\tb\n"),
    ];
    for (file, content) in good {
        let path = wal.join(file);
        std::fs::write(&path, content).expect("write");
        let out = repo.run("wal-push", &[path.to_str().expect("utf8")]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
    }
}

/// The runbook's `scripts/key-fingerprint.sh` reads key material exactly as walvault does:
/// the same fingerprint for every form, and no fingerprint for what is not a key.
#[test]
fn key_fingerprint_script_agrees_with_walvault() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/key-fingerprint.sh");
    let run = |material: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new("bash")
            .arg(&script)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("key-fingerprint.sh");
        child.stdin.take().expect("stdin").write_all(material.as_bytes()).expect("write");
        child.wait_with_output().expect("wait")
    };
    let hex64 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    for material in [TEST_KEY, OTHER_KEY, hex64, "passphrase:walvault test passphrase", "passphrase: two words \n"] {
        let out = run(material);
        assert!(out.status.success(), "{material:?}: {}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fingerprint(material), "{material:?}");
    }
    for material in ["walvault test passphrase", &hex64[1..], "passphrase:", &TEST_KEY[..40], "passphrase:it's", "x\"y"]
    {
        let out = run(material);
        assert_eq!(out.status.code(), Some(2), "{material:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(out.stdout.is_empty(), "{material:?}");
    }
}
