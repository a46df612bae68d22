//! Extracting a full backup's parts into PGDATA, `--jobs` at once (a delta restore leaves
//! out the kept files and the parts with nothing to write).

use std::collections::HashSet;

use tokio_util::io::SyncIoBridge;

use super::PrepareOptions;
use crate::codec;
use crate::manifest::Manifest;
use crate::ops::Repo;
use crate::ops::repo::blocking;
use crate::ops::repo::catalog::{BackupMetadata, PartInfo};
use crate::ops::repo::progress::{Metered, Progress};
use crate::ops::restore::chain::Written;
use crate::{Error, Result, tarball};

pub(super) async fn extract_parts(
    repo: &Repo,
    b: &BackupMetadata,
    manifest: &Manifest,
    opts: &PrepareOptions,
    delta: Option<&crate::ops::restore::delta::Plan>,
) -> Result<Written> {
    use futures_util::StreamExt;
    let keep = delta.map(|d| d.keep.clone()).unwrap_or_default();
    let keep = &keep;
    let parts: Vec<PartInfo> =
        b.parts.iter().filter(|p| !delta.is_some_and(|d| d.skip_parts.contains(&p.index))).cloned().collect();
    let stored = parts.iter().map(|p| p.stored_bytes).sum();
    let progress = Progress::start(format!("restore of {}", b.name), stored, repo.progress_interval);
    let progress = &progress;
    let results: Vec<(PartInfo, tarball::ExtractStats)> = futures_util::stream::iter(parts)
        .map(|part| async move {
            let expect =
                repo.expect(&crate::ops::repo::place::Logical::Part { backup: &b.name, index: part.index }).await?;
            let reader = repo.storage.get(&part.key).await?;
            let bridge = Metered::new(SyncIoBridge::new(reader), progress.clone(), None);
            let (object, keyring) = (repo.storage.describe(&part.key), repo.keyring.clone());
            let (manifest, pgdata, remap) = (manifest.clone(), opts.pgdata.clone(), opts.tablespace_map.clone());
            let keep = std::sync::Arc::clone(keep);
            let stats = blocking(move || {
                let input = std::io::BufReader::with_capacity(1 << 20, bridge);
                let (_, body) = codec::decoder(input, &keyring, &object, false, Some(&expect))?;
                tarball::extract_tar_keeping(body, &pgdata, &manifest, &remap, &keep).map_err(|e| match e {
                    Error::Io { path, source } if path == object => codec::error_from_io(source, &object),
                    other => other,
                })
            })
            .await?;
            tracing::info!("part {}: {} files, {} bytes", part.index, stats.files, stats.bytes);
            Ok::<_, Error>((part, stats))
        })
        .buffer_unordered(opts.jobs.max(1))
        // Collect every result (not try_collect): a failed part must not leave others still
        // writing into PGDATA while the caller cleans it up.
        .collect::<Vec<Result<_>>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    progress.finish();
    let mut files = 0;
    let mut bytes = 0;
    for (part, stats) in &results {
        let extracted: HashSet<String> = stats.paths.iter().cloned().collect();
        if let Some(missing) = manifest.missing(part.index, &extracted).first() {
            return Err(Error::corrupt(
                repo.storage.describe(&part.key),
                format!("{} is in the manifest but not in the part", missing.path),
            ));
        }
        files += stats.files;
        bytes += stats.bytes;
    }
    let (parts, parts_skipped) = (b.parts.len() as u64, delta.map_or(0, |d| d.skip_parts.len() as u64));
    Ok(Written { files, bytes, parts, parts_skipped })
}
