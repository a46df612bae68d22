//! The repository identity object, `walvault.json`: format version, the random repository id
//! every object is bound to, encryption, and per environment the PostgreSQL system
//! identifier it archives. Created with put-if-absent so that of two clusters racing to
//! create it, one wins and the other is refused. A format-1 identity is moved to format 2 by
//! the first writer that meets it (`docs/FORMAT.md`, section 6).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::layout::IDENTITY_KEY;
use crate::ops::Repo;
use crate::{Error, Result};

/// The repository format this build writes and reads (1 is read, and moved to 2 by writers).
pub const FORMAT_VERSION: u32 = 2;

/// `walvault.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: u32,
    pub created_at: DateTime<Utc>,
    pub encrypted: bool,
    /// Fingerprints of every key that has written to this repository (hex).
    #[serde(default)]
    pub key_fingerprints: Vec<String>,
    #[serde(default)]
    pub envs: BTreeMap<String, EnvIdentity>,
    /// 32 random hex digits: every format-2 object is bound to it. Absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    /// Only in a repository moved from format 1 to 2: which format-1 objects still count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format1: Option<Format1Marks>,
}

/// Where format-1 objects (bound to no place) are still read, in a repository that moved to
/// format 2: backups started before `until`, and per environment the WAL before the first
/// segment it archived in format 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format1Marks {
    /// When the repository moved to format 2.
    pub until: DateTime<Utc>,
    /// Environment → the first WAL segment it archived in format 2.
    #[serde(default)]
    pub wal_before: BTreeMap<String, String>,
    /// The marks sealed with the writer's key (hex of an empty format-2 object bound to them):
    /// without a valid seal, an encrypted repository reads no format-1 object at all, so
    /// editing these marks in the bucket cannot widen what is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

impl Format1Marks {
    /// The place a seal of these marks is bound to in repository `repository`.
    fn context(&self, repository: [u8; 16]) -> crate::codec::Context {
        let mut text = format!("until={}\n", self.until.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        for (env, name) in &self.wal_before {
            text.push_str(&format!("wal_before.{env}={name}\n"));
        }
        crate::codec::Context {
            repository,
            env: "walvault.json".into(),
            system_identifier: 0,
            object: format!("format1/{}", crate::codec::sha256_hex(text.as_bytes())),
        }
    }

    /// Seal the marks with `key` (an empty object bound to them).
    fn reseal(&mut self, repository: [u8; 16], key: &crate::codec::Key) -> Result<()> {
        let settings = crate::codec::CodecSettings { compression: crate::codec::Compression::None, level: 0 };
        self.seal = None;
        let sealed = crate::codec::encode_to_vec(b"", &settings, Some(key), None, &self.context(repository))?;
        self.seal = Some(hex::encode(sealed));
        Ok(())
    }

    /// Whether the seal opens with a key of `keyring` and is bound to these very marks.
    pub fn sealed(&self, repository: [u8; 16], keyring: &crate::codec::Keyring) -> bool {
        let Some(bytes) = self.seal.as_deref().and_then(|h| hex::decode(h).ok()) else { return false };
        let expect = crate::codec::Expect::strict(self.context(repository));
        let mut sink = std::io::sink();
        crate::codec::decode_to(&bytes[..], keyring, IDENTITY_KEY, Some(&expect), false, &mut sink, "seal").is_ok()
    }
}

/// One environment's cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvIdentity {
    /// `pg_control`'s system identifier, as a decimal string (JSON numbers lose precision).
    pub system_identifier: crate::wal::SystemId,
    pub pg_major: Option<u32>,
    pub wal_segment_size: u64,
    pub created_at: DateTime<Utc>,
}

/// What a writer knows about the cluster it archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterInfo {
    pub system_identifier: u64,
    pub pg_major: Option<u32>,
    pub wal_segment_size: u64,
}

/// Read `walvault.json`; `None` if the repository is new.
///
/// # Errors
/// Storage failures; an identity that is not valid JSON or has a newer format.
pub async fn load(repo: &Repo) -> Result<Option<Identity>> {
    let bytes = match repo.storage.get_bytes(IDENTITY_KEY).await {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let id: Identity =
        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(repo.storage.describe(IDENTITY_KEY), e))?;
    if id.format > FORMAT_VERSION {
        return Err(Error::Refused(format!(
            "{} has format {} but this walvault reads up to {FORMAT_VERSION}; upgrade walvault",
            repo.storage.describe(IDENTITY_KEY),
            id.format
        )));
    }
    Ok(Some(id))
}

/// Make sure the repository accepts writes from `cluster` with the configured key: create the
/// identity on first use (registering the write key), add this environment, refuse a
/// different cluster, an encryption mismatch or a write key that was never registered.
///
/// # Errors
/// [`Error::Refused`] naming the mismatch; [`Error::Key`] for an unregistered write key;
/// [`Error::Config`] for a writer without a write key that did not choose
/// `WALVAULT_ENCRYPTION=none`; storage failures.
pub async fn ensure(repo: &Repo, cluster: &ClusterInfo) -> Result<Identity> {
    check_can_write(repo)?;
    repo.storage.prepare_for_writes().await?;
    if !repo.keyring.is_encrypted() {
        tracing::info!("WALVAULT_ENCRYPTION=none: objects are written unencrypted");
    }
    let id = update(repo, Some(cluster), |id| add_env(repo, id, cluster)).await?;
    Ok(id)
}

/// Read `walvault.json` (creating it for `cluster` when absent), move it to format 2, apply
/// `change` and write it back when anything changed; the result becomes `repo`'s place.
async fn update(
    repo: &Repo,
    cluster: Option<&ClusterInfo>,
    change: impl Fn(&mut Identity) -> Result<bool>,
) -> Result<Identity> {
    for _ in 0..5 {
        let current = load(repo).await?;
        let Some(mut id) = current else {
            let id = new_identity(repo, cluster)?;
            match repo.storage.put_if_absent(IDENTITY_KEY, to_bytes(&id)?).await {
                Ok(()) => {
                    tracing::info!("created repository identity {}", repo.storage.describe(IDENTITY_KEY));
                    repo.set_place(Some(&id));
                    return Ok(id);
                }
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        check_encryption(repo, &id)?;
        let upgraded = upgrade(&mut id)?;
        if !change(&mut id)? && !upgraded {
            repo.set_place(Some(&id));
            return Ok(id);
        }
        seal(repo, &mut id)?;
        // Read-modify-write: re-read afterwards to detect a concurrent writer that won.
        repo.storage.put(IDENTITY_KEY, to_bytes(&id)?).await?;
        if load(repo).await?.as_ref() == Some(&id) {
            if upgraded {
                tracing::warn!(
                    "moved {} to format 2 (repository id {}): walvault before this version can no longer read it",
                    repo.storage.describe(IDENTITY_KEY),
                    id.repository_id.as_deref().unwrap_or_default()
                );
            }
            repo.set_place(Some(&id));
            return Ok(id);
        }
    }
    Err(Error::Refused(format!(
        "{} keeps changing under concurrent writers; retry",
        repo.storage.describe(IDENTITY_KEY)
    )))
}

/// Move a format-1 identity to format 2: a new repository id, and the marks saying which
/// format-1 objects still count. Returns whether it changed.
fn upgrade(id: &mut Identity) -> Result<bool> {
    if id.repository_id.is_some() {
        return Ok(false);
    }
    id.format = FORMAT_VERSION;
    id.repository_id = Some(new_repository_id()?);
    id.format1 = Some(Format1Marks { until: Utc::now(), wal_before: BTreeMap::new(), seal: None });
    Ok(true)
}

/// Seal the format-1 marks with the write key (encrypted repositories).
fn seal(repo: &Repo, id: &mut Identity) -> Result<()> {
    let repository = id.repository_id.as_deref().and_then(parse_repository_id);
    if let (Some(marks), Some(repository), Some(key)) = (id.format1.as_mut(), repository, repo.keyring.write_key()) {
        marks.reseal(repository, key)?;
    }
    Ok(())
}

/// Seal `id`'s marks with `key` (tests of the rules that read them).
/// 32 hex digits.
pub fn parse_repository_id(text: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_seal(id: &mut Identity, key: &crate::codec::Key) {
    let repository = id.repository_id.as_deref().and_then(parse_repository_id).unwrap();
    id.format1.as_mut().unwrap().reseal(repository, key).unwrap();
}

fn new_repository_id() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::io("system random number generator", std::io::Error::other("no random bytes available")))?;
    Ok(hex::encode(bytes))
}

/// Record `name` as the first WAL segment environment `repo.layout.env()` archives in format
/// 2, in a repository moved from format 1: format-1 WAL from there on is refused. Written
/// before the segment itself, so no format-2 segment exists ahead of the mark.
///
/// # Errors
/// As [`ensure`].
pub async fn mark_first_format2_wal(repo: &Repo, name: &str) -> Result<Identity> {
    let env = repo.layout.env().to_string();
    update(repo, None, |id| {
        let Some(marks) = id.format1.as_mut() else { return Ok(false) };
        if marks.wal_before.contains_key(&env) {
            return Ok(false);
        }
        marks.wal_before.insert(env.clone(), name.to_string());
        Ok(true)
    })
    .await
}

/// For writers without a cluster (history files, file-storage backups): the checks of
/// [`ensure`], creating the identity (without environments) or moving it to format 2 when
/// needed, so that every object written is bound to the repository id.
///
/// # Errors
/// As [`ensure`].
pub async fn check_writer(repo: &Repo) -> Result<Identity> {
    check_can_write(repo)?;
    repo.storage.prepare_for_writes().await?;
    update(repo, None, |_| Ok(false)).await
}

/// A writer needs the write key, or `WALVAULT_ENCRYPTION=none`: read keys alone never make
/// a process write unencrypted objects.
///
/// # Errors
/// [`Error::Config`] naming `BACKUP_ENCRYPTION_KEY`.
pub fn check_can_write(repo: &Repo) -> Result<()> {
    if repo.keyring.is_encrypted() || repo.keyring.unencrypted_by_choice() {
        return Ok(());
    }
    Err(Error::config(
        "BACKUP_ENCRYPTION_KEY",
        "not set: writing needs the write key (WALVAULT_READ_KEYS and WALVAULT_READ_KEY_FILES only read); set BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE",
    ))
}

fn new_identity(repo: &Repo, cluster: Option<&ClusterInfo>) -> Result<Identity> {
    let mut id = Identity {
        format: FORMAT_VERSION,
        created_at: Utc::now(),
        encrypted: repo.keyring.is_encrypted(),
        // The first write of a new repository registers its key.
        key_fingerprints: repo.keyring.write_key().map(|k| vec![k.fingerprint_hex()]).unwrap_or_default(),
        envs: BTreeMap::new(),
        repository_id: Some(new_repository_id()?),
        // Created in format 2: no format-1 object ever counts here.
        format1: None,
    };
    if let Some(cluster) = cluster {
        // Cannot fail on a fresh identity: the environment is absent.
        let _ = add_env(repo, &mut id, cluster);
    }
    Ok(id)
}

/// Refuse to mix encrypted and unencrypted objects in one repository, and to write with a
/// key the repository does not know.
///
/// # Errors
/// [`Error::Refused`] naming the repository and what to set; [`Error::Key`] for a write key
/// that is not registered (see [`add_key`]).
pub fn check_encryption(repo: &Repo, id: &Identity) -> Result<()> {
    match (id.encrypted, repo.keyring.write_key()) {
        (true, None) => Err(Error::Refused(format!(
            "repository {} is encrypted and no key is configured: refusing to write unencrypted objects",
            repo.url
        ))
        .with_hint("set BACKUP_ENCRYPTION_KEY or WALVAULT_KEY_FILE")),
        (false, Some(_)) => Err(Error::Refused(format!(
            "repository {} is unencrypted and a key is configured: refusing to mix encrypted and unencrypted objects",
            repo.url
        ))
        .with_hint(NEW_REPOSITORY)),
        (true, Some(key)) if !id.key_fingerprints.contains(&key.fingerprint_hex()) => Err(Error::Key {
            object: repo.storage.describe(IDENTITY_KEY),
            reason: format!(
                "write key {} {UNREGISTERED} (registered: {}); a new key joins only through `walvault key add`",
                key.fingerprint_hex(),
                id.key_fingerprints.join(", ")
            ),
        }
        .with_hint(
            "if this is the new key of a rotation, register it once with `walvault key add` (with this key configured); otherwise check BACKUP_ENCRYPTION_KEY / WALVAULT_KEY_FILE",
        )),
        _ => Ok(()),
    }
}

/// The words naming an unregistered write key.
const UNREGISTERED: &str = "is not registered in this repository";

/// The advice for mixing encrypted and unencrypted objects.
pub const NEW_REPOSITORY: &str = "use a new repository or prefix for encrypted backups";

/// Returns whether `id` changed.
fn add_env(repo: &Repo, id: &mut Identity, cluster: &ClusterInfo) -> Result<bool> {
    let env = repo.layout.env();
    match id.envs.get(env) {
        Some(known) if known.system_identifier.0 != cluster.system_identifier => Err(Error::Refused(format!(
            "WAL from system identifier {} refused: environment {env} of repository {} holds system identifier {}",
            cluster.system_identifier, repo.url, known.system_identifier
        ))
        .with_hint("a different cluster needs its own WALVAULT_ENV or repository")),
        Some(_) => Ok(false),
        None => {
            id.envs.insert(
                env.to_string(),
                EnvIdentity {
                    system_identifier: crate::wal::SystemId(cluster.system_identifier),
                    pg_major: cluster.pg_major,
                    wal_segment_size: cluster.wal_segment_size,
                    created_at: Utc::now(),
                },
            );
            Ok(true)
        }
    }
}

fn to_bytes(id: &Identity) -> Result<Bytes> {
    serde_json::to_vec_pretty(id)
        .map(Bytes::from)
        .map_err(|e| Error::Invalid(format!("cannot serialise identity: {e}")))
}
