//! Incremental chains (`docs/FORMAT.md`, section 9): a full backup and the diff/incr backups
//! that build on it. Block maps are read and written here, and a chain is walked from any of
//! its backups back to its full backup, each link checked against the manifest that names it.
//! Shared by base-backup (the reference), pitr-prepare, verify, prune and list.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use tokio_util::io::SyncIoBridge;

use super::catalog::{self, BackupMetadata};
use super::place::Logical;
use super::{Repo, blocking, metadata_auth, parts};
use crate::blockmap::stream::{CompleteReader, DigestSpool, SpoolWriter, merge_streamed};
use crate::blockmap::{AnyMap, BlockMap, DigestAlgo, FileBlocks, LinkMap, Merger};
use crate::manifest::Manifest;
use crate::{Error, Result, codec};

/// The longest chain followed (a loop or a runaway chain is refused).
pub const MAX_CHAIN: usize = 1000;

/// One backup of a chain with its manifest (authenticated and cross-checked).
#[derive(Debug, Clone)]
pub struct Link {
    pub meta: BackupMetadata,
    pub manifest: Manifest,
}

/// The key of backup `name`'s block map, beside its manifest (same extensions).
pub fn block_map_key(manifest_key: &str) -> String {
    manifest_key.replacen("manifest.json", "blockmap.bin", 1)
}

/// Store backup `name`'s block map (`plain`: its binary form); returns the SHA-256 its
/// manifest records.
///
/// # Errors
/// Storage and codec failures.
pub async fn save_block_map(repo: &Repo, name: &str, manifest_key: &str, plain: Vec<u8>) -> Result<String> {
    let sha = BlockMap::sha256_hex(&plain);
    let (settings, key) = (repo.codec, repo.keyring.write_key().cloned());
    let context = repo.context(&Logical::BlockMap(name)).await?;
    let encoded = blocking(move || codec::encode_to_vec(&plain, &settings, key.as_ref(), None, &context)).await?;
    repo.storage.put(&block_map_key(manifest_key), Bytes::from(encoded)).await?;
    Ok(sha)
}

/// The effective block map of the last backup of `links` (a chain, full backup first, as
/// [`load`] returns it): every file it restores with all its digests, merged from the block
/// maps of the chain back to the newest complete one ([`crate::blockmap::effective`]); that
/// one is streamed through the merge, never held whole beside the result.
///
/// # Errors
/// [`Error::Corrupt`] naming the backup whose block map is missing or does not fit its
/// manifest or its chain; storage and key errors.
pub async fn effective_map(repo: &Repo, links: &[Link]) -> Result<BlockMap> {
    let opened = open_chain(repo, links).await?;
    blocking(move || {
        let mut map = BlockMap { algo: opened.algo(), ..BlockMap::default() };
        opened.merge(|path, f| {
            map.files.insert(path, f);
            Ok(())
        })?;
        Ok(map)
    })
    .await
}

/// Check the block maps of `links` as [`effective_map`] does, holding none of it: returns
/// how many files the last backup restores.
///
/// # Errors
/// As [`effective_map`].
pub async fn check_effective(repo: &Repo, links: &[Link]) -> Result<u64> {
    let opened = open_chain(repo, links).await?;
    blocking(move || {
        let mut files = 0;
        opened.merge(|_, _| {
            files += 1;
            Ok(())
        })?;
        Ok(files)
    })
    .await
}

/// [`effective_map`] kept in an unnamed file in `dir` rather than in memory: only an index of
/// the files is held (base-backup's reference).
///
/// # Errors
/// As [`effective_map`]; [`Error::Io`] naming `dir`.
pub async fn effective_spool(repo: &Repo, links: &[Link], dir: &Path) -> Result<DigestSpool> {
    let opened = open_chain(repo, links).await?;
    let dir = dir.to_path_buf();
    blocking(move || {
        let mut spool = SpoolWriter::new(&dir, opened.algo())?;
        opened.merge(|path, f| spool.push(path, &f))?;
        spool.finish()
    })
    .await
}

/// A link's manifest, name and block map object.
type About = (Manifest, String, String);

/// The block maps of a chain from its newest complete one: that one opened as a stream, the
/// (incremental) ones after it read whole, oldest first.
struct OpenedChain {
    base: Option<(Box<Stream>, String, About)>,
    later: Vec<(AnyMap, About)>,
}

type Stream = CompleteReader<Box<dyn Read + Send>>;

impl OpenedChain {
    /// The algorithm of the digests of the chain's first map (the merge refuses a chain whose
    /// maps differ).
    fn algo(&self) -> DigestAlgo {
        match (&self.base, self.later.first()) {
            (Some((stream, _, _)), _) => stream.algo(),
            (None, Some((AnyMap::Complete(m), _))) => m.algo,
            (None, Some((AnyMap::Stored(m), _))) => m.algo,
            (None, None) => DigestAlgo::default(),
        }
    }

    fn merge(self, out: impl FnMut(String, FileBlocks) -> Result<()>) -> Result<()> {
        let (maps, about): (Vec<AnyMap>, Vec<About>) = self.later.into_iter().unzip();
        let Some((stream, want, (manifest, name, object))) = self.base else {
            let links = maps.into_iter().zip(&about).map(link_map).collect();
            return merge_streamed(Merger::new(links), None::<(Stream, _)>, out);
        };
        let placeholder = BlockMap { algo: stream.algo(), ..BlockMap::default() };
        let first = LinkMap { map: AnyMap::Complete(placeholder), manifest: &manifest, name: &name, object };
        let links = std::iter::once(first).chain(maps.into_iter().zip(&about).map(link_map)).collect();
        merge_streamed(Merger::new(links), Some((*stream, &want)), out)
    }
}

async fn open_chain(repo: &Repo, links: &[Link]) -> Result<OpenedChain> {
    let mut later = Vec::new();
    for link in links.iter().rev() {
        let object = repo.storage.describe(&block_map_key(&link.meta.manifest_key));
        let about = (link.manifest.clone(), link.meta.name.clone(), object);
        match open_block_map(repo, link).await? {
            Opened::Whole(map) => later.push((map, about)),
            Opened::Streamed(stream, want) => {
                later.reverse();
                return Ok(OpenedChain { base: Some((stream, want, about)), later });
            }
        }
    }
    later.reverse();
    Ok(OpenedChain { base: None, later })
}

/// A complete block map opened as a stream (with the digest its manifest records, checked at
/// its end), or any other read whole and checked.
enum Opened {
    Whole(AnyMap),
    Streamed(Box<Stream>, String),
}

/// Backup `link`'s block map, authenticated and bound to it (`backup/<name>/blockmap`).
async fn open_block_map(repo: &Repo, link: &Link) -> Result<Opened> {
    let key = block_map_key(&link.meta.manifest_key);
    let object = repo.storage.describe(&key);
    let Some(want) = link.manifest.block_map_sha256.clone() else {
        return Err(Error::corrupt(&object, format!("backup {} has no block map", link.meta.name)));
    };
    let expect = repo.expect(&Logical::BlockMap(&link.meta.name)).await?;
    let bridge = SyncIoBridge::new(repo.storage.get(&key).await?);
    let keyring = repo.keyring.clone();
    blocking(move || {
        let input = std::io::BufReader::with_capacity(1 << 20, bridge);
        let (_, mut body) = codec::decoder(input, &keyring, &object, false, Some(&expect))?;
        let unreadable = |e: std::io::Error| Error::corrupt(&object, format!("block map: {e}"));
        let mut head = [0u8; 10];
        body.read_exact(&mut head).map_err(unreadable)?;
        if DigestAlgo::of_complete(&head).is_some() {
            let input: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(head).chain(body));
            return Ok(Opened::Streamed(Box::new(CompleteReader::new(input, &object)?), want));
        }
        let mut plain = head.to_vec();
        body.read_to_end(&mut plain).map_err(unreadable)?;
        if !BlockMap::sha256_hex(&plain).eq_ignore_ascii_case(&want) {
            return Err(Error::corrupt(&object, "block map differs from the digest its manifest records"));
        }
        Ok(Opened::Whole(AnyMap::decode(&plain, &object)?))
    })
    .await
}

fn link_map<'a>((map, (manifest, name, object)): (AnyMap, &'a About)) -> LinkMap<'a> {
    LinkMap { map, manifest, name, object: object.clone() }
}

/// The chain ending at `target` (its manifest already loaded), full backup first. Every link
/// must exist and be the very backup its successor's manifest names (metadata digest).
///
/// # Errors
/// [`Error::Refused`] naming the missing backup when the chain is broken; [`Error::Corrupt`]
/// for a link that is not what its successor was computed against.
pub async fn load(repo: &Repo, target: BackupMetadata, manifest: Manifest) -> Result<Vec<Link>> {
    load_known(repo, target, manifest, &[]).await
}

/// [`load`], taking a link's metadata from `known` (as [`catalog::backups`] read and
/// authenticated it) rather than reading it again; one not there is read.
///
/// # Errors
/// As [`load`].
pub async fn load_known(
    repo: &Repo,
    target: BackupMetadata,
    manifest: Manifest,
    known: &[BackupMetadata],
) -> Result<Vec<Link>> {
    let top = target.name.clone();
    let mut chain = vec![Link { meta: target, manifest }];
    while let Some(child) = chain.last()
        && let Some(name) = child.meta.reference.clone()
    {
        if chain.len() >= MAX_CHAIN {
            return Err(Error::Refused(format!("the chain of backup {top} is longer than {MAX_CHAIN} backups")));
        }
        let read = match known.iter().find(|m| m.name == name) {
            Some(m) => Ok(m.clone()),
            None => catalog::backup(repo, &name).await,
        };
        let parent = match read {
            Err(Error::NotFound { .. }) => {
                return Err(Error::Refused(format!(
                    "backup {top} cannot be restored: backup {name}, which {} builds on, is missing (the chain is broken)",
                    child.meta.name
                ))
                .with_hint("restore from a backup whose chain is complete (walvault list shows chains)"));
            }
            other => other?,
        };
        check_link(repo, child, &parent)?;
        let manifest = parts::load_manifest(repo, &parent).await?;
        chain.push(Link { meta: parent, manifest });
    }
    chain.reverse();
    Ok(chain)
}

fn check_link(repo: &Repo, child: &Link, parent: &BackupMetadata) -> Result<()> {
    let object = repo.storage.describe(&child.meta.manifest_key);
    let Some(r) = &child.manifest.reference else {
        return Err(Error::corrupt(
            object,
            format!("backup {} has a reference but its manifest has none", child.meta.name),
        ));
    };
    if r.name != parent.name || !r.metadata_sha256.eq_ignore_ascii_case(&metadata_auth::metadata_sha256(parent)) {
        let why = format!(
            "backup {} was computed against {} as it was then, and backup {} in the repository is not that backup",
            child.meta.name, r.name, parent.name
        );
        return Err(Error::corrupt(object, why));
    }
    if parent.system_identifier != child.meta.system_identifier || parent.stop_lsn > child.meta.start_lsn {
        let why = format!("reference {} is not an earlier backup of the same cluster", parent.name);
        return Err(Error::corrupt(object, why));
    }
    Ok(())
}

/// The names of `b`'s chain, full backup first, from metadata alone (for list and prune);
/// `None` when a link is missing.
pub fn names_of(all: &[BackupMetadata], b: &BackupMetadata) -> Option<Vec<String>> {
    let mut names = vec![b.name.clone()];
    let mut at = b;
    while let Some(r) = &at.reference {
        if names.len() > MAX_CHAIN || names.contains(r) {
            return None;
        }
        at = all.iter().find(|m| &m.name == r)?;
        names.push(at.name.clone());
    }
    names.reverse();
    Some(names)
}
