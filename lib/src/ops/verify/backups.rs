//! The backup half of `walvault verify`: the repository identity, every database and file
//! backup read in full against its manifest (nothing written), incomplete folders and
//! `latest.json`.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use crate::ops::Repo;
use crate::ops::repo::catalog::{BackupMetadata, LatestPointer};
use crate::ops::repo::files_catalog;
use crate::ops::repo::progress::Progress;
use crate::ops::repo::{identity, parts};
use crate::ops::verify::{BackupResult, Check};
use crate::{Error, Result, tarball};

pub(super) async fn check_identity(repo: &Repo) -> Result<Check> {
    let started = Instant::now();
    let env = repo.layout.env();
    Ok(match identity::load(repo).await {
        Ok(Some(id)) => match id.envs.get(env) {
            Some(e) => Check::passed(
                "repository identity",
                format!("environment {env}: system identifier {}", e.system_identifier),
                started,
            ),
            None => Check::failed(
                "repository identity",
                format!("walvault.json does not list environment {env}"),
                Some(crate::layout::IDENTITY_KEY.into()),
                started,
            ),
        },
        Ok(None) => Check::failed(
            "repository identity",
            "walvault.json not found",
            Some(crate::layout::IDENTITY_KEY.into()),
            started,
        ),
        Err(e @ Error::Storage { .. }) => return Err(e),
        Err(e) => {
            Check::failed("repository identity", e.to_string(), Some(crate::layout::IDENTITY_KEY.into()), started)
        }
    })
}

/// The manifest, then every part read to its end against it.
pub(super) async fn check_backup(repo: &Repo, b: &BackupMetadata, jobs: usize) -> Result<(Check, BackupResult)> {
    let started = Instant::now();
    let name = format!("backup {}", b.name);
    let mut result = BackupResult {
        name: b.name.clone(),
        kind: "database".to_string(),
        status: "failed".to_string(),
        stop_time: b.stop_time,
        timeline: Some(b.timeline),
        parts: b.parts.len(),
        files: 0,
        bytes: 0,
        stored_bytes: b.stored_bytes,
        seconds: 0.0,
    };
    let outcome = read_backup(repo, b, jobs, &mut result).await;
    result.seconds = started.elapsed().as_secs_f64();
    let check = match outcome {
        Ok(()) => {
            result.status = "passed".to_string();
            let detail = format!(
                "manifest and {} parts: {} files, {} read and matched their checksums",
                b.parts.len(),
                result.files,
                crate::ops::repo::human::human_bytes(result.bytes)
            );
            Check::passed(&name, detail, started)
        }
        // A key that opens nothing is the operator's setting, not a broken backup: exit 4.
        Err((e @ (Error::Storage { permanent: false, .. } | Error::Key { .. }), _)) => return Err(e),
        Err((e, key)) => Check::failed(&name, e.to_string(), Some(key), started),
    };
    Ok((check, result))
}

/// A file-storage backup: manifest and archive, read to the end.
pub(super) async fn check_files_backup(
    repo: &Repo,
    meta: &files_catalog::FilesMetadata,
) -> Result<(Check, BackupResult)> {
    let started = Instant::now();
    let name = format!("{} backup {}", meta.kind, meta.name);
    let mut result = BackupResult {
        name: meta.name.clone(),
        kind: meta.kind.clone(),
        status: "failed".to_string(),
        stop_time: meta.created,
        timeline: None,
        parts: 1,
        files: 0,
        bytes: 0,
        stored_bytes: meta.stored_bytes,
        seconds: 0.0,
    };
    let outcome = files_catalog::verify_files_backup(repo, meta).await;
    result.seconds = started.elapsed().as_secs_f64();
    let check = match outcome {
        Ok(stats) => {
            (result.files, result.bytes, result.status) = (stats.files, stats.bytes, "passed".to_string());
            let size = crate::ops::repo::human::human_bytes(stats.bytes);
            Check::passed(&name, format!("{} files, {size} read and matched their checksums", stats.files), started)
        }
        // A key that opens nothing is the operator's setting, not a broken backup: exit 4.
        Err((e @ (Error::Storage { permanent: false, .. } | Error::Key { .. }), _)) => return Err(e),
        Err((e, key)) => Check::failed(&name, e.to_string(), Some(key), started),
    };
    Ok((check, result))
}

/// Errors come with the key of the object they are about.
async fn read_backup(
    repo: &Repo,
    b: &BackupMetadata,
    jobs: usize,
    result: &mut BackupResult,
) -> std::result::Result<(), (Error, String)> {
    let manifest = match parts::load_manifest(repo, b).await {
        Err(Error::NotFound { .. }) => {
            let e = Error::not_found(format!("manifest {}", repo.storage.describe(&b.manifest_key)));
            return Err((e, b.manifest_key.clone()));
        }
        other => other.map_err(|e| (e, b.manifest_key.clone()))?,
    };
    let indices: Vec<u32> = b.parts.iter().map(|p| p.index).collect();
    if let Some(stray) = manifest.files.iter().find(|e| !indices.contains(&e.part)) {
        let why = format!("{} is listed in part {}, which the backup does not have", stray.path, stray.part);
        return Err((Error::corrupt(repo.storage.describe(&b.manifest_key), why), b.manifest_key.clone()));
    }
    check_chain(repo, b, &manifest).await?;
    let manifest = Arc::new(manifest);
    let stored = b.parts.iter().map(|p| p.stored_bytes).sum();
    let progress = Progress::start(format!("verify backup {}", b.name), stored, repo.progress_interval);
    let stats: Vec<std::result::Result<tarball::VerifyStats, (Error, String)>> =
        futures_util::stream::iter(b.parts.clone())
            .map(|part| {
                let manifest = Arc::clone(&manifest);
                let what = crate::ops::repo::place::Logical::Part { backup: &b.name, index: part.index };
                let progress = &progress;
                async move {
                    parts::verify_part(repo, &part.key, part.index, what, manifest, progress)
                        .await
                        .map_err(|e| (e, part.key))
                }
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    progress.finish();
    for s in stats {
        let s = s?;
        result.files += s.files;
        result.bytes += s.bytes;
    }
    Ok(())
}

/// An incremental's chain end to end (every link present and the one it was computed against,
/// every file of the backup rebuildable from the chain, the block map); a full backup's block
/// map. The parts of each link are read when that link is verified.
async fn check_chain(
    repo: &Repo,
    b: &BackupMetadata,
    manifest: &crate::manifest::Manifest,
) -> std::result::Result<(), (Error, String)> {
    let map_key = crate::ops::repo::chain::block_map_key(&b.manifest_key);
    match crate::ops::restore::chain::check(repo, b, manifest).await {
        Ok(Some(names)) => {
            tracing::info!("backup {}: chain {} is whole", b.name, names.join(" -> "));
            Ok(())
        }
        Ok(None) if manifest.block_map_sha256.is_none() => Ok(()),
        Ok(None) => {
            let link = [crate::ops::repo::chain::Link { meta: b.clone(), manifest: manifest.clone() }];
            crate::ops::repo::chain::check_effective(repo, &link).await.map(|_| ()).map_err(|e| (e, map_key))
        }
        Err(e) => Err((e, b.manifest_key.clone())),
    }
}

/// Folders without a metadata object (an interrupted base-backup or prune), and latest.json.
pub(super) async fn check_folders(repo: &Repo, backups: &[BackupMetadata]) -> Result<Vec<Check>> {
    let started = Instant::now();
    let mut checks = Vec::new();
    let root = repo.layout.database_root();
    let listing = repo.storage.list(&root, Some("/"), None).await?;
    for prefix in &listing.prefixes {
        let name = prefix.trim_start_matches(&root).trim_end_matches('/');
        if !backups.iter().any(|b| b.name == name) {
            let why = format!(
                "{prefix} has no metadata object: an interrupted base-backup (the next run within WALVAULT_RESUME_WINDOW resumes it) or prune (prune removes it once it is older than the oldest kept backup and the resume window)"
            );
            checks.push(Check::warning("incomplete backup", why, Some(prefix.clone()), started));
        }
    }
    let latest_key = repo.layout.latest_backup_key();
    let pointer = match repo.storage.get_bytes(&latest_key).await {
        Ok(bytes) => serde_json::from_slice::<LatestPointer>(&bytes).ok(),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let newest = backups.last().map(|b| b.name.as_str());
    match (pointer, newest) {
        (Some(p), Some(n)) if p.backup == n => {
            checks.push(Check::passed("latest.json", format!("points at {n}"), started))
        }
        (p, Some(n)) => {
            let at = p.map_or("nothing readable".to_string(), |p| p.backup);
            let why =
                format!("points at {at}, not the newest complete backup {n} (pitr-prepare does not depend on it)");
            checks.push(Check::warning("latest.json", why, Some(latest_key), started));
        }
        _ => {}
    }
    Ok(checks)
}
