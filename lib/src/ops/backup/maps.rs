//! The block map a base backup writes (`docs/FORMAT.md`, section 9.1), gathered part by part
//! as each part is uploaded: the digests of files stored whole go into a local spool (only an
//! index stays in memory), a delta's stored blocks stay in memory (what changed). A full
//! backup's complete map is then written from the spool in path order, streaming through the
//! codec into a spool file that is uploaded; an incremental's (what it stored) is small.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::digest::{Context, SHA256};

use crate::blockmap::stream::{DigestSpool, ReferenceBlocks, SpoolWriter, write_complete};
use crate::blockmap::{BlockMap, DigestAlgo, StoredFile, StoredMap};
use crate::codec::Encoder;
use crate::error::IoContext;
use crate::manifest::Manifest;
use crate::ops::Repo;
use crate::ops::repo::blocking;
use crate::ops::repo::chain::{block_map_key, save_block_map};
use crate::ops::repo::place::Logical;
use crate::tarball::IncrementalPart;
use crate::{Error, Result};

/// The digests of one backup's parts, as they are uploaded.
pub struct Gathering {
    whole: Mutex<SpoolWriter>,
    deltas: Mutex<BTreeMap<String, StoredFile>>,
    dir: PathBuf,
}

impl Gathering {
    /// Gather into an unnamed file in `dir` (the backup's spool directory).
    ///
    /// # Errors
    /// [`Error::Io`] naming `dir`.
    pub fn new(dir: &Path) -> Result<Gathering> {
        let whole = Mutex::new(SpoolWriter::new(dir, DigestAlgo::Blake3)?);
        Ok(Gathering { whole, deltas: Mutex::default(), dir: dir.to_path_buf() })
    }

    /// Take the digests out of one part's output (it keeps its entries and deltas).
    ///
    /// # Errors
    /// [`Error::Io`] writing the spool.
    pub fn take(&self, out: &mut IncrementalPart) -> Result<()> {
        let poisoned = || Error::Internal("block map gathering: a part failed while adding its digests".into());
        let mut whole = self.whole.lock().map_err(|_| poisoned())?;
        for (path, f) in std::mem::take(&mut out.blocks.files) {
            whole.push(path, &f)?;
        }
        self.deltas.lock().map_err(|_| poisoned())?.append(&mut out.stored);
        Ok(())
    }

    /// Store the backup's block map: complete for a full backup, what it stored for an
    /// incremental (`manifest` names it); returns the SHA-256 its manifest records.
    ///
    /// # Errors
    /// Storage, codec and spool failures; [`Error::Internal`] for digests that do not fit the
    /// manifest.
    pub async fn save(self, repo: &Repo, name: &str, manifest_key: &str, manifest: &Manifest) -> Result<String> {
        let poisoned = || Error::Internal("block map gathering: a part failed while adding its digests".into());
        let spool = self.whole.into_inner().map_err(|_| poisoned())?.finish()?;
        let deltas = self.deltas.into_inner().map_err(|_| poisoned())?;
        if manifest.is_incremental() {
            let mut whole = BlockMap::default();
            for path in spool.paths() {
                if let Some(f) = spool.file(path)? {
                    whole.files.insert(path.to_string(), f.into_owned());
                }
            }
            let plain = StoredMap::of_backup(whole, deltas, manifest)?.encode();
            return save_block_map(repo, name, manifest_key, plain).await;
        }
        save_complete(repo, name, manifest_key, spool, self.dir).await
    }
}

/// Encode the complete map in `spool` into a file in `dir`, then upload it.
async fn save_complete(
    repo: &Repo,
    name: &str,
    manifest_key: &str,
    spool: DigestSpool,
    dir: PathBuf,
) -> Result<String> {
    let (settings, key) = (repo.codec, repo.keyring.write_key().cloned());
    let context = repo.context(&Logical::BlockMap(name)).await?;
    let (file, sha) = blocking(move || {
        let file = tempfile::NamedTempFile::new_in(&dir).with_path(&dir)?;
        let sha = {
            let out = BufWriter::with_capacity(1 << 20, file.as_file());
            let inner = Encoder::new(out, &settings, key.as_ref(), None, &context)?;
            let mut plain = Hashing { inner, hash: Context::new(&SHA256) };
            write_complete(&spool, &mut plain, &dir)?;
            let sha = hex::encode(plain.hash.finish());
            plain.inner.finish()?.flush().with_path(&dir)?;
            sha
        };
        Ok((file, sha))
    })
    .await?;
    repo.storage.put_file_limited(&block_map_key(manifest_key), file.path(), None).await?;
    Ok(sha)
}

/// Hashes the plaintext on its way into the encoder.
struct Hashing<W: Write> {
    inner: Encoder<W>,
    hash: Context,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
