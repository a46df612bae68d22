//! Issue 11 point 5 on real PostgreSQL, on the local directory and on S3: a backup's
//! `*_metadata.json` edited in the repository (a part dropped, `parts=[]`, an index out of
//! range, a part repeated, a number changed, the MAC removed or downgraded, an unknown field)
//! is refused with exit 4 and one line naming the backup and the field, before anything is
//! written to the target directory; the untouched backup still restores every row.

use std::time::Duration;

use serde_json::{Value, json};

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, stderr};
use super::pitr::{base_backup, prepare, primary, recover};
use super::raw::{get_raw, put_raw};

/// A change to metadata JSON.
type Edit = Box<dyn Fn(&mut Value)>;

fn rows(c: &Cluster) -> i64 {
    c.psql("SELECT count(*) FROM t").parse().expect("count")
}

fn dir_is_empty(p: &std::path::Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// A primary with 1,500 rows archived, a backup (several parts) taken after the first 1,000;
/// the primary is stopped. Returns the backup's name and metadata key.
fn backed_up(repo: &TestRepo) -> (String, String) {
    let mut p = primary(repo);
    p.psql("CREATE TABLE t(n int, pad text)");
    p.psql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 1000) g");
    let out = base_backup(repo, &p, &["--part-size", "2000000"]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert!(summary["parts"].as_array().map_or(0, Vec::len) >= 3, "several parts: {summary}");
    p.psql("INSERT INTO t SELECT g, 'y' FROM generate_series(1001, 1500) g");
    p.switch_and_wait_archived(Duration::from_secs(120));
    p.stop();
    let name = summary["name"].as_str().expect("name").to_string();
    (name.clone(), format!("database/production/{name}_metadata.json"))
}

/// `edit` applied to the metadata: pitr-prepare exits 4 naming the backup and `field`, and
/// the target directory is never created.
fn refused(repo: &TestRepo, name: &str, key: &str, original: &Value, edit: &dyn Fn(&mut Value), field: &str) {
    let mut v = original.clone();
    edit(&mut v);
    put_raw(repo, key, &serde_json::to_vec_pretty(&v).expect("json"));
    let (c, out) = prepare(repo, &["--backup", name, "--latest"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{field}: {err}");
    let line = err.lines().find(|l| l.starts_with("pitr-prepare: error: ")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&format!("backup {name}: {field}")), "{field}: {line}");
    assert!(!c.pgdata.exists() || dir_is_empty(&c.pgdata), "{field}: PGDATA written");
    assert!(!err.contains("panicked"), "{err}");
}

fn parts_mut(v: &mut Value) -> &mut Vec<Value> {
    v["parts"].as_array_mut().expect("parts")
}

fn scenarios(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let (name, key) = backed_up(&repo);
    let bytes = get_raw(&repo, &key);
    let original: Value = serde_json::from_slice(&bytes).expect("metadata is plain JSON");
    assert_eq!(original["format"], json!(2));
    assert_eq!(original["mac"].as_str().map(str::len), Some(64), "{original}");

    let cases: Vec<(&str, Edit)> = vec![
        ("parts[1].index: part 2 at position 1", Box::new(|v| drop(parts_mut(v).remove(1)))),
        ("parts: is empty", Box::new(|v| v["parts"] = json!([]))),
        ("parts[1].index: part 99", Box::new(|v| v["parts"][1]["index"] = json!(99))),
        (
            "parts[1].index: part 0",
            Box::new(|v| {
                let first = v["parts"][0].clone();
                parts_mut(v)[1] = first;
            }),
        ),
        ("mac: does not match", Box::new(|v| v["stop_lsn"] = v["start_lsn"].clone())),
        ("mac: does not match", Box::new(|v| v["tablespaces"] = json!([{"oid": 1, "name": "x", "location": "/tmp"}]))),
        ("mac: missing", Box::new(|v| drop(v.as_object_mut().map(|o| o.remove("mac"))))),
        (
            "mac: missing, but the manifest shows",
            Box::new(|v| {
                v["format"] = json!(1);
                v.as_object_mut().map(|o| o.remove("mac"));
            }),
        ),
    ];
    for (field, edit) in &cases {
        refused(&repo, &name, &key, &original, edit.as_ref(), field);
    }
    // The last part dropped and the sums made to add up: only the manifest can tell.
    let drop_last = |v: &mut Value| {
        let last = parts_mut(v).pop().expect("a part");
        for f in ["bytes", "stored_bytes"] {
            v[f] = json!(v[f].as_u64().expect("n") - last[f].as_u64().expect("n"));
        }
        v["format"] = json!(1);
        v.as_object_mut().map(|o| o.remove("mac"));
    };
    refused(&repo, &name, &key, &original, &drop_last, "parts: ");

    // Unknown fields are refused by every reader, listing included.
    let mut v = original.clone();
    v["restore_from"] = json!("elsewhere");
    put_raw(&repo, &key, &serde_json::to_vec(&v).expect("json"));
    let out = repo.run("walvault", &["list"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown field `restore_from`"), "{}", stderr(&out));

    // The untouched backup restores every row.
    put_raw(&repo, &key, &bytes);
    let (mut c, out) = prepare(&repo, &["--backup", &name, "--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    recover(&mut c, false);
    assert_eq!(rows(&c), 1500, "{}", c.log());
    c.stop();
}

#[test]
fn tampered_metadata_is_refused_before_pgdata_local_directory() {
    scenarios(Backend::Fs);
}

#[test]
fn tampered_metadata_is_refused_before_pgdata_s3() {
    scenarios(Backend::S3);
}

/// Without a key there is no MAC: the manifest (not authenticated either, but written by
/// base-backup beside the parts) still refuses metadata that disagrees with it.
#[test]
fn unencrypted_repository_cross_checks_the_manifest() {
    let repo = TestRepo::new(Backend::Fs, None);
    let (name, key) = backed_up(&repo);
    let bytes = get_raw(&repo, &key);
    let original: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(original.get("mac").is_none(), "no key, no mac: {original}");
    let earlier = |v: &mut Value| v["stop_lsn"] = v["start_lsn"].clone();
    refused(&repo, &name, &key, &original, &earlier, "stop_lsn: ");
    refused(&repo, &name, &key, &original, &|v| drop(parts_mut(v).remove(0)), "parts[0].index: part 1");
    put_raw(&repo, &key, &bytes);
    let (mut c, out) = prepare(&repo, &["--backup", &name, "--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    recover(&mut c, false);
    assert_eq!(rows(&c), 1500, "{}", c.log());
    c.stop();
}

/// Edit backup `name`'s metadata as if base-backup had written it so: the MAC and the
/// manifest's binding made again with `key` (tests that age backups through their metadata).
pub(super) fn rewrite_sealed(repo: &TestRepo, name: &str, key: Option<&str>, edit: &dyn Fn(&mut Value)) {
    rewrite(repo, name, key, edit, false);
}

/// Edit backup `name`'s metadata and manifest into those of a backup written before format 2
/// (no `mac`, no binding in the manifest), re-encrypting the manifest with `key`. With `legacy`
/// false, seal them again as base-backup does.
fn rewrite(repo: &TestRepo, name: &str, key: Option<&str>, edit: &dyn Fn(&mut Value), legacy: bool) {
    use walvault::codec::{CodecSettings, Compression, Key, Keyring, decode_to, encode_to_vec};
    use walvault::manifest::Manifest;
    use walvault::ops::repo::catalog::BackupMetadata;
    let key = key.map(|k| Key::from_material(k.as_bytes(), "test").expect("key"));
    let ring = match &key {
        Some(k) => Keyring::new(Some(k.clone()), vec![]),
        None => Keyring::unencrypted(),
    };
    let meta_key = format!("database/production/{name}_metadata.json");
    let mut v: Value = serde_json::from_slice(&get_raw(repo, &meta_key)).expect("metadata");
    if legacy {
        v["format"] = json!(1);
        v.as_object_mut().map(|o| o.remove("mac"));
    }
    edit(&mut v);
    let mut meta: BackupMetadata = serde_json::from_value(v).expect("edited metadata");
    let stored = get_raw(repo, &meta.manifest_key);
    let mut plain = Vec::new();
    let (header, _) = decode_to(stored.as_slice(), &ring, "manifest", None, key.is_none(), &mut plain, "memory")
        .expect("decode manifest");
    // Re-sealed in the place it was bound to.
    let context = header.context.as_deref().and_then(walvault::codec::Context::parse).expect("a format-2 manifest");
    let mut manifest: Manifest = serde_json::from_slice(&plain).expect("manifest");
    if legacy {
        manifest.backup = None;
    } else {
        walvault::ops::repo::metadata_auth::seal(&mut meta, &mut manifest, &ring).expect("seal");
    }
    let settings = CodecSettings { compression: Compression::Zstd, level: 1 };
    let json = serde_json::to_vec(&manifest).expect("json");
    put_raw(repo, &meta.manifest_key, &encode_to_vec(&json, &settings, key.as_ref(), None, &context).expect("encode"));
    put_raw(repo, &meta_key, &serde_json::to_vec_pretty(&meta).expect("json"));
}

/// A backup written before format 2 (no MAC, a manifest without binding) still restores, with
/// a warning; its parts are still checked against the manifest before PGDATA is touched.
fn legacy(backend: Backend) {
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let (name, key) = backed_up(&repo);
    rewrite(&repo, &name, Some(TEST_KEY), &|_| {}, true);
    let legacy: Value = serde_json::from_slice(&get_raw(&repo, &key)).expect("json");
    let drop_last = |v: &mut Value| {
        let last = parts_mut(v).pop().expect("a part");
        for f in ["bytes", "stored_bytes"] {
            v[f] = json!(v[f].as_u64().expect("n") - last[f].as_u64().expect("n"));
        }
    };
    refused(&repo, &name, &key, &legacy, &drop_last, "parts: the manifest lists");
    let fewer_files = |v: &mut Value| v["parts"][0]["files"] = json!(v["parts"][0]["files"].as_u64().expect("n") - 1);
    refused(&repo, &name, &key, &legacy, &fewer_files, "parts[0]: ");
    refused(&repo, &name, &key, &legacy, &|v| v["parts"] = json!([]), "parts: is empty");

    put_raw(&repo, &key, &serde_json::to_vec_pretty(&legacy).expect("json"));
    let (mut c, out) = prepare(&repo, &["--backup", &name, "--latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("metadata of format 1 has no mac"), "warned: {}", stderr(&out));
    recover(&mut c, false);
    assert_eq!(rows(&c), 1500, "{}", c.log());
    c.stop();
}

#[test]
fn legacy_metadata_restores_after_the_manifest_agrees_local_directory() {
    legacy(Backend::Fs);
}

#[test]
fn legacy_metadata_restores_after_the_manifest_agrees_s3() {
    legacy(Backend::S3);
}

/// The Python program of `docs/FORMAT.md` section 7.8 accepts the vector of
/// `testdata/metadata/` and refuses it with one number changed: docs and code agree.
#[test]
fn python_checker_agrees_with_the_vector() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/FORMAT.md")).expect("FORMAT.md");
    let section = &doc[doc.find("### 7.8").expect("section 7.8")..];
    let start = section.find("```python\n").expect("python block") + "```python\n".len();
    let program = &section[start..start + section[start..].find("```").expect("end of block")];
    let dir = super::common::shared_tempdir();
    let (script, key) = (dir.path().join("check_metadata.py"), dir.path().join("key"));
    std::fs::write(&script, program).expect("write program");
    std::fs::write(&key, format!("{}\n", "07".repeat(32))).expect("write key");
    let vector = std::fs::read_to_string(root.join("testdata/metadata/v2-metadata.json")).expect("vector");
    let run = |input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (with python3-cryptography) is needed");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        child.wait_with_output().expect("python3")
    };
    let out = run(&vector);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mac ok");
    let out = run(&vector.replace("\"timeline\": 1", "\"timeline\": 2"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
