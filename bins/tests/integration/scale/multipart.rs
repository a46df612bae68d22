//! Multipart uploads against the S3 test server with a lowered threshold: the parts counted
//! by the server (a multipart object's ETag ends in `-<parts>`), the content read back whole.

use std::path::Path;

use super::super::common::{Backend, TEST_KEY, TestRepo, shared_tempdir, stderr};
use super::super::pitr::{base_backup, prepare, primary, recover};
use super::super::raw::s3_request;

const LOWERED: [(&str, &str); 2] =
    [("WALVAULT_S3_MULTIPART_THRESHOLD", "8M"), ("WALVAULT_S3_MULTIPART_PART_SIZE", "5M")];

/// Bytes zstd cannot shrink (xorshift64).
fn noise(dir: &Path, name: &str, len: usize, mut state: u64) {
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(dir.join(name), data).expect("write");
}

/// The number of parts the server says `key` was uploaded in (1 for a single PUT).
fn parts_of(repo: &TestRepo, key: &str) -> u64 {
    let head = s3_request(repo, "HEAD", key, b"");
    assert!(head.starts_with("HTTP/1.1 200"), "HEAD {key}: {head}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: ").or_else(|| l.strip_prefix("etag: ")))
        .expect("ETag")
        .trim()
        .trim_matches('"')
        .to_string();
    etag.rsplit_once('-').map_or(1, |(_, n)| n.parse().expect("part count"))
}

fn files_round_trip(backend: Backend) -> (TestRepo, serde_json::Value) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let src = shared_tempdir();
    noise(src.path(), "a", 14 << 20, 0x9E37_79B9_7F4A_7C15);
    noise(src.path(), "b", 10 << 20, 0x2545_F491_4F6C_DD1D);
    let mut cmd = repo.command("walvault");
    cmd.envs(LOWERED).args(["files-backup", "--kind", "uploads", "--json"]).arg(src.path());
    let out = cmd.output().expect("files-backup");
    assert!(out.status.success(), "files-backup: {}", stderr(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let dst = shared_tempdir();
    let target = dst.path().join("restored");
    let out =
        repo.command("walvault").args(["files-restore", "--kind", "uploads"]).arg(&target).output().expect("restore");
    assert!(out.status.success(), "files-restore: {}", stderr(&out));
    for name in ["a", "b"] {
        let same = std::fs::read(src.path().join(name)).expect("src") == std::fs::read(target.join(name)).expect("dst");
        assert!(same, "{name} restored byte for byte");
    }
    (repo, meta)
}

/// 24 MiB of files stored as one archive of just over 24 MiB: with an 8 MiB threshold and
/// 5 MiB parts, 5 parts on S3; the local backend stores the same as one file.
#[test]
fn a_large_archive_goes_up_in_counted_parts_and_comes_back_whole() {
    let (repo, meta) = files_round_trip(Backend::S3);
    let stored = meta["stored_bytes"].as_u64().expect("stored");
    let key = meta["archive_key"].as_str().expect("archive_key");
    let expected = stored.div_ceil(5 << 20);
    assert!(expected >= 5, "{stored}");
    assert_eq!(parts_of(&repo, key), expected, "{stored} bytes in 5 MiB parts");
    let (manifest_parts, small) = (parts_of(&repo, meta["manifest_key"].as_str().expect("manifest")), 1);
    assert_eq!(manifest_parts, small, "a small object is one PUT");

    let (local, meta) = files_round_trip(Backend::Fs);
    let root = local.fs_root.clone().expect("root");
    let size = std::fs::metadata(root.join(meta["archive_key"].as_str().expect("key"))).expect("archive").len();
    assert_eq!(Some(size), meta["stored_bytes"].as_u64(), "the local backend stores one file as before");
}

/// A base backup whose parts are over the threshold (uncompressed, 64 MB parts): every part
/// goes up in parts, and a recovery from it has every row.
#[test]
fn a_base_backup_of_multipart_parts_restores_every_row() {
    let repo = TestRepo::new(Backend::S3, Some(TEST_KEY));
    let p = primary(&repo);
    p.pgbench(&["-i", "-s", "2", "-q"]);
    let expected = p.psql("SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts");
    let mut env_repo = repo;
    env_repo.env.extend(LOWERED.map(|(k, v)| (k.to_string(), v.to_string())));
    env_repo.env.push(("WALVAULT_COMPRESSION".into(), "none".into()));
    let out = base_backup(&env_repo, &p, &["--part-size", "64000000"]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let big: Vec<(&str, u64)> = meta["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| (p["key"].as_str().expect("key"), p["stored_bytes"].as_u64().expect("stored")))
        .filter(|(_, stored)| *stored >= 8 << 20)
        .collect();
    assert!(!big.is_empty(), "a part over the threshold: {meta}");
    for (key, stored) in &big {
        assert_eq!(parts_of(&env_repo, key), stored.div_ceil(5 << 20), "{key}: {stored} bytes");
    }
    p.switch_and_wait_archived(std::time::Duration::from_secs(60));
    let (mut r, out) = prepare(&env_repo, &["--immediate"]);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    recover(&mut r, false);
    let restored = r.psql("SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts");
    assert_eq!(restored, expected, "every row");
}

/// Part uploads cut after 1 MB up to twice in a row (as many as the client's 2 attempts): a
/// part cut past its attempts is sent again on its own, and the archive comes back whole.
#[test]
fn a_part_cut_off_past_the_retries_is_sent_again_alone() {
    use super::super::faults::proxy::{Dir, Fault, Plan, Proxy};
    let proxy = Proxy::start(&super::super::common::s3_endpoint(), Plan::clean());
    let mut repo = super::super::faults::repo_via(&proxy);
    repo.env.retain(|(k, _)| k != "WALVAULT_S3_MAX_ATTEMPTS");
    repo.env.push(("WALVAULT_S3_MAX_ATTEMPTS".into(), "2".into()));
    repo.env.extend(LOWERED.map(|(k, v)| (k.to_string(), v.to_string())));
    let src = shared_tempdir();
    noise(src.path(), "a", 22 << 20, 0x1234_5678_9ABC_DEF1);
    // Requests under 1 MB (the identity, manifest, metadata) pass; each 5 MiB part is cut.
    let cut = Fault::Reset { dir: Dir::Request, after: 1 << 20 };
    proxy.set_plan(Plan::one(5, 1.0, cut, &["PUT"]).transient(2));
    let out = repo.command("walvault").args(["files-backup", "--kind", "uploads", "--json"]).arg(src.path()).output();
    let out = out.expect("files-backup");
    let err = stderr(&out);
    assert!(out.status.success(), "files-backup: {err}");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let parts = meta["stored_bytes"].as_u64().expect("stored").div_ceil(5 << 20);
    let again = err.lines().filter(|l| l.contains("; sending it again")).count() as u64;
    assert!(again >= 1 && err.contains(" of s3://"), "parts cut past the client's attempts sent again: {err}");
    eprintln!("multipart under faults: {parts} parts, {again} sent again on their own; proxy {:?}", proxy.counts());
    proxy.set_plan(Plan::clean());
    assert_eq!(parts_of(&repo, meta["archive_key"].as_str().expect("key")), parts);
    let dst = shared_tempdir();
    let target = dst.path().join("restored");
    let out =
        repo.command("walvault").args(["files-restore", "--kind", "uploads"]).arg(&target).output().expect("restore");
    assert!(out.status.success(), "files-restore: {}", stderr(&out));
    assert!(std::fs::read(src.path().join("a")).expect("src") == std::fs::read(target.join("a")).expect("dst"));
}
