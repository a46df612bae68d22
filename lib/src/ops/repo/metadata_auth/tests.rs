//! Metadata authentication: every scenario of issue 11 point 5, the legacy rule, and a
//! mutation test over the JSON text ("refused or identical", never a panic).

use chrono::DateTime;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::codec::crypt::Key;
use crate::manifest::{ManifestEntry, ManifestTablespace};
use crate::ops::repo::metadata::{PartInfo, test_backup};

const NAME: &str = "main_test_20240115_100000";

/// A change to metadata JSON.
type Edit = Box<dyn Fn(&mut Value)>;

fn layout() -> Layout {
    Layout::new("test")
}

fn key() -> Key {
    Key::from_bytes([7u8; 32])
}

fn keyed() -> Keyring {
    Keyring::new(Some(key()), vec![])
}

fn entry(path: &str, part: u32, size: u64, kind: EntryKind) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        size,
        digest: crate::manifest::FileDigest::Blake3("ab".repeat(32)),
        mode: 0o600,
        part,
        kind,
        link_target: None,
    }
}

/// A three-part backup (two data parts and the label part), its manifest, both unsealed.
fn fixture(encrypted: bool) -> (BackupMetadata, Manifest) {
    let files = vec![
        entry("base", 0, 0, EntryKind::Dir),
        entry("base/1/1259", 0, 8192, EntryKind::File),
        entry("PG_VERSION", 0, 3, EntryKind::File),
        entry("base/1/2608", 1, 16384, EntryKind::File),
        entry("backup_label", 2, 200, EntryKind::File),
    ];
    let ts = vec![ManifestTablespace { oid: 16384, name: "ts".into(), location: "/srv/ts".into() }];
    let ext = if encrypted { ".zst.enc" } else { ".zst" };
    let part = |index: u32, files: u64, bytes: u64| PartInfo {
        index,
        key: layout().backup_object(NAME, &format!("part_{index:05}.tar{ext}")),
        files,
        bytes,
        stored_bytes: bytes / 2,
    };
    let parts = vec![part(0, 2, 8195), part(1, 1, 16384), part(2, 1, 200)];
    let at = |s: i64| DateTime::from_timestamp(1_705_312_800 + s, 123_456_789).unwrap_or_default();
    let meta = BackupMetadata {
        format: LEGACY_FORMAT,
        stop_time: at(2),
        // Format 1 counted every entry; format 2 counts regular files (set in `sealed`).
        files: files.len() as u64,
        bytes: parts.iter().map(|p| p.bytes).sum(),
        stored_bytes: parts.iter().map(|p| p.stored_bytes).sum(),
        parts,
        manifest_key: layout().backup_object(NAME, &format!("manifest.json{ext}")),
        encrypted,
        key_fingerprint: encrypted.then(|| key().fingerprint_hex()),
        tablespaces: ts.clone(),
        seconds: 2.5,
        ..test_backup(NAME, "test", at(0))
    };
    (meta, Manifest::new(files, ts))
}

fn sealed(keyring: &Keyring) -> (BackupMetadata, Manifest) {
    let (mut meta, mut manifest) = fixture(keyring.is_encrypted());
    meta.files = manifest.files.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
    seal(&mut meta, &mut manifest, keyring).expect("seal");
    (meta, manifest)
}

fn object() -> String {
    format!("file:///r/{}", layout().backup_metadata_key(NAME))
}

/// Everything a restore does with metadata before it writes: parse, check, cross-check.
fn accept(json: &[u8], manifest: &Manifest, keyring: &Keyring) -> Result<BackupMetadata> {
    let meta: BackupMetadata = serde_json::from_slice(json).map_err(|e| Error::corrupt(object(), e))?;
    check(&meta, &layout().backup_metadata_key(NAME), &object(), &layout(), keyring)?;
    cross_check(&meta, manifest, &object(), keyring)?;
    Ok(meta)
}

fn refusal(value: &Value, manifest: &Manifest, keyring: &Keyring) -> String {
    let bytes = serde_json::to_vec(value).expect("json");
    match accept(&bytes, manifest, keyring) {
        Err(e @ Error::Corrupt { .. }) => e.to_string(),
        other => panic!("not refused as corrupt: {other:?}"),
    }
}

#[test]
fn a_sealed_backup_is_accepted_and_its_mac_is_derived_not_the_key() {
    let ring = keyed();
    let (meta, manifest) = sealed(&ring);
    assert_eq!(meta.format, METADATA_FORMAT);
    let mac = meta.mac.clone().expect("mac");
    assert_eq!(mac.len(), 64);
    let raw = hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]), &canonical(&meta)).as_ref());
    assert_ne!(mac, raw, "the MAC key is derived, never the master key");
    let json = serde_json::to_vec_pretty(&meta).expect("json");
    assert_eq!(accept(&json, &manifest, &ring).expect("accepted"), meta);
    let binding = manifest.backup.clone().expect("binding");
    assert_eq!((binding.name.as_str(), binding.parts), (NAME, 3));
    // Unencrypted: no MAC, the manifest binding alone.
    let none = Keyring::unencrypted();
    let (plain, manifest) = sealed(&none);
    assert!(plain.mac.is_none());
    let json = serde_json::to_vec(&plain).expect("json");
    assert_eq!(accept(&json, &manifest, &none).expect("accepted"), plain);
}

#[test]
fn canonical_form_is_fixed() {
    let (meta, _) = fixture(true);
    let c = canonical(&meta);
    assert!(c.starts_with(b"walvault/v1/backup-metadata\0format\0\0\0\0\0\0\0\0\x011name\0"));
    let text = String::from_utf8_lossy(&c);
    for needle in ["2024-01-15T10:00:00.123456789Z", "0/2000138", "parts[2].stored_bytes", "tablespaces[0].location"] {
        assert!(text.contains(needle), "{needle}");
    }
    assert!(!text.contains("seconds") && !text.contains("mac"));
}

/// Issue 11 point 5, each scenario: refused as corrupt, naming the backup and the field.
#[test]
fn tampered_metadata_is_refused_naming_the_field() {
    let ring = keyed();
    let (meta, manifest) = sealed(&ring);
    let base = serde_json::to_value(&meta).expect("value");
    let cases: Vec<(&str, Edit)> = vec![
        ("parts[1].index: part 2 at position 1", Box::new(|v| drop(v["parts"].as_array_mut().map(|p| p.remove(1))))),
        ("parts: is empty", Box::new(|v| v["parts"] = json!([]))),
        ("parts[1].index: part 99 at position 1", Box::new(|v| v["parts"][1]["index"] = json!(99))),
        (
            "parts[3].index: part 0 at position 3",
            Box::new(|v| {
                let first = v["parts"][0].clone();
                if let Some(p) = v["parts"].as_array_mut() {
                    p.push(first);
                }
            }),
        ),
        (
            "parts[0].index: part 1 at position 0",
            Box::new(|v| {
                if let Some(p) = v["parts"].as_array_mut() {
                    p.swap(0, 1);
                }
            }),
        ),
        ("mac: does not match", Box::new(|v| v["stop_lsn"] = json!("2/FFFFFFF"))),
        ("mac: does not match", Box::new(|v| v["timeline"] = json!(2))),
        ("mac: does not match", Box::new(|v| v["from_standby"] = json!(true))),
        ("mac: missing", Box::new(|v| drop(v.as_object_mut().map(|o| o.remove("mac"))))),
        ("parts[0].key: ", Box::new(|v| v["parts"][0]["key"] = json!("database/test/other/part_00000.tar.zst.enc"))),
        ("env: ", Box::new(|v| v["env"] = json!("prod"))),
        ("name: ", Box::new(|v| v["name"] = json!("other"))),
    ];
    for (want, mutate) in cases {
        let mut v = base.clone();
        mutate(&mut v);
        let e = refusal(&v, &manifest, &ring);
        assert!(e.starts_with(&format!("object {} is corrupt: backup {NAME}: ", object())), "{e}");
        assert!(e.contains(want), "want {want:?}: {e}");
    }
    // A MAC-stripped metadata that claims the old format: the manifest knows better.
    let mut v = base.clone();
    v["format"] = json!(1);
    v.as_object_mut().map(|o| o.remove("mac"));
    let e = refusal(&v, &manifest, &ring);
    assert!(e.contains("mac: missing, but the manifest shows"), "{e}");
    // Unknown and missing fields.
    let mut v = base.clone();
    v["restore_me"] = json!(true);
    assert!(refusal(&v, &manifest, &ring).contains("unknown field `restore_me`"));
    let mut v = base;
    v.as_object_mut().map(|o| o.remove("stop_lsn"));
    assert!(refusal(&v, &manifest, &ring).contains("missing field `stop_lsn`"));
}

/// A standby's backup says so, under the MAC; a primary's canonical form has no such field
/// (so metadata written before the field verifies as it did).
#[test]
fn from_standby_is_covered_only_when_set() {
    let ring = keyed();
    let (mut meta, mut manifest) = fixture(true);
    let primary = canonical(&meta);
    assert!(!String::from_utf8_lossy(&primary).contains("from_standby"));
    meta.from_standby = true;
    meta.files = manifest.files.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
    seal(&mut meta, &mut manifest, &ring).expect("seal");
    assert!(String::from_utf8_lossy(&canonical(&meta)).ends_with("from_standby\0\0\0\0\0\0\0\0\x04true"));
    let json = serde_json::to_vec(&meta).expect("json");
    assert!(accept(&json, &manifest, &ring).expect("accepted").from_standby);
    let mut v = serde_json::to_value(&meta).expect("value");
    v.as_object_mut().map(|o| o.remove("from_standby"));
    assert!(refusal(&v, &manifest, &ring).contains("mac: does not match"));
}

#[test]
fn a_key_that_is_not_configured_is_a_key_error() {
    let (meta, _) = sealed(&keyed());
    let other = Keyring::new(Some(Key::from_bytes([8u8; 32])), vec![]);
    let e = check(&meta, &layout().backup_metadata_key(NAME), &object(), &layout(), &other).expect_err("refused");
    assert!(matches!(e, Error::Key { .. }), "{e}");
    assert!(e.to_string().contains(&format!("authenticated with key {}", key().fingerprint_hex())), "{e}");
    // A read key opens it (rotation).
    let rotated = Keyring::new(Some(Key::from_bytes([8u8; 32])), vec![key()]);
    assert!(check(&meta, &layout().backup_metadata_key(NAME), &object(), &layout(), &rotated).is_ok());
}

/// Format 1 (no MAC, a manifest without binding): accepted only where the manifest agrees.
#[test]
fn legacy_metadata_is_cross_checked_against_the_manifest() {
    let ring = keyed();
    let (meta, manifest) = fixture(true);
    let base = serde_json::to_value(&meta).expect("value");
    let json = serde_json::to_vec(&base).expect("json");
    assert_eq!(accept(&json, &manifest, &ring).expect("legacy accepted"), meta);
    let cases: Vec<(&str, Edit)> = vec![
        (
            "parts[1]: 1 files of 99 bytes",
            Box::new(|v| {
                v["parts"][1]["bytes"] = json!(99);
                v["bytes"] = json!(8195 + 99 + 200);
            }),
        ),
        ("files: 3, but the manifest lists 5 entries", Box::new(|v| v["files"] = json!(3))),
        ("tablespaces: differ", Box::new(|v| v["tablespaces"] = json!([]))),
        (
            "parts[1].index: part 2",
            Box::new(|v| {
                v["parts"].as_array_mut().map(|p| p.remove(1));
                v["bytes"] = json!(8195 + 200);
                v["stored_bytes"] = json!(4097 + 100);
            }),
        ),
    ];
    for (want, mutate) in cases {
        let mut v = base.clone();
        mutate(&mut v);
        let e = refusal(&v, &manifest, &ring);
        assert!(e.contains(want), "want {want:?}: {e}");
    }
    // The last part dropped: the manifest still lists files in it.
    let mut v = base.clone();
    v["parts"].as_array_mut().map(|p| p.pop());
    v["bytes"] = json!(8195 + 16384);
    v["stored_bytes"] = json!(4097 + 8192);
    let e = refusal(&v, &manifest, &ring);
    assert!(e.contains("parts: the manifest lists backup_label in part 2, which the metadata does not have"), "{e}");
    // A format-2 metadata never goes with a manifest without binding.
    let mut v = base;
    v["format"] = json!(2);
    assert!(refusal(&v, &manifest, &Keyring::unencrypted()).contains("format: 2 but the manifest has no binding"));
}

/// One change to the JSON text of a sealed metadata.
#[derive(Debug, Clone)]
enum Mutation {
    DropPart(usize),
    DuplicatePart(usize),
    SwapParts(usize, usize),
    Number(usize, Value),
    WrongType(usize, Value),
    Remove(usize),
    Truncate(usize),
}

const FIELDS: [&str; 16] = [
    "format",
    "timeline",
    "start_lsn",
    "stop_lsn",
    "files",
    "bytes",
    "stored_bytes",
    "wal_segment_size",
    "system_identifier",
    "parts",
    "mac",
    "key_fingerprint",
    "encrypted",
    "seconds",
    "parts.0.index",
    "parts.1.bytes",
];

fn slot<'a>(v: &'a mut Value, field: &str) -> Option<&'a mut Value> {
    field.split('.').try_fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => v.get_mut(i),
        Err(_) => v.get_mut(k),
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let number = prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..8).prop_map(Value::from),
        Just(json!(1e300)),
        Just(json!(0.5)),
        Just(json!(u64::MAX)),
    ];
    let other = prop_oneof![
        Just(Value::Null),
        Just(json!("")),
        Just(json!("0/0")),
        Just(json!([])),
        Just(json!({})),
        Just(json!(true)),
        Just(json!([{"index": 0}]))
    ];
    let field = 0..FIELDS.len();
    prop_oneof![
        (0usize..4).prop_map(Mutation::DropPart),
        (0usize..4).prop_map(Mutation::DuplicatePart),
        (0usize..4, 0usize..4).prop_map(|(a, b)| Mutation::SwapParts(a, b)),
        (field.clone(), number).prop_map(|(f, n)| Mutation::Number(f, n)),
        (field.clone(), other).prop_map(|(f, o)| Mutation::WrongType(f, o)),
        field.prop_map(Mutation::Remove),
        (0usize..4000).prop_map(Mutation::Truncate),
    ]
}

fn apply(base: &Value, m: &Mutation) -> Vec<u8> {
    let mut v = base.clone();
    match m {
        Mutation::DropPart(_) | Mutation::DuplicatePart(_) | Mutation::SwapParts(..) => {
            if let Some(p) = v.get_mut("parts").and_then(Value::as_array_mut) {
                edit_parts(p, m);
            }
        }
        Mutation::Number(f, x) | Mutation::WrongType(f, x) => {
            if let Some(s) = slot(&mut v, FIELDS[*f]) {
                *s = x.clone();
            }
        }
        Mutation::Remove(f) => {
            let (parent, last) = FIELDS[*f].rsplit_once('.').unwrap_or(("", FIELDS[*f]));
            let holder = if parent.is_empty() { Some(&mut v) } else { slot(&mut v, parent) };
            if let Some(o) = holder.and_then(Value::as_object_mut) {
                o.remove(last);
            }
        }
        Mutation::Truncate(_) => {}
    }
    let mut bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
    if let Mutation::Truncate(n) = m {
        bytes.truncate(*n);
    }
    bytes
}

fn edit_parts(p: &mut Vec<Value>, m: &Mutation) {
    match *m {
        Mutation::DropPart(i) if i < p.len() => drop(p.remove(i)),
        Mutation::DuplicatePart(i) if i < p.len() => p.push(p[i].clone()),
        Mutation::SwapParts(a, b) if a < p.len() && b < p.len() => p.swap(a, b),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any change to the metadata is refused, or leaves what a restore uses identical.
    #[test]
    fn mutated_metadata_is_refused_or_identical(muts in prop::collection::vec(mutation(), 1..4), encrypted in any::<bool>()) {
        let ring = if encrypted { keyed() } else { Keyring::unencrypted() };
        let (meta, manifest) = sealed(&ring);
        let mut base = serde_json::to_value(&meta).expect("value");
        let mut bytes = Vec::new();
        for m in &muts {
            bytes = apply(&base, m);
            base = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        }
        if let Ok(mut got) = accept(&bytes, &manifest, &ring) {
            got.seconds = meta.seconds;
            prop_assert_eq!(got, meta);
        }
    }
}

/// The known-answer vector of `testdata/metadata/` (key: 32 bytes of 0x07), also checked by
/// the Python program of `docs/FORMAT.md` section 7.8.
#[test]
fn known_answer_vector() {
    let ring = keyed();
    let (meta, manifest) = sealed(&ring);
    let text = serde_json::to_string_pretty(&meta).expect("json");
    if std::env::var_os("WALVAULT_WRITE_VECTORS").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/metadata/v2-metadata.json"), &text)
            .expect("write");
    }
    let vector: BackupMetadata =
        serde_json::from_str(include_str!("../../../../../testdata/metadata/v2-metadata.json")).expect("vector");
    assert_eq!(vector, meta);
    let json = serde_json::to_vec(&vector).expect("json");
    assert_eq!(accept(&json, &manifest, &ring).expect("accepted"), meta);
}

mod incremental;
