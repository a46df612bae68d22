//! The extractor: every entry is checked against the manifest before anything is written.
//!
//! Refused ([`Error::Refused`], naming the entry): names that are not UTF-8, absolute, or
//! contain `..`, `.` or empty components; hard links, devices, fifos and other special
//! entries; symlinks other than `pg_tblspc/<oid>`; entries the manifest does not list or lists
//! as another kind; an entry seen twice; any path whose parent on disk is a symlink or not a
//! directory; a file or link where something already exists. A file whose size or digest
//! differs from the manifest is [`Error::Corrupt`] and is removed.
//!
//! Files are created 0600 and directories 0700, as PostgreSQL wants them, whatever the
//! archive says. `pg_tblspc/<oid>` (when the manifest lists it as a link) becomes a symlink to
//! `remap[oid]`, else to the manifest's location, and `pg_tblspc/<oid>/...` is written straight
//! into that directory without following any link. Nothing is fsynced: PostgreSQL syncs the
//! whole data directory when it starts from a backup.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::READ_CHUNK;
use crate::error::IoContext;
use crate::manifest::{
    EntryKind, FileDigest, FileHasher, Manifest, ManifestEntry, path_problem, tablespace_content, tablespace_link_oid,
};
use crate::{Error, Result};

/// What one extraction wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Archive paths extracted, in archive order (kept files included).
    pub paths: Vec<String>,
    /// Files left as they were ([`extract_tar_keeping`]) and their bytes.
    pub kept_files: u64,
    pub kept_bytes: u64,
}

/// Extract a tar stream into `dest` (an existing directory), checking every entry against
/// `expected` before writing it (see the module doc). `remap` moves tablespaces by oid.
///
/// # Errors
/// [`Error::Refused`] for hostile entries, [`Error::Corrupt`] for a malformed stream or a file
/// that does not match the manifest, [`Error::Io`] naming the path for local failures.
pub fn extract_tar<R: Read>(
    input: R,
    dest: &Path,
    expected: &Manifest,
    remap: &BTreeMap<u32, PathBuf>,
) -> Result<ExtractStats> {
    extract_tar_keeping(input, dest, expected, remap, &HashSet::new())
}

/// As [`extract_tar`], but the files named in `keep` (manifest paths whose file on disk the
/// caller found to have the manifest's size and digest) are left as they are: their data is
/// skipped, they count as extracted.
///
/// # Errors
/// As [`extract_tar`].
pub fn extract_tar_keeping<R: Read>(
    input: R,
    dest: &Path,
    expected: &Manifest,
    remap: &BTreeMap<u32, PathBuf>,
    keep: &HashSet<String>,
) -> Result<ExtractStats> {
    expected.validate()?;
    if !fs::metadata(dest).with_path(dest)?.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", dest.display())));
    }
    let mut x = Extractor {
        dest,
        manifest: expected,
        remap,
        keep: Some(keep),
        stats: ExtractStats::default(),
        seen: HashSet::new(),
        buf: vec![0; READ_CHUNK],
    };
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|e| Error::corrupt("tar stream", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::corrupt("tar stream", e))?;
        x.entry(entry)?;
    }
    Ok(x.stats)
}

pub(super) struct Extractor<'a> {
    dest: &'a Path,
    manifest: &'a Manifest,
    remap: &'a BTreeMap<u32, PathBuf>,
    keep: Option<&'a HashSet<String>>,
    stats: ExtractStats,
    seen: HashSet<String>,
    buf: Vec<u8>,
}

fn refused(path: &str, what: impl std::fmt::Display) -> Error {
    Error::Refused(format!("tar entry {path:?} {what}"))
}

pub(super) fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
    }
}

/// The entry's kind, or why it is refused.
pub(super) fn entry_kind(t: tar::EntryType) -> std::result::Result<EntryKind, &'static str> {
    match t {
        t if t.is_file() => Ok(EntryKind::File),
        t if t.is_dir() => Ok(EntryKind::Dir),
        t if t.is_symlink() => Ok(EntryKind::Symlink),
        t if t.is_hard_link() => Err("is a hard link"),
        t if t.is_character_special() || t.is_block_special() || t.is_fifo() => Err("is a device or fifo"),
        _ => Err("has an unsupported entry type"),
    }
}

impl<'a> Extractor<'a> {
    /// An extractor that writes nothing yet (for callers that lay out entries themselves).
    pub(super) fn new(dest: &'a Path, manifest: &'a Manifest, remap: &'a BTreeMap<u32, PathBuf>) -> Self {
        Extractor {
            dest,
            manifest,
            remap,
            keep: None,
            stats: ExtractStats::default(),
            seen: HashSet::new(),
            buf: Vec::new(),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let Ok(path) = std::str::from_utf8(&raw) else {
            return Err(refused(&name, "has a name that is not utf-8"));
        };
        let kind = entry_kind(entry.header().entry_type()).map_err(|why| refused(path, why))?;
        let path = if kind == EntryKind::Dir { path.strip_suffix('/').unwrap_or(path) } else { path };
        if let Some(problem) = path_problem(path) {
            return Err(refused(path, problem));
        }
        if kind == EntryKind::Symlink && tablespace_link_oid(path).is_none() {
            return Err(refused(path, "is a symlink outside pg_tblspc"));
        }
        let listed = self.manifest.lookup(path).ok_or_else(|| refused(path, "is not in the manifest"))?;
        if listed.kind != kind {
            let what = format!("is a {} but the manifest lists a {}", kind_name(kind), kind_name(listed.kind));
            return Err(refused(path, what));
        }
        if !self.seen.insert(path.to_owned()) {
            return Err(refused(path, "appears twice"));
        }
        match kind {
            EntryKind::Dir => self.dir(path)?,
            EntryKind::Symlink => {
                let link = entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
                self.symlink(path, listed, link)?;
            }
            EntryKind::File if self.keep.is_some_and(|k| k.contains(path)) => {
                self.stats.kept_files += 1;
                self.stats.kept_bytes += listed.size;
            }
            EntryKind::File => self.file(path, listed, entry.size(), &mut entry)?,
        }
        self.stats.paths.push(path.to_owned());
        Ok(())
    }

    /// The tablespace directory for `oid`: remapped, else the manifest's location.
    fn tablespace_dir(&self, path: &str, oid: u32) -> Result<PathBuf> {
        if let Some(dir) = self.remap.get(&oid) {
            return Ok(dir.clone());
        }
        match self.manifest.tablespace(oid) {
            Some(ts) => Ok(PathBuf::from(&ts.location)),
            None => Err(refused(path, format_args!("belongs to tablespace {oid}, which the manifest does not list"))),
        }
    }

    /// Where `path` goes on disk, with every parent directory checked (created 0700 if missing).
    pub(super) fn resolve(&self, path: &str) -> Result<PathBuf> {
        let redirect = tablespace_content(path).filter(|&(oid, _)| {
            let link = format!("pg_tblspc/{oid}");
            self.manifest.lookup(&link).is_some_and(|e| e.kind == EntryKind::Symlink)
        });
        let (base, inner) = match redirect {
            Some((oid, inner)) => {
                let dir = self.tablespace_dir(path, oid)?;
                make_dir_all(&dir)?;
                (dir, inner)
            }
            None => (self.dest.to_path_buf(), path),
        };
        let mut at = base;
        let mut parts = inner.split('/').peekable();
        while let Some(part) = parts.next() {
            at.push(part);
            if parts.peek().is_none() {
                break;
            }
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refused(path, format_args!("goes through the symlink {}", at.display())));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(refused(path, format_args!("goes through {}, which is not a directory", at.display())));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => make_dir(&at)?,
                Err(e) => return Err(Error::io(&at, e)),
            }
        }
        Ok(at)
    }

    pub(super) fn dir(&mut self, path: &str) -> Result<()> {
        let at = self.resolve(path)?;
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(refused(path, format_args!("would replace {}", at.display())));
            }
            Ok(_) => fs::set_permissions(&at, fs::Permissions::from_mode(0o700)).with_path(&at)?,
            Err(e) if e.kind() == ErrorKind::NotFound => make_dir(&at)?,
            Err(e) => return Err(Error::io(&at, e)),
        }
        self.stats.dirs += 1;
        Ok(())
    }

    pub(super) fn symlink(&mut self, path: &str, listed: &ManifestEntry, link: Option<String>) -> Result<()> {
        let Some(oid) = tablespace_link_oid(path) else {
            return Err(refused(path, "is a symlink outside pg_tblspc"));
        };
        if link != listed.link_target {
            return Err(Error::corrupt(path, "link target differs from the manifest"));
        }
        let target = self.tablespace_dir(path, oid)?;
        make_dir_all(&target)?;
        let at = self.resolve(path)?;
        std::os::unix::fs::symlink(&target, &at).map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => refused(path, format_args!("would replace {}", at.display())),
            _ => Error::io(&at, e),
        })?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn file(&mut self, path: &str, listed: &ManifestEntry, size: u64, data: &mut impl Read) -> Result<()> {
        if size != listed.size {
            let why = format!("size {size} in the archive but {} in the manifest", listed.size);
            return Err(Error::corrupt(path, why));
        }
        let at = self.resolve(path)?;
        let mut out =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&at).map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => refused(path, format_args!("would replace {}", at.display())),
                _ => Error::io(&at, e),
            })?;
        let result =
            copy_verified(data, &mut out, &mut self.buf, &at, listed.digest.hasher()).and_then(|(n, found)| {
                if n != listed.size {
                    Err(Error::corrupt(path, format_args!("archive ended after {n} of {} bytes", listed.size)))
                } else if !listed.digest.matches(&found) {
                    Err(Error::corrupt(path, format_args!("{} differs from the manifest", found.algorithm())))
                } else {
                    Ok(n)
                }
            });
        match result {
            Ok(n) => {
                self.stats.files += 1;
                self.stats.bytes += n;
                Ok(())
            }
            Err(e) => {
                drop(out);
                let _ = fs::remove_file(&at);
                Err(e)
            }
        }
    }
}

/// Copy everything from `data` to `out`, returning the byte count and the digest `hash` found.
fn copy_verified(
    data: &mut impl Read,
    out: &mut impl Write,
    buf: &mut [u8],
    at: &Path,
    mut hash: FileHasher,
) -> Result<(u64, FileDigest)> {
    let mut n = 0u64;
    loop {
        let got = match data.read(buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::corrupt("tar stream", e)),
        };
        let chunk = &buf[..got];
        hash.update(chunk);
        out.write_all(chunk).with_path(at)?;
        n += got as u64;
    }
    Ok((n, hash.finish()))
}

fn make_dir(at: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(at) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && at.is_dir() && !at.is_symlink() => Ok(()),
        Err(e) => Err(Error::io(at, e)),
    }
}

fn make_dir_all(at: &Path) -> Result<()> {
    DirBuilder::new().mode(0o700).recursive(true).create(at).with_path(at)
}
