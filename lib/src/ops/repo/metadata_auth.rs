//! Authenticated backup metadata (`docs/FORMAT.md`, section 7).
//!
//! `<backup>_metadata.json` stays plain JSON for people and the runbook, but nothing a restore
//! relies on is taken from it on trust:
//!
//! - [`check`], run by every reader of metadata (the catalog: list, status, verify, prune,
//!   pitr-prepare, restore tests): the fields must be well formed (parts numbered 0 to n-1,
//!   each under the backup's folder, sums that add up, the name and env of the object key),
//!   and, in an encrypted repository, `mac` must be the HMAC-SHA256 of the canonical form
//!   ([`canonical`]) under a key derived from the repository key (never the key itself);
//! - [`cross_check`], run once the manifest is read and before anything is written: the
//!   manifest (authenticated by AES-256-GCM) is the source of truth for the parts, and since
//!   format 2 it also holds the metadata's digest ([`crate::manifest::ManifestBackup`]).
//!
//! Metadata of format 1 (before this rule, no `mac`) is accepted only after it agrees with its
//! manifest, with a warning; a format-2 manifest refuses a downgraded (MAC-stripped) metadata.
//! Every refusal is [`Error::Corrupt`] (exit 4) naming the metadata object, the backup and
//! the field.

use ring::{digest, hmac};

use crate::codec::crypt::Keyring;
use crate::layout::Layout;
use crate::manifest::{EntryKind, Manifest, ManifestBackup};
use crate::ops::repo::metadata::BackupMetadata;
use crate::{Error, Result};

mod canonical;
#[cfg(test)]
mod tests;

pub use canonical::canonical;

/// The metadata format base-backup writes: with `mac` (when encrypted) and a manifest binding.
pub const METADATA_FORMAT: u32 = 2;
/// Metadata written before authentication: no `mac`, trusted only through the manifest.
pub const LEGACY_FORMAT: u32 = 1;

/// Object name extensions a part or manifest may have (compression, then encryption).
const EXTENSIONS: [&str; 6] = ["", ".zst", ".gz", ".enc", ".zst.enc", ".gz.enc"];

/// A refusal: the field and why.
type Refusal = (String, String);

fn refuse(object: &str, name: &str, (field, why): Refusal) -> Error {
    Error::corrupt(object, format!("backup {name}: {field}: {why}"))
}

/// Make `meta` format 2: its `mac` (with the write key, if encrypted) and the manifest's
/// binding to it. `seconds` may change afterwards (it is not covered).
///
/// # Errors
/// Only if the key derivation fails.
pub fn seal(meta: &mut BackupMetadata, manifest: &mut Manifest, keyring: &Keyring) -> Result<()> {
    meta.format = METADATA_FORMAT;
    meta.mac = None;
    if let Some(key) = keyring.write_key() {
        meta.key_fingerprint = Some(key.fingerprint_hex());
        meta.mac = Some(hex::encode(hmac::sign(&key.metadata_mac_key()?, &canonical(meta)).as_ref()));
    }
    manifest.backup = Some(ManifestBackup {
        name: meta.name.clone(),
        env: meta.env.clone(),
        system_identifier: meta.system_identifier,
        timeline: meta.timeline,
        start_lsn: meta.start_lsn,
        stop_lsn: meta.stop_lsn,
        parts: u32::try_from(meta.parts.len()).unwrap_or(u32::MAX),
        metadata_sha256: sha256_hex(&canonical(meta)),
    });
    Ok(())
}

/// Lowercase hex SHA-256 of the metadata's canonical form (what a manifest binds to).
pub fn metadata_sha256(m: &BackupMetadata) -> String {
    sha256_hex(&canonical(m))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Check metadata read from `key` (shown as `object`): well formed, and authenticated when the
/// repository is encrypted.
///
/// # Errors
/// [`Error::Corrupt`] naming the object, the backup and the field; [`Error::Key`] when the
/// metadata is authenticated with a key that is not configured.
pub fn check(meta: &BackupMetadata, key: &str, object: &str, layout: &Layout, keyring: &Keyring) -> Result<()> {
    let name = layout.parse_backup_metadata_key(key).unwrap_or_else(|| meta.name.clone());
    check_fields(meta, &name, layout).map_err(|r| refuse(object, &name, r))?;
    check_mac(meta, object, keyring)
}

fn check_fields(m: &BackupMetadata, name: &str, layout: &Layout) -> std::result::Result<(), Refusal> {
    let bad = |field: &str, why: String| Err((field.to_string(), why));
    if m.format != METADATA_FORMAT && m.format != LEGACY_FORMAT {
        return bad("format", format!("{} is not supported (expected {LEGACY_FORMAT} or {METADATA_FORMAT})", m.format));
    }
    if m.name != name {
        return bad("name", format!("{:?} is not the backup of this metadata object", m.name));
    }
    if m.env != layout.env() {
        return bad("env", format!("{:?} is not this environment ({:?})", m.env, layout.env()));
    }
    if m.system_identifier.0 == 0 {
        return bad("system_identifier", format!("{:?} is not a system identifier", m.system_identifier.to_string()));
    }
    if m.timeline == 0 {
        return bad("timeline", "0 is not a timeline".into());
    }
    if !m.wal_segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&m.wal_segment_size) {
        return bad("wal_segment_size", format!("{} is not a power of two from 1 MiB to 1 GiB", m.wal_segment_size));
    }
    if m.stop_lsn < m.start_lsn {
        return bad("stop_lsn", format!("{} is before start_lsn {}", m.stop_lsn, m.start_lsn));
    }
    check_parts(m, layout)?;
    if !object_key_ok(&m.manifest_key, &layout.backup_object(&m.name, "manifest.json")) {
        return bad("manifest_key", format!("{:?} is not this backup's manifest", m.manifest_key));
    }
    match &m.key_fingerprint {
        Some(f) if !is_lower_hex(f, 16) => return bad("key_fingerprint", format!("{f:?} is not 16 hex digits")),
        None if m.encrypted => return bad("key_fingerprint", "missing for an encrypted backup".into()),
        _ => {}
    }
    match (&m.reference, m.backup_type.is_full()) {
        (Some(r), true) => return bad("reference", format!("{r:?} on a full backup")),
        (None, false) => return bad("reference", format!("missing on a backup of type {}", m.backup_type.name())),
        (Some(r), false)
            if r == &m.name
                || layout.parse_backup_metadata_key(&layout.backup_metadata_key(r)).as_deref() != Some(r.as_str()) =>
        {
            return bad("reference", format!("{r:?} is not another backup's name"));
        }
        _ => {}
    }
    match &m.mac {
        Some(mac) if !is_lower_hex(mac, 64) => bad("mac", "is not 64 lowercase hex digits".into()),
        _ => Ok(()),
    }
}

/// Parts numbered 0 to n-1 in order (so none missing, repeated or out of range), each stored
/// under the backup's folder, and sums that match.
fn check_parts(m: &BackupMetadata, layout: &Layout) -> std::result::Result<(), Refusal> {
    if m.parts.is_empty() {
        return Err(("parts".into(), "is empty: a backup has at least its data part and its label part".into()));
    }
    let (mut bytes, mut stored) = (0u64, 0u64);
    for (i, part) in m.parts.iter().enumerate() {
        if usize::try_from(part.index).ok() != Some(i) {
            let why = format!(
                "part {} at position {i}: parts must be numbered 0 to {} in order (one missing, repeated or out of range)",
                part.index,
                m.parts.len() - 1
            );
            return Err((format!("parts[{i}].index"), why));
        }
        if !object_key_ok(&part.key, &layout.backup_object(&m.name, &format!("part_{i:05}.tar"))) {
            return Err((format!("parts[{i}].key"), format!("{:?} is not part {i} of this backup", part.key)));
        }
        bytes = bytes.checked_add(part.bytes).ok_or_else(|| (format!("parts[{i}].bytes"), "overflows".into()))?;
        stored = stored
            .checked_add(part.stored_bytes)
            .ok_or_else(|| (format!("parts[{i}].stored_bytes"), "overflows".into()))?;
    }
    if bytes != m.bytes {
        return Err(("bytes".into(), format!("{} is not the sum of the parts' bytes ({bytes})", m.bytes)));
    }
    if stored != m.stored_bytes {
        return Err(("stored_bytes".into(), format!("{} is not the sum of the parts' ({stored})", m.stored_bytes)));
    }
    Ok(())
}

fn object_key_ok(key: &str, stem: &str) -> bool {
    key.strip_prefix(stem).is_some_and(|ext| EXTENSIONS.contains(&ext))
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The MAC, when there is one or when one is required.
fn check_mac(m: &BackupMetadata, object: &str, keyring: &Keyring) -> Result<()> {
    let name = &m.name;
    let Some(mac) = &m.mac else {
        if keyring.is_empty() {
            // WALVAULT_ENCRYPTION=none: no key, no MAC; the manifest cross-check still applies.
            return Ok(());
        }
        if m.format == LEGACY_FORMAT {
            tracing::warn!(
                "backup {name}: metadata of format 1 has no mac; trusted only where it agrees with the manifest"
            );
            return Ok(());
        }
        return Err(refuse(
            object,
            name,
            ("mac".into(), "missing: metadata of an encrypted repository must be authenticated".into()),
        ));
    };
    // check_fields made sure both are hex of the right length.
    let fingerprint = m.key_fingerprint.as_deref().unwrap_or_default();
    let found = keyring.keys().find(|k| k.fingerprint_hex() == fingerprint);
    let Some(key) = found else {
        return Err(Error::Key {
            object: object.to_string(),
            reason: format!("backup {name}: metadata is authenticated with key {fingerprint}, which is not configured"),
        });
    };
    let tag = hex::decode(mac).unwrap_or_default();
    hmac::verify(&key.metadata_mac_key()?, &canonical(m), &tag).map_err(|_| {
        refuse(
            object,
            name,
            ("mac".into(), "does not match the fields: the metadata was changed after the backup was written".into()),
        )
    })
}

/// Cross-check metadata against its manifest (already read and validated): the parts, the
/// file count and the tablespaces always; since format 2 every covered field, through the
/// manifest's binding. `object` names the metadata object.
///
/// # Errors
/// [`Error::Corrupt`] naming the object, the backup and the field that disagrees.
pub fn cross_check(m: &BackupMetadata, manifest: &Manifest, object: &str, keyring: &Keyring) -> Result<()> {
    cross_check_fields(m, manifest, keyring).map_err(|r| refuse(object, &m.name, r))
}

fn cross_check_fields(m: &BackupMetadata, manifest: &Manifest, keyring: &Keyring) -> std::result::Result<(), Refusal> {
    match &manifest.backup {
        Some(b) => check_binding(m, b, keyring)?,
        None if m.format != LEGACY_FORMAT => {
            return Err(("format".into(), format!("{} but the manifest has no binding to this metadata", m.format)));
        }
        None => {}
    }
    let mut sums = vec![(0u64, 0u64); m.parts.len()];
    for entry in &manifest.files {
        let Some(sum) = usize::try_from(entry.part).ok().and_then(|p| sums.get_mut(p)) else {
            let why =
                format!("the manifest lists {} in part {}, which the metadata does not have", entry.path, entry.part);
            return Err(("parts".into(), why));
        };
        sum.0 += u64::from(entry.kind == EntryKind::File);
        sum.1 = sum.1.saturating_add(entry.size);
    }
    for (i, (part, (files, bytes))) in m.parts.iter().zip(sums).enumerate() {
        if part.files != files || part.bytes != bytes {
            let why = format!(
                "{} files of {} bytes, but the manifest lists {files} files of {bytes} bytes in part {i}",
                part.files, part.bytes
            );
            return Err((format!("parts[{i}]"), why));
        }
    }
    // Format 2 counts regular files (as each part and the restore do); writers of format 1
    // counted every entry, directories and links included (or, last, regular files).
    let regular = manifest.files.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
    let entries = manifest.files.len() as u64;
    let agrees = m.files == regular || (m.format == 1 && m.files == entries);
    if !agrees {
        let (counted, what) = if m.format == 1 { (entries, "entries") } else { (regular, "files") };
        return Err(("files".into(), format!("{}, but the manifest lists {counted} {what}", m.files)));
    }
    if m.tablespaces != manifest.tablespaces {
        return Err(("tablespaces".into(), "differ from the manifest's".into()));
    }
    Ok(())
}

fn check_binding(m: &BackupMetadata, b: &ManifestBackup, keyring: &Keyring) -> std::result::Result<(), Refusal> {
    let differ = |field: &str, ours: String, theirs: String| {
        Err((field.to_string(), format!("{ours}, but the manifest says {theirs}")))
    };
    if m.name != b.name {
        return differ("name", m.name.clone(), b.name.clone());
    }
    if m.env != b.env {
        return differ("env", m.env.clone(), b.env.clone());
    }
    if m.system_identifier != b.system_identifier {
        return differ("system_identifier", m.system_identifier.to_string(), b.system_identifier.to_string());
    }
    if m.timeline != b.timeline {
        return differ("timeline", m.timeline.to_string(), b.timeline.to_string());
    }
    if m.start_lsn != b.start_lsn {
        return differ("start_lsn", m.start_lsn.to_string(), b.start_lsn.to_string());
    }
    if m.stop_lsn != b.stop_lsn {
        return differ("stop_lsn", m.stop_lsn.to_string(), b.stop_lsn.to_string());
    }
    if m.parts.len() as u64 != u64::from(b.parts) {
        return differ("parts", format!("{} parts", m.parts.len()), format!("{} parts", b.parts));
    }
    if m.mac.is_none() && !keyring.is_empty() {
        return Err(("mac".into(), "missing, but the manifest shows the backup was written with one".into()));
    }
    if sha256_hex(&canonical(m)) != b.metadata_sha256 {
        let why = "a covered field differs from what the manifest recorded (metadata_sha256)";
        return Err(("fields".into(), why.into()));
    }
    Ok(())
}
