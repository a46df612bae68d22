//! Object format: header, compression, encryption, as synchronous streams.
//!
//! Every object is a [`Header`] then a body. Writing runs in a fixed order: the content digest
//! of the plaintext (computed by the caller, checked here), compression, then encryption in
//! authenticated chunks. Reading runs the reverse. The byte format is in `docs/FORMAT.md`.
//!
//! Errors: tampering, truncation, bad format and a failed decompression are
//! [`Error::Corrupt`]; a missing or wrong key, or an object that is (not) encrypted when the
//! keyring says otherwise, is [`Error::Key`]; both name the object. Plaintext from an encrypted
//! chunk is released only after the chunk's tag has been verified. Callers run these in
//! blocking threads; memory stays constant whatever the object's size.

pub mod compress;
pub mod context;
pub mod crypt;
pub mod digest;
pub mod header;

mod chunk;
mod decode;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_binding;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_tamper;

use std::io::{self, Write};

pub use chunk::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, TAG_LEN};
pub use compress::Compression;
pub use context::{Context, Expect};
pub use crypt::{Key, Keyring};
pub use decode::{check_place, decode_to, decoder, read_header};
pub use digest::{DigestWriter, content_digest, sha256_hex};
pub use header::{FORMAT_VERSION, FORMAT_VERSION_1, Header, MAGIC, MAX_HEADER_LEN};

use chunk::ChunkSealer;
use compress::Compressor;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// What the encoder writes: the compression algorithm and its level.
#[derive(Debug, Clone, Copy)]
pub struct CodecSettings {
    /// Body compression.
    pub compression: Compression,
    /// Compression level (see [`Compression::check_level`]).
    pub level: i32,
}

/// Name used for the encoder's output in errors that have no better name.
const ENCODER_OUTPUT: &str = "encoded object";

/// The object name extension for these settings: compression then encryption, e.g.
/// `.zst.enc`, `.gz.enc`, `.enc`, `.zst`, `.gz`, or empty.
pub fn object_ext(settings: &CodecSettings, encrypted: bool) -> String {
    let mut ext = String::new();
    if !settings.compression.ext().is_empty() {
        ext.push('.');
        ext.push_str(settings.compression.ext());
    }
    if encrypted {
        ext.push_str(".enc");
    }
    ext
}

/// Turn an `io::Error` from a decoder (or from an encoder's output) back into the typed error
/// it carries; any other I/O error becomes [`Error::Io`] naming `object`.
pub fn error_from_io(e: io::Error, object: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(typed)) => return *typed,
            Some(Err(other)) => return Error::io(object, io::Error::other(other)),
            None => return Error::io(object, io::Error::other("unknown i/o error")),
        }
    }
    Error::io(object, e)
}

/// Streaming encoder: plaintext written into it comes out as object bytes in `inner`.
pub struct Encoder<W: Write> {
    stream: Compressor<Sink<W>>,
    check: Option<(DigestWriter, [u8; 32])>,
}

/// Where compressed bytes go: straight out, or through the chunk sealer.
enum Sink<W: Write> {
    Plain(W),
    Sealed(Box<ChunkSealer<W>>),
}

impl<W: Write> Encoder<W> {
    /// Write the header into `inner` and start the body. With `key` the object is encrypted
    /// under a fresh random salt. `digest`, if given, must be [`content_digest`] of the
    /// plaintext that will be written, with the same `key`; it is stored in the header. The
    /// object is bound to `context` (format 2): it opens only where a reader expects it.
    ///
    /// # Errors
    /// [`Error::Config`] for a level the algorithm does not accept; [`Error::Invalid`] for a
    /// context whose environment or name is empty or too long; [`Error::Io`] (or the typed
    /// error `inner` carried) when writing the header fails.
    pub fn new(
        inner: W,
        settings: &CodecSettings,
        key: Option<&Key>,
        digest: Option<[u8; 32]>,
        context: &Context,
    ) -> Result<Self> {
        let bytes = context_bytes(context)?;
        Encoder::with_params(inner, settings, key, digest, fresh_salt(key)?, DEFAULT_CHUNK_SIZE, Some(bytes))
    }

    /// [`Encoder::new`] with a given salt and chunk size (known-answer vectors and tests);
    /// without a context it writes a format-1 object.
    pub(crate) fn with_params(
        inner: W,
        settings: &CodecSettings,
        key: Option<&Key>,
        digest: Option<[u8; 32]>,
        salt: [u8; 32],
        chunk_size: u32,
        context: Option<Vec<u8>>,
    ) -> Result<Self> {
        let level = settings.compression.check_level(settings.level)?;
        let sink = Sink::start(inner, settings, key, digest, (salt, chunk_size), context)?;
        let stream =
            Compressor::new(sink, settings.compression, level).map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
        let check = digest.map(|d| (DigestWriter::new(key), d));
        Ok(Encoder { stream, check })
    }

    /// End the body: flush the compressor, seal the last chunk, return the inner writer.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a digest was given and the plaintext written does not match it
    /// (the source changed while it was read); the object is then left without its end, so it
    /// can never be read as valid. Write errors as in [`Encoder::new`]. On any error the bytes
    /// written so far must be discarded, not stored.
    pub fn finish(self) -> Result<W> {
        if let Some((writer, expected)) = self.check
            && writer.finish() != expected
        {
            return Err(Error::Invalid(
                "plaintext written does not match the content digest given for the header (did the source change while it was read?)".into(),
            ));
        }
        let sink = self.stream.finish().map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
        sink.finish()
    }
}

impl<W: Write> Sink<W> {
    /// Write the header into `inner` and return where the compressed body goes.
    fn start(
        mut inner: W,
        settings: &CodecSettings,
        key: Option<&Key>,
        digest: Option<[u8; 32]>,
        (salt, chunk_size): ([u8; 32], u32),
        context: Option<Vec<u8>>,
    ) -> Result<Self> {
        let crypto = key.map(|k| (k.fingerprint(), salt, chunk_size.clamp(1, MAX_CHUNK_SIZE)));
        let header = Header::new(settings.compression, crypto, digest, context);
        let bytes = header.encode();
        inner.write_all(&bytes).map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
        Ok(match (key, crypto) {
            (Some(k), Some((_, salt, chunk))) => {
                Sink::Sealed(Box::new(ChunkSealer::new(inner, k.object_key(&salt)?, &bytes, chunk)))
            }
            _ => Sink::Plain(inner),
        })
    }

    /// Seal the last chunk and return the inner writer.
    fn finish(self) -> Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Sealed(sealer) => sealer.finish().map_err(|e| error_from_io(e, ENCODER_OUTPUT)),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        if let Some((writer, _)) = &mut self.check {
            writer.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Sealed(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(s) => s.flush(),
        }
    }
}

/// The header bytes of `context`.
fn context_bytes(context: &Context) -> Result<Vec<u8>> {
    context.encode().ok_or_else(|| {
        Error::Invalid(format!(
            "cannot bind an object to {context}: the environment must be 1 to {} bytes and the name 1 to {} bytes",
            context::MAX_ENV_LEN,
            context::MAX_NAME_LEN
        ))
    })
}

/// A random salt for an encrypted object's key; zeros (unused) without a key.
fn fresh_salt(key: Option<&Key>) -> Result<[u8; 32]> {
    let mut salt = [0u8; 32];
    if key.is_some() {
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::io("system random number generator", io::Error::other("no random bytes available")))?;
    }
    Ok(salt)
}

/// Encode a whole plaintext in memory (wal-push). `digest`, if given, is the caller's
/// [`content_digest`] of this very slice; the slice cannot change, so it is not computed a
/// second time (a pass over 16 MiB is a fifth of wal-push's CPU).
///
/// # Errors
/// As [`Encoder::new`] and [`Encoder::finish`].
pub fn encode_slice(
    plaintext: &[u8],
    settings: &CodecSettings,
    key: Option<&Key>,
    digest: Option<[u8; 32]>,
    context: &Context,
) -> Result<Vec<u8>> {
    if settings.compression == Compression::Zstd {
        // The whole input at once: one zstd frame compressed straight from the slice (the
        // streaming writer copies it through a window buffer first). Same frame format,
        // content checksum included; the decoder cannot tell the difference.
        let level = settings.compression.check_level(settings.level)?;
        let frame = compress::zstd_frame(plaintext, level).map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
        let out = Vec::with_capacity(frame.len() + frame.len() / 64 + 1024);
        let crypto = (fresh_salt(key)?, DEFAULT_CHUNK_SIZE);
        let mut sink = Sink::start(out, settings, key, digest, crypto, Some(context_bytes(context)?))?;
        sink.write_all(&frame).map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
        return sink.finish();
    }
    let mut enc = Encoder::new(Vec::with_capacity(plaintext.len() / 8 + 128), settings, key, digest, context)?;
    enc.check = None;
    enc.write_all(plaintext).map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
    enc.finish()
}

/// Encode a whole plaintext in memory (small objects: history files, manifests, metadata).
///
/// # Errors
/// As [`Encoder::new`] and [`Encoder::finish`].
pub fn encode_to_vec(
    plaintext: &[u8],
    settings: &CodecSettings,
    key: Option<&Key>,
    digest: Option<[u8; 32]>,
    context: &Context,
) -> Result<Vec<u8>> {
    let mut enc = Encoder::new(Vec::with_capacity(plaintext.len() / 2 + 128), settings, key, digest, context)?;
    enc.write_all(plaintext).map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
    enc.finish()
}

/// Encode an object in the older format 1, bound to no place: only for tests of the rules
/// that read such objects (`docs/FORMAT.md`, section 6). walvault never writes format 1.
///
/// # Errors
/// As [`encode_to_vec`].
#[doc(hidden)]
pub fn encode_format1_for_tests(plaintext: &[u8], settings: &CodecSettings, key: Option<&Key>) -> Result<Vec<u8>> {
    let mut enc = Encoder::with_params(Vec::new(), settings, key, None, fresh_salt(key)?, DEFAULT_CHUNK_SIZE, None)?;
    enc.write_all(plaintext).map_err(|e| error_from_io(e, ENCODER_OUTPUT))?;
    enc.finish()
}
