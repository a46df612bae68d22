//! The read side: header, key choice, decryption, decompression and the final checks.

use std::io::{self, BufRead, BufReader, Read, Write};

use super::chunk::{ChunkOpener, DEFAULT_CHUNK_SIZE};
use super::compress::{Compression, Decompressor};
use super::context::{Context, Expect};
use super::crypt::{Key, Keyring};
use super::digest::DigestWriter;
use super::error_from_io;
use super::header::{self, Header};
use crate::{Error, Result};

const BUF_LEN: usize = DEFAULT_CHUNK_SIZE as usize;

/// Read and validate just the header (magic, version, known algorithms, lengths, checksum).
/// Reads exactly the header's bytes, at most [`super::MAX_HEADER_LEN`].
///
/// # Errors
/// [`Error::Corrupt`] naming `object` for anything that is not a valid header.
pub fn read_header<R: Read>(r: &mut R, object: &str) -> Result<Header> {
    header::read_raw(r, object).map(|(h, _)| h)
}

/// Start decoding `object` from `inner`: returns its header and a reader of its plaintext.
/// The key is the keyring's key with the header's fingerprint. Errors from the reader are
/// `io::Error`s that carry a [`crate::Error`]: get it back with [`error_from_io`].
///
/// # Errors
/// [`Error::Corrupt`] for a bad header. [`Error::Key`] when the object is encrypted and no
/// key, or no key with its fingerprint, is configured; and when it is not encrypted while the
/// keyring has a write key, unless `allow_unencrypted`. [`Error::Misplaced`] when `expect`
/// is given and the object is bound to another place, or is a format-1 object where
/// `expect` refuses one (`None`: any place, for `walvault decrypt`).
pub fn decoder<'a, R: Read + Send + 'a>(
    inner: R,
    keyring: &Keyring,
    object: &str,
    allow_unencrypted: bool,
    expect: Option<&Expect>,
) -> Result<(Header, Box<dyn Read + Send + 'a>)> {
    let mut source = Source { inner, object: object.to_string() };
    let (header, raw) = header::read_raw(&mut source, object)?;
    check_place(&header, expect, object)?;
    let key = select_key(&header, keyring, object, allow_unencrypted)?;
    let body: Box<dyn BufRead + Send + 'a> = match (key, header.salt, header.chunk_size) {
        (Some(k), Some(salt), Some(chunk)) => {
            Box::new(ChunkOpener::new(source, k.object_key(&salt)?, &raw, chunk, object))
        }
        _ => Box::new(BufReader::with_capacity(BUF_LEN, source)),
    };
    let dec = Decompressor::new(body, header.compression).map_err(|e| error_from_io(e, object))?;
    let body = Body {
        dec,
        check: header.digest.map(|d| (DigestWriter::new(key), d)),
        object: object.to_string(),
        compression: header.compression,
        done: false,
    };
    Ok((header, Box::new(body)))
}

/// Decode the whole of `object` from `inner` into `out`, in constant memory; returns the
/// header and the number of plaintext bytes written. `expect` as in [`decoder`].
///
/// # Errors
/// As [`decoder`], and [`Error::Corrupt`] for tampering or truncation found on the way;
/// [`Error::Io`] naming `out_path` when writing to `out` fails. On error `out` may hold part
/// of the plaintext (every byte of it authenticated, if encrypted): write to a temporary file
/// and rename it into place only on success.
pub fn decode_to<R: Read + Send, W: Write>(
    inner: R,
    keyring: &Keyring,
    object: &str,
    expect: Option<&Expect>,
    allow_unencrypted: bool,
    out: &mut W,
    out_path: &str,
) -> Result<(Header, u64)> {
    let (header, mut body) = decoder(inner, keyring, object, allow_unencrypted, expect)?;
    let mut buf = vec![0u8; BUF_LEN];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(error_from_io(e, object)),
        };
        out.write_all(&buf[..n]).map_err(|e| Error::io(out_path, e))?;
        total = total.saturating_add(n as u64);
    }
    out.flush().map_err(|e| Error::io(out_path, e))?;
    Ok((header, total))
}

/// Refuse an object bound to another place than `expect`'s, and a format-1 object where
/// `expect` does not accept one. The stored context is authenticated by every chunk (it is
/// part of the header): an object that passes here but lies about its place fails there.
///
/// # Errors
/// [`Error::Misplaced`]; [`Error::Corrupt`] for a malformed context.
pub fn check_place(header: &Header, expect: Option<&Expect>, object: &str) -> Result<()> {
    let Some(expect) = expect else { return Ok(()) };
    let misplaced = |reason: String| Error::Misplaced { object: object.to_string(), reason };
    let Some(bytes) = &header.context else {
        return expect.format1.clone().map_err(|why| {
            misplaced(format!("it is a format-1 object, bound to no place, where it cannot be accepted: {why}"))
        });
    };
    let stored = Context::parse(bytes).ok_or_else(|| Error::corrupt(object, "malformed binding context"))?;
    let differences = stored.differences(&expect.context, expect.cluster_optional);
    if differences.is_empty() { Ok(()) } else { Err(misplaced(differences.join("; "))) }
}

/// The key that opens an object with this header, or `None` for an unencrypted object.
fn select_key<'k>(
    header: &Header,
    keyring: &'k Keyring,
    object: &str,
    allow_unencrypted: bool,
) -> Result<Option<&'k Key>> {
    let key_err = |reason: String| Error::Key { object: object.to_string(), reason };
    let Some(fingerprint) = header.key_fingerprint else {
        if keyring.is_encrypted() && !allow_unencrypted {
            return Err(key_err("not encrypted but a key is configured".into()));
        }
        return Ok(None);
    };
    let wanted = hex::encode(fingerprint);
    if keyring.is_empty() {
        return Err(key_err(format!("encrypted with key {wanted} but no key is configured")));
    }
    keyring.find(&fingerprint).map(Some).ok_or_else(|| {
        let have: Vec<String> = keyring.keys().map(Key::fingerprint_hex).collect();
        key_err(format!("encrypted with key {wanted}, which is not configured (configured: {})", have.join(", ")))
    })
}

/// The caller's reader, with its errors tagged as [`crate::Error`] so that they are never
/// mistaken for corruption found by the decompressor.
struct Source<R> {
    inner: R,
    object: String,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted || e.get_ref().is_some_and(|i| i.is::<Error>()) {
                e
            } else {
                io::Error::other(Error::io(&self.object, e))
            }
        })
    }
}

/// The plaintext reader: decompresses, then at the end checks that nothing follows the
/// compressed stream and that the plaintext matches the header's digest.
struct Body<'a> {
    dec: Decompressor<Box<dyn BufRead + Send + 'a>>,
    check: Option<(DigestWriter, [u8; 32])>,
    object: String,
    compression: Compression,
    done: bool,
}

impl Body<'_> {
    fn corrupt(&self, reason: impl std::fmt::Display) -> io::Error {
        io::Error::other(Error::corrupt(&self.object, reason))
    }

    /// Errors already typed pass through; any other came from the decompressor itself.
    fn classify(&self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::Interrupted || e.get_ref().is_some_and(|i| i.is::<Error>()) {
            return e;
        }
        self.corrupt(format!("{} stream is invalid or truncated: {e}", self.compression.name()))
    }

    fn end_checks(&mut self) -> io::Result<()> {
        match self.dec.source_mut().fill_buf() {
            Ok([]) => {}
            Ok(_) => {
                return Err(
                    self.corrupt(format!("unexpected data after the end of the {} stream", self.compression.name()))
                );
            }
            Err(e) => return Err(self.classify(e)),
        }
        if let Some((writer, expected)) = self.check.take()
            && writer.finish() != expected
        {
            return Err(self.corrupt("plaintext does not match the content digest in the header"));
        }
        Ok(())
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.dec.read(buf).map_err(|e| self.classify(e))?;
        if n > 0 {
            if let Some((writer, _)) = &mut self.check {
                writer.update(&buf[..n]);
            }
            return Ok(n);
        }
        self.end_checks()?;
        self.done = true;
        Ok(0)
    }
}
