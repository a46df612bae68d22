//! Verify a tar part against the manifest without writing anything: every entry is read to
//! its end and hashed, and checked the way the extractor would check it.

use std::collections::HashSet;
use std::io::{ErrorKind, Read};

use super::READ_CHUNK;
use super::extract::{entry_kind, kind_name};
use crate::manifest::{EntryKind, FileDigest, FileHasher, Manifest, path_problem, tablespace_link_oid};
use crate::{Error, Result};

/// What one verified part held.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// File bytes read and hashed.
    pub bytes: u64,
}

/// Read a tar stream to its end, checking every entry against `expected` as part `part`:
/// listed, of the listed kind and part, seen once, files of the listed size and digest,
/// links to the listed target; and that every entry the manifest puts in `part` was seen.
///
/// Errors from `input` that carry a typed [`Error`] (a codec's authentication or
/// decompression failure) come back as that error.
///
/// # Errors
/// [`Error::Refused`] for hostile or unlisted entries, [`Error::Corrupt`] naming the entry
/// for a mismatch or a malformed stream.
pub fn verify_tar<R: Read>(input: R, expected: &Manifest, part: u32) -> Result<VerifyStats> {
    expected.validate()?;
    let mut stats = VerifyStats::default();
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(stream_error)?;
    for entry in entries {
        let mut entry = entry.map_err(stream_error)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let Ok(path) = std::str::from_utf8(&raw) else {
            return Err(refused(&name, "has a name that is not utf-8"));
        };
        let kind = entry_kind(entry.header().entry_type()).map_err(|why| refused(path, why))?;
        let path = if kind == EntryKind::Dir { path.strip_suffix('/').unwrap_or(path) } else { path }.to_owned();
        if let Some(problem) = path_problem(&path) {
            return Err(refused(&path, problem));
        }
        if kind == EntryKind::Symlink && tablespace_link_oid(&path).is_none() {
            return Err(refused(&path, "is a symlink outside pg_tblspc"));
        }
        let listed = expected.lookup(&path).ok_or_else(|| refused(&path, "is not in the manifest"))?;
        if listed.kind != kind {
            let what = format!("is a {} but the manifest lists a {}", kind_name(kind), kind_name(listed.kind));
            return Err(refused(&path, what));
        }
        if listed.part != part {
            return Err(Error::corrupt(
                &path,
                format!("is in part {part} but the manifest puts it in part {}", listed.part),
            ));
        }
        if !seen.insert(path.clone()) {
            return Err(refused(&path, "appears twice"));
        }
        match kind {
            EntryKind::Dir => stats.dirs += 1,
            EntryKind::Symlink => {
                let link = entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
                if link != listed.link_target {
                    return Err(Error::corrupt(&path, "link target differs from the manifest"));
                }
                stats.symlinks += 1;
            }
            EntryKind::File => {
                if entry.size() != listed.size {
                    let why = format!("size {} in the archive but {} in the manifest", entry.size(), listed.size);
                    return Err(Error::corrupt(&path, why));
                }
                let (n, found) = hash_all(&mut entry, &mut buf, listed.digest.hasher())?;
                if n != listed.size {
                    return Err(Error::corrupt(&path, format!("archive ended after {n} of {} bytes", listed.size)));
                }
                if !listed.digest.matches(&found) {
                    return Err(Error::corrupt(&path, format!("{} differs from the manifest", found.algorithm())));
                }
                stats.files += 1;
                stats.bytes += n;
            }
        }
    }
    if let Some(missing) = expected.missing(part, &seen).first() {
        return Err(Error::corrupt(&missing.path, "is in the manifest but not in the part"));
    }
    Ok(stats)
}

fn refused(path: &str, what: impl std::fmt::Display) -> Error {
    Error::Refused(format!("tar entry {path:?} {what}"))
}

/// A read error: the typed error a codec put inside it, else a corrupt tar stream.
fn stream_error(e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return crate::codec::error_from_io(e, "tar stream");
    }
    Error::corrupt("tar stream", e)
}

fn hash_all(data: &mut impl Read, buf: &mut [u8], mut hash: FileHasher) -> Result<(u64, FileDigest)> {
    let mut n = 0u64;
    loop {
        match data.read(buf) {
            Ok(0) => break,
            Ok(got) => {
                hash.update(&buf[..got]);
                n += got as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e)),
        }
    }
    Ok((n, hash.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarball::write_tar_bytes;

    fn part(files: &[(&str, &[u8])]) -> (Vec<u8>, Manifest) {
        let (tar, entries) = write_tar_bytes(Vec::new(), files).expect("tar");
        (tar, Manifest::new(entries, vec![]))
    }

    #[test]
    fn a_good_part_verifies() {
        let (tar, m) = part(&[("a", b"hello"), ("b/c", b"world!")]);
        let stats = verify_tar(tar.as_slice(), &m, 0).expect("verify");
        assert_eq!((stats.files, stats.bytes), (2, 11));
    }

    #[test]
    fn changed_content_missing_entries_and_wrong_parts_are_named() {
        let (mut tar, m) = part(&[("a", b"hello")]);
        let at = tar.windows(5).position(|w| w == b"hello").expect("data");
        tar[at] = b'j';
        let err = verify_tar(tar.as_slice(), &m, 0).map(|_| ()).expect_err("flipped");
        assert_eq!(err.to_string(), "object a is corrupt: blake3 differs from the manifest");

        let (tar, _) = part(&[("a", b"hello")]);
        let (_, bigger) = part(&[("a", b"hello"), ("z", b"zz")]);
        let err = verify_tar(tar.as_slice(), &bigger, 0).map(|_| ()).expect_err("missing");
        assert_eq!(err.to_string(), "object z is corrupt: is in the manifest but not in the part");

        let err = verify_tar(tar.as_slice(), &bigger, 1).map(|_| ()).expect_err("wrong part");
        assert!(err.to_string().contains("is in part 1 but the manifest puts it in part 0"), "{err}");

        let (other, _) = part(&[("x", b"1")]);
        let err = verify_tar(other.as_slice(), &bigger, 0).map(|_| ()).expect_err("unlisted");
        assert_eq!(err.to_string(), "tar entry \"x\" is not in the manifest");
    }
}
