//! What the repository holds: complete backups (their metadata objects), the WAL archive and
//! its timelines, and the recoverable window. Shared by `walvault list`, `pitr-prepare`,
//! and later `verify`, `prune` and `status`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use super::metadata::{BackupMetadata, BackupType, LatestPointer, PartInfo};
use crate::ops::Repo;
use crate::ops::repo::wal_index::WalIndex;
use crate::wal::follow::{self, Path, Present, Timelines};
use crate::wal::timeline::{HistoryEntry, parse_history};
use crate::wal::{Lsn, WalFileName};
use crate::{Error, Result};

/// Every complete backup of the environment, oldest first.
///
/// # Errors
/// Storage failures; a metadata object that is not valid JSON (named).
pub async fn backups(repo: &Repo) -> Result<Vec<BackupMetadata>> {
    use futures_util::{StreamExt, TryStreamExt};
    let listing = repo.storage.list(&repo.layout.database_root(), Some("/"), None).await?;
    let keys: Vec<&str> = listing
        .objects
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| repo.layout.parse_backup_metadata_key(k).is_some())
        .collect();
    // A few at once: on S3 each is a round trip, and a repository keeps months of backups
    // (base-backup, list, prune and status read them all).
    let reads = futures_util::stream::iter(keys).map(|k| read_metadata(repo, k)).buffered(METADATA_READS);
    let mut out: Vec<BackupMetadata> = reads.try_collect().await?;
    out.sort_by_key(|m| m.stop_time);
    Ok(out)
}

/// Metadata objects read at once by [`backups`].
const METADATA_READS: usize = 16;

async fn read_metadata(repo: &Repo, key: &str) -> Result<BackupMetadata> {
    let bytes = repo.storage.get_bytes(key).await?;
    let object = repo.storage.describe(key);
    let meta = serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&object, e))?;
    crate::ops::repo::metadata_auth::check(&meta, key, &object, &repo.layout, &repo.keyring)?;
    Ok(meta)
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

/// The WAL archive of one environment, as listed once, with its timelines.
pub struct WalArchive {
    /// Name → object key.
    pub files: BTreeMap<String, String>,
    pub seg_size: u64,
    /// Every timeline with a readable history file (and timeline 1).
    pub timelines: Timelines,
    /// (segment number, timeline) of every full segment.
    pub present: Present,
    /// History files that could not be read or parsed: (name, why).
    pub bad_history: Vec<(String, String)>,
}

/// Where a WAL chain ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainEnd {
    /// The timeline followed.
    pub timeline: u32,
    /// The last segment of an unbroken chain from the start.
    pub last_segment: String,
    pub last_lsn: Lsn,
    /// The first missing WAL file, if later files of the path exist (a gap), else `None`.
    pub gap: Option<String>,
    /// When the last segment was archived: the newest point the chain can reach is before it.
    pub last_archived_at: Option<DateTime<Utc>>,
}

impl WalArchive {
    /// The newest segment of the archive and when it was stored.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn newest_segment(&self, repo: &Repo) -> Result<(Option<String>, Option<DateTime<Utc>>)> {
        let newest = self
            .files
            .keys()
            .filter_map(|n| WalFileName::parse(n).ok())
            .filter(WalFileName::is_segment)
            .max_by_key(|w| (w.tli(), w.segno(self.seg_size)));
        let Some(newest) = newest else { return Ok((None, None)) };
        let name = newest.to_string();
        let at = match self.files.get(&name) {
            Some(key) => repo.storage.head(key).await?.and_then(|m| m.last_modified),
            None => None,
        };
        Ok((Some(name), at))
    }

    /// List the whole archive (one listing pass per day partition, through `index`) and read
    /// every history file.
    ///
    /// # Errors
    /// Storage failures (an unreadable history file is recorded in `bad_history`).
    pub async fn load(repo: &Repo, index: &mut WalIndex, seg_size: u64) -> Result<Self> {
        let files = index.load_everything(repo).await?;
        Self::from_files(repo, files, seg_size).await
    }

    /// The archive made of `files` (name → key): history files read, segments indexed.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn from_files(repo: &Repo, files: BTreeMap<String, String>, seg_size: u64) -> Result<Self> {
        let mut histories = BTreeMap::new();
        let mut bad_history = Vec::new();
        let mut present = Present::new();
        for (name, key) in &files {
            match WalFileName::parse(name) {
                Ok(WalFileName::History { tli }) => match read_history(repo, key, tli).await {
                    Ok(h) => {
                        histories.insert(tli, h);
                    }
                    Err(e @ Error::Storage { .. }) => return Err(e),
                    Err(e) => bad_history.push((name.clone(), e.to_string())),
                },
                Ok(w @ WalFileName::Segment { .. }) => {
                    if let Some(s) = w.segno(seg_size) {
                        present.insert((s, w.tli()));
                    }
                }
                _ => {}
            }
        }
        Ok(WalArchive { files, seg_size, timelines: Timelines::new(histories), present, bad_history })
    }

    /// The history of timeline `tli` (empty for timeline 1).
    ///
    /// # Errors
    /// A history file that is missing (for `tli` > 1), undecodable or malformed.
    pub fn history(&self, repo: &Repo, tli: u32) -> Result<Vec<HistoryEntry>> {
        if let Some(h) = self.timelines.history(tli) {
            return Ok(h.to_vec());
        }
        let name = WalFileName::History { tli }.to_string();
        if let Some((_, why)) = self.bad_history.iter().find(|(n, _)| *n == name) {
            return Err(Error::corrupt(self.files.get(&name).map_or(name.clone(), |k| repo.storage.describe(k)), why));
        }
        Err(Error::not_found(format!("timeline history file {name} in {} (wal/{}/)", repo.url, repo.layout.env())))
    }

    /// The timeline `recovery_target_timeline = 'latest'` follows from a backup on `from`.
    pub fn newest_timeline_from(&self, from: u32) -> u32 {
        self.timelines.newest_from(from)
    }

    /// Where the WAL chain from backup `b` ends along `target` (the timeline recovery
    /// follows), with the time its last segment was archived (one HEAD request).
    ///
    /// # Errors
    /// [`Error::Refused`] when `target` does not pass through the backup's start; storage
    /// failures; missing or unreadable history files.
    pub async fn end_on(&self, repo: &Repo, b: &BackupMetadata, target: u32) -> Result<ChainEnd> {
        let history = self.history(repo, target)?;
        let path = Path::new(&history, target, self.seg_size);
        if !path.contains_point(b.timeline, b.start_lsn) {
            return Err(Error::Refused(format!(
                "timeline {target} does not pass through backup {} (timeline {} at {}): it branched off earlier{}",
                b.name,
                b.timeline,
                b.start_lsn,
                self.timelines.parent(target).map_or(String::new(), |(p, sp)| format!(" (from timeline {p} at {sp})"))
            )));
        }
        let mut end = self.chain(b.start_lsn.segment_number(self.seg_size), &path);
        if let Some(key) = self.files.get(&end.last_segment) {
            end.last_archived_at = repo.storage.head(key).await?.and_then(|m| m.last_modified);
        }
        Ok(end)
    }

    /// The newest timeline that passes through backup `b`'s start (its own at least).
    pub fn newest_through(&self, b: &BackupMetadata) -> u32 {
        let through = self.timelines.through_point(b.timeline, b.start_lsn, self.seg_size);
        through.into_iter().max().unwrap_or(b.timeline)
    }

    /// [`WalArchive::end_on`] the newest timeline through the backup.
    ///
    /// # Errors
    /// As [`WalArchive::end_on`].
    pub async fn end_from_backup(&self, repo: &Repo, b: &BackupMetadata) -> Result<ChainEnd> {
        self.end_on(repo, b, self.newest_through(b)).await
    }

    /// Walk the chain from segment `start` along `path` as far as it is unbroken
    /// ([`follow::reach`]).
    pub fn chain(&self, start: u64, path: &Path) -> ChainEnd {
        let seg = self.seg_size;
        let r = follow::reach(path, &self.present, start);
        let (last_segno, last_tli) = r.last.unwrap_or((start.saturating_sub(1), path.reader(start)));
        ChainEnd {
            timeline: path.target(),
            last_segment: WalFileName::from_segno(last_tli, last_segno, seg).to_string(),
            last_lsn: Lsn::from_segment(last_segno.saturating_add(1), 0, seg),
            gap: r.hole.then(|| WalFileName::from_segno(r.missing.1, r.missing.0, seg).to_string()),
            last_archived_at: None,
        }
    }
}

async fn read_history(repo: &Repo, key: &str, tli: u32) -> Result<Vec<HistoryEntry>> {
    let text =
        repo.read_object(key, &crate::ops::repo::place::Logical::Wal(&format!("{tli:08X}.history")), false).await?;
    let object = repo.storage.describe(key);
    let entries = parse_history(&String::from_utf8_lossy(&text)).map_err(|e| Error::corrupt(&object, e))?;
    if entries.last().is_some_and(|e| e.tli >= tli) || (tli > 1 && entries.is_empty()) {
        return Err(Error::corrupt(object, format!("not the history of timeline {tli}")));
    }
    Ok(entries)
}
