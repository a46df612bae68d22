//! An incremental backup's fields are covered: its metadata verifies, and changing (or
//! stripping) its type, reference, block source or read bytes is refused; a full backup's
//! canonical form does not change.

use super::*;
use crate::ops::repo::catalog::BackupType;

fn sealed_incremental(keyring: &Keyring) -> (BackupMetadata, Manifest) {
    let (mut meta, mut manifest) = fixture(keyring.is_encrypted());
    meta.files = manifest.files.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
    meta.backup_type = BackupType::Incr;
    meta.reference = Some("main_test_20240114_100000".into());
    meta.block_source = Some("wal-summaries".into());
    meta.read_bytes = Some(4096);
    seal(&mut meta, &mut manifest, keyring).expect("seal");
    (meta, manifest)
}

#[test]
fn incremental_fields_are_authenticated() {
    for keyring in [keyed(), Keyring::none()] {
        let (meta, manifest) = sealed_incremental(&keyring);
        let json = serde_json::to_value(&meta).expect("json");
        assert!(accept(&serde_json::to_vec(&json).expect("json"), &manifest, &keyring).is_ok());
        let edits: Vec<(&str, Edit)> = vec![
            ("backup_type", Box::new(|v: &mut Value| v["backup_type"] = json!("diff"))),
            ("reference", Box::new(|v: &mut Value| v["reference"] = json!("main_test_20240113_100000"))),
            ("block_source", Box::new(|v: &mut Value| v["block_source"] = json!("content (x)"))),
            ("read_bytes", Box::new(|v: &mut Value| v["read_bytes"] = json!(1))),
            (
                "stripped",
                Box::new(|v: &mut Value| {
                    if let Some(o) = v.as_object_mut() {
                        for k in ["backup_type", "reference", "block_source", "read_bytes"] {
                            o.remove(k);
                        }
                    }
                }),
            ),
        ];
        for (what, edit) in edits {
            let mut v = json.clone();
            edit(&mut v);
            let why = refusal(&v, &manifest, &keyring);
            assert!(why.contains("backup main_test_20240115_100000"), "{what}: {why}");
        }
    }
    // A reference on a full backup, or none on an incremental, is malformed.
    let (mut meta, _) = sealed_incremental(&keyed());
    meta.backup_type = BackupType::Full;
    let key = layout().backup_metadata_key(NAME);
    let err = check(&meta, &key, &object(), &layout(), &keyed()).map_err(|e| e.to_string());
    assert!(err.is_err_and(|e| e.contains("reference")));
    meta.backup_type = BackupType::Incr;
    meta.reference = None;
    let err = check(&meta, &key, &object(), &layout(), &keyed()).map_err(|e| e.to_string());
    assert!(err.is_err_and(|e| e.contains("reference: missing on a backup of type incr")));
}
