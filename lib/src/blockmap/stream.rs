//! Block maps that are never whole in memory: a complete (`WVBLKMAP1`) map read as a stream,
//! one file at a time, hashing what it reads ([`CompleteReader`]); and an effective map kept
//! in an unnamed local file with only an index in memory ([`DigestSpool`]), from which the
//! incremental writer takes one file's digests at a time ([`ReferenceBlocks`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use ring::digest::{Context, SHA256};

use super::{BlockMap, Digest, DigestAlgo, FileBlocks, Merger, block_count};
use crate::error::IoContext;
use crate::manifest::check_relative_path;
use crate::{Error, Result};

/// A complete map read one file at a time, in path order.
pub struct CompleteReader<R> {
    input: R,
    hash: Context,
    left: u64,
    last: Option<String>,
    object: String,
    algo: DigestAlgo,
}

impl<R: Read> CompleteReader<R> {
    /// Start reading `input` (the decoded body of block map `object`).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object` when it is not a complete map.
    pub fn new(input: R, object: &str) -> Result<Self> {
        let mut r = CompleteReader {
            input,
            hash: Context::new(&SHA256),
            left: 0,
            last: None,
            object: object.into(),
            algo: DigestAlgo::Blake3,
        };
        let mut magic = [0u8; 10];
        r.read(&mut magic, "too short")?;
        r.algo = DigestAlgo::of_complete(&magic).ok_or_else(|| r.bad("not a complete block map (magic)"))?;
        r.left = r.u64("truncated file count")?;
        Ok(r)
    }

    /// The object it reads (for messages).
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The algorithm of its digests (from its magic).
    pub fn algo(&self) -> DigestAlgo {
        self.algo
    }

    fn bad(&self, why: impl std::fmt::Display) -> Error {
        Error::corrupt(&self.object, format!("block map: {why}"))
    }

    fn read(&mut self, buf: &mut [u8], why: &str) -> Result<()> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.hash.update(buf);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(self.bad(why)),
            Err(e) => Err(self.bad(e)),
        }
    }

    fn u64(&mut self, why: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b, why)?;
        Ok(u64::from_be_bytes(b))
    }

    /// The next file, `None` after the last.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the object and what is wrong (a bad or unordered path, a
    /// truncated map).
    pub fn next_file(&mut self) -> Result<Option<(String, FileBlocks)>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut len = [0u8; 4];
        self.read(&mut len, "truncated file")?;
        let mut raw = vec![0u8; u32::from_be_bytes(len) as usize];
        self.read(&mut raw, "truncated path")?;
        let path = String::from_utf8(raw).map_err(|_| self.bad("a path is not utf-8"))?;
        check_relative_path(&path).map_err(|e| self.bad(e))?;
        if self.last.as_ref().is_some_and(|last| *last >= path) {
            return Err(self.bad(format!("{path} is out of order")));
        }
        let length = self.u64(&format!("{path}: truncated length"))?;
        let mut digests: Vec<Digest> = Vec::new();
        let mut chunk = vec![0u8; 16 * 4096];
        let mut n = block_count(length);
        while n > 0 {
            let take = n.min(4096) as usize;
            self.read(&mut chunk[..take * 16], &format!("{path}: truncated digests"))?;
            digests.extend(chunk[..take * 16].chunks_exact(16).map(|c| c.try_into().unwrap_or([0; 16])));
            n -= take as u64;
        }
        self.last = Some(path.clone());
        Ok(Some((path, FileBlocks { length, digests })))
    }

    /// After the last file: nothing may follow. Returns the SHA-256 (hex) of the whole body.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for bytes after the last file.
    pub fn finish(mut self) -> Result<String> {
        let mut extra = [0u8; 1];
        loop {
            match self.input.read(&mut extra) {
                Ok(0) => return Ok(hex::encode(self.hash.finish())),
                Ok(_) => return Err(self.bad("bytes after the last file")),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.bad(e)),
            }
        }
    }
}

/// Where the incremental writer finds its reference's digests of a file.
pub trait ReferenceBlocks: Send + Sync {
    /// The digests of `path`, `None` when the reference does not restore it.
    ///
    /// # Errors
    /// Reading them failed.
    fn file(&self, path: &str) -> Result<Option<Cow<'_, FileBlocks>>>;
}

impl ReferenceBlocks for BlockMap {
    fn file(&self, path: &str) -> Result<Option<Cow<'_, FileBlocks>>> {
        Ok(self.files.get(path).map(Cow::Borrowed))
    }
}

/// Digests by file in an unnamed local file (gone when dropped); in memory only each file's
/// length and place.
pub struct DigestSpool {
    file: File,
    at: String,
    index: HashMap<String, (u64, u64)>,
    algo: DigestAlgo,
}

/// Fills a [`DigestSpool`].
pub struct SpoolWriter {
    out: BufWriter<File>,
    at: String,
    index: HashMap<String, (u64, u64)>,
    end: u64,
    algo: DigestAlgo,
}

impl SpoolWriter {
    /// A new spool in directory `dir`, of digests made with `algo`.
    ///
    /// # Errors
    /// [`Error::Io`] naming `dir`.
    pub fn new(dir: &Path, algo: DigestAlgo) -> Result<SpoolWriter> {
        let file = tempfile::tempfile_in(dir).with_path(dir)?;
        let at = dir.display().to_string();
        Ok(SpoolWriter { out: BufWriter::with_capacity(1 << 20, file), at, index: HashMap::new(), end: 0, algo })
    }

    /// Add file `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the spool's directory.
    pub fn push(&mut self, path: String, f: &FileBlocks) -> Result<()> {
        for d in &f.digests {
            self.out.write_all(d).with_path(&self.at)?;
        }
        self.index.insert(path, (f.length, self.end));
        self.end += f.digests.len() as u64 * 16;
        Ok(())
    }

    /// The spool, ready to read.
    ///
    /// # Errors
    /// [`Error::Io`] naming the spool's directory.
    pub fn finish(self) -> Result<DigestSpool> {
        let file = self.out.into_inner().map_err(|e| Error::io(&self.at, e.into_error()))?;
        Ok(DigestSpool { file, at: self.at, index: self.index, algo: self.algo })
    }
}

impl DigestSpool {
    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when it holds no file.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The algorithm of its digests.
    pub fn algo(&self) -> DigestAlgo {
        self.algo
    }
}

impl DigestSpool {
    /// The paths it holds, in order.
    pub fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.index.keys().map(String::as_str).collect();
        paths.sort_unstable();
        paths
    }
}

/// Write the complete (`WVBLKMAP3`) form of the map in `spool` into `out`, in path order, one
/// file's digests at a time (`at`: the spool's place, for messages).
///
/// # Errors
/// [`Error::Io`] naming `at`.
pub fn write_complete(spool: &DigestSpool, out: &mut impl Write, at: &Path) -> Result<()> {
    let paths = spool.paths();
    out.write_all(spool.algo.complete_magic()).with_path(at)?;
    out.write_all(&(paths.len() as u64).to_be_bytes()).with_path(at)?;
    for path in paths {
        let f = spool.file(path)?.ok_or_else(|| Error::Internal(format!("block map spool: {path} vanished")))?;
        out.write_all(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_be_bytes()).with_path(at)?;
        out.write_all(path.as_bytes()).with_path(at)?;
        out.write_all(&f.length.to_be_bytes()).with_path(at)?;
        for d in &f.digests {
            out.write_all(d).with_path(at)?;
        }
    }
    Ok(())
}

impl ReferenceBlocks for DigestSpool {
    fn file(&self, path: &str) -> Result<Option<Cow<'_, FileBlocks>>> {
        let Some(&(length, offset)) = self.index.get(path) else { return Ok(None) };
        let n =
            usize::try_from(block_count(length)).map_err(|_| Error::Internal(format!("{path}: length {length}")))?;
        let mut raw = vec![0u8; n * 16];
        self.file.read_exact_at(&mut raw, offset).with_path(&self.at)?;
        let digests = raw.chunks_exact(16).map(|c| c.try_into().unwrap_or([0; 16])).collect();
        Ok(Some(Cow::Owned(FileBlocks { length, digests })))
    }
}

/// The effective map of `merger`'s chain in a spool in `dir` (see [`merge_streamed`]).
///
/// # Errors
/// As [`merge_streamed`]; [`Error::Io`] naming `dir`.
pub fn spool_chain<R: Read>(
    merger: Merger<'_>,
    dir: &Path,
    base: Option<(CompleteReader<R>, &str)>,
) -> Result<DigestSpool> {
    let algo = base.as_ref().map_or(merger.algo(), |(stream, _)| Ok(stream.algo()))?;
    let mut spool = SpoolWriter::new(dir, algo)?;
    merge_streamed(merger, base, |path, f| spool.push(path, &f))?;
    spool.finish()
}

/// Every file of the effective map of `merger`'s chain, handed to `out` one at a time: first
/// the files of `base` (the first link's complete map, streamed; its SHA-256 must be `want`,
/// checked at its end, before this returns), then the others.
///
/// # Errors
/// As [`super::merge_chain`]; [`Error::Corrupt`] for a base that differs from `want`; what
/// `out` returns.
pub fn merge_streamed<R: Read>(
    mut merger: Merger<'_>,
    base: Option<(CompleteReader<R>, &str)>,
    mut out: impl FnMut(String, FileBlocks) -> Result<()>,
) -> Result<()> {
    let mut paths = merger.paths();
    let algo = merger.algo()?;
    if let Some((mut stream, want)) = base {
        if stream.algo() != algo {
            let why = "block map: its digests are not of the same hash as the rest of its chain";
            return Err(Error::corrupt(stream.object(), why));
        }
        while let Some((path, f)) = stream.next_file()? {
            paths.remove(&path);
            if let Some(f) = merger.feed(&path, f)? {
                out(path, f)?;
            }
        }
        let object = stream.object().to_string();
        if !stream.finish()?.eq_ignore_ascii_case(want) {
            return Err(Error::corrupt(object, "block map differs from the digest its manifest records"));
        }
    }
    for path in paths {
        if let Some(f) = merger.file(&path)? {
            out(path, f)?;
        }
    }
    merger.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_map_equals_the_decoded_one_and_refuses_the_same() {
        let mut map = BlockMap::default();
        map.files.insert("base/1/1259".into(), FileBlocks { length: 8193, digests: vec![[1; 16], [2; 16]] });
        map.files.insert("PG_VERSION".into(), FileBlocks { length: 3, digests: vec![[3; 16]] });
        map.files.insert("big".into(), FileBlocks { length: 5000 * 8192, digests: vec![[4; 16]; 5000] });
        map.files.insert("empty".into(), FileBlocks { length: 0, digests: vec![] });
        let bytes = map.encode();
        let read = |bytes: &[u8]| -> Result<(BlockMap, String)> {
            let mut r = CompleteReader::new(bytes, "o")?;
            let mut out = BlockMap::default();
            while let Some((p, f)) = r.next_file()? {
                out.files.insert(p, f);
            }
            Ok((out, r.finish()?))
        };
        let (streamed, sha) = read(&bytes).unwrap_or_default();
        assert_eq!(streamed, map);
        assert_eq!(sha, BlockMap::sha256_hex(&bytes));
        assert!(read(&bytes[..bytes.len() - 1]).is_err_and(|e| e.to_string().contains("truncated")));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(read(&extra).is_err_and(|e| e.to_string().contains("after the last file")));
        let mut swapped = bytes.clone();
        swapped[10..18].copy_from_slice(&1u64.to_be_bytes());
        assert!(read(&swapped).is_err(), "a shorter count leaves bytes after the last file");
    }

    #[test]
    fn spool_returns_what_was_pushed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut w = SpoolWriter::new(dir.path(), DigestAlgo::Blake3).unwrap_or_else(|e| panic!("{e}"));
        let a = FileBlocks { length: 8192 * 3, digests: vec![[1; 16], [2; 16], [3; 16]] };
        let b = FileBlocks { length: 0, digests: vec![] };
        assert!(w.push("a".into(), &a).is_ok() && w.push("b".into(), &b).is_ok());
        let spool = w.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.file("a").ok().flatten().map(Cow::into_owned).as_ref(), Some(&a));
        assert_eq!(spool.file("b").ok().flatten().map(Cow::into_owned).as_ref(), Some(&b));
        assert!(spool.file("c").is_ok_and(|f| f.is_none()));
        // Written out complete, it is the map encoded whole.
        let mut map = BlockMap::default();
        map.files.insert("a".into(), a);
        map.files.insert("b".into(), b);
        let mut out = Vec::new();
        assert!(write_complete(&spool, &mut out, dir.path()).is_ok());
        assert_eq!(out, map.encode());
    }
}
