//! Restoring an incremental backup: its whole chain in one pass, straight into PGDATA
//! (`docs/FORMAT.md`, section 9.3). The chain is loaded and checked before anything is
//! written (a missing link refuses the restore, naming it); then the target's tree is laid
//! out and the parts of every backup of the chain are streamed in parallel, each writing only
//! the blocks no newer backup holds ([`crate::manifest::chain::plan`],
//! [`crate::tarball::apply_tar`]). Parts that contribute nothing are not downloaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::io::SyncIoBridge;

use crate::blockmap::BlockMap;
use crate::manifest::Manifest;
use crate::manifest::chain::EntryPlan;
use crate::ops::Repo;
use crate::ops::repo::catalog::BackupMetadata;
use crate::ops::repo::chain::{self, Link};
use crate::ops::repo::place::Logical;
use crate::ops::repo::{blocking, place};
use crate::{Error, Result, codec, tarball};

/// A chain checked and planned, ready to be written.
pub struct ChainRestore {
    pub links: Vec<Link>,
    plan: Vec<HashMap<u32, HashMap<String, EntryPlan>>>,
    target: Arc<BlockMap>,
}

impl ChainRestore {
    /// The names of the chain, full backup first.
    pub fn names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.meta.name.clone()).collect()
    }
}

/// The chain of `backup` loaded, every part present and every file planned; `None` for a
/// full backup.
///
/// # Errors
/// [`Error::Refused`] for a broken chain (naming the missing backup); corruption, key and
/// storage errors of any link.
pub async fn prepare(repo: &Repo, backup: &BackupMetadata, manifest: &Manifest) -> Result<Option<ChainRestore>> {
    load_and_plan(repo, backup, manifest, true).await
}

/// [`prepare`] to check a chain (verify): the same checks, the target's block map merged but
/// not kept. Returns the names of the chain, full backup first; `None` for a full backup.
///
/// # Errors
/// As [`prepare`].
pub async fn check(repo: &Repo, backup: &BackupMetadata, manifest: &Manifest) -> Result<Option<Vec<String>>> {
    Ok(load_and_plan(repo, backup, manifest, false).await?.map(|c| c.names()))
}

async fn load_and_plan(
    repo: &Repo,
    backup: &BackupMetadata,
    manifest: &Manifest,
    keep_map: bool,
) -> Result<Option<ChainRestore>> {
    if !manifest.is_incremental() && backup.reference.is_none() {
        return Ok(None);
    }
    let links = chain::load(repo, backup.clone(), manifest.clone()).await?;
    for link in &links[..links.len().saturating_sub(1)] {
        place::check_parts(repo, &link.meta, |_| true).await?;
    }
    // Every restored file at its length, all its digests (the chain's maps merged).
    let blocks = if keep_map {
        chain::effective_map(repo, &links).await?
    } else {
        chain::check_effective(repo, &links).await?;
        BlockMap::default()
    };
    let manifests: Vec<&Manifest> = links.iter().map(|l| &l.manifest).collect();
    let names: Vec<&str> = links.iter().map(|l| l.meta.name.as_str()).collect();
    let plan = crate::manifest::chain::plan(&manifests, &names)?;
    if keep_map {
        tracing::info!("restoring the chain {}", names.join(" -> "));
    }
    Ok(Some(ChainRestore { plan, target: Arc::new(blocks), links }))
}

/// What [`restore`] wrote, and the parts of the chain it did not need to download.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub files: u64,
    pub bytes: u64,
    /// Every part of every backup of the chain.
    pub parts: u64,
    /// Parts not downloaded: they hold nothing the restore writes.
    pub parts_skipped: u64,
}

impl ChainRestore {
    /// Every file the target restores: its length and block digests (the effective block map,
    /// authenticated when the chain was prepared).
    pub fn target_blocks(&self) -> Arc<BlockMap> {
        Arc::clone(&self.target)
    }
}

/// Write the planned chain into `pgdata` (an empty directory, or one a delta restore cleaned:
/// the target's files named in `keep` are on disk already and left alone; only the other files
/// are laid out and written, and a part that holds nothing for them is not downloaded).
///
/// # Errors
/// As [`tarball::apply_tar`] and [`tarball::lay_out`]; storage and key errors.
pub async fn restore(
    repo: &Repo,
    c: &ChainRestore,
    pgdata: &std::path::Path,
    remap: &BTreeMap<u32, PathBuf>,
    jobs: usize,
    keep: &Arc<HashSet<String>>,
) -> Result<Written> {
    let Some(last) = c.links.last() else { return Ok(Written::default()) };
    let target = Arc::new(last.manifest.clone());
    let (dest, map, t, k) = (pgdata.to_path_buf(), remap.clone(), Arc::clone(&target), Arc::clone(keep));
    let places = Arc::new(blocking(move || tarball::lay_out_keeping(&dest, &t, &map, &k)).await?);
    let mut work = Vec::new();
    let mut parts = 0;
    for (k, link) in c.links.iter().enumerate() {
        for part in &link.meta.parts {
            parts += 1;
            let Some(plan) = c.plan.get(k).and_then(|p| p.get(&part.index)) else { continue };
            let plan: HashMap<String, EntryPlan> =
                plan.iter().filter(|(path, _)| !keep.contains(*path)).map(|(p, e)| (p.clone(), e.clone())).collect();
            if !plan.is_empty() {
                work.push((link.meta.name.clone(), part.clone(), Arc::new(plan)));
            }
        }
    }
    let parts_skipped = parts - work.len() as u64;
    let results = futures_util::stream::iter(work)
        .map(|(name, part, plan)| {
            let (places, blocks) = (Arc::clone(&places), Arc::clone(&c.target));
            async move {
                let expect = repo.expect(&Logical::Part { backup: &name, index: part.index }).await?;
                let reader = repo.storage.get(&part.key).await?;
                let bridge = SyncIoBridge::new(reader);
                let (object, keyring) = (repo.storage.describe(&part.key), repo.keyring.clone());
                let stats = blocking(move || {
                    let input = std::io::BufReader::with_capacity(1 << 20, bridge);
                    let (_, body) = codec::decoder(input, &keyring, &object, false, Some(&expect))?;
                    tarball::apply_tar(body, &plan, &places, &blocks).map_err(|e| match e {
                        Error::Corrupt { object: what, reason } => Error::corrupt(&object, format!("{what}: {reason}")),
                        other => other,
                    })
                })
                .await?;
                tracing::info!("{name} part {}: {} blocks from {} files", part.index, stats.blocks, stats.entries);
                Ok::<_, Error>(stats)
            }
        })
        .buffer_unordered(jobs.max(1))
        // Every result (not try_collect): no part may still be writing when the caller cleans up.
        .collect::<Vec<Result<_>>>()
        .await;
    results.into_iter().collect::<Result<Vec<_>>>()?;
    let written = target.restored_files().filter(|(p, _, _)| !keep.contains(*p));
    let (files, bytes) = written.fold((0, 0), |(n, b), (_, len, _)| (n + 1, b + len));
    Ok(Written { files, bytes, parts, parts_skipped })
}
