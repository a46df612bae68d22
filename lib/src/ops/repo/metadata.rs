//! A backup's metadata object as data: what it names (parts, reference, type) and the pointer
//! to the newest backup. Read and authenticated by [`super::catalog`] and
//! [`super::metadata_auth`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::ManifestTablespace;
use crate::wal::Lsn;
use crate::{Error, Result};

/// `database/<env>/<name>_metadata.json`: plain JSON, written last, authenticated by `mac`
/// and cross-checked against the manifest ([`crate::ops::repo::metadata_auth`], `docs/FORMAT.md` section 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupMetadata {
    pub format: u32,
    pub name: String,
    pub env: String,
    pub cluster: String,
    pub system_identifier: crate::wal::SystemId,
    pub pg_version_num: u32,
    pub wal_segment_size: u64,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_wal_file: String,
    pub stop_wal_file: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    /// Regular files stored: the parts' `files` summed (directories and links not counted).
    pub files: u64,
    /// File bytes stored (before compression).
    pub bytes: u64,
    /// Bytes in the repository.
    pub stored_bytes: u64,
    pub parts: Vec<PartInfo>,
    pub manifest_key: String,
    pub compression: String,
    pub encrypted: bool,
    pub key_fingerprint: Option<String>,
    pub tablespaces: Vec<ManifestTablespace>,
    /// Taken on a hot standby (absent: on the primary).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_standby: bool,
    /// Wall time of the backup (informational: not covered by `mac`).
    pub seconds: f64,
    /// `full` (absent), `diff` or `incr`.
    #[serde(default, skip_serializing_if = "BackupType::is_full")]
    pub backup_type: BackupType,
    /// The backup an incremental builds on (absent for a full backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// An incremental's source of changed blocks: `wal-summaries`, or `content (why not)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_source: Option<String>,
    /// Bytes an incremental read from the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bytes: Option<u64>,
    /// HMAC-SHA256 of the canonical form, lowercase hex (format 2, encrypted repositories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What a backup holds: everything, or what changed since its reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file.
    #[default]
    Full,
    /// What changed since the newest full backup.
    Diff,
    /// What changed since the newest backup of any type.
    Incr,
}

impl BackupType {
    pub fn is_full(&self) -> bool {
        *self == BackupType::Full
    }

    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }

    /// Parse `--type`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `--type`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(BackupType::Full),
            "diff" => Ok(BackupType::Diff),
            "incr" => Ok(BackupType::Incr),
            _ => Err(Error::config("--type", format!("{s:?} is not a backup type; expected full, diff or incr"))),
        }
    }
}

/// One tar part of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartInfo {
    pub index: u32,
    pub key: String,
    pub files: u64,
    pub bytes: u64,
    pub stored_bytes: u64,
}

/// `database/<env>/latest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestPointer {
    pub backup: String,
    pub metadata: String,
    pub stop_time: DateTime<Utc>,
    pub stop_lsn: Lsn,
    pub timeline: u32,
}

/// The one metadata fixture of the unit tests: a full, unencrypted format-2 backup of one
/// file and no parts, taken at `time` (start and stop). Tests change what they look at with
/// struct update syntax (`BackupMetadata { parts, ..test_backup(..) }`).
#[cfg(test)]
pub(crate) fn test_backup(name: &str, env: &str, time: DateTime<Utc>) -> BackupMetadata {
    BackupMetadata {
        format: super::metadata_auth::METADATA_FORMAT,
        name: name.into(),
        env: env.into(),
        cluster: "main".into(),
        system_identifier: crate::wal::SystemId(7_324_582_734_658_237_465),
        pg_version_num: 150_004,
        wal_segment_size: 16 << 20,
        timeline: 1,
        start_lsn: Lsn(0x0200_0028),
        stop_lsn: Lsn(0x0200_0138),
        start_wal_file: "000000010000000000000002".into(),
        stop_wal_file: "000000010000000000000002".into(),
        start_time: time,
        stop_time: time,
        files: 1,
        bytes: 0,
        stored_bytes: 0,
        parts: Vec::new(),
        manifest_key: String::new(),
        compression: "zstd".into(),
        encrypted: false,
        key_fingerprint: None,
        tablespaces: Vec::new(),
        from_standby: false,
        seconds: 1.0,
        backup_type: BackupType::Full,
        reference: None,
        block_source: None,
        read_bytes: None,
        mac: None,
    }
}
