//! The object header: what every object starts with (layout in `docs/FORMAT.md`).
//!
//! ```text
//! offset size field
//!      0    8 magic "WALVAULT"
//!      8    1 format version (2; 1 is still read)
//!      9    1 compression: 0 none, 1 zstd, 2 gzip
//!     10    1 encryption: 0 none, 1 AES-256-GCM, chunked, per-object key by HKDF-SHA256
//!     11    1 flags: bit 0 = a content digest is present; other bits zero
//!     12    2 header length in bytes, big-endian u16
//!  encrypted only:
//!     14    8 key fingerprint
//!     22   32 salt (random per object)
//!     54    4 chunk size: plaintext bytes per chunk, big-endian u32, 1..=16 MiB
//!  digest flag only:
//!      .   32 content digest
//!  version 2 only:
//!      .    2 context length C, big-endian u16
//!      .    C binding context (`context.rs`)
//!  always last:
//!      .    4 check: first 4 bytes of SHA-256 of all the header bytes before it
//! ```

use std::io::{self, Read};

use ring::digest;

use super::chunk::MAX_CHUNK_SIZE;
use super::compress::Compression;
use super::context::MAX_CONTEXT_LEN;
use super::error_from_io;
use crate::{Error, Result};

/// The first eight bytes of every object.
pub const MAGIC: [u8; 8] = *b"WALVAULT";
/// The format version this code writes: objects bound to their place.
pub const FORMAT_VERSION: u8 = 2;
/// The older format, still read where it cannot be a substitution (`docs/FORMAT.md`, 6).
pub const FORMAT_VERSION_1: u8 = 1;
/// The longest header (encrypted, with digest, the longest context): reading this many bytes
/// always gets the header.
pub const MAX_HEADER_LEN: usize = FIXED_LEN + CRYPTO_LEN + DIGEST_LEN + 2 + MAX_CONTEXT_LEN + CHECK_LEN;

const FIXED_LEN: usize = 14;
const CRYPTO_LEN: usize = 8 + 32 + 4;
const DIGEST_LEN: usize = 32;
const CHECK_LEN: usize = 4;
const ENCRYPTION_NONE: u8 = 0;
const ENCRYPTION_AES_256_GCM: u8 = 1;
const FLAG_DIGEST: u8 = 0x01;

/// The parsed object header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version: [`FORMAT_VERSION`], or [`FORMAT_VERSION_1`] for an older object.
    pub version: u8,
    /// How the body (the plaintext, before encryption) is compressed.
    pub compression: Compression,
    /// Whether the body is encrypted; then `key_fingerprint`, `salt` and `chunk_size` are set.
    pub encrypted: bool,
    /// Fingerprint of the master key the object was encrypted with.
    pub key_fingerprint: Option<[u8; 8]>,
    /// Per-object random salt the object key is derived with.
    pub salt: Option<[u8; 32]>,
    /// Plaintext bytes per encrypted chunk.
    pub chunk_size: Option<u32>,
    /// Content digest of the plaintext (see `content_digest`), if the writer stored one.
    pub digest: Option<[u8; 32]>,
    /// The binding context's bytes (format 2; `None` for format 1).
    pub context: Option<Vec<u8>>,
}

impl Header {
    /// A header; `crypto` is (key fingerprint, salt, chunk size) for encrypted objects. With
    /// a binding `context` it is a version-2 header, without one a version-1 header.
    pub(crate) fn new(
        compression: Compression,
        crypto: Option<([u8; 8], [u8; 32], u32)>,
        digest: Option<[u8; 32]>,
        context: Option<Vec<u8>>,
    ) -> Self {
        Header {
            version: if context.is_some() { FORMAT_VERSION } else { FORMAT_VERSION_1 },
            compression,
            encrypted: crypto.is_some(),
            key_fingerprint: crypto.map(|c| c.0),
            salt: crypto.map(|c| c.1),
            chunk_size: crypto.map(|c| c.2),
            digest,
            context,
        }
    }

    /// The header's length in bytes: 18, plus 44 if encrypted, plus 32 with a digest, plus
    /// 2 and the context's length in format 2.
    pub fn encoded_len(&self) -> usize {
        expected_len(self.encrypted, self.digest.is_some(), self.context.as_ref().map(Vec::len))
    }

    /// The header bytes (the AAD of every chunk starts with exactly these).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(self.compression.id());
        out.push(if self.encrypted { ENCRYPTION_AES_256_GCM } else { ENCRYPTION_NONE });
        out.push(if self.digest.is_some() { FLAG_DIGEST } else { 0 });
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        if self.encrypted {
            out.extend_from_slice(&self.key_fingerprint.unwrap_or_default());
            out.extend_from_slice(&self.salt.unwrap_or_default());
            out.extend_from_slice(&self.chunk_size.unwrap_or_default().to_be_bytes());
        }
        if let Some(digest) = &self.digest {
            out.extend_from_slice(digest);
        }
        if let Some(context) = &self.context {
            out.extend_from_slice(&u16::try_from(context.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(context);
        }
        let check = digest::digest(&digest::SHA256, &out);
        out.extend_from_slice(&check.as_ref()[..CHECK_LEN]);
        out
    }
}

/// The header length the fields imply; `context` is the context's length in format 2.
fn expected_len(encrypted: bool, digest: bool, context: Option<usize>) -> usize {
    FIXED_LEN
        + if encrypted { CRYPTO_LEN } else { 0 }
        + if digest { DIGEST_LEN } else { 0 }
        + context.map_or(0, |c| 2 + c)
        + CHECK_LEN
}

/// Read exactly one header from `r` (never more), returning it and its bytes.
pub(crate) fn read_raw<R: Read>(r: &mut R, object: &str) -> Result<(Header, Vec<u8>)> {
    let mut bytes = vec![0u8; FIXED_LEN];
    read_part(r, &mut bytes, object)?;
    let (version, compression, encrypted, has_digest, len) = parse_fixed(&bytes, object)?;
    let at = bytes.len();
    bytes.resize(len, 0);
    read_part(r, &mut bytes[at..], object)?;
    let (body, check) = bytes.split_at(bytes.len() - CHECK_LEN);
    if digest::digest(&digest::SHA256, body).as_ref()[..CHECK_LEN] != *check {
        return Err(Error::corrupt(object, "header checksum mismatch"));
    }
    let mut at = FIXED_LEN;
    // `get` with an empty fallback: the lengths were checked, this never falls short.
    let mut take = |n: usize| {
        let field = bytes.get(at..at + n).unwrap_or_default();
        at += n;
        field
    };
    let mut crypto = None;
    if encrypted {
        let fingerprint = array::<8>(take(8));
        let salt = array::<32>(take(32));
        let chunk_size = u32::from_be_bytes(array::<4>(take(4)));
        if !(1..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            let reason = format!("chunk size {chunk_size} out of range (1 to {MAX_CHUNK_SIZE})");
            return Err(Error::corrupt(object, reason));
        }
        crypto = Some((fingerprint, salt, chunk_size));
    }
    let digest = has_digest.then(|| array::<32>(take(DIGEST_LEN)));
    let mut context = None;
    if version == FORMAT_VERSION {
        let n = usize::from(u16::from_be_bytes(array::<2>(take(2))));
        if n != len - expected_len(encrypted, has_digest, Some(0)) {
            return Err(Error::corrupt(object, format!("header length {len} does not match its context length {n}")));
        }
        context = Some(take(n).to_vec());
    }
    Ok((Header::new(compression, crypto, digest, context), bytes))
}

/// The fixed part's fields: version, compression, encrypted, digest present, header length.
type Fixed = (u8, Compression, bool, bool, usize);

/// Check the fixed part; returns its fields and the whole header's length.
fn parse_fixed(b: &[u8], object: &str) -> Result<Fixed> {
    let bad = |reason: String| Err(Error::corrupt(object, reason));
    if b[..8] != MAGIC {
        return bad("not a walvault object (bad magic)".into());
    }
    if b[8] != FORMAT_VERSION && b[8] != FORMAT_VERSION_1 {
        return bad(format!(
            "unsupported format version {} (this walvault reads versions {FORMAT_VERSION_1} and {FORMAT_VERSION})",
            b[8]
        ));
    }
    let Some(compression) = Compression::from_id(b[9]) else {
        return bad(format!("unknown compression algorithm {}", b[9]));
    };
    let encrypted = match b[10] {
        ENCRYPTION_NONE => false,
        ENCRYPTION_AES_256_GCM => true,
        other => return bad(format!("unknown encryption algorithm {other}")),
    };
    if b[11] & !FLAG_DIGEST != 0 {
        return bad(format!("unknown header flags 0x{:02x}", b[11]));
    }
    let has_digest = b[11] & FLAG_DIGEST != 0;
    let len = usize::from(u16::from_be_bytes([b[12], b[13]]));
    let fixed = expected_len(encrypted, has_digest, None);
    let ok = if b[8] == FORMAT_VERSION_1 {
        len == fixed
    } else {
        // The context's own length field is checked against this one once it is read.
        (fixed + 2..=fixed + 2 + MAX_CONTEXT_LEN).contains(&len)
    };
    if !ok {
        return bad(format!("header length {len} does not match its fields"));
    }
    Ok((b[8], compression, encrypted, has_digest, len))
}

fn read_part<R: Read>(r: &mut R, buf: &mut [u8], object: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::corrupt(object, "truncated header"),
        _ => error_from_io(e, object),
    })
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    super::crypt::copy_prefix(&mut out, bytes);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Header> {
        read_raw(&mut &bytes[..], "obj").map(|(h, _)| h)
    }

    fn samples() -> Vec<Header> {
        let mut out = Vec::new();
        for c in Compression::ALL {
            for crypto in [None, Some(([3; 8], [4; 32], 65536))] {
                for digest in [None, Some([5; 32])] {
                    for context in [None, Some(b"a context".to_vec())] {
                        out.push(Header::new(c, crypto, digest, context));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn encode_parse_round_trip_and_lengths() {
        for h in samples() {
            let bytes = h.encode();
            assert_eq!(bytes.len(), h.encoded_len());
            let v1 = [18, 50, 62, 94];
            assert!(if h.context.is_some() {
                v1.map(|n| n + 11).contains(&bytes.len())
            } else {
                v1.contains(&bytes.len())
            });
            assert!(bytes.len() <= MAX_HEADER_LEN);
            let (parsed, raw) = read_raw(&mut &bytes[..], "obj").unwrap();
            assert_eq!(parsed, h);
            assert_eq!(raw, bytes);
        }
    }

    #[test]
    fn reads_no_more_than_the_header() {
        let h = Header::new(Compression::Zstd, None, None, Some(b"ctx".to_vec()));
        let mut bytes = h.encode();
        bytes.extend_from_slice(b"body");
        let mut r = &bytes[..];
        read_raw(&mut r, "obj").unwrap();
        assert_eq!(r, b"body");
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        for h in samples() {
            let bytes = h.encode();
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut b = bytes.clone();
                    b[i] ^= 1 << bit;
                    let err = parse(&b).unwrap_err();
                    assert!(matches!(&err, Error::Corrupt { object, .. } if object == "obj"), "{err}");
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let bytes =
            Header::new(Compression::Gzip, Some(([1; 8], [2; 32], 7)), Some([9; 32]), Some(vec![7; 40])).encode();
        for cut in 0..bytes.len() {
            let err = parse(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn exact_messages() {
        let msg = |b: &[u8]| parse(b).unwrap_err().to_string();
        assert_eq!(msg(b"PK\x03\x04 this is a zip file"), "object obj is corrupt: not a walvault object (bad magic)");
        assert_eq!(msg(b"WALV"), "object obj is corrupt: truncated header");
        let mut future = Header::new(Compression::None, None, None, None).encode();
        future[8] = 3;
        assert_eq!(
            msg(&future),
            "object obj is corrupt: unsupported format version 3 (this walvault reads versions 1 and 2)"
        );
        let mut sum = Header::new(Compression::None, None, None, None).encode();
        sum[17] ^= 0xff;
        assert_eq!(msg(&sum), "object obj is corrupt: header checksum mismatch");
    }

    #[test]
    fn context_length_must_match_the_header_length() {
        let mut bytes = Header::new(Compression::None, None, None, Some(vec![1; 10])).encode();
        bytes[15] = 9; // the low byte of the context's length field
        let n = bytes.len() - CHECK_LEN;
        let check = digest::digest(&digest::SHA256, &bytes[..n]);
        bytes[n..].copy_from_slice(&check.as_ref()[..CHECK_LEN]);
        assert!(parse(&bytes).unwrap_err().to_string().contains("context length 9"));
        let long = Header::new(Compression::None, None, None, Some(vec![1; MAX_CONTEXT_LEN + 1])).encode();
        assert!(parse(&long).unwrap_err().to_string().contains("does not match its fields"));
    }

    #[test]
    fn chunk_size_out_of_range_is_corrupt() {
        for size in [0, MAX_CHUNK_SIZE + 1] {
            let bytes = Header::new(Compression::None, Some(([1; 8], [2; 32], size)), None, None).encode();
            let err = parse(&bytes).unwrap_err().to_string();
            assert!(err.contains("chunk size"), "{err}");
        }
    }
}
