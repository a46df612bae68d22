//! `base-backup --type diff|incr`: which backup to build on, and what an incremental adds to
//! the manifest and metadata (`docs/FORMAT.md`, section 9). The block comparison itself is
//! [`crate::tarball::write_tar_incremental`]; the block maps [`crate::ops::repo::chain`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::blockmap::BlockMap;
use crate::manifest::{Manifest, ManifestReference};
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, BackupMetadata, BackupType, WalArchive};
use crate::ops::repo::wal_index::WalIndex;
use crate::ops::repo::{chain, metadata_auth, parts};
use crate::tarball::IncrementalPart;
use crate::wal::WalFileName;
use crate::wal::follow::Path;
use crate::{Error, Result};

/// The backup an incremental builds on, with its block map.
#[derive(Clone)]
pub struct Reference {
    pub meta: BackupMetadata,
    pub kind: BackupType,
    pub blocks: Arc<BlockMap>,
}

/// The reference for a backup of type `kind` of the cluster `system_identifier` starting on
/// `timeline`: for `diff` the newest full backup, for `incr` the newest backup of any type,
/// on this timeline's path. `None` (with a warning: the backup is then a full one) when there
/// is none, or it has no block map (written before incremental backups).
///
/// # Errors
/// Storage, key and corruption errors reading the reference.
pub async fn reference(
    repo: &Repo,
    kind: BackupType,
    system_identifier: u64,
    timeline: u32,
) -> Result<Option<Reference>> {
    if kind.is_full() {
        return Ok(None);
    }
    let all = catalog::backups(repo).await?;
    let path = timeline_path(repo, timeline, all.first().map_or(16 << 20, |b| b.wal_segment_size)).await?;
    let candidate = all.iter().rev().find(|b| {
        b.system_identifier.0 == system_identifier
            && (kind == BackupType::Incr || b.backup_type.is_full())
            && path.as_ref().map_or(b.timeline == timeline, |p| p.contains_point(b.timeline, b.start_lsn))
    });
    let Some(meta) = candidate else {
        tracing::warn!(
            "no {} backup of this cluster on timeline {timeline} to build on: taking a full backup",
            if kind == BackupType::Diff { "full" } else { "earlier" }
        );
        return Ok(None);
    };
    let manifest = parts::load_manifest(repo, meta).await?;
    let Some(blocks) = chain::load_block_map(repo, meta, &manifest).await? else {
        tracing::warn!(
            "backup {} has no block map (written before incremental backups): taking a full backup",
            meta.name
        );
        return Ok(None);
    };
    tracing::info!("{} backup against {}", kind.name(), meta.name);
    Ok(Some(Reference { meta: meta.clone(), kind, blocks: Arc::new(blocks) }))
}

/// The path of `timeline` through its history (from the archive), `None` for timeline 1.
async fn timeline_path(repo: &Repo, timeline: u32, seg: u64) -> Result<Option<Path>> {
    if timeline <= 1 {
        return Ok(None);
    }
    let name = WalFileName::History { tli: timeline }.to_string();
    let mut index = WalIndex::load(None, repo);
    let Some(found) = index.find(repo, &name, false).await? else {
        return Err(Error::not_found(format!("timeline history file {name}, needed to find the backup to build on")));
    };
    let archive = WalArchive::from_files(repo, BTreeMap::from([(name, found.key)]), seg).await?;
    let history = archive.history(repo, timeline)?;
    Ok(Some(Path::new(&history, timeline, seg)))
}

/// Merge the parts' outputs into the manifest's incremental fields; returns the block map.
pub fn merge(manifest: &mut Manifest, outputs: Vec<IncrementalPart>) -> BlockMap {
    let mut blocks = BlockMap::default();
    for out in outputs {
        manifest.deltas.extend(out.deltas);
        manifest.unchanged.extend(out.unchanged);
        blocks.files.extend(out.blocks.files);
    }
    blocks
}

/// Store the block map and name the reference in the manifest and the metadata (before the
/// metadata is sealed: both fields are covered).
///
/// # Errors
/// Storage and codec failures.
pub async fn finish(
    repo: &Repo,
    meta: &mut BackupMetadata,
    manifest: &mut Manifest,
    blocks: &BlockMap,
    reference: Option<&Reference>,
) -> Result<()> {
    manifest.block_map_sha256 = Some(chain::save_block_map(repo, &meta.name, &meta.manifest_key, blocks).await?);
    if let Some(r) = reference {
        meta.backup_type = r.kind;
        meta.reference = Some(r.meta.name.clone());
        manifest.reference = Some(ManifestReference {
            name: r.meta.name.clone(),
            metadata_sha256: metadata_auth::metadata_sha256(&r.meta),
        });
    }
    Ok(())
}
