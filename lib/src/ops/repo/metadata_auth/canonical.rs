//! The canonical form of backup metadata: the bytes its MAC and the manifest's digest cover
//! (`docs/FORMAT.md`, section 7.2). One unambiguous encoding, independent of JSON spacing,
//! key order or number spelling.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ops::repo::metadata::BackupMetadata;

/// First bytes of the canonical form (domain separation), followed by a NUL.
pub const CANONICAL_PREFIX: &[u8] = b"walvault/v1/backup-metadata";

/// Every field but `seconds` (informational) and `mac` (the result), in a fixed order, each
/// as `name` NUL `len` (u64 big-endian) `value` (UTF-8 text). Integers are decimal, LSNs
/// `X/Y` in uppercase hex, times RFC 3339 in UTC with 9 fractional digits and `Z`, booleans
/// `true`/`false`, an absent key fingerprint the empty string; a list is its length in
/// decimal followed by its items' fields, named `list[i].field`. Then the fields added later,
/// only when set: `from_standby` (`true`).
pub fn canonical(m: &BackupMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + 256 * m.parts.len());
    out.extend_from_slice(CANONICAL_PREFIX);
    out.push(0);
    let mut f = |name: &str, value: &str| field(&mut out, name, value);
    f("format", &m.format.to_string());
    f("name", &m.name);
    f("env", &m.env);
    f("cluster", &m.cluster);
    f("system_identifier", &m.system_identifier.to_string());
    f("pg_version_num", &m.pg_version_num.to_string());
    f("wal_segment_size", &m.wal_segment_size.to_string());
    f("timeline", &m.timeline.to_string());
    f("start_lsn", &m.start_lsn.to_string());
    f("stop_lsn", &m.stop_lsn.to_string());
    f("start_wal_file", &m.start_wal_file);
    f("stop_wal_file", &m.stop_wal_file);
    f("start_time", &time(&m.start_time));
    f("stop_time", &time(&m.stop_time));
    f("files", &m.files.to_string());
    f("bytes", &m.bytes.to_string());
    f("stored_bytes", &m.stored_bytes.to_string());
    f("parts", &m.parts.len().to_string());
    for (i, p) in m.parts.iter().enumerate() {
        f(&format!("parts[{i}].index"), &p.index.to_string());
        f(&format!("parts[{i}].key"), &p.key);
        f(&format!("parts[{i}].files"), &p.files.to_string());
        f(&format!("parts[{i}].bytes"), &p.bytes.to_string());
        f(&format!("parts[{i}].stored_bytes"), &p.stored_bytes.to_string());
    }
    f("manifest_key", &m.manifest_key);
    f("compression", &m.compression);
    f("encrypted", if m.encrypted { "true" } else { "false" });
    f("key_fingerprint", m.key_fingerprint.as_deref().unwrap_or(""));
    f("tablespaces", &m.tablespaces.len().to_string());
    for (i, t) in m.tablespaces.iter().enumerate() {
        f(&format!("tablespaces[{i}].oid"), &t.oid.to_string());
        f(&format!("tablespaces[{i}].name"), &t.name);
        f(&format!("tablespaces[{i}].location"), &t.location);
    }
    // Fields added later appear only when set, so earlier metadata keeps its canonical form.
    // Incremental backups only (section 9): a full backup's form is unchanged.
    if !m.backup_type.is_full() || m.reference.is_some() || m.block_source.is_some() || m.read_bytes.is_some() {
        f("backup_type", m.backup_type.name());
        f("reference", m.reference.as_deref().unwrap_or(""));
        f("block_source", m.block_source.as_deref().unwrap_or(""));
        f("read_bytes", &m.read_bytes.map_or(String::new(), |b| b.to_string()));
    }
    if m.from_standby {
        f("from_standby", "true");
    }
    out
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(&(value.len() as u64).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}
