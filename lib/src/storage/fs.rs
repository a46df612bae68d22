//! Local directory backend: same keys, layout and semantics as S3.
//!
//! Writes go through [`write_durable`]: a temporary file `.<name>.tmp.<random>` in the
//! destination directory (mode 0600), fsync, then rename (replace) or a no-replace rename /
//! hard link (create only), then fsync of the directory. Readers never see half a file and
//! `list` never shows temporary files. Directories are created 0700: the repository holds
//! backups. Blocking work runs on tokio's blocking pool, one task per call.
//!
//! Ownership: a local repository belongs to the OS user who owns its directory (before it
//! exists: its parent's owner), normally `postgres`, whose `archive_command` writes there all
//! day. A process running as root gives every directory and object it creates to that user,
//! so that a `base-backup` or `verify` run as root never leaves a root-only `database/` or
//! `verification_reports/` that the next command as `postgres` cannot enter.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::fs_list::{self, is_absent, object_meta};
use super::{ByteReader, Counters, ListResult, ObjectMeta, Op, RequestStats};
use super::{validate_key, validate_prefix};
use crate::error::IoContext;
use crate::{Error, Result};

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// Read buffer for `get`: large reads keep tokio's blocking-pool hops few.
const READ_BUFFER: usize = 1 << 20;

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    counters: Counters,
}

/// Whether a write may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Atomically replace whatever is there.
    Replace,
    /// Fail with [`io::ErrorKind::AlreadyExists`] if the final name exists.
    CreateNew,
}

impl FsStorage {
    /// A repository rooted at the absolute directory `root`. Nothing is touched on disk: the
    /// root is created (0700) by the first write, and reads from a missing root fail.
    ///
    /// # Errors
    /// [`Error::Config`] when `root` is not absolute.
    pub fn new(root: PathBuf) -> Result<Self> {
        if !root.is_absolute() {
            return Err(Error::config("WALVAULT_REPO", format!("{} is not an absolute path", root.display())));
        }
        Ok(FsStorage { inner: Arc::new(Inner { root, counters: Counters::default() }) })
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// See [`super::Storage::put_if_absent`].
    pub async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()> {
        self.write(key, body, WriteMode::CreateNew).await
    }

    /// See [`super::Storage::put`].
    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.write(key, body, WriteMode::Replace).await
    }

    /// See [`super::Storage::prepare_for_writes`].
    pub fn create_root(&self) -> Result<()> {
        ensure_dirs(&self.inner.root, "", repo_owner(&self.inner.root))
    }

    /// See [`super::Storage::put_file`]: copied into place through a durable temp file.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        validate_key(key)?;
        self.inner.counters.count(Op::Put);
        let root = self.inner.root.clone();
        let rel = key.to_string();
        let src = path.to_path_buf();
        blocking(move || {
            let owner = repo_owner(&root);
            ensure_dirs(&root, &rel, owner)?;
            let dest = root.join(&rel);
            crate::fsutil::write_atomic_with(&dest, true, |out| {
                give_to(owner, &*out).with_path(&dest)?;
                let mut input = std::fs::File::open(&src).with_path(&src)?;
                std::io::copy(&mut input, out).with_path(&dest)?;
                Ok(())
            })?;
            sync_dir(&root)
        })
        .await
    }

    async fn write(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<()> {
        validate_key(key)?;
        self.inner.counters.count(Op::Put);
        let root = self.inner.root.clone();
        let rel = key.to_string();
        let result = blocking(move || write_object(&root, &rel, &body, mode)).await;
        match result {
            Err(Error::Io { source, .. })
                if mode == WriteMode::CreateNew && source.kind() == io::ErrorKind::AlreadyExists =>
            {
                Err(Error::AlreadyExists { key: key.to_string() })
            }
            other => other,
        }
    }

    /// See [`super::Storage::get`].
    pub async fn get(&self, key: &str) -> Result<ByteReader> {
        validate_key(key)?;
        self.inner.counters.count(Op::Get);
        let path = self.inner.root.join(key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Err(self.not_found(key).await),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let meta = file.metadata().await.with_path(&path)?;
        if !meta.is_file() {
            return Err(self.not_found(key).await);
        }
        Ok(Box::pin(tokio::io::BufReader::with_capacity(READ_BUFFER, file)))
    }

    /// See [`super::Storage::head`].
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        validate_key(key)?;
        self.inner.counters.count(Op::Head);
        let path = self.inner.root.join(key);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(object_meta(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => {
                self.check_root().await?;
                Ok(None)
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// See [`super::Storage::list`].
    pub async fn list(&self, prefix: &str, delimiter: Option<&str>, start_after: Option<&str>) -> Result<ListResult> {
        validate_prefix(prefix)?;
        self.inner.counters.count(Op::List);
        self.check_root().await?;
        let query = fs_list::Query {
            prefix: prefix.to_string(),
            delimiter: delimiter.filter(|d| !d.is_empty()).map(str::to_string),
            start_after: start_after.map(str::to_string),
        };
        let root = self.inner.root.clone();
        blocking(move || fs_list::list_tree(&root, &query)).await
    }

    /// See [`super::Storage::delete`]. Empty directories left behind are removed, up to (not
    /// including) the root.
    pub async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.inner.counters.count(Op::Delete);
        let root = self.inner.root.clone();
        let rel = key.to_string();
        blocking(move || delete_object(&root, &rel)).await
    }

    /// See [`super::Storage::stats`].
    pub fn stats(&self) -> RequestStats {
        self.inner.counters.snapshot()
    }

    /// See [`super::Storage::describe`].
    pub fn describe(&self, key: &str) -> String {
        self.inner.root.join(key).display().to_string()
    }

    /// NotFound for `key`, unless the whole repository directory is missing (a wrong
    /// WALVAULT_REPO must not read as "not in the archive").
    async fn not_found(&self, key: &str) -> Error {
        match self.check_root().await {
            Ok(()) => Error::not_found(self.describe(key)),
            Err(e) => e,
        }
    }

    async fn check_root(&self) -> Result<()> {
        let root = &self.inner.root;
        match tokio::fs::metadata(root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(missing_root(root, "is not a directory")),
            Err(e) if is_absent(&e) => Err(missing_root(root, "does not exist")),
            Err(e) => Err(Error::io(root, e)),
        }
    }
}

fn missing_root(root: &Path, what: &str) -> Error {
    Error::Storage {
        op: "open",
        key: root.display().to_string(),
        reason: format!("repository directory {what}"),
        permanent: true,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(Error::Internal(format!("a storage task failed: {e}"))),
    }
}

fn write_object(root: &Path, key: &str, body: &[u8], mode: WriteMode) -> Result<()> {
    let path = root.join(key);
    let owner = repo_owner(root);
    // A concurrent delete may remove a directory we just created; try again a few times.
    let mut tries = 0;
    loop {
        ensure_dirs(root, key, owner)?;
        match write_durable_as(&path, body, mode, owner) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound && tries < 3 => {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Write `body` to `path` durably and atomically: temp file in the same directory (0600),
/// fsync, rename or no-replace rename, fsync of the directory. Used for repository objects
/// and by anyone else who needs a durable local file (wal-fetch's `%p`).
///
/// # Errors
/// [`Error::Io`] naming the path; with [`WriteMode::CreateNew`] an existing file is an
/// `Error::Io` whose source kind is [`io::ErrorKind::AlreadyExists`].
pub fn write_durable(path: &Path, body: &[u8], mode: WriteMode) -> Result<()> {
    write_durable_as(path, body, mode, None)
}

/// [`write_durable`], the file given to `owner` (uid, gid) before it gets its final name.
fn write_durable_as(path: &Path, body: &[u8], mode: WriteMode, owner: Option<(u32, u32)>) -> Result<()> {
    let (dir, name) = split_path(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.tmp.", truncate(name, 100)))
        .rand_bytes(8)
        .permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .with_path(dir)?;
    let tmp_path = tmp.path().to_path_buf();
    // Explicit: the mode given at creation is filtered by the umask.
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(FILE_MODE)).with_path(&tmp_path)?;
    give_to(owner, tmp.as_file()).with_path(&tmp_path)?;
    tmp.write_all(body).with_path(&tmp_path)?;
    tmp.as_file().sync_all().with_path(&tmp_path)?;
    let persisted = match mode {
        WriteMode::Replace => tmp.persist(path),
        WriteMode::CreateNew => tmp.persist_noclobber(path),
    };
    // On failure the temporary file is removed when the returned handle drops.
    persisted.map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir)
}

fn split_path(path: &Path) -> Result<(&Path, &str)> {
    let invalid = || Error::Invalid(format!("{} is not a file path", path.display()));
    let dir = path.parent().ok_or_else(invalid)?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(invalid)?;
    Ok((dir, name))
}

fn truncate(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_path(dir)
}

/// Create the root and the directories of `key` that are missing, 0700 whatever the umask,
/// fsyncing each parent that gained an entry.
fn ensure_dirs(root: &Path, key: &str, owner: Option<(u32, u32)>) -> Result<()> {
    if !root.is_dir() {
        std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(root).with_path(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(DIR_MODE)).with_path(root)?;
        chown(owner, root)?;
    }
    let Some((dirs, _)) = key.rsplit_once('/') else { return Ok(()) };
    let mut path = root.to_path_buf();
    for component in dirs.split('/') {
        let parent = path.clone();
        path.push(component);
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(DIR_MODE)).with_path(&path)?;
                chown(owner, &path)?;
                sync_dir(&parent)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(())
}

/// Whom what this process creates in the repository at `root` belongs to: `None` (itself)
/// unless it runs as root and the repository directory (before it exists: its parent) is
/// owned by another user, who then gets it.
fn repo_owner(root: &Path) -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if me != 0 {
        return None;
    }
    let dir = std::fs::metadata(root).or_else(|e| root.parent().map_or(Err(e), std::fs::metadata)).ok()?;
    (dir.uid() != 0).then_some((dir.uid(), dir.gid()))
}

fn chown(owner: Option<(u32, u32)>, path: &Path) -> Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_path(path),
        None => Ok(()),
    }
}

fn give_to(owner: Option<(u32, u32)>, file: &std::fs::File) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::fchown(file, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

fn delete_object(root: &Path, key: &str) -> Result<()> {
    let path = root.join(key);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        // Missing, or a directory: there is no object by that name.
        Err(e) if is_absent(&e) || path.is_dir() => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    }
    let mut dir = path.parent();
    if let Some(d) = dir {
        sync_dir(d)?;
    }
    // Remove directories the delete left empty; stop at the first one that is not.
    while let Some(d) = dir.filter(|d| *d != root && d.starts_with(root)) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}
