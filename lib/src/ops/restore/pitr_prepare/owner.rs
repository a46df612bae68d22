//! After a restore: the files given to the owner of PGDATA's parent when run as root, and the
//! archive listing handed over to wal-fetch.

use std::path::Path;

use super::PrepareOptions;
use crate::Result;
use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::repo::catalog::BackupMetadata;
use crate::ops::repo::local;
use crate::ops::repo::wal_index::WalIndex;

/// When run as root, give the restored files to the owner of PGDATA's parent directory
/// (the postgres user in a restore Job), as PostgreSQL refuses a data directory it does
/// not own.
pub(super) fn chown_like_parent(pgdata: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    let parent = pgdata.parent().unwrap_or(Path::new("/"));
    let owner = std::fs::metadata(parent).with_path(parent)?;
    if me != 0 || owner.uid() == 0 {
        return Ok(());
    }
    chown_tree(pgdata, owner.uid(), owner.gid())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).with_path(path)?;
    let meta = std::fs::symlink_metadata(path).with_path(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).with_path(path)? {
            chown_tree(&entry.with_path(path)?.path(), uid, gid)?;
        }
    } else if meta.file_type().is_symlink() {
        // Tablespace links: their targets are restored directories to chown as well.
        if let Ok(target) = std::fs::canonicalize(path)
            && target.is_dir()
        {
            chown_tree(&target, uid, gid)?;
        }
    }
    Ok(())
}

/// Save the archive listing where wal-fetch will look, starting at the backup's day.
pub(super) fn hand_over_listing(repo: &Repo, mut index: WalIndex, b: &BackupMetadata, opts: &PrepareOptions) {
    let dir = local::cache_dir_for(opts.cache_dir.as_deref(), &opts.pgdata);
    if let Some(dir) = dir {
        index.relocate(&dir, repo);
        index.set_hint_day(b.start_time.date_naive());
        index.save();
        // wal-fetch runs as the owner of PGDATA: the cache must be theirs too.
        use std::os::unix::fs::MetadataExt;
        if let Ok(owner) = std::fs::metadata(&opts.pgdata) {
            let top = dir.parent().filter(|p| p.ends_with(".walvault-cache")).unwrap_or(&dir);
            let _ = chown_tree(top, owner.uid(), owner.gid());
        }
    }
}
