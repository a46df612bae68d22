//! `--tablespace-map` and the tablespace directories of a restore, checked before anything is
//! written: an unknown tablespace, a relative or non-UTF-8 location, a location inside PGDATA
//! (or holding it), two tablespaces in one place, or a directory that already holds what the
//! backup puts there would otherwise be found halfway through the extraction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, tablespace_content};
use crate::{Error, Result};

/// Check `remap` (tablespace oid → new location) against the backup's manifest, and every
/// tablespace's destination (remapped or original) on disk.
///
/// # Errors
/// [`Error::Config`] naming `--tablespace-map` for a map that does not fit the backup;
/// [`Error::Refused`] for a destination that holds what the restore would write.
pub fn check(
    backup: &str,
    manifest: &Manifest,
    remap: &BTreeMap<u32, PathBuf>,
    pgdata: &Path,
    delta: bool,
) -> Result<()> {
    let bad = |why: String| Error::config("--tablespace-map", why);
    let mut seen = BTreeSet::new();
    for (oid, dir) in remap {
        if manifest.tablespace(*oid).is_none() {
            let known: Vec<String> = manifest.tablespaces.iter().map(|t| format!("{} ({})", t.oid, t.name)).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(bad(format!("backup {backup} has no tablespace {oid}; its tablespaces: {known}")));
        }
        if !dir.is_absolute() {
            return Err(bad(format!("{oid}={}: the new location must be an absolute path", dir.display())));
        }
        if dir.to_str().is_none() {
            return Err(bad(format!("{oid}={}: the new location is not valid UTF-8", dir.display())));
        }
        if dir.starts_with(pgdata) || pgdata.starts_with(dir) {
            return Err(bad(format!(
                "{oid}={}: a tablespace must be outside the data directory {} (and not contain it)",
                dir.display(),
                pgdata.display()
            )));
        }
        if !seen.insert(dir.clone()) {
            return Err(bad(format!("{oid}={}: two tablespaces in one directory", dir.display())));
        }
    }
    for ts in &manifest.tablespaces {
        let dir = remap.get(&ts.oid).cloned().unwrap_or_else(|| PathBuf::from(&ts.location));
        // A delta restore compares what is there (and removes what differs).
        if !delta {
            check_destination(ts.oid, &dir, manifest)?;
        }
    }
    Ok(())
}

/// The destination must be absent or a directory without any of the entries the backup puts
/// at its top (a mount point's `lost+found` is fine; an earlier restore's `PG_15_...` is not).
fn check_destination(oid: u32, dir: &Path, manifest: &Manifest) -> Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    if !meta.is_dir() {
        return Err(Error::Refused(format!(
            "tablespace {oid} would be restored into {}, which is not a directory",
            dir.display()
        ))
        .with_hint(format!("move it with --tablespace-map {oid}=DIR")));
    }
    let tops: BTreeSet<&str> = manifest
        .files
        .iter()
        .filter_map(|e| tablespace_content(&e.path))
        .filter(|(o, _)| *o == oid)
        .filter_map(|(_, inner)| inner.split('/').next())
        .collect();
    if let Some(clash) = tops.iter().find(|top| std::fs::symlink_metadata(dir.join(top)).is_ok()) {
        return Err(Error::Refused(format!(
            "tablespace {oid} would be restored into {}, which already holds {clash}: refusing to overwrite it",
            dir.display()
        ))
        .with_hint(format!("restore it elsewhere with --tablespace-map {oid}=DIR, or remove the old directory")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{EntryKind, ManifestEntry, ManifestTablespace};

    fn manifest(location: &Path) -> Manifest {
        let entry = |path: &str, kind| ManifestEntry {
            path: path.to_string(),
            size: 0,
            digest: crate::manifest::FileDigest::none(),
            mode: 0o700,
            part: 0,
            kind,
            link_target: None,
        };
        Manifest::new(
            vec![
                entry("pg_tblspc/16384", EntryKind::Symlink),
                entry("pg_tblspc/16384/PG_15_202209061", EntryKind::Dir),
            ],
            vec![ManifestTablespace { oid: 16384, name: "ts1".into(), location: location.display().to_string() }],
        )
    }

    #[test]
    fn map_is_checked_against_the_backup_and_the_disk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let original = tmp.path().join("ts-original");
        let pgdata = tmp.path().join("pgdata");
        let m = manifest(&original);
        let map = |pairs: &[(u32, PathBuf)]| pairs.iter().cloned().collect::<BTreeMap<_, _>>();
        let err = |r: Result<()>| r.expect_err("refused").to_string();
        assert!(check("b", &m, &map(&[]), &pgdata, false).is_ok());
        assert!(check("b", &m, &map(&[(16384, tmp.path().join("new"))]), &pgdata, false).is_ok());
        let e = err(check("b", &m, &map(&[(99, tmp.path().join("new"))]), &pgdata, false));
        assert_eq!(e, "setting --tablespace-map: backup b has no tablespace 99; its tablespaces: 16384 (ts1)");
        let e = err(check("b", &m, &map(&[(16384, PathBuf::from("rel/dir"))]), &pgdata, false));
        assert!(e.ends_with("16384=rel/dir: the new location must be an absolute path"), "{e}");
        let e = err(check("b", &m, &map(&[(16384, pgdata.join("ts"))]), &pgdata, false));
        assert!(e.contains("must be outside the data directory"), "{e}");
        // the original location already holds an earlier restore
        std::fs::create_dir_all(original.join("PG_15_202209061")).expect("mkdir");
        let e = err(check("b", &m, &map(&[]), &pgdata, false));
        assert!(e.contains("already holds PG_15_202209061: refusing to overwrite it"), "{e}");
        // moved elsewhere: fine; a directory with only lost+found: fine
        let moved = tmp.path().join("mnt");
        std::fs::create_dir_all(moved.join("lost+found")).expect("mkdir");
        assert!(check("b", &m, &map(&[(16384, moved.clone())]), &pgdata, false).is_ok());
        std::fs::write(tmp.path().join("file"), "x").expect("write");
        let e = err(check("b", &m, &map(&[(16384, tmp.path().join("file"))]), &pgdata, false));
        assert!(e.contains("which is not a directory"), "{e}");
    }
}
