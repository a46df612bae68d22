//! The JSON a restore trusts: the backup manifest (then its validation and lookups), the
//! backup metadata (with its authentication and manifest cross-check), latest.json and the repository identity. The first byte picks the type.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use walvault::codec::crypt::{Key, Keyring};
use walvault::layout::Layout;
use walvault::manifest::Manifest;
use walvault::ops::repo::metadata_auth;
use walvault::ops::repo::catalog::{BackupMetadata, LatestPointer};
use walvault::ops::repo::identity::Identity;

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            let Ok(m) = serde_json::from_slice::<Manifest>(json) else { return };
            if m.validate().is_ok() {
                for e in &m.files {
                    assert!(walvault::manifest::path_problem(&e.path).is_none(), "validated path {:?}", e.path);
                    assert!(m.lookup(&e.path).is_some());
                }
                let _ = m.missing(0, &HashSet::new());
                let _ = m.total_size();
            }
        }
        1 => {
            if let Ok(b) = serde_json::from_slice::<BackupMetadata>(json) {
                let _ = serde_json::to_vec(&b);
                // Authentication and the manifest cross-check: refused, never a panic.
                let layout = Layout::new("production");
                let key = layout.backup_metadata_key(&b.name);
                for ring in [Keyring::unencrypted(), Keyring::new(Some(Key::from_bytes([7; 32])), vec![])] {
                    if metadata_auth::check(&b, &key, "metadata", &layout, &ring).is_ok() {
                        let _ = metadata_auth::cross_check(&b, &Manifest::default(), "metadata", &ring);
                    }
                }
            }
        }
        2 => {
            if let Ok(l) = serde_json::from_slice::<LatestPointer>(json) {
                let again: LatestPointer = serde_json::from_slice(&serde_json::to_vec(&l).expect("to_vec")).expect("round trip");
                assert_eq!(again, l);
            }
        }
        _ => {
            if let Ok(i) = serde_json::from_slice::<Identity>(json) {
                let again: Identity = serde_json::from_slice(&serde_json::to_vec(&i).expect("to_vec")).expect("round trip");
                assert_eq!(again, i);
            }
        }
    }
});
