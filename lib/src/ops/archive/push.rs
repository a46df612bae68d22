//! `wal-push %p`: archive one WAL file (SPEC section 5).
//!
//! Order: read and check the file (name, page header, system identifier), look for the name
//! in earlier day partitions, hash the plaintext (once), compress and encrypt, then
//! put-if-absent under today's day partition. An identical duplicate is success; the same
//! name with other content is refused and nothing is overwritten.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use tokio::io::AsyncReadExt;

use crate::codec;
use crate::ops::Repo;
use crate::ops::archive::claims::{self, Turn};
use crate::ops::repo::blocking;
use crate::ops::repo::identity::{self, ClusterInfo, Identity};
use crate::ops::repo::place::Logical;
use crate::ops::repo::wal_index::WalIndex;
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

/// Archive the WAL file at `path`. With a push-ahead directory (`ahead`, see
/// [`crate::ops::archive::claims`]), the file is first claimed there: when the push-ahead helper
/// stored it meanwhile, nothing more is done; while another process pushes it, this call
/// waits for that push.
///
/// # Errors
/// [`Error::Invalid`] for a name that is not a WAL file name or a malformed segment,
/// [`Error::Refused`] for another cluster's WAL, an unknown page magic, an encryption
/// mismatch or the same name with different content; storage and I/O failures.
pub async fn wal_push(repo: &Repo, path: &Path, cache_dir: Option<&Path>, ahead: Option<&Path>) -> Result<PushOutcome> {
    let started = Instant::now();
    let name = file_name(path)?;
    let parsed = WalFileName::parse(&name)?;
    let _claim = match ahead {
        Some(dir) => match claims::claim_or_wait(dir, path).await {
            Turn::Done => return Ok(pushed_ahead(repo, &name, started)),
            Turn::Claimed(c) => Some(c),
            Turn::Unclaimed => None,
        },
        None => None,
    };
    let data = read_input(path).await?;
    let cluster = if parsed.has_page_header() { Some(check_segment(&name, &data, None)?) } else { None };
    if let WalFileName::History { tli } = parsed {
        check_history(&name, tli, &data)?;
    }

    let mut index = WalIndex::load(cache_dir, repo);
    verify_identity(repo, &mut index, cluster.as_ref()).await?;
    if parsed.is_segment() && repo.place().await?.first_format2_wal_pending() {
        // The first segment this environment archives in format 2: format-1 WAL from here on
        // is refused by readers (docs/FORMAT.md, section 6).
        index.set_identity(identity::mark_first_format2_wal(repo, &name).await?);
    }
    let found = index.find(repo, &name, true).await?;
    let pushed = push_one(repo, path, &name, Some(Bytes::from(data)), None, found, cluster).await;
    if let Ok(Pushed { stored_at: Some((day, ext)), .. }) = &pushed {
        index.record(*day, &name, ext);
        crate::ops::repo::summary::wal_pushed(repo, cache_dir, &repo.layout.wal_key(*day, &name, ext), &name).await;
    }
    index.save();
    let mut outcome = pushed?.outcome;
    if outcome.duplicate {
        tracing::warn!("{name} was already archived with identical content as {}; nothing written", outcome.object);
    }
    outcome.millis = started.elapsed().as_millis() as u64;
    outcome.requests = repo.storage.stats();
    Ok(outcome)
}

/// The outcome of a call whose file the push-ahead helper had already stored.
pub fn pushed_ahead(repo: &Repo, name: &str, started: Instant) -> PushOutcome {
    tracing::debug!("{name} was pushed ahead by the push-ahead helper");
    PushOutcome {
        name: name.to_string(),
        object: "(pushed ahead)".to_string(),
        bytes_in: 0,
        bytes_out: 0,
        duplicate: false,
        millis: started.elapsed().as_millis() as u64,
        requests: repo.storage.stats(),
    }
}

/// The cluster the cached repository identity accepts from this writer (its environment's
/// system identifier, with the write key registered), if an earlier call verified it.
pub(super) fn cached_cluster(repo: &Repo, index: &WalIndex) -> Option<ClusterInfo> {
    let id = index.identity()?;
    let env = id.envs.get(repo.layout.env())?;
    let cluster = ClusterInfo {
        system_identifier: env.system_identifier.0,
        pg_major: env.pg_major,
        wal_segment_size: env.wal_segment_size,
    };
    // Objects are bound to the repository id; a repository still to record its first
    // format-2 segment is left to wal-push, which records it.
    let place = crate::ops::repo::place::Place::of(Some(id), repo.layout.env(), &repo.keyring);
    if id.repository_id.is_none() || place.first_format2_wal_pending() || !accepts(repo, id, Some(&cluster)) {
        return None;
    }
    repo.set_place(Some(id));
    Some(cluster)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Invalid(format!("{}: not a wal file name", path.display())))
}

/// One file's push result.
pub(super) struct Pushed {
    pub outcome: PushOutcome,
    /// Where it was stored, when this call stored it.
    pub stored_at: Option<(chrono::NaiveDate, String)>,
}

/// Push one file whose earlier copy (if any) is `found`. `data` is the file's content when
/// the caller read it already (else it is read here); a segment is checked here (name, page
/// header, size) and must belong to the `expected` cluster. `digest`, when given, is the
/// content digest of `data` under the write key.
pub(super) async fn push_one(
    repo: &Repo,
    path: &Path,
    name: &str,
    data: Option<Bytes>,
    digest: Option<[u8; 32]>,
    found: Option<crate::ops::repo::wal_index::Found>,
    expected: Option<ClusterInfo>,
) -> Result<Pushed> {
    let data = match data {
        Some(d) => d,
        None => Bytes::from(read_input(path).await?),
    };
    let parsed = WalFileName::parse(name)?;
    if parsed.has_page_header() {
        check_segment(name, &data, expected.map(|e| e.system_identifier))?;
    }
    if let WalFileName::History { tli } = parsed {
        check_history(name, tli, &data)?;
    }
    let key = repo.keyring.write_key().cloned();
    // A zstd frame carries its own content checksum of the plaintext (and the chunk tags
    // authenticate the frame): a 16 MiB digest pass would be a fifth of the CPU for a check
    // the decoder already makes. Other codecs keep the digest.
    let digest = match digest {
        Some(d) => Some(d),
        None if repo.codec.compression == codec::Compression::Zstd => None,
        None => {
            let plain = data.clone();
            let key = key.clone();
            Some(blocking(move || Ok(codec::content_digest(&plain, key.as_ref()))).await?)
        }
    };
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
        match compare_existing(repo, &found.key, name, &data, digest.as_ref()).await {
            Ok(()) => {
                outcome.object = repo.storage.describe(&found.key);
                outcome.duplicate = true;
                return Ok(Pushed { outcome, stored_at: None });
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
    let context = repo.context(&Logical::Wal(name)).await?;
    let encoded = blocking(move || codec::encode_slice(&plain, &settings, key.as_ref(), digest, &context)).await?;
    outcome.bytes_out = encoded.len() as u64;
    outcome.object = repo.storage.describe(&object_key);
    match repo.storage.put_if_absent(&object_key, Bytes::from(encoded)).await {
        Ok(()) => Ok(Pushed { outcome, stored_at: Some((today, ext)) }),
        Err(Error::AlreadyExists { .. }) => {
            compare_existing(repo, &object_key, name, &data, digest.as_ref()).await?;
            outcome.duplicate = true;
            Ok(Pushed { outcome, stored_at: None })
        }
        Err(e) => Err(e),
    }
}

/// Largest file wal-push reads: a WAL segment is at most 1 GiB.
const MAX_WAL_FILE: u64 = 1 << 30;

/// Read the file PostgreSQL asked to archive (`%p`), see [`read_file`].
async fn read_input(path: &Path) -> Result<Vec<u8>> {
    let path = path.to_path_buf();
    blocking(move || read_file(&path).map(|(data, _)| data)).await
}

/// Read a file to archive, with the metadata of the handle it was read through: a regular
/// file of at most 1 GiB. A FIFO, a device (`/dev/zero`) or a directory is refused as bad
/// input before it is read, so that a wrong `%p` can never hang or exhaust wal-push.
///
/// # Errors
/// [`Error::Invalid`] for what is not a regular file or is too large; [`Error::Io`] naming
/// the path otherwise.
pub(super) fn read_file(path: &Path) -> Result<(Vec<u8>, std::fs::Metadata)> {
    crate::fsutil::read_regular(path, MAX_WAL_FILE).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => {
            Error::Invalid(format!("{}: {e}; wal-push archives regular files only", path.display()))
        }
        _ => Error::io(path, e),
    })
}

/// A timeline history file must parse, and be the history of the timeline it is named
/// after: timeline N lists only ancestors below N, at least one when N > 1. Anything else
/// archived would make every later restore that reads it fail.
///
/// # Errors
/// [`Error::Invalid`] naming the file and what is wrong with it.
fn check_history(name: &str, tli: u32, data: &[u8]) -> Result<()> {
    let bad = |why: String| Error::Invalid(format!("{name}: not a valid timeline history file: {why}"));
    let text = std::str::from_utf8(data).map_err(|_| bad("not UTF-8 text".to_string()))?;
    let entries = wal::timeline::parse_history(text).map_err(|e| bad(e.to_string()))?;
    match entries.iter().map(|e| e.tli).max() {
        None if tli > 1 => Err(bad(format!("it lists no parent timeline, but timeline {tli} has one"))),
        Some(max) if max >= tli => Err(bad(format!(
            "it lists timeline {max}, but the history of timeline {tli} lists only timelines below {tli}"
        ))),
        _ => Ok(()),
    }
}

/// Check a segment to archive ([`wal::check::check_segment`]: page header, length, name,
/// and the `expected` cluster when known) and its page magic; return the cluster it belongs to.
fn check_segment(name: &str, data: &[u8], expected: Option<u64>) -> Result<ClusterInfo> {
    let parsed = WalFileName::parse(name)?;
    let len = Some(data.len() as u64);
    let info = wal::check::check_segment(data, len, &parsed, expected).map_err(|f| f.into_input_error(name))?;
    let pg_major = wal::header::pg_major_for_magic(info.magic).ok_or_else(|| {
        Error::Refused(format!(
            "{name}: unknown WAL page magic 0x{:04X}; this walvault knows PostgreSQL {}",
            info.magic,
            known_majors()
        ))
    })?;
    Ok(ClusterInfo { system_identifier: info.system_id, pg_major: Some(pg_major), wal_segment_size: info.seg_size })
}

fn known_majors() -> String {
    let majors: Vec<String> = wal::header::KNOWN_MAGICS.iter().map(|(_, v)| v.to_string()).collect();
    majors.join(", ")
}

/// Check the repository accepts this cluster: from the cache when it already did, else by
/// reading (and creating or extending) `walvault.json`.
async fn verify_identity(repo: &Repo, index: &mut WalIndex, cluster: Option<&ClusterInfo>) -> Result<()> {
    // A cached identity without a repository id predates format 2: read (and move) it.
    let cached_ok = index.identity().is_some_and(|id| id.repository_id.is_some() && accepts(repo, id, cluster));
    if cached_ok {
        repo.set_place(index.identity());
        return Ok(());
    }
    let id = match cluster {
        Some(cluster) => identity::ensure(repo, cluster).await?,
        // History and backup-label files carry no system identifier; the encryption check
        // still applies. A writer may be the first to touch a new repository.
        None => identity::check_writer(repo).await?,
    };
    if cluster.is_some() || id.envs.contains_key(repo.layout.env()) {
        index.set_identity(id);
    }
    Ok(())
}

fn accepts(repo: &Repo, id: &Identity, cluster: Option<&ClusterInfo>) -> bool {
    let env_ok = match (id.envs.get(repo.layout.env()), cluster) {
        (Some(env), Some(c)) => env.system_identifier.0 == c.system_identifier,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let key_ok = match repo.keyring.write_key() {
        Some(k) => id.encrypted && id.key_fingerprints.contains(&k.fingerprint_hex()),
        None => !id.encrypted && repo.keyring.unencrypted_by_choice(),
    };
    env_ok && key_ok
}

/// Compare the archived object at `key` with the file being pushed: different content is told
/// by the digest in its header when both have one under the same key; otherwise, and always
/// before saying "identical", by decoding it.
async fn compare_existing(repo: &Repo, key: &str, name: &str, data: &Bytes, digest: Option<&[u8; 32]>) -> Result<()> {
    let object = repo.storage.describe(key);
    let mut head = Vec::with_capacity(4096);
    repo.storage.get(key).await?.take(4096).read_to_end(&mut head).await.map_err(|e| Error::Storage {
        op: "get",
        key: object.clone(),
        reason: e.to_string(),
        permanent: false,
    })?;
    let header = codec::read_header(&mut head.as_slice(), &object).map_err(|e| damaged(e, name))?;
    let same_key = header.key_fingerprint == repo.keyring.write_key().map(|k| k.fingerprint());
    let identical = match header.digest {
        // Different content is told by the header alone.
        Some(d) if same_key && digest.is_some_and(|mine| d != *mine) => false,
        // "Identical" is only said of a copy that is complete: PostgreSQL deletes its file
        // after exit 0, so a damaged copy accepted here would be the only one left.
        _ => {
            let plain = repo.read_object(key, &Logical::Wal(name), true).await.map_err(|e| damaged(e, name))?;
            plain == data.as_ref()
        }
    };
    if identical {
        Ok(())
    } else {
        Err(Error::Refused(format!("{name}: refusing to overwrite {object}: the archived file has different content"))
            .with_hint("two clusters may be archiving into one WALVAULT_ENV; nothing was written"))
    }
}

/// A corrupt archived copy of `name`, with what to do about it.
fn damaged(e: Error, name: &str) -> Error {
    match e {
        Error::Corrupt { object, reason } => Error::Corrupt { object, reason }.with_hint(format!(
            "the archived copy of {name} is damaged and PostgreSQL still has the file: delete the object and the next wal-push stores it again"
        )),
        other => other,
    }
}
