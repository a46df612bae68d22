//! Walk PGDATA and its tablespaces into the list of entries a base backup stores.
//!
//! The exclusions are PostgreSQL's own, from `src/backend/backup/basebackup.c`
//! (`excludeDirContents`, `excludeFiles`, the `pgsql_tmp` prefix, unlogged and temporary
//! relations) plus the two recovery signal files, which a restore writes itself:
//!
//! - directories kept empty: `pg_wal` (with an empty `pg_wal/archive_status`), `pg_dynshmem`,
//!   `pg_notify`, `pg_replslot`, `pg_serial`, `pg_snapshots`, `pg_stat_tmp`, `pg_subtrans`
//!   (a symlink in their place is stored as a 0700 directory, as PostgreSQL does);
//! - files, in any directory: `postmaster.pid`, `postmaster.opts`, `pg_internal.init*`,
//!   `backup_label`, `tablespace_map`, `backup_manifest`, `postgresql.auto.conf.tmp`,
//!   `current_logfiles.tmp`, `recovery.signal`, `standby.signal`; anything named `pgsql_tmp*`;
//! - in database directories (`base/<oid>`, `<tablespace>/PG_*/<oid>`): temporary relations
//!   (`t<digits>_<digits>[_fork][.seg]`) and every fork but `_init` of an unlogged relation
//!   (one that has an `_init` fork; recovery recreates them from it).
//!
//! Layout: main-directory entries are relative to PGDATA (`base/1/1259`). A tablespace is
//! the symlink entry `pg_tblspc/<oid>` (target: its location) followed by its content under
//! `pg_tblspc/<oid>/`, e.g. `pg_tblspc/16384/PG_15_202209061/5/16385`, the same names
//! PostgreSQL resolves through the link. Only the cluster's version directory is stored when
//! it is given (other versions may share the location during pg_upgrade). Symlinks are never
//! followed except `pg_tblspc/<oid>`; Unix sockets are skipped quietly, other symlinks and
//! special files with a warning, as PostgreSQL does. The list is sorted by path, with `global/pg_control` last
//! (PostgreSQL copies it after everything else).

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::{Error, Result};

/// Directories whose contents are not backed up (the directory itself is).
pub const EXCLUDE_DIR_CONTENTS: &[&str] =
    &["pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans"];

/// Files never backed up, in any directory: `(name, match as prefix)`.
pub const EXCLUDE_FILES: &[(&str, bool)] = &[
    ("postgresql.auto.conf.tmp", false),
    ("current_logfiles.tmp", false),
    ("pg_internal.init", true),
    ("backup_label", false),
    ("tablespace_map", false),
    ("backup_manifest", false),
    ("postmaster.pid", false),
    ("postmaster.opts", false),
    ("recovery.signal", false),
    ("standby.signal", false),
];

/// Prefix of PostgreSQL's temporary files and directories (`PG_TEMP_FILE_PREFIX`).
pub const TEMP_FILE_PREFIX: &str = "pgsql_tmp";

const PG_CONTROL: &str = "global/pg_control";

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    /// A `pg_tblspc/<oid>` link and its target.
    Symlink(String),
}

/// One entry to back up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Path in the archive (see the module doc), `/`-separated, no trailing slash.
    pub rel_path: String,
    /// Where to read it.
    pub abs_path: PathBuf,
    pub kind: FileKind,
    /// Size when walked (0 for directories and links); the tar writer stores what it reads.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

#[derive(Clone, Copy, Default)]
struct Ctx {
    top: bool,
    base: bool,
    db: bool,
    version_dir: bool,
    tblspc: bool,
    tablespace_root: bool,
}

struct Walker<'a> {
    out: Vec<DataFile>,
    version_dir: Option<&'a str>,
    /// Tablespace locations inside PGDATA (canonical), not walked as part of the main tree.
    inner_tablespaces: Vec<PathBuf>,
}

/// Walk `pgdata` and every tablespace linked from `pg_tblspc`.
///
/// `tablespace_version_dir` is the cluster's `PG_<major>_<catversion>` directory
/// ([`super::backup_api::Server::tablespace_version_dir`]); `None` stores whole locations.
///
/// # Errors
/// [`Error::Io`] naming the path for any failure but a file vanishing during the walk;
/// [`Error::Invalid`] for a file name that is not UTF-8.
pub fn walk(pgdata: &Path, tablespace_version_dir: Option<&str>) -> Result<Vec<DataFile>> {
    let meta = fs::metadata(pgdata).with_path(pgdata)?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", pgdata.display())));
    }
    let mut walker =
        Walker { out: Vec::new(), version_dir: tablespace_version_dir, inner_tablespaces: inner_tablespaces(pgdata)? };
    walker.dir(pgdata, "", Ctx { top: true, ..Ctx::default() })?;
    let mut out = walker.out;
    out.sort_by(|a, b| (a.rel_path == PG_CONTROL, &a.rel_path).cmp(&(b.rel_path == PG_CONTROL, &b.rel_path)));
    Ok(out)
}

/// Split a walk into tar parts of at most `part_size` bytes of file data each, in order. A
/// file larger than `part_size` goes alone in its part; directories and links cost nothing.
pub fn split_parts(files: Vec<DataFile>, part_size: u64) -> Vec<Vec<DataFile>> {
    let limit = part_size.max(1);
    let mut parts: Vec<Vec<DataFile>> = Vec::new();
    let mut current: Vec<DataFile> = Vec::new();
    let mut bytes = 0u64;
    for f in files {
        let cost = if f.kind == FileKind::File { f.size } else { 0 };
        if !current.is_empty() && bytes.saturating_add(cost) > limit {
            parts.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes = bytes.saturating_add(cost);
        current.push(f);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// True when PostgreSQL leaves a file with this name out of base backups.
pub fn is_excluded_file(name: &str) -> bool {
    name.starts_with(TEMP_FILE_PREFIX)
        || EXCLUDE_FILES.iter().any(|&(n, prefix)| if prefix { name.starts_with(n) } else { name == n })
        || is_socket_lock_file(name)
}

/// `.s.PGSQL.<port>.lock`: the lock file beside a Unix socket in PGDATA
/// (`unix_socket_directories = '.'`), which belongs to the running server only.
pub fn is_socket_lock_file(name: &str) -> bool {
    name.strip_prefix(".s.PGSQL.")
        .and_then(|rest| rest.strip_suffix(".lock"))
        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// `<relnumber>[_fsm|_vm|_init][.<segno>]`: the relation number and fork, as PostgreSQL's
/// `parse_filename_for_nontemp_relation`.
pub fn parse_relation_file(name: &str) -> Option<(&str, Option<&str>)> {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 10 {
        return None;
    }
    let (rel, rest) = name.split_at(digits);
    let (fork, rest) = split_fork(rest)?;
    valid_segment(rest).then_some((rel, fork))
}

/// `t<digits>_<digits>[_fork][.<segno>]`: a temporary relation (`looks_like_temp_rel_name`).
pub fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let backend = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = rest.get(backend..).filter(|_| backend > 0) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('_') else {
        return false;
    };
    let rel = rest.bytes().take_while(u8::is_ascii_digit).count();
    if rel == 0 || rel > 10 {
        return false;
    }
    match split_fork(&rest[rel..]) {
        Some((_, seg)) => valid_segment(seg),
        None => false,
    }
}

fn split_fork(s: &str) -> Option<(Option<&str>, &str)> {
    let Some(after) = s.strip_prefix('_') else {
        return Some((None, s));
    };
    ["fsm", "vm", "init"].into_iter().find_map(|f| after.strip_prefix(f).map(|rest| (Some(f), rest)))
}

fn valid_segment(s: &str) -> bool {
    match s.strip_prefix('.') {
        None => s.is_empty(),
        Some(seg) => !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") }
}

fn utf8_name(path: &Path, name: &std::ffi::OsStr) -> Result<String> {
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Invalid(format!("{}: file name is not valid utf-8", path.display())))
}

/// Tablespace locations that sit inside PGDATA (PostgreSQL warns against them but allows them).
fn inner_tablespaces(pgdata: &Path) -> Result<Vec<PathBuf>> {
    let tblspc = pgdata.join("pg_tblspc");
    let entries = match fs::read_dir(&tblspc) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&tblspc, e)),
    };
    let root = fs::canonicalize(pgdata).with_path(pgdata)?;
    let mut inner = Vec::new();
    for entry in entries {
        let entry = entry.with_path(&tblspc)?;
        if let Ok(loc) = fs::canonicalize(entry.path())
            && loc.starts_with(&root)
            && entry.file_type().is_ok_and(|t| t.is_symlink())
        {
            inner.push(loc);
        }
    }
    Ok(inner)
}

impl Walker<'_> {
    fn push(&mut self, rel_path: String, abs_path: PathBuf, kind: FileKind, meta: &fs::Metadata) {
        let size = if kind == FileKind::File { meta.len() } else { 0 };
        let mode = if kind == FileKind::Dir && meta.file_type().is_symlink() {
            0o700
        } else {
            meta.permissions().mode() & 0o7777
        };
        self.out.push(DataFile { rel_path, abs_path, kind, size, mode, mtime: meta.mtime() });
    }

    fn dir(&mut self, abs: &Path, rel: &str, ctx: Ctx) -> Result<()> {
        let reader = match fs::read_dir(abs) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(abs, e)),
        };
        let mut names = Vec::new();
        for entry in reader {
            let entry = entry.with_path(abs)?;
            names.push(utf8_name(&entry.path(), &entry.file_name())?);
        }
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        for name in &names {
            if is_excluded_file(name) || (ctx.db && self.skip_relation(name, &present)) {
                continue;
            }
            self.entry(abs, rel, name, ctx)?;
        }
        Ok(())
    }

    /// Temporary relations, and non-init forks of unlogged relations (those with an init fork).
    fn skip_relation(&self, name: &str, present: &HashSet<&str>) -> bool {
        if is_temp_relation(name) {
            return true;
        }
        match parse_relation_file(name) {
            Some((rel, fork)) if fork != Some("init") => present.contains(format!("{rel}_init").as_str()),
            _ => false,
        }
    }

    fn entry(&mut self, dir: &Path, rel: &str, name: &str, ctx: Ctx) -> Result<()> {
        let abs = dir.join(name);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&abs, e)),
        };
        let rel = join(rel, name);
        let ft = meta.file_type();
        let dir_or_link = ft.is_dir() || ft.is_symlink();
        if dir_or_link && EXCLUDE_DIR_CONTENTS.contains(&name) {
            self.push(rel, abs, FileKind::Dir, &meta);
        } else if dir_or_link && ctx.top && name == "pg_wal" {
            let status = format!("{rel}/archive_status");
            self.push(rel, abs.clone(), FileKind::Dir, &meta);
            self.push(status, abs.join("archive_status"), FileKind::Dir, &meta);
        } else if ft.is_symlink() && ctx.tblspc {
            self.tablespace(abs, rel, name, &meta)?;
        } else if ft.is_dir() {
            self.push(rel.clone(), abs.clone(), FileKind::Dir, &meta);
            if !self.inner_tablespaces.iter().any(|t| fs::canonicalize(&abs).is_ok_and(|a| &a == t)) {
                self.dir(&abs, &rel, child_ctx(ctx, name, self.version_dir))?;
            }
        } else if ft.is_file() {
            self.push(rel, abs, FileKind::File, &meta);
        } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            // A server's Unix socket: meaningless in a backup, skipped quietly as PostgreSQL does.
            tracing::debug!("skipping socket {}", abs.display());
        } else {
            tracing::warn!("skipping special file {}", abs.display());
        }
        Ok(())
    }

    fn tablespace(&mut self, abs: PathBuf, rel: String, oid: &str, meta: &fs::Metadata) -> Result<()> {
        if !is_digits(oid) {
            tracing::warn!("skipping symbolic link {} (not a tablespace oid)", abs.display());
            return Ok(());
        }
        let target = match fs::read_link(&abs) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&abs, e)),
        };
        let location = abs.parent().map_or_else(|| target.clone(), |p| p.join(&target));
        let link = target
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Invalid(format!("{}: link target is not valid utf-8", abs.display())))?;
        self.push(rel.clone(), abs, FileKind::Symlink(link), meta);
        let ts_ctx = Ctx { tablespace_root: true, ..Ctx::default() };
        match self.version_dir {
            None => self.dir(&location, &rel, ts_ctx),
            Some(v) => self.entry(&location, &rel, v, ts_ctx),
        }
    }
}

fn child_ctx(parent: Ctx, name: &str, version_dir: Option<&str>) -> Ctx {
    let is_version = match version_dir {
        Some(v) => name == v,
        None => name.starts_with("PG_"),
    };
    Ctx {
        base: parent.top && name == "base",
        tblspc: parent.top && name == "pg_tblspc",
        tablespace_root: parent.tblspc && is_digits(name),
        version_dir: parent.tablespace_root && is_version,
        db: (parent.base || parent.version_dir) && is_digits(name),
        top: false,
    }
}

#[cfg(test)]
mod tests;
