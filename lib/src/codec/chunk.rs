//! Chunked AES-256-GCM framing of an object body (see `docs/FORMAT.md`, "Encrypted body").
//!
//! The body is a run of chunks, each `ciphertext || 16-byte tag`. Every chunk but the last
//! holds exactly `chunk_size` plaintext bytes; the last holds 0 to `chunk_size` and ends the
//! object. Chunk `i` is sealed with nonce `0u32 || i as u64` (big-endian) and AAD
//! `header bytes || i as u64 || last flag`, under a key used for this one object. A reader
//! knows a chunk is the last when the object ends after it, and the AAD's flag makes the
//! writer confirm it. Knows nothing of compression or storage.

use std::io::{self, BufRead, Read, Write};

use ring::aead::{self, Aad, LessSafeKey, Nonce};

use crate::Error;

/// Length of the GCM tag after each chunk's ciphertext.
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk written by this version: 64 KiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// The largest chunk size a reader accepts (bounds its memory): 16 MiB.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// The nonce of chunk `index`: four zero bytes, then the index as a big-endian u64.
fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The AAD of every chunk: the header bytes, then the chunk index and the last flag.
struct ChunkAad {
    bytes: Vec<u8>,
    header_len: usize,
}

impl ChunkAad {
    fn new(header: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(header.len() + 9);
        bytes.extend_from_slice(header);
        ChunkAad { bytes, header_len: header.len() }
    }

    fn for_chunk(&mut self, index: u64, last: bool) -> Aad<&[u8]> {
        self.bytes.truncate(self.header_len);
        self.bytes.extend_from_slice(&index.to_be_bytes());
        self.bytes.push(u8::from(last));
        Aad::from(&self.bytes[..])
    }
}

/// Encrypting writer: takes the (compressed) body, writes sealed chunks to `W`.
pub(crate) struct ChunkSealer<W: Write> {
    inner: W,
    key: LessSafeKey,
    aad: ChunkAad,
    chunk_size: usize,
    buf: Vec<u8>,
    index: u64,
}

impl<W: Write> ChunkSealer<W> {
    /// Seal chunks of `chunk_size` bytes (at least 1) under `key`, binding `header`.
    pub(crate) fn new(inner: W, key: LessSafeKey, header: &[u8], chunk_size: u32) -> Self {
        let chunk_size = usize::try_from(chunk_size.max(1)).unwrap_or(1);
        ChunkSealer {
            inner,
            key,
            aad: ChunkAad::new(header),
            chunk_size,
            buf: Vec::with_capacity(chunk_size),
            index: 0,
        }
    }

    /// Seal what is buffered as chunk `index` and write it out.
    fn seal(&mut self, last: bool) -> io::Result<()> {
        let aad = self.aad.for_chunk(self.index, last);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.index), aad, &mut self.buf)
            .map_err(|_| io::Error::other("aes-256-gcm seal failed"))?;
        self.inner.write_all(&self.buf)?;
        self.inner.write_all(tag.as_ref())?;
        self.buf.clear();
        self.index = self.index.checked_add(1).ok_or_else(|| io::Error::other("too many chunks"))?;
        Ok(())
    }

    /// Seal the final chunk (possibly empty) and return the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkSealer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full chunk is sealed only once more data arrives: the last chunk may be full too.
        if self.buf.len() == self.chunk_size {
            self.seal(false)?;
        }
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypting reader: reads sealed chunks from `R`, serves each chunk's plaintext only after
/// its tag has been verified.
pub(crate) struct ChunkOpener<R: Read> {
    inner: R,
    key: LessSafeKey,
    aad: ChunkAad,
    object: String,
    frame: Vec<u8>,
    carry: Option<u8>,
    pos: usize,
    end: usize,
    index: u64,
    done: bool,
    failed: Option<String>,
}

impl<R: Read> ChunkOpener<R> {
    /// Open the chunks of `object`, whose header bytes are `header`; `chunk_size` is
    /// 1..=[`MAX_CHUNK_SIZE`] (checked by the header parser).
    pub(crate) fn new(inner: R, key: LessSafeKey, header: &[u8], chunk_size: u32, object: &str) -> Self {
        let chunk = usize::try_from(chunk_size.clamp(1, MAX_CHUNK_SIZE)).unwrap_or(1);
        ChunkOpener {
            inner,
            key,
            aad: ChunkAad::new(header),
            object: object.to_string(),
            frame: vec![0; chunk + TAG_LEN],
            carry: None,
            pos: 0,
            end: 0,
            index: 0,
            done: false,
            failed: None,
        }
    }

    fn corrupt(&mut self, reason: String) -> io::Error {
        self.failed = Some(reason.clone());
        io::Error::other(Error::corrupt(&self.object, reason))
    }

    /// Read, authenticate and decrypt the next chunk into `frame[..end]`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let full = self.frame.len();
        let mut filled = 0;
        if let Some(b) = self.carry.take() {
            self.frame[0] = b;
            filled = 1;
        }
        filled += read_full(&mut self.inner, &mut self.frame[filled..])?;
        // The chunk is the last one when the object ends right after it.
        let last = filled < full || {
            let mut one = [0u8; 1];
            let more = read_full(&mut self.inner, &mut one)? == 1;
            self.carry = more.then_some(one[0]);
            !more
        };
        let index = self.index;
        if filled < TAG_LEN {
            let reason = format!("truncated: chunk {index} has {filled} bytes, less than its {TAG_LEN}-byte tag");
            return Err(self.corrupt(reason));
        }
        // A full-size chunk at the end may be the first of a cut-off run: keep a copy to tell.
        let spare = (last && filled == full).then(|| self.frame.clone());
        let aad = self.aad.for_chunk(index, last);
        match self.key.open_in_place(nonce(index), aad, &mut self.frame[..filled]) {
            Ok(plain) => {
                self.end = plain.len();
                self.pos = 0;
                self.done = last;
                self.index = index.saturating_add(1);
                Ok(())
            }
            Err(_) => Err(self.auth_failure(index, spare)),
        }
    }

    /// The error for a chunk that failed authentication, saying "truncated" when it is so.
    fn auth_failure(&mut self, index: u64, spare: Option<Vec<u8>>) -> io::Error {
        if let Some(mut frame) = spare {
            let aad = self.aad.for_chunk(index, false);
            if self.key.open_in_place(nonce(index), aad, &mut frame).is_ok() {
                let reason = format!("truncated: the object ends after chunk {index}, which is not the last chunk");
                return self.corrupt(reason);
            }
        }
        let reason = format!("chunk {index} failed authentication (modified, truncated or reordered data)");
        self.corrupt(reason)
    }
}

/// Read until `buf` is full or the source ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> BufRead for ChunkOpener<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(Error::corrupt(&self.object, reason)));
        }
        while self.pos == self.end && !self.done {
            self.next_chunk()?;
        }
        Ok(&self.frame[self.pos..self.end])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = self.pos.saturating_add(amt).min(self.end);
    }
}

impl<R: Read> Read for ChunkOpener<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}
