//! A full backup's complete block map (format 1, `docs/FORMAT.md` 9.1) written from a
//! [`DigestSpool`] one file at a time: base-backup spills each part's digests to the spool as
//! the part is stored, so a multi-terabyte backup never holds its map in memory (2 MiB of
//! digests per GiB of data), only each file's place in the spool.

use std::io::Write;

use ring::digest::{Context, SHA256};

use super::stream::{DigestSpool, ReferenceBlocks};
use super::{BlockMap, MAGIC};
use crate::error::IoContext;
use crate::{Error, Result};

/// Write the complete map of every file in `spool`, in path order, to `out` (`at` names it in
/// errors); returns the SHA-256 (hex) of the bytes written, as [`BlockMap::sha256_hex`].
///
/// # Errors
/// [`Error::Io`] naming `at` or the spool.
pub fn write_complete(spool: &DigestSpool, out: &mut impl Write, at: &str) -> Result<String> {
    let mut hash = Context::new(&SHA256);
    let mut put = |bytes: &[u8]| -> Result<()> {
        hash.update(bytes);
        out.write_all(bytes).with_path(at)
    };
    let paths = spool.paths();
    put(MAGIC)?;
    put(&(paths.len() as u64).to_be_bytes())?;
    for path in paths {
        let f = spool.file(path)?.ok_or_else(|| Error::Internal(format!("{path} left the digest spool")))?;
        let len = u32::try_from(path.len()).map_err(|_| Error::Invalid(format!("path too long: {path}")))?;
        put(&len.to_be_bytes())?;
        put(path.as_bytes())?;
        put(&f.length.to_be_bytes())?;
        for d in &f.digests {
            put(d)?;
        }
    }
    Ok(hex::encode(hash.finish()))
}

/// Every file of `spool` in memory (for an incremental, whose files stored whole are the new
/// and wholly changed ones).
///
/// # Errors
/// [`Error::Io`] reading the spool.
pub fn to_block_map(spool: &DigestSpool) -> Result<BlockMap> {
    let mut map = BlockMap::default();
    for path in spool.paths() {
        if let Some(f) = spool.file(path)? {
            map.files.insert(path.to_string(), f.into_owned());
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockmap::of_bytes;
    use crate::blockmap::stream::SpoolWriter;

    #[test]
    fn the_spooled_map_is_byte_for_byte_the_in_memory_one() {
        let mut map = BlockMap::default();
        for (i, path) in
            ["base/5/16384", "global/pg_control", "base/1/1259", "PG_VERSION", "base/5/16384.1"].iter().enumerate()
        {
            let data: Vec<u8> = (0..(i * 9000 + 17)).map(|b| (b * 31 + i) as u8).collect();
            map.files.insert(path.to_string(), of_bytes(&data));
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut w = SpoolWriter::new(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        // In the order parts finish, not in path order.
        for path in ["global/pg_control", "base/5/16384", "PG_VERSION", "base/5/16384.1", "base/1/1259"] {
            w.push(path.to_string(), &map.files[path]).unwrap_or_else(|e| panic!("{e}"));
        }
        let spool = w.finish().unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        let sha = write_complete(&spool, &mut out, "test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, map.encode());
        assert_eq!(sha, BlockMap::sha256_hex(&out));
        assert_eq!(to_block_map(&spool).unwrap_or_else(|e| panic!("{e}")), map);
    }
}
