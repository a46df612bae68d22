//! Listing for the fs backend: a directory walk with S3 `ListObjectsV2` semantics (string
//! prefix, delimiter roll-up, `StartAfter`), skipping temporary files, symlinks and
//! directories that hold no object.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::{ListResult, ObjectMeta, common_prefix, is_temp_name};
use crate::error::IoContext;
use crate::{Error, Result};

/// A listing request, owned for the blocking task.
pub(super) struct Query {
    pub(super) prefix: String,
    pub(super) delimiter: Option<String>,
    pub(super) start_after: Option<String>,
}

impl Query {
    fn wants(&self, key: &str) -> bool {
        key.starts_with(&self.prefix) && self.start_after.as_ref().is_none_or(|s| key > s.as_str())
    }

    /// Can a key under directory key `dkey` (ending in `/`) match at all?
    fn may_contain(&self, dkey: &str) -> bool {
        let prefix_ok = dkey.starts_with(&self.prefix) || self.prefix.starts_with(dkey);
        // Every key under dkey starts with dkey; if dkey < start_after and start_after does
        // not itself start with dkey, all of them sort before start_after.
        let after_ok = self.start_after.as_ref().is_none_or(|s| dkey > s.as_str() || s.starts_with(dkey));
        prefix_ok && after_ok
    }
}

/// Walk the directory tree below the prefix's directory, S3 semantics.
pub(super) fn list_tree(root: &Path, q: &Query) -> Result<ListResult> {
    let dir_key = q.prefix.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
    let mut out = ListResult::default();
    let mut prefixes = BTreeSet::new();
    walk(root, &dir_key, q, &mut out.objects, &mut prefixes)?;
    out.objects.sort_by(|a, b| a.key.cmp(&b.key));
    out.prefixes = prefixes.into_iter().collect();
    Ok(out)
}

fn walk(
    root: &Path,
    dir_key: &str,
    q: &Query,
    objects: &mut Vec<ObjectMeta>,
    prefixes: &mut BTreeSet<String>,
) -> Result<()> {
    let dir = root.join(dir_key);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.with_path(&dir)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::debug!(dir = %dir.display(), "skipping a file name that is not UTF-8");
            continue;
        };
        if is_temp_name(&name) {
            continue;
        }
        let file_type = entry.file_type().with_path(entry.path())?;
        let key = format!("{dir_key}{name}");
        if file_type.is_file() {
            if !q.wants(&key) {
                continue;
            }
            match common_prefix(&key, &q.prefix, q.delimiter.as_deref()) {
                Some(p) => {
                    prefixes.insert(p.to_string());
                }
                None => {
                    let meta = entry.metadata().with_path(entry.path())?;
                    objects.push(object_meta(key, &meta));
                }
            }
        } else if file_type.is_dir() {
            let dkey = format!("{key}/");
            if !q.may_contain(&dkey) {
                continue;
            }
            let rolls_up =
                q.delimiter.as_deref() == Some("/") && dkey.len() > q.prefix.len() && dkey.starts_with(&q.prefix);
            if rolls_up {
                // Everything below is one common prefix, `dkey`, if any key there counts.
                if !prefixes.contains(&dkey) && any_key(root, &dkey, q)? {
                    prefixes.insert(dkey);
                }
            } else {
                walk(root, &dkey, q, objects, prefixes)?;
            }
        }
        // Symlinks and special files are not objects.
    }
    Ok(())
}

/// Is there at least one object under directory key `dkey` that the query wants?
fn any_key(root: &Path, dkey: &str, q: &Query) -> Result<bool> {
    let dir = root.join(dkey);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(false),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.with_path(&dir)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if is_temp_name(&name) {
            continue;
        }
        let key = format!("{dkey}{name}");
        let file_type = entry.file_type().with_path(entry.path())?;
        if file_type.is_file() && q.wants(&key) {
            return Ok(true);
        }
        if file_type.is_dir() {
            let sub = format!("{key}/");
            if q.may_contain(&sub) && any_key(root, &sub, q)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// ENOENT, or ENOTDIR (a file where a directory of the key should be).
pub(super) fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

pub(super) fn object_meta(key: String, m: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta { key, size: m.len(), last_modified: m.modified().ok().map(chrono::DateTime::<chrono::Utc>::from) }
}
