//! `base-backup --type diff|incr`: which backup to build on, and what an incremental adds to
//! the manifest and metadata (`docs/FORMAT.md`, section 9). The block comparison itself is
//! [`crate::tarball::write_tar_incremental`]; the block maps [`crate::ops::repo::chain`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::maps::Gathering;
use crate::blockmap::stream::DigestSpool;
use crate::blockmap::{ChangedBlocks, DigestAlgo};
use crate::manifest::{Manifest, ManifestReference};
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, BackupMetadata, BackupType, WalArchive};
use crate::ops::repo::wal_index::WalIndex;
use crate::ops::repo::{chain, metadata_auth, parts};
use crate::pg::backup_api::{BackupStart, Server};
use crate::tarball::IncrementalPart;
use crate::wal::follow::Path;
use crate::wal::timeline::HistoryEntry;
use crate::wal::{Lsn, WalFileName};
use crate::{Error, Result};

/// The backup an incremental builds on, with its effective block map (every file it
/// restores, merged from its chain).
#[derive(Clone)]
pub struct Reference {
    pub meta: BackupMetadata,
    pub kind: BackupType,
    /// Kept in a local unnamed file (the spool directory), never whole in memory.
    pub blocks: Arc<DigestSpool>,
    /// The history of the timeline the backup starts on (empty on timeline 1), to follow the
    /// WAL summaries from the reference across timeline switches.
    pub history: Vec<HistoryEntry>,
}

/// The reference chosen, its chain loaded and checked; its block map is read by [`open`]
/// (while the backup's checkpoint runs).
pub struct Planned {
    meta: BackupMetadata,
    kind: BackupType,
    links: Vec<chain::Link>,
    history: Vec<HistoryEntry>,
}

/// The reference's effective block map (every file it restores, merged from its chain), read
/// into an unnamed file in the spool directory.
///
/// # Errors
/// As [`chain::effective_spool`].
pub async fn open(
    repo: &Repo,
    opts: &super::options::BackupOptions,
    planned: Option<Planned>,
) -> Result<Option<Reference>> {
    let Some(p) = planned else { return Ok(None) };
    let began = std::time::Instant::now();
    let dir = opts.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let blocks = chain::effective_spool(repo, &p.links, &dir).await?;
    tracing::debug!("the block map of {}'s chain read in {} ms", p.meta.name, began.elapsed().as_millis());
    if blocks.algo() != DigestAlgo::Blake3 {
        // One hash per chain: new blocks are hashed with BLAKE3, and compared with these.
        tracing::warn!(
            "the chain of backup {} has SHA-256 block maps (written before BLAKE3): taking a full backup",
            p.meta.name
        );
        return Ok(None);
    }
    Ok(Some(Reference { meta: p.meta, kind: p.kind, blocks: Arc::new(blocks), history: p.history }))
}

/// The reference for a backup of type `kind` of the cluster `system_identifier` starting on
/// `timeline`: for `diff` the newest full backup, for `incr` the newest backup of any type,
/// on this timeline's path. `None` (with a warning: the backup is then a full one) when there
/// is none, or it has no block map (written before incremental backups), or the newest full
/// backup is older than `--full-every`.
///
/// # Errors
/// Storage, key and corruption errors reading the reference.
pub async fn reference(
    repo: &Repo,
    opts: &super::options::BackupOptions,
    system_identifier: u64,
    timeline: u32,
) -> Result<Option<Planned>> {
    let kind = opts.backup_type;
    if kind.is_full() {
        return Ok(None);
    }
    let all = catalog::backups(repo).await?;
    tracing::debug!("{} complete backups listed", all.len());
    let history = timeline_history(repo, timeline, all.first().map_or(16 << 20, |b| b.wal_segment_size)).await?;
    let seg = all.first().map_or(16 << 20, |b| b.wal_segment_size);
    let path = history.as_ref().map(|h| Path::new(h, timeline, seg));
    let candidate = all.iter().rev().find(|b| {
        b.system_identifier.0 == system_identifier
            && (kind == BackupType::Incr || b.backup_type.is_full())
            && path.as_ref().map_or(b.timeline == timeline, |p| p.contains_point(b.timeline, b.start_lsn))
    });
    let newest_full = all.iter().rev().find(|b| b.system_identifier.0 == system_identifier && b.backup_type.is_full());
    if let (Some(every), Some(full)) = (opts.full_every, newest_full)
        && chrono::Utc::now() - full.stop_time >= every
    {
        tracing::info!(
            "the newest full backup {} is older than --full-every {}: taking a full backup",
            full.name,
            crate::ops::repo::human::human_duration(every)
        );
        return Ok(None);
    }
    let Some(meta) = candidate else {
        tracing::warn!(
            "no {} backup of this cluster on timeline {timeline} to build on: taking a full backup",
            if kind == BackupType::Diff { "full" } else { "earlier" }
        );
        return Ok(None);
    };
    let manifest = parts::load_manifest(repo, meta).await?;
    tracing::debug!("manifest of {} read: {} entries", meta.name, manifest.files.len());
    if manifest.block_map_sha256.is_none() {
        tracing::warn!(
            "backup {} has no block map (written before incremental backups): taking a full backup",
            meta.name
        );
        return Ok(None);
    }
    let links = match chain::load_known(repo, meta.clone(), manifest, &all).await {
        // A broken chain: what builds on it could not be restored either.
        Err(e) if matches!(e.root(), Error::Refused(_)) => {
            tracing::warn!("{}: taking a full backup", e.root());
            return Ok(None);
        }
        other => other?,
    };
    tracing::info!("{} backup against {} (a chain of {})", kind.name(), meta.name, links.len());
    Ok(Some(Planned { meta: meta.clone(), kind, links, history: history.unwrap_or_default() }))
}

/// The history of `timeline` (from the archive), `None` for timeline 1.
async fn timeline_history(repo: &Repo, timeline: u32, seg: u64) -> Result<Option<Vec<HistoryEntry>>> {
    if timeline <= 1 {
        return Ok(None);
    }
    let name = WalFileName::History { tli: timeline }.to_string();
    let mut index = WalIndex::load(None, repo);
    let Some(found) = index.find(repo, &name, false).await? else {
        return Err(Error::not_found(format!("timeline history file {name}, needed to find the backup to build on")));
    };
    let archive = WalArchive::from_files(repo, BTreeMap::from([(name, found.key)]), seg).await?;
    Ok(Some(archive.history(repo, timeline)?))
}

/// The `(timeline, from, to)` pieces of `from..to` along the path of `target` (`history`: its
/// ancestors and where each one ends), oldest first.
pub fn ranges_on_path(history: &[HistoryEntry], target: u32, from: Lsn, to: Lsn) -> Vec<(u32, Lsn, Lsn)> {
    let mut out = Vec::new();
    let mut begin = Lsn(0);
    let spans = history.iter().map(|e| (e.tli, e.switchpoint)).chain(std::iter::once((target, Lsn(u64::MAX))));
    for (tli, end) in spans {
        let (a, b) = (begin.max(from), end.min(to));
        if a < b {
            out.push((tli, a, b));
        }
        begin = end;
    }
    out
}

/// Merge the parts' outputs into the manifest's incremental fields, their digests into
/// `gathering` (those of parts it did not take yet); returns the bytes read from the data
/// directory.
///
/// # Errors
/// As [`Gathering::take`].
pub fn merge(manifest: &mut Manifest, outputs: Vec<IncrementalPart>, gathering: &Gathering) -> Result<u64> {
    let mut read = 0;
    for mut out in outputs {
        gathering.take(&mut out)?;
        manifest.deltas.extend(out.deltas);
        manifest.unchanged.extend(out.unchanged);
        read += out.read_bytes;
    }
    Ok(read)
}

/// How long base-backup waits for the WAL summarizer to reach the backup's start.
const SUMMARIZER_WAIT: Duration = Duration::from_secs(60);

/// Where an incremental's changed blocks come from: PostgreSQL's WAL summaries between the
/// reference's start and this backup's (17 and newer, `summarize_wal = on`), else every file
/// compared by content; the second value says which, and why not the summaries.
///
/// # Errors
/// A failed query.
pub async fn changed_blocks(
    server: &Server,
    reference: Option<&Reference>,
    start: &BackupStart,
) -> Result<(Option<Arc<ChangedBlocks>>, Option<String>)> {
    let Some(r) = reference else { return Ok((None, None)) };
    let history = if r.history.is_empty() && start.timeline > 1 { None } else { Some(&r.history) };
    let ranges = history.map(|h| ranges_on_path(h, start.timeline, r.meta.start_lsn, start.lsn)).unwrap_or_default();
    let mut all = ChangedBlocks::default();
    let mut why = None;
    if history.is_none() {
        why = Some(format!("the history of timeline {} is unknown", start.timeline));
    } else if ranges.is_empty() {
        why = Some(format!("no WAL from {} to {}", r.meta.start_lsn, start.lsn));
    }
    for (tli, from, to) in &ranges {
        match server.changed_blocks(*tli, *from, *to, SUMMARIZER_WAIT).await? {
            Ok(changed) => all.merge(changed),
            Err(w) => {
                why = Some(w);
                break;
            }
        }
    }
    let why = match why {
        None => {
            let on = ranges.iter().map(|(t, a, b)| format!("timeline {t} {a} to {b}")).collect::<Vec<_>>().join(", ");
            tracing::info!("changed blocks from WAL summaries ({on}): {} relation forks", all.relations.len());
            return Ok((Some(Arc::new(all)), Some(SOURCE_SUMMARIES.into())));
        }
        Some(w) => w,
    };
    tracing::info!("comparing every file by content (WAL summaries not used: {why})");
    Ok((None, Some(format!("content ({why})"))))
}

/// `block_source` of an incremental whose relation blocks came from WAL summaries.
pub const SOURCE_SUMMARIES: &str = "wal-summaries";

/// Store the block map and name the reference in the manifest and the metadata (before the
/// metadata is sealed: both fields are covered).
///
/// # Errors
/// Storage and codec failures.
pub async fn finish(
    repo: &Repo,
    meta: &mut BackupMetadata,
    manifest: &mut Manifest,
    blocks: Gathering,
    reference: Option<&Reference>,
    (source, read_bytes): (Option<String>, u64),
) -> Result<()> {
    if let Some(r) = reference {
        meta.backup_type = r.kind;
        meta.reference = Some(r.meta.name.clone());
        meta.block_source = source;
        meta.read_bytes = Some(read_bytes);
        manifest.reference = Some(ManifestReference {
            name: r.meta.name.clone(),
            metadata_sha256: metadata_auth::metadata_sha256(&r.meta),
        });
    }
    // Complete for a full backup; what it stored for an incremental (its manifest says which).
    manifest.block_map_sha256 = Some(blocks.save(repo, &meta.name, &meta.manifest_key, manifest).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_timeline_path() {
        let h = |tli, at| HistoryEntry { tli, switchpoint: Lsn(at), reason: String::new() };
        let history = [h(1, 100), h(2, 200)];
        assert_eq!(
            ranges_on_path(&history, 3, Lsn(50), Lsn(250)),
            vec![(1, Lsn(50), Lsn(100)), (2, Lsn(100), Lsn(200)), (3, Lsn(200), Lsn(250))]
        );
        assert_eq!(ranges_on_path(&history, 3, Lsn(150), Lsn(180)), vec![(2, Lsn(150), Lsn(180))]);
        assert_eq!(ranges_on_path(&[], 1, Lsn(10), Lsn(20)), vec![(1, Lsn(10), Lsn(20))]);
    }
}
