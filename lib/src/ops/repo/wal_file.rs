//! WAL files on the local disk: one object downloaded into a file (verified as it is
//! written), a file checked before it is trusted, and a durable move. Shared by wal-fetch, its
//! prefetch worker and pitr-prepare's staging.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use tokio_util::io::SyncIoBridge;

use crate::codec::{self, crypt::Keyring};
use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::repo::blocking;
use crate::ops::repo::place::Logical;
use crate::wal::{self, WalFileName};
use crate::{Error, Result};

/// Check that `path` is a complete copy of segment `name` of this cluster: its length is
/// the segment size of its long page header, the header's page address is the start of
/// segment `name`, its timeline is not newer than the name's, and its system identifier is
/// `sysid` (when known). Returns the length.
///
/// # Errors
/// [`Error::Corrupt`] saying what is wrong; I/O errors.
pub fn verify_segment(path: &Path, name: &WalFileName, sysid: Option<u64>) -> Result<u64> {
    use std::io::Read;
    let what = path.display().to_string();
    let f = std::fs::File::open(path).with_path(path)?;
    let len = f.metadata().with_path(path)?.len();
    let mut head = Vec::with_capacity(wal::header::LONG_HEADER_LEN);
    f.take(wal::header::LONG_HEADER_LEN as u64).read_to_end(&mut head).with_path(path)?;
    wal::check::check_segment(&head, Some(len), name, sysid).map(|i| i.seg_size).map_err(|f| f.into_error(&what, name))
}

/// Rename `src` to `dest` (copying durably across filesystems), then fsync `dest`'s directory.
///
/// # Errors
/// I/O errors naming the file.
pub fn move_file(src: &Path, dest: &Path) -> Result<()> {
    match std::fs::rename(src, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            crate::fsutil::write_atomic_with(dest, true, |out| {
                let mut input = std::fs::File::open(src).with_path(src)?;
                std::io::copy(&mut input, out).with_path(dest)?;
                out.flush().with_path(dest)
            })?;
            let _ = std::fs::remove_file(src);
        }
        Err(e) => return Err(Error::io(src, e)),
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::fsutil::sync_dir(parent).with_path(parent)
}

/// Download WAL object `key` (the file `parsed`) into `dest`, atomically and durably: its
/// binding to this place and its plaintext digest checked by the decoder, a segment's page
/// header checked against its name and `expected_sysid` ([`wal::check`]). Returns the length.
/// On any error no file is left at `dest`.
///
/// # Errors
/// Storage, key, corruption and I/O errors; [`Error::Refused`] for another cluster's WAL.
pub async fn fetch_object(
    repo: &Repo,
    key: &str,
    parsed: &WalFileName,
    dest: &Path,
    expected_sysid: Option<u64>,
) -> Result<u64> {
    // Bound to its name in this place: a renamed, copied or foreign object is refused here.
    let expect = repo.expect(&Logical::Wal(&parsed.to_string())).await?;
    let reader = repo.storage.get(key).await?;
    let bridge = SyncIoBridge::new(reader);
    let object = repo.storage.describe(key);
    let keyring = repo.keyring.clone();
    let dest = dest.to_path_buf();
    let check_header = parsed.has_page_header().then(|| parsed.clone());
    blocking(move || {
        let mut bytes = 0;
        let dest_name = dest.display().to_string();
        crate::fsutil::write_atomic_with(&dest, true, |file| {
            bytes = decode_checked(bridge, &keyring, (&object, &expect), file, &dest_name)?;
            if let Some(name) = &check_header {
                check_segment_header(file, &object, name, expected_sysid)?;
            }
            Ok(())
        })?;
        Ok(bytes)
    })
    .await
}

/// Decode into `file` (written for `dest`, `%p`: write errors such as a full disk name it,
/// read errors the object); the decoder checks the plaintext digest against the header's.
fn decode_checked(
    input: impl Read + Send,
    keyring: &Keyring,
    (object, expect): (&str, &codec::Expect),
    file: &mut std::fs::File,
    dest: &str,
) -> Result<u64> {
    let reader = std::io::BufReader::with_capacity(1 << 20, input);
    let (_, len) = codec::decode_to(reader, keyring, object, Some(expect), false, file, dest)?;
    Ok(len)
}

/// A segment must carry a valid long page header of this repository's cluster, for the
/// segment it is named after ([`wal::check::check_segment`]).
fn check_segment_header(
    file: &mut std::fs::File,
    object: &str,
    name: &WalFileName,
    expected_sysid: Option<u64>,
) -> Result<()> {
    let mut head = Vec::with_capacity(wal::header::LONG_HEADER_LEN);
    let io = |e: std::io::Error| Error::corrupt(object, format!("cannot read back the restored file: {e}"));
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.take(wal::header::LONG_HEADER_LEN as u64).read_to_end(&mut head).map_err(io)?;
    wal::check::check_segment(&head, None, name, expected_sysid).map(|_| ()).map_err(|f| f.into_error(object, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;
    const SYSID: u64 = 7_000_000_000_000_000_042;

    fn magic() -> u16 {
        wal::header::KNOWN_MAGICS[1].0
    }

    #[test]
    fn only_a_whole_segment_of_this_cluster_for_its_name_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = wal::synthetic_segment(SYSID, 1, 7, SEG as u32, magic(), 7);
        let name = WalFileName::from_segno(1, 7, SEG);
        let check = |bytes: &[u8], name: &WalFileName, sysid| {
            let p = dir.path().join("f");
            std::fs::write(&p, bytes).expect("write");
            verify_segment(&p, name, sysid)
        };
        assert_eq!(check(&good, &name, Some(SYSID)).expect("good"), SEG);
        assert!(check(&good[..good.len() - 1], &name, Some(SYSID)).is_err(), "truncated");
        assert!(check(&good[..20], &name, Some(SYSID)).is_err(), "shorter than a header");
        assert!(check(&good, &name, Some(SYSID + 1)).is_err(), "another cluster");
        assert!(check(&good, &WalFileName::from_segno(1, 8, SEG), Some(SYSID)).is_err(), "another segment");
        let newer = wal::synthetic_segment(SYSID, 2, 7, SEG as u32, magic(), 7);
        assert!(check(&newer, &name, Some(SYSID)).is_err(), "pages of a newer timeline");
        // The first segment of timeline 2 starts as a copy of timeline 1's.
        assert!(check(&good, &WalFileName::from_segno(2, 7, SEG), Some(SYSID)).is_ok());
        assert!(check(&vec![0u8; SEG as usize], &name, Some(SYSID)).is_err(), "a zero-filled (preallocated) file");
        assert!(verify_segment(&dir.path().join("absent"), &name, Some(SYSID)).is_err());
    }
}
