//! Resume of an interrupted base-backup (killed, node drained, storage outage past the
//! retries): the next run within `WALVAULT_RESUME_WINDOW` continues the leftover folder under
//! its name, reusing every stored part whose files have not changed, and reads the rest again.
//!
//! After each part is stored, base-backup writes its record beside it
//! (`part_NNNNN.record.json[.zst][.enc]`, bound like every object to its name): the part's
//! size and manifest entries (with their digests), and each entry's size and modification
//! time (nanoseconds) as seen just before it was read. A part is reused only if
//!
//! - its record authenticates and names this backup and cluster, and the part object is
//!   there with the recorded size;
//! - every entry is still in the data directory, each file with the same size and
//!   modification time, which was at least [`SETTLE`] older than the look (a write in the
//!   same coarse timestamp tick as the look could otherwise go unseen), looked at after the
//!   new backup's checkpoint: an unchanged file on disk then is the file the part holds;
//! - it does not hold `global/pg_control` (read again, last, by every run).
//!
//! The new run starts its own backup (checkpoint, `backup_label`), so WAL replay starts at
//! its own start: the result is the backup an uninterrupted run would have made, with the
//! same checks in verify. Parts stay numbered 0 to n-1: new parts fill the numbers of parts
//! not reused, and reused parts above the new count are read again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blockmap::BlockMap;
use crate::codec;
use crate::manifest::ManifestEntry;
use crate::ops::Repo;
use crate::ops::repo::catalog::PartInfo;
use crate::ops::repo::place::Logical;
use crate::pg::datadir::{self, DataFile, FileKind};
use crate::tarball::IncrementalPart;
use crate::{Error, Result};

/// How much older than the look a file's modification time must be for its part to be reused.
pub const SETTLE: Duration = Duration::from_secs(1);
/// A leftover with an object this young, not provably abandoned by a process of this host
/// that is gone, may be a backup still running: it is not resumed.
pub(super) const LIVE_FOR: Duration = Duration::from_secs(600);
const RECORD_FORMAT: u32 = 1;
const PG_CONTROL: &str = "global/pg_control";

/// What base-backup stored about one part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartRecord {
    pub format: u32,
    pub backup: String,
    pub system_identifier: String,
    pub info: PartInfo,
    pub entries: Vec<ManifestEntry>,
    /// The part's block map (binary form, base64): every backup's block map covers every file.
    pub blocks: String,
    pub seen: Vec<SeenFile>,
    /// When the entries were looked at, nanoseconds since the epoch (this host's clock).
    pub seen_at_ns: i64,
    pub host: String,
    pub pid: u32,
}

/// One entry as it was before it was read: size and modification time (0 for directories and links).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenFile {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// The entries of a part as they are now (blocking: one `stat` per entry).
pub fn look(files: &[DataFile]) -> (Vec<SeenFile>, i64) {
    let at = now_ns();
    let seen = files
        .iter()
        .map(|f| {
            let (size, mtime_ns) = match f.kind {
                FileKind::File => std::fs::symlink_metadata(&f.abs_path)
                    .map(|m| (m.len(), m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec())))
                    .unwrap_or((u64::MAX, i64::MAX)),
                _ => (0, 0),
            };
            SeenFile { path: f.rel_path.clone(), size, mtime_ns }
        })
        .collect();
    (seen, at)
}

fn now_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn record_key(repo: &Repo, backup: &str, index: u32) -> String {
    repo.layout.backup_object(backup, &format!("part_{index:05}.record.json{}", repo.object_ext()))
}

/// Store the record of part `info` of `backup`, looked at as `seen` before it was read.
///
/// # Errors
/// Storage and codec failures.
pub async fn write_record(
    repo: &Repo,
    backup: &str,
    system_identifier: u64,
    (seen, seen_at_ns): (Vec<SeenFile>, i64),
    info: &PartInfo,
    output: &IncrementalPart,
) -> Result<()> {
    use base64::Engine;
    let record = PartRecord {
        format: RECORD_FORMAT,
        backup: backup.to_string(),
        system_identifier: system_identifier.to_string(),
        info: info.clone(),
        entries: output.entries.clone(),
        blocks: base64::engine::general_purpose::STANDARD.encode(output.blocks.encode()),
        seen,
        seen_at_ns,
        host: hostname(),
        pid: std::process::id(),
    };
    let json = serde_json::to_vec(&record).map_err(|e| Error::Invalid(format!("part record: {e}")))?;
    let (settings, key) = (repo.codec, repo.keyring.write_key().cloned());
    let context = repo.context(&Logical::PartRecord { backup, index: info.index }).await?;
    let encoded =
        super::super::repo::blocking(move || codec::encode_to_vec(&json, &settings, key.as_ref(), None, &context))
            .await?;
    repo.storage.put(&record_key(repo, backup, info.index), Bytes::from(encoded)).await
}

/// Before part `index` of a resumed `backup` is stored again: its old record is voided first
/// (an empty object: the backup's role may write but not delete), so a run killed between
/// the part and its new record never leaves a record of other content.
///
/// # Errors
/// Storage failures.
pub async fn forget(repo: &Repo, backup: &str, index: u32) -> Result<()> {
    repo.storage.put(&record_key(repo, backup, index), Bytes::new()).await
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// The name of this run's backup: the leftover's, else one nothing in the repository uses.
///
/// # Errors
/// Storage failures; [`Error::Refused`] when no free name is found.
pub async fn backup_name(repo: &Repo, cluster: &str, leftover: Option<&Leftover>) -> Result<String> {
    match leftover {
        Some(l) => Ok(l.name.clone()),
        None => fresh_backup_name(repo, cluster).await,
    }
}

/// A backup name nothing in the repository uses yet: names have one-second resolution, and a
/// backup must never write into another's folder (a complete one, or one still running).
async fn fresh_backup_name(repo: &Repo, cluster: &str) -> Result<String> {
    for _ in 0..5 {
        let name = repo.layout.backup_name(cluster, chrono::Utc::now());
        let taken = repo.storage.head(&repo.layout.backup_metadata_key(&name)).await?.is_some()
            || !repo.storage.list(&repo.layout.backup_prefix(&name), None, None).await?.objects.is_empty();
        if !taken {
            return Ok(name);
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    Err(Error::Refused(format!("no free backup name for cluster {cluster}: another backup is starting every second")))
}

/// An interrupted backup to continue: its name and the records of its stored parts.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub name: String,
    pub records: Vec<PartRecord>,
    /// Parts with a record, reusable or not (voided before the part is stored again).
    pub recorded: HashSet<u32>,
}

/// The newest folder of `cluster` without a metadata object, named within `window` of now,
/// whose writer is gone, with the records of its parts that are stored whole.
///
/// # Errors
/// Storage failures. An unreadable or foreign record is skipped with a warning.
pub async fn find_leftover(
    repo: &Repo,
    cluster: &str,
    system_identifier: u64,
    window: Duration,
) -> Result<Option<Leftover>> {
    if window.is_zero() {
        return Ok(None);
    }
    let root = repo.layout.database_root();
    let listing = repo.storage.list(&root, Some("/"), None).await?;
    let complete: HashSet<String> = listing.objects.iter().map(|o| o.key.clone()).collect();
    let window = chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
    let since = chrono::Utc::now().checked_sub_signed(window).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut names: Vec<String> = listing
        .prefixes
        .iter()
        .map(|p| p.trim_start_matches(&root).trim_end_matches('/').to_string())
        .filter(|n| n.starts_with(&format!("{cluster}_{}_", repo.layout.env())))
        .filter(|n| !complete.contains(&repo.layout.backup_metadata_key(n)))
        .filter(|n| crate::layout::name_time(n).is_some_and(|t| t >= since))
        .collect();
    names.sort();
    while let Some(name) = names.pop() {
        if let Some(l) = load_leftover(repo, &name, system_identifier).await? {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

async fn load_leftover(repo: &Repo, name: &str, system_identifier: u64) -> Result<Option<Leftover>> {
    let objects = repo.storage.list(&repo.layout.backup_prefix(name), None, None).await?.objects;
    let sizes: HashMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let mut records = Vec::new();
    let mut recorded = HashSet::new();
    // An empty record was voided by a later run.
    for o in objects.iter().filter(|o| o.key.contains(".record.json") && o.size > 0) {
        let index = o.key.rsplit('/').next().and_then(|f| f.strip_prefix("part_")).and_then(|f| f.get(..5));
        let Some(index) = index.and_then(|i| i.parse::<u32>().ok()) else { continue };
        recorded.insert(index);
        let mut r = match read_record(repo, &o.key, name, index).await {
            Ok(r) if r.system_identifier == system_identifier.to_string() && r.info.index == index => r,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("not reusing part {index} of {name}: {e}");
                continue;
            }
        };
        if sizes.get(r.info.key.as_str()) == Some(&r.info.stored_bytes) {
            // Its digests are read again if the part is reused ([`reused_blocks`]): a resumed
            // terabyte backup never holds them all.
            r.blocks = String::new();
            records.push(r);
        }
    }
    let Some(newest) = records.iter().max_by_key(|r| r.seen_at_ns) else { return Ok(None) };
    let here = newest.host == hostname();
    let gone = here && !std::path::Path::new(&format!("/proc/{}", newest.pid)).exists();
    if here && !gone {
        tracing::info!("not resuming {name}: its backup (pid {}) is still running on this host", newest.pid);
        return Ok(None);
    }
    let young = objects
        .iter()
        .filter_map(|o| o.last_modified)
        .max()
        .is_some_and(|t| chrono::Utc::now().signed_duration_since(t).to_std().unwrap_or_default() < LIVE_FOR);
    if young && !gone {
        tracing::info!(
            "not resuming {name}: written to in the last {} s, maybe by a backup still running",
            LIVE_FOR.as_secs()
        );
        return Ok(None);
    }
    Ok(Some(Leftover { name: name.to_string(), records, recorded }))
}

impl PartRecord {
    /// The part as base-backup's copy loop returns it, without its digests ([`reused_blocks`]).
    fn part(&self) -> IncrementalPart {
        IncrementalPart { entries: self.entries.clone(), ..Default::default() }
    }
}

/// The block digests of reused part `index` of `backup`, read again from its record.
///
/// # Errors
/// Storage, key and corruption errors naming the record.
pub async fn reused_blocks(repo: &Repo, backup: &str, index: u32) -> Result<BlockMap> {
    let key = record_key(repo, backup, index);
    let r = read_record(repo, &key, backup, index).await?;
    decode_blocks(&r.blocks, &repo.storage.describe(&key))
}

fn decode_blocks(text: &str, object: &str) -> Result<BlockMap> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| Error::corrupt(object, e))?;
    BlockMap::decode(&bytes, object)
}

async fn read_record(repo: &Repo, key: &str, backup: &str, index: u32) -> Result<PartRecord> {
    let json = repo.read_object(key, &Logical::PartRecord { backup, index }, false).await?;
    let r: PartRecord = serde_json::from_slice(&json).map_err(|e| Error::corrupt(repo.storage.describe(key), e))?;
    if r.format != RECORD_FORMAT || r.backup != backup {
        return Err(Error::corrupt(repo.storage.describe(key), "a record of another backup or format"));
    }
    let blocks = decode_blocks(&r.blocks, &repo.storage.describe(key))?;
    if blocks.algo != crate::blockmap::DigestAlgo::Blake3 {
        // Its digests could not join this run's block map (one hash per map): redo the part.
        return Err(Error::Invalid("its block digests are SHA-256 (recorded before BLAKE3)".into()));
    }
    if r.entries.iter().any(|e| e.kind == crate::manifest::EntryKind::File && !blocks.files.contains_key(&e.path)) {
        return Err(Error::corrupt(repo.storage.describe(key), "a file without its block digests"));
    }
    Ok(r)
}

/// What a run stores: parts reused from the leftover, and new parts with their numbers (the
/// one holding `global/pg_control` last).
#[derive(Debug, Default)]
pub struct Plan {
    pub reused: Vec<(PartInfo, IncrementalPart)>,
    pub new_parts: Vec<(u32, Vec<DataFile>)>,
}

/// Plan the parts of `files` (walked after this run's checkpoint) reusing what `records`
/// allow (blocking: looks at every file of a candidate part).
pub fn plan(records: &[PartRecord], files: Vec<DataFile>, part_size: u64) -> Plan {
    let by_path: HashMap<&str, &DataFile> = files.iter().map(|f| (f.rel_path.as_str(), f)).collect();
    let mut reused: BTreeMap<u32, &PartRecord> =
        records.iter().filter(|r| reusable(r, &by_path)).map(|r| (r.info.index, r)).collect();
    loop {
        let taken: HashSet<&str> = reused.values().flat_map(|r| r.seen.iter().map(|s| s.path.as_str())).collect();
        let rest: Vec<DataFile> = files.iter().filter(|f| !taken.contains(f.rel_path.as_str())).cloned().collect();
        let parts = datadir::split_parts(rest, part_size.max(1));
        let total = reused.len() + parts.len();
        if reused.last_key_value().is_some_and(|(i, _)| *i as usize >= total) {
            reused.pop_last();
            continue;
        }
        let free = (0..total as u32).filter(|i| !reused.contains_key(i));
        return Plan {
            reused: reused.values().map(|r| (r.info.clone(), r.part())).collect(),
            new_parts: free.zip(parts).collect(),
        };
    }
}

fn reusable(r: &PartRecord, now: &HashMap<&str, &DataFile>) -> bool {
    let entries: HashSet<&str> = r.entries.iter().map(|e| e.path.as_str()).collect();
    if r.seen.iter().any(|s| s.path == PG_CONTROL) || r.seen.len() != entries.len() {
        return false;
    }
    let wanted: Vec<DataFile> = match r.seen.iter().map(|s| now.get(s.path.as_str()).map(|f| (*f).clone())).collect() {
        Some(files) => files,
        None => return false,
    };
    let (current, _) = look(&wanted);
    let same_link = r.entries.iter().all(|e| match now.get(e.path.as_str()).map(|f| &f.kind) {
        Some(FileKind::Symlink(target)) => e.link_target.as_deref() == Some(target.as_str()),
        _ => e.link_target.is_none(),
    });
    same_link
        && r.seen.iter().zip(&current).all(|(then, now)| {
            entries.contains(then.path.as_str())
                && then == now
                && (then.mtime_ns == 0 || then.mtime_ns < r.seen_at_ns.saturating_sub(SETTLE.as_nanos() as i64))
        })
}

#[cfg(test)]
#[path = "resume_tests.rs"]
mod tests;
