//! `wal-push %p`: archive one WAL file (SPEC section 5).
//!
//! Order: read and check the file (name, page header, system identifier), hash the
//! plaintext, look for the name in earlier day partitions, compress and encrypt, then
//! put-if-absent under today's day partition. An identical duplicate is success; the same
//! name with other content is refused and nothing is overwritten.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::identity::{self, ClusterInfo, Identity};
use super::wal_index::WalIndex;
use super::{Repo, blocking};
use crate::codec;
use crate::error::IoContext;
use crate::wal::{self, WalFileName};
use crate::{Error, Result};

/// What wal-push did, for its log line and `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushOutcome {
    pub name: String,
    /// `s3://…` or path of the object holding the file.
    pub object: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// True when the identical file was already archived and nothing was written.
    pub duplicate: bool,
    pub millis: u64,
    pub requests: crate::storage::RequestStats,
}

/// Archive the WAL file at `path`; with `parallel` > 1, also push the next `.ready` files
/// PostgreSQL is waiting to archive (read-ahead), so that a backlog drains on every core.
/// A file pushed ahead is remembered (name and digest) in the cache; when PostgreSQL asks
/// for it, its digest is compared with the one pushed and no request is sent.
///
/// # Errors
/// [`Error::Invalid`] for a name that is not a WAL file name or a malformed segment,
/// [`Error::Refused`] for another cluster's WAL, an unknown page magic, an encryption
/// mismatch or the same name with different content; storage and I/O failures. Failures
/// of read-ahead files are logged and left for PostgreSQL's own call.
pub async fn wal_push(repo: &Repo, path: &Path, cache_dir: Option<&Path>, parallel: usize) -> Result<PushOutcome> {
    let started = Instant::now();
    let name = file_name(path)?;
    let parsed = WalFileName::parse(&name)?;
    let data = tokio::fs::read(path).await.with_path(path)?;
    let cluster = if parsed.has_page_header() { Some(check_segment(&name, &data)?) } else { None };

    let mut index = WalIndex::load(cache_dir, repo);
    let key = repo.keyring.write_key().cloned();
    let digest = codec::content_digest(&data, key.as_ref());
    if index.take_pushed_ahead(&name, &digest) {
        index.save();
        tracing::debug!("{name} was pushed ahead by an earlier call");
        return Ok(PushOutcome {
            name,
            object: "(pushed ahead)".to_string(),
            bytes_in: data.len() as u64,
            bytes_out: 0,
            duplicate: false,
            millis: started.elapsed().as_millis() as u64,
            requests: repo.storage.stats(),
        });
    }
    verify_identity(repo, &mut index, cluster.as_ref()).await?;

    // Look every file of the batch up first (cheap, cached), then push them concurrently.
    let mut batch = vec![(path.to_path_buf(), name.clone(), index.find(repo, &name, true).await?)];
    for ahead in read_ahead(path, &name, parallel.saturating_mul(2).saturating_sub(1)) {
        let ahead_name = file_name(&ahead)?;
        let found = index.find(repo, &ahead_name, true).await?;
        batch.push((ahead, ahead_name, found));
    }
    let first = Bytes::from(data);
    let results: Vec<Result<Pushed>> = futures_util::stream::iter(batch.into_iter().enumerate())
        .map(|(i, (p, n, found))| {
            let data = (i == 0).then(|| first.clone());
            let expected = cluster;
            async move { push_one(repo, &p, &n, data, found, expected).await }
        })
        .buffered(parallel.max(1))
        .collect()
        .await;
    let mut results = results.into_iter();
    let requested = results.next().unwrap_or_else(|| Err(Error::Invalid("empty batch".into())));
    for (i, r) in results.enumerate() {
        match r {
            Ok(p) => {
                if let Some((day, ext)) = &p.stored_at {
                    index.record(*day, &p.outcome.name, ext);
                }
                index.mark_pushed_ahead(&p.outcome.name, &p.digest);
                tracing::info!(
                    "archived {} ahead ({} -> {} bytes)",
                    p.outcome.name,
                    p.outcome.bytes_in,
                    p.outcome.bytes_out
                );
            }
            Err(e) => tracing::warn!("read-ahead file {} not pushed: {e}", i + 1),
        }
    }
    let pushed = match requested {
        Ok(p) => p,
        Err(e) => {
            index.save();
            return Err(e);
        }
    };
    if let Some((day, ext)) = &pushed.stored_at {
        index.record(*day, &name, ext);
    }
    index.save();
    let mut outcome = pushed.outcome;
    if outcome.duplicate {
        tracing::warn!("{name} was already archived with identical content as {}; nothing written", outcome.object);
    }
    outcome.millis = started.elapsed().as_millis() as u64;
    outcome.requests = repo.storage.stats();
    Ok(outcome)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Invalid(format!("{}: not a wal file name", path.display())))
}

/// The next `.ready` files after `name` in `pg_wal/archive_status`, oldest first.
fn read_ahead(path: &Path, name: &str, n: usize) -> Vec<std::path::PathBuf> {
    let Some(dir) = path.parent() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(dir.join("archive_status")) else { return Vec::new() };
    let mut ready: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|f| f.strip_suffix(".ready")).map(str::to_string))
        .filter(|f| f.as_str() != name && WalFileName::parse(f).is_ok())
        .collect();
    ready.sort_by_key(|f| WalFileName::parse(f).map(|w| w.sort_key()).ok());
    ready.into_iter().take(n).map(|f| dir.join(f)).filter(|p| p.is_file()).collect()
}

/// One file's push result.
struct Pushed {
    outcome: PushOutcome,
    digest: [u8; 32],
    /// Where it was stored, when this call stored it.
    stored_at: Option<(chrono::NaiveDate, String)>,
}

/// Push one file whose earlier copy (if any) is `found`. `data` is given for the requested
/// file (already read and checked); read-ahead files are read and checked here, and must
/// belong to the same cluster as the requested one.
async fn push_one(
    repo: &Repo,
    path: &Path,
    name: &str,
    data: Option<Bytes>,
    found: Option<super::wal_index::Found>,
    expected: Option<ClusterInfo>,
) -> Result<Pushed> {
    let data = match data {
        Some(d) => d,
        None => {
            let d = tokio::fs::read(path).await.with_path(path)?;
            if WalFileName::parse(name)?.has_page_header() {
                let c = check_segment(name, &d)?;
                if expected.is_some_and(|e| e.system_identifier != c.system_identifier) {
                    return Err(Error::Refused(format!("{name}: system identifier {} differs", c.system_identifier)));
                }
            }
            Bytes::from(d)
        }
    };
    let key = repo.keyring.write_key().cloned();
    let digest = codec::content_digest(&data, key.as_ref());
    let mut outcome = PushOutcome {
        name: name.to_string(),
        object: String::new(),
        bytes_in: data.len() as u64,
        bytes_out: 0,
        duplicate: false,
        millis: 0,
        requests: Default::default(),
    };
    if let Some(found) = found {
        match compare_existing(repo, &found.key, name, &data, &digest).await {
            Ok(()) => {
                outcome.object = repo.storage.describe(&found.key);
                outcome.duplicate = true;
                return Ok(Pushed { outcome, digest, stored_at: None });
            }
            // A stale cache entry (the object was deleted or pruned): archive it again.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let today = Utc::now().date_naive();
    let ext = repo.object_ext();
    let object_key = repo.layout.wal_key(today, name, &ext);
    let settings = repo.codec;
    let plain = data.clone();
    let encoded = blocking(move || codec::encode_slice_with_digest(&plain, &settings, key.as_ref(), digest)).await?;
    outcome.bytes_out = encoded.len() as u64;
    outcome.object = repo.storage.describe(&object_key);
    match repo.storage.put_if_absent(&object_key, Bytes::from(encoded)).await {
        Ok(()) => Ok(Pushed { outcome, digest, stored_at: Some((today, ext)) }),
        Err(Error::AlreadyExists { .. }) => {
            compare_existing(repo, &object_key, name, &data, &digest).await?;
            outcome.duplicate = true;
            Ok(Pushed { outcome, digest, stored_at: None })
        }
        Err(e) => Err(e),
    }
}

/// Check a segment's long page header and length; return the cluster it belongs to.
fn check_segment(name: &str, data: &[u8]) -> Result<ClusterInfo> {
    let header = wal::parse_long_header(data).map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
    let pg_major = wal::header::pg_major_for_magic(header.magic).ok_or_else(|| {
        Error::Refused(format!(
            "{name}: unknown WAL page magic 0x{:04X}; this walvault knows PostgreSQL {}",
            header.magic,
            known_majors()
        ))
    })?;
    let named = WalFileName::parse(name).ok().and_then(|n| n.segno(u64::from(header.seg_size)));
    if named != Some(header.segno()) {
        return Err(Error::Invalid(format!(
            "{name}: the page header says this is the segment at {}; a file archived under another segment's name could never be restored",
            header.page_addr
        )));
    }
    if data.len() as u64 != u64::from(header.seg_size) {
        return Err(Error::Invalid(format!(
            "{name}: file is {} bytes but its page header says the segment size is {}",
            data.len(),
            header.seg_size
        )));
    }
    Ok(ClusterInfo {
        system_identifier: header.system_id,
        pg_major: Some(pg_major),
        wal_segment_size: u64::from(header.seg_size),
    })
}

fn known_majors() -> String {
    let majors: Vec<String> = wal::header::KNOWN_MAGICS.iter().map(|(_, v)| v.to_string()).collect();
    majors.join(", ")
}

/// Check the repository accepts this cluster: from the cache when it already did, else by
/// reading (and creating or extending) `walvault.json`.
async fn verify_identity(repo: &Repo, index: &mut WalIndex, cluster: Option<&ClusterInfo>) -> Result<()> {
    let cached_ok = index.identity().is_some_and(|id| accepts(repo, id, cluster));
    if cached_ok {
        return Ok(());
    }
    match cluster {
        Some(cluster) => {
            let id = identity::ensure(repo, cluster).await?;
            index.set_identity(id);
        }
        // History and backup-label files carry no system identifier; the encryption check
        // still applies.
        None => {
            // A writer may be the first to touch a new local repository.
            repo.storage.prepare_for_writes().await?;
            if let Some(id) = identity::load(repo).await? {
                identity::check_encryption(repo, &id)?;
            }
        }
    }
    Ok(())
}

fn accepts(repo: &Repo, id: &Identity, cluster: Option<&ClusterInfo>) -> bool {
    let env_ok = match (id.envs.get(repo.layout.env()), cluster) {
        (Some(env), Some(c)) => env.system_identifier == c.system_identifier.to_string(),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let key_ok = match repo.keyring.write_key() {
        Some(k) => id.encrypted && id.key_fingerprints.contains(&k.fingerprint_hex()),
        None => !id.encrypted,
    };
    env_ok && key_ok
}

/// Compare the archived object at `key` with the file being pushed: from the digest in its
/// header when written with the same key, else by decoding it.
async fn compare_existing(repo: &Repo, key: &str, name: &str, data: &Bytes, digest: &[u8; 32]) -> Result<()> {
    let object = repo.storage.describe(key);
    let mut head = Vec::with_capacity(4096);
    repo.storage.get(key).await?.take(4096).read_to_end(&mut head).await.map_err(|e| Error::Storage {
        op: "get",
        key: object.clone(),
        reason: e.to_string(),
        permanent: false,
    })?;
    let header = codec::read_header(&mut head.as_slice(), &object)?;
    let same_key = header.key_fingerprint == repo.keyring.write_key().map(|k| k.fingerprint());
    let identical = match header.digest {
        // Different content is told by the header alone.
        Some(d) if same_key && d != *digest => false,
        // "Identical" is only said of a copy that is complete: PostgreSQL deletes its file
        // after exit 0, so a damaged copy accepted here would be the only one left.
        _ => {
            let plain = repo.read_object(key, true).await.map_err(|e| match e {
                Error::Corrupt { object, reason } => Error::Corrupt {
                    object,
                    reason: format!(
                        "{reason}
HINT: the archived copy of {name} is damaged and PostgreSQL still has the file: delete the object and the next wal-push stores it again"
                    ),
                },
                other => other,
            })?;
            plain == data.as_ref()
        }
    };
    if identical {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "{name}: refusing to overwrite {object}: the archived file has different content\nHINT: two clusters may be archiving into one WALVAULT_ENV; nothing was written"
        )))
    }
}
