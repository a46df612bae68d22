//! `base-backup`: an online, physical, consistent backup of a running cluster (SPEC section 7).
//!
//! Non-exclusive backup API over a regular connection; PGDATA and tablespaces read locally;
//! parts streamed through tar → codec into spool files of bounded size and uploaded in
//! parallel; then the stop call's `backup_label`/`tablespace_map` as the last part, a wait
//! until the WAL that makes the backup consistent is in the archive, the manifest, and last
//! the metadata object (whose presence makes the backup complete) and `latest.json`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

pub use super::options::{BackupOptions, Checkpoint};
use crate::blockmap::stream::DigestSpool;
use crate::codec::{self, Encoder};
use crate::error::IoContext;
use crate::manifest::{Manifest, ManifestTablespace};
use crate::ops::Repo;
use crate::ops::backup::flow::Flow;
use crate::ops::backup::lease::Lease;
use crate::ops::backup::piped::Piped;
use crate::ops::backup::resume;
use crate::ops::repo::blocking;
use crate::ops::repo::catalog::{BackupMetadata, LatestPointer, PartInfo};
use crate::ops::repo::identity::{self, ClusterInfo};
use crate::ops::repo::metadata_auth;
use crate::ops::repo::phases::Phases;
use crate::ops::repo::place::Logical;
use crate::pg::backup_api::{self, Server};
use crate::pg::datadir::{self, DataFile};
use crate::tarball::IncrementalPart;
use crate::wal::{Lsn, WalFileName};
use crate::{Error, Result, tarball};

/// Default part size: 256 MiB of file data.
pub const DEFAULT_PART_SIZE: u64 = 256 << 20;

/// Take a base backup into `repo`.
///
/// # Errors
/// Connection and SQL failures ([`Error::Postgres`]), a data directory that is not the
/// server's, storage and codec failures, and a timeout waiting for the WAL archive. On any
/// error the backup is not complete (no metadata object) and `latest.json` is unchanged.
pub async fn base_backup(repo: &Repo, opts: &BackupOptions) -> Result<BackupMetadata> {
    let began = Instant::now();
    let phases = Phases::start();
    let server = backup_api::connect(&opts.conn, "walvault base-backup").await?;
    phases.end("connect");
    if server.in_recovery {
        super::standby::check_lag(repo, &server, opts.max_standby_lag, &opts.conn.describe()).await?;
    }
    let pgdata = check_pgdata(opts.pgdata.as_deref(), &server)?;
    let cluster = ClusterInfo {
        system_identifier: server.system_identifier,
        pg_major: Some(server.version_num / 10_000),
        wal_segment_size: server.wal_segment_size,
    };
    identity::ensure(repo, &cluster).await?;
    phases.end("identity");
    let planned = super::incremental::reference(repo, opts, server.system_identifier, server.timeline).await?;
    phases.end("reference");
    // Only a full backup resumes or leaves parts to resume: an incremental's hold deltas.
    let window = if planned.is_some() { Duration::ZERO } else { opts.resume_window };
    let leftover = resume::find_leftover(repo, &opts.cluster, server.system_identifier, window).await?;
    let name = resume::backup_name(repo, &opts.cluster, leftover.as_ref()).await?;
    // A resumable backup holds a lease on its folder: no two runs ever complete it.
    let mut lease = if window.is_zero() { None } else { Some(Lease::take(repo, &name).await?) };
    phases.end("name");
    tracing::info!("backup {name}: waiting for a {} checkpoint", opts.checkpoint);
    // The reference's block map is read while the server checkpoints.
    let (start, reference) = tokio::join!(
        server.backup_start(&name, opts.checkpoint == Checkpoint::Fast),
        super::incremental::open(repo, opts, planned)
    );
    let start = start?;
    let reference = match reference {
        Ok(r) => r,
        Err(e) => {
            let _ = server.backup_stop().await;
            return Err(e);
        }
    };
    phases.end("backup-start");
    tracing::info!("backup {name} started at {} on timeline {}", start.lsn, start.timeline);
    let prior = (reference.as_ref(), leftover.as_ref(), window);
    let work = copy_and_finish(repo, opts, &server, &pgdata, &name, &start, prior, &phases);
    let result = match lease.as_mut() {
        Some(lease) => lease.hold(repo, work).await,
        None => work.await,
    };
    if result.is_err() {
        // Leave the server clean; the parts stay invisible without a metadata object.
        let _ = server.backup_stop().await;
    }
    let mut meta = result?;
    if let Some(lease) = &lease {
        lease.confirm(repo).await?;
    }
    meta.seconds = began.elapsed().as_secs_f64();
    let metadata_key = repo.layout.backup_metadata_key(&name);
    repo.storage.put(&metadata_key, json_bytes(&meta)?).await?;
    phases.end("metadata");
    update_latest(repo, &meta).await?;
    phases.end("latest");
    crate::ops::repo::summary::backup_added(repo, &meta).await;
    phases.end("summary");
    phases.log();
    tracing::info!(
        "backup {name} complete: {} files, {} bytes stored as {} in {:.1} s",
        meta.files,
        meta.bytes,
        meta.stored_bytes,
        meta.seconds
    );
    Ok(meta)
}

fn check_pgdata(given: Option<&Path>, server: &Server) -> Result<PathBuf> {
    let pgdata = given.map(Path::to_path_buf).unwrap_or_else(|| server.data_directory.clone());
    let same = std::fs::canonicalize(&pgdata).ok() == std::fs::canonicalize(&server.data_directory).ok();
    if !pgdata.join("PG_VERSION").is_file() || !same {
        return Err(Error::config(
            "--pgdata",
            format!(
                "{} is not the data directory of the server (which reports {}); base-backup must run on the database host",
                pgdata.display(),
                server.data_directory.display()
            ),
        ));
    }
    Ok(pgdata)
}

#[allow(clippy::too_many_arguments)]
async fn copy_and_finish(
    repo: &Repo,
    opts: &BackupOptions,
    server: &Server,
    pgdata: &Path,
    name: &str,
    start: &backup_api::BackupStart,
    (reference, leftover, window): (Option<&super::incremental::Reference>, Option<&resume::Leftover>, Duration),
    phases: &Phases,
) -> Result<BackupMetadata> {
    let version_dir = server.tablespace_version_dir();
    let walk_root = pgdata.to_path_buf();
    let files = blocking(move || datadir::walk(&walk_root, Some(&version_dir))).await?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    phases.end("walk");
    let (changed, source) = super::incremental::changed_blocks(server, reference, start).await?;
    phases.end("summaries");
    let records = leftover.map(|l| l.records.clone()).unwrap_or_default();
    let part_size = opts.part_size;
    let plan = blocking(move || Ok(resume::plan(&records, files, part_size))).await?;
    let mut parts = plan.new_parts;
    // The walk puts global/pg_control last: its part is read once every other part is, as
    // PostgreSQL copies it (a standby backup ends at the minRecoveryPoint it holds).
    let control_part = parts.pop();
    super::schedule::longest_first(&mut parts, changed.as_deref());
    let spool = tempfile::Builder::new()
        .prefix("walvault-spool-")
        .tempdir_in(opts.spool_dir.clone().unwrap_or_else(std::env::temp_dir))
        .with_path(opts.spool_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let count = plan.reused.len() + parts.len() + usize::from(control_part.is_some());
    let flow = Flow::start(format!("backup {name}"), total, repo.progress_interval, opts.max_rate);
    if leftover.is_some() {
        let bytes = plan.reused.iter().map(|(p, _)| p.bytes).sum();
        flow.progress.add(bytes);
        tracing::info!("resuming backup {name}: {} of {count} parts ({bytes} bytes) reused", plan.reused.len());
    }
    let gathering = super::maps::Gathering::new(spool.path())?;
    let part_job = |i: u32, files: Vec<DataFile>| {
        let spool = spool.path().to_path_buf();
        let (flow, gathering) = (&flow, &gathering);
        let part = match reference {
            Some(r) => Part::Incremental(files, Arc::clone(&r.blocks), changed.clone()),
            None => Part::Files(files),
        };
        async move {
            if leftover.is_some_and(|l| l.recorded.contains(&i)) {
                resume::forget(repo, name, i).await?;
            }
            let looked = part.files().to_vec();
            let seen = blocking(move || Ok(resume::look(&looked))).await?;
            let (info, mut output) = upload_part(repo, name, i, part, &spool, flow).await?;
            if !window.is_zero() {
                resume::write_record(repo, name, server.system_identifier, seen, &info, &output).await?;
            }
            gathering.take(&mut output)?;
            tracing::info!(
                "part {}/{count}: {} files, {} -> {} bytes",
                i + 1,
                info.files,
                info.bytes,
                info.stored_bytes
            );
            Ok::<_, Error>((info, output))
        }
    };
    let uploads = futures_util::stream::iter(parts).map(|(i, files)| part_job(i, files));
    let mut results: Vec<(PartInfo, IncrementalPart)> =
        uploads.buffer_unordered(opts.jobs.max(1)).try_collect().await?;
    if let Some((i, files)) = control_part {
        results.push(part_job(i, files).await?);
    }
    for (info, mut output) in plan.reused {
        output.blocks = resume::reused_blocks(repo, name, info.index).await?;
        gathering.take(&mut output)?;
        results.push((info, output));
    }
    results.sort_by_key(|(p, _)| p.index);
    flow.progress.finish();
    phases.end("copy");

    let stop = server.backup_stop().await?;
    phases.end("backup-stop");
    let mut label_files: Vec<(&str, &[u8])> = vec![("backup_label", stop.backup_label.as_bytes())];
    if let Some(map) = &stop.tablespace_map {
        label_files.push(("tablespace_map", map.as_bytes()));
    }
    let owned: Vec<(String, Vec<u8>)> = label_files.iter().map(|(p, d)| (p.to_string(), d.to_vec())).collect();
    results.push(upload_part(repo, name, count as u32, Part::Bytes(owned), spool.path(), &flow).await?);
    phases.end("label");

    let seg = server.wal_segment_size;
    let first = start.lsn.segment_number(seg);
    let last = Lsn(stop.lsn.0.saturating_sub(1)).segment_number(seg).max(first);
    super::archived::wait_for_archive(repo, start.timeline, first, last, seg, opts.archive_timeout).await?;
    phases.end("archive-wait");

    let tablespaces: Vec<ManifestTablespace> = server
        .tablespaces()
        .await?
        .into_iter()
        .map(|t| ManifestTablespace { oid: t.oid, name: t.name, location: t.location.display().to_string() })
        .collect();
    let (parts, mut outputs): (Vec<PartInfo>, Vec<IncrementalPart>) = results.into_iter().unzip();
    let entries = outputs.iter_mut().flat_map(|o| std::mem::take(&mut o.entries)).collect();
    let mut manifest = Manifest::new(entries, tablespaces.clone());
    let read_bytes = super::incremental::merge(&mut manifest, outputs, &gathering)?;
    let manifest_key = repo.layout.backup_object(name, &format!("manifest.json{}", repo.object_ext()));
    let mut meta = BackupMetadata {
        format: metadata_auth::METADATA_FORMAT,
        name: name.to_string(),
        env: repo.layout.env().to_string(),
        cluster: opts.cluster.clone(),
        system_identifier: crate::wal::SystemId(server.system_identifier),
        pg_version_num: server.version_num,
        wal_segment_size: seg,
        timeline: start.timeline,
        start_lsn: start.lsn,
        stop_lsn: stop.lsn,
        start_wal_file: WalFileName::from_segno(start.timeline, first, seg).to_string(),
        stop_wal_file: WalFileName::from_segno(start.timeline, last, seg).to_string(),
        start_time: start.started_at,
        stop_time: stop.stopped_at,
        // Regular files, as each part and the restore count them (directories are not files).
        files: parts.iter().map(|p| p.files).sum(),
        bytes: parts.iter().map(|p| p.bytes).sum(),
        stored_bytes: parts.iter().map(|p| p.stored_bytes).sum(),
        parts,
        manifest_key: manifest_key.clone(),
        compression: repo.codec.compression.name().to_string(),
        encrypted: repo.keyring.is_encrypted(),
        key_fingerprint: repo.keyring.write_key().map(|k| k.fingerprint_hex()),
        tablespaces,
        from_standby: server.in_recovery,
        seconds: 0.0,
        backup_type: Default::default(),
        reference: None,
        block_source: None,
        read_bytes: None,
        mac: None,
    };
    phases.end("manifest-build");
    super::incremental::finish(repo, &mut meta, &mut manifest, gathering, reference, (source, read_bytes)).await?;
    phases.end("block-map");
    // The metadata's MAC, and its digest inside the authenticated manifest.
    metadata_auth::seal(&mut meta, &mut manifest, &repo.keyring)?;
    let manifest_json = serde_json::to_vec(&manifest).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
    let (settings, key) = (repo.codec, repo.keyring.write_key().cloned());
    let context = repo.context(&Logical::Manifest(name)).await?;
    let encoded =
        blocking(move || codec::encode_to_vec(&manifest_json, &settings, key.as_ref(), None, &context)).await?;
    repo.storage.put(&manifest_key, Bytes::from(encoded)).await?;
    phases.end("manifest");
    Ok(meta)
}

enum Part {
    Files(Vec<DataFile>),
    /// Files compared with a reference's block map.
    Incremental(Vec<DataFile>, Arc<DigestSpool>, Option<Arc<crate::blockmap::ChangedBlocks>>),
    Bytes(Vec<(String, Vec<u8>)>),
}

impl Part {
    fn files(&self) -> &[DataFile] {
        match self {
            Part::Files(files) | Part::Incremental(files, ..) => files,
            Part::Bytes(_) => &[],
        }
    }
}

/// tar → compress → encrypt into a spool file, then upload it streaming from disk.
async fn upload_part(
    repo: &Repo,
    name: &str,
    index: u32,
    part: Part,
    spool: &Path,
    flow: &Flow,
) -> Result<(PartInfo, IncrementalPart)> {
    let key = repo.layout.backup_object(name, &format!("part_{index:05}.tar{}", repo.object_ext()));
    let path = spool.join(format!("part_{index:05}"));
    let (settings, write_key) = (repo.codec, repo.keyring.write_key().cloned());
    let context = repo.context(&Logical::Part { backup: name, index }).await?;
    let spool_path = path.clone();
    let spool_name = path.display().to_string();
    let spool_dir = spool.to_path_buf();
    let flow_in = flow.clone();
    let mut output = blocking(move || {
        // 0600 whatever the umask: without a key the spool holds plain database files.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spool_path)
            .with_path(&spool_path)?;
        let out = std::io::BufWriter::with_capacity(1 << 20, file);
        let encoder = Encoder::new(out, &settings, write_key.as_ref(), None, &context)?;
        // Compression and encryption on a thread of their own: reading, digesting and
        // encoding one part use two cores.
        let encoder = flow_in.reading(Piped::new(encoder).with_path(&spool_path)?);
        let (encoder, output) = match &part {
            Part::Files(files) => {
                let (encoder, entries, blocks) = tarball::write_tar_blocks(encoder, files)?;
                let read_bytes = entries.iter().map(|e| e.size).sum();
                (encoder, IncrementalPart { entries, blocks, read_bytes, ..Default::default() })
            }
            Part::Incremental(files, reference, changed) => {
                tarball::write_tar_incremental(encoder, files, reference.as_ref(), changed.as_deref(), &spool_dir)?
            }
            Part::Bytes(items) => {
                let refs: Vec<(&str, &[u8])> = items.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
                let (encoder, entries) = tarball::write_tar_bytes(encoder, &refs)?;
                let files = items.iter().map(|(p, d)| (p.clone(), crate::blockmap::of_bytes(d))).collect();
                let blocks = crate::blockmap::BlockMap { files, ..Default::default() };
                (encoder, IncrementalPart { entries, blocks, ..Default::default() })
            }
        };
        let encoder = encoder.into_inner().finish().map_err(|e| codec::error_from_io(e, &spool_name))?;
        let mut out = encoder.finish()?;
        out.flush().with_path(&spool_path)?;
        Ok(output)
    })
    .await?;
    let entries = &mut output.entries;
    let stored = std::fs::metadata(&path).with_path(&path)?.len();
    flow.upload(repo, &key, &path).await?;
    let _ = std::fs::remove_file(&path);
    for e in entries.iter_mut() {
        e.part = index;
    }
    let info = PartInfo {
        index,
        key,
        files: entries.iter().filter(|e| e.kind == crate::manifest::EntryKind::File).count() as u64,
        bytes: entries.iter().map(|e| e.size).sum(),
        stored_bytes: stored,
    };
    Ok((info, output))
}

/// Point `latest.json` at `meta` unless a newer complete backup is already there.
async fn update_latest(repo: &Repo, meta: &BackupMetadata) -> Result<()> {
    let key = repo.layout.latest_backup_key();
    if let Ok(bytes) = repo.storage.get_bytes(&key).await
        && let Ok(current) = serde_json::from_slice::<LatestPointer>(&bytes)
        && current.stop_time > meta.stop_time
    {
        return Ok(());
    }
    let pointer = LatestPointer {
        backup: meta.name.clone(),
        metadata: repo.layout.backup_metadata_key(&meta.name),
        stop_time: meta.stop_time,
        stop_lsn: meta.stop_lsn,
        timeline: meta.timeline,
    };
    repo.storage.put(&key, json_bytes(&pointer)?).await
}

fn json_bytes(value: &impl serde::Serialize) -> Result<Bytes> {
    serde_json::to_vec_pretty(value).map(Bytes::from).map_err(|e| Error::Invalid(format!("json: {e}")))
}
