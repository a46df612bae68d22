//! What the repository holds: complete backups (their metadata objects), the WAL archive and
//! its timelines, and the recoverable window. Shared by `walvault list`, `pitr-prepare`,
//! and later `verify`, `prune` and `status`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Repo;
use super::wal_index::WalIndex;
use crate::manifest::ManifestTablespace;
use crate::wal::timeline::{HistoryEntry, parse_history};
use crate::wal::{Lsn, WalFileName};
use crate::{Error, Result};

/// `database/<env>/<name>_metadata.json`: plain JSON, written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupMetadata {
    pub format: u32,
    pub name: String,
    pub env: String,
    pub cluster: String,
    pub system_identifier: String,
    pub pg_version_num: u32,
    pub wal_segment_size: u64,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_wal_file: String,
    pub stop_wal_file: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
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
    /// Wall time of the backup.
    pub seconds: f64,
}

/// One tar part of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Every complete backup of the environment, oldest first.
///
/// # Errors
/// Storage failures; a metadata object that is not valid JSON (named).
pub async fn backups(repo: &Repo) -> Result<Vec<BackupMetadata>> {
    let listing = repo.storage.list(&repo.layout.database_root(), Some("/"), None).await?;
    let mut out = Vec::new();
    for object in listing.objects {
        if repo.layout.parse_backup_metadata_key(&object.key).is_some() {
            out.push(read_metadata(repo, &object.key).await?);
        }
    }
    out.sort_by_key(|m| m.stop_time);
    Ok(out)
}

async fn read_metadata(repo: &Repo, key: &str) -> Result<BackupMetadata> {
    let bytes = repo.storage.get_bytes(key).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(repo.storage.describe(key), e))
}

/// One backup by name; `latest` means the newest complete backup.
///
/// # Errors
/// [`Error::NotFound`] naming the backup; storage failures.
pub async fn backup(repo: &Repo, name: &str) -> Result<BackupMetadata> {
    if name == "latest" || name.starts_with("latest.") {
        return backups(repo).await?.pop().ok_or_else(|| {
            Error::not_found(format!("a complete backup in {} ({})", repo.url, repo.layout.database_root()))
        });
    }
    let key = repo.layout.backup_metadata_key(name);
    match read_metadata(repo, &key).await {
        Err(Error::NotFound { .. }) => {
            Err(Error::not_found(format!("backup {name} ({})", repo.storage.describe(&key))))
        }
        other => other,
    }
}

/// The WAL archive of one environment, as listed once.
pub struct WalArchive {
    /// Name → object key.
    pub files: BTreeMap<String, String>,
    pub seg_size: u64,
}

/// Where a WAL chain ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainEnd {
    /// The timeline followed (the newest reachable from the start).
    pub timeline: u32,
    /// The last segment of an unbroken chain from the start.
    pub last_segment: String,
    pub last_lsn: Lsn,
    /// The first missing file, if later segments exist (a gap), else `None`.
    pub gap: Option<String>,
    /// When the last segment was archived: the newest point the chain can reach is before it.
    pub last_archived_at: Option<DateTime<Utc>>,
}

impl WalArchive {
    /// List the whole archive (one listing pass per day partition, through `index`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn load(repo: &Repo, index: &mut WalIndex, seg_size: u64) -> Result<Self> {
        let files = index.load_everything(repo).await?;
        Ok(WalArchive { files, seg_size })
    }

    /// The history of timeline `tli` (empty for timeline 1).
    ///
    /// # Errors
    /// A history file that is missing (for `tli` > 1), undecodable or malformed.
    pub async fn history(&self, repo: &Repo, tli: u32) -> Result<Vec<HistoryEntry>> {
        if tli <= 1 {
            return Ok(Vec::new());
        }
        let name = WalFileName::History { tli }.to_string();
        let key = self.files.get(&name).ok_or_else(|| {
            Error::not_found(format!("timeline history file {name} in {} (wal/{}/)", repo.url, repo.layout.env()))
        })?;
        let text = repo.read_object(key, false).await?;
        let object = repo.storage.describe(key);
        parse_history(&String::from_utf8_lossy(&text)).map_err(|e| Error::corrupt(object, e))
    }

    /// The newest timeline whose history descends from `from` (or `from` itself).
    ///
    /// # Errors
    /// As [`WalArchive::history`].
    pub async fn newest_timeline_from(&self, repo: &Repo, from: u32) -> Result<u32> {
        let mut tlis: Vec<u32> = self
            .files
            .keys()
            .filter_map(|n| match WalFileName::parse(n) {
                Ok(WalFileName::History { tli }) if tli > from => Some(tli),
                _ => None,
            })
            .collect();
        tlis.sort_unstable();
        for tli in tlis.into_iter().rev() {
            if self.history(repo, tli).await?.iter().any(|e| e.tli == from) {
                return Ok(tli);
            }
        }
        Ok(from)
    }

    /// Where the WAL chain from backup `b` ends along the newest timeline descending from
    /// its own, with the time its last segment was archived (one HEAD request).
    ///
    /// # Errors
    /// Storage failures; missing or unreadable history files.
    pub async fn end_from_backup(&self, repo: &Repo, b: &BackupMetadata) -> Result<ChainEnd> {
        let tli = self.newest_timeline_from(repo, b.timeline).await?;
        let history = self.history(repo, tli).await?;
        let mut end = self.chain(b.start_lsn.segment_number(b.wal_segment_size), tli, &history);
        if let Some(key) = self.files.get(&end.last_segment) {
            end.last_archived_at = repo.storage.head(key).await?.and_then(|m| m.last_modified);
        }
        Ok(end)
    }

    /// Walk the chain from segment `start` (on timeline `start_tli`) along the history of
    /// `target_tli` as far as it is unbroken.
    pub fn chain(&self, start: u64, target_tli: u32, history: &[HistoryEntry]) -> ChainEnd {
        let seg = self.seg_size;
        let path = timeline_path(history, target_tli, seg);
        // PostgreSQL's XLogFileReadAnyTLI: the newest timeline begun by this segment whose
        // file exists; for messages, the newest one begun by it.
        let candidates = |segno: u64| path.iter().rev().filter(move |(_, b)| *b <= segno).map(|(t, _)| *t);
        let present = |segno: u64| {
            candidates(segno).find(|t| self.files.contains_key(&WalFileName::from_segno(*t, segno, seg).to_string()))
        };
        let expected_tli = |segno: u64| candidates(segno).next().unwrap_or(target_tli);
        let mut segno = start;
        let mut last = None;
        let mut last_tli = expected_tli(start);
        while let Some(t) = present(segno) {
            last = Some(segno);
            last_tli = t;
            segno += 1;
        }
        let missing = WalFileName::from_segno(expected_tli(segno), segno, seg).to_string();
        let on_path = |t: u32| path.iter().any(|(p, _)| *p == t);
        let later_exists = self
            .files
            .keys()
            .filter_map(|n| WalFileName::parse(n).ok())
            .any(|w| w.is_segment() && on_path(w.tli()) && w.segno(seg).is_some_and(|s| s > segno));
        let last_segno = last.unwrap_or(start.saturating_sub(1));
        ChainEnd {
            timeline: target_tli,
            last_segment: WalFileName::from_segno(last_tli, last_segno, seg).to_string(),
            last_lsn: Lsn::from_segment(last_segno.saturating_add(1), 0, seg),
            gap: later_exists.then_some(missing),
            last_archived_at: None,
        }
    }
}

/// Each timeline on the path to `target_tli` with the segment where its WAL begins: the
/// first at 0, each later one at its parent's switchpoint, `target_tli` at the last one.
pub fn timeline_path(history: &[HistoryEntry], target_tli: u32, seg_size: u64) -> Vec<(u32, u64)> {
    let mut path: Vec<(u32, u64)> = Vec::with_capacity(history.len() + 1);
    let mut begin = 0;
    for e in history {
        path.push((e.tli, begin));
        begin = e.switchpoint.segment_number(seg_size);
    }
    path.push((target_tli, begin));
    path
}
