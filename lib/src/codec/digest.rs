//! Content digests for duplicate detection: stored in the header so a duplicate check can read
//! it from an object's first bytes without downloading or decrypting the body.
//!
//! Unencrypted: plain SHA-256 of the plaintext. Encrypted: HMAC-SHA256 of the plaintext under
//! a key derived from the master key, so the header of an encrypted object does not give away
//! a plain hash of secret data (which would let anyone confirm a guessed plaintext).

use std::io::{self, Write};

use ring::{digest, hmac};

use super::crypt::{Key, copy_prefix};

/// Streaming content digest; write the plaintext into it, then call [`DigestWriter::finish`].
pub struct DigestWriter {
    state: State,
}

enum State {
    Plain(digest::Context),
    Keyed(hmac::Context),
}

impl DigestWriter {
    /// A digest keyed by `key` (HMAC-SHA256), or plain SHA-256 without a key.
    pub fn new(key: Option<&Key>) -> Self {
        let state = match key {
            None => State::Plain(digest::Context::new(&digest::SHA256)),
            Some(k) => State::Keyed(hmac::Context::with_key(&k.digest_key())),
        };
        DigestWriter { state }
    }

    /// Add `data` to the digest.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Plain(ctx) => ctx.update(data),
            State::Keyed(ctx) => ctx.update(data),
        }
    }

    /// The 32-byte digest of everything written.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        match self.state {
            State::Plain(ctx) => copy_prefix(&mut out, ctx.finish().as_ref()),
            State::Keyed(ctx) => copy_prefix(&mut out, ctx.sign().as_ref()),
        }
        out
    }
}

impl Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Content digest of `plaintext`: HMAC-SHA256 under the key's digest key when `key` is given
/// (pass the key the object is, or was, encrypted with), plain SHA-256 otherwise.
pub fn content_digest(plaintext: &[u8], key: Option<&Key>) -> [u8; 32] {
    let mut w = DigestWriter::new(key);
    w.update(plaintext);
    w.finish()
}

/// Plain SHA-256 of `data`, as 64 lowercase hex digits.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_digest_is_sha256() {
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), want);
        assert_eq!(hex::encode(content_digest(b"abc", None)), want);
    }

    #[test]
    fn keyed_digest_depends_on_the_key_and_hides_the_hash() {
        let a = Key::from_bytes([1; 32]);
        let b = Key::from_bytes([2; 32]);
        let da = content_digest(b"abc", Some(&a));
        assert_eq!(da, content_digest(b"abc", Some(&a)));
        assert_ne!(da, content_digest(b"abc", Some(&b)));
        assert_ne!(da, content_digest(b"abc", None));
    }

    #[test]
    fn streaming_equals_one_shot() {
        let key = Key::from_bytes([9; 32]);
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for k in [None, Some(&key)] {
            let mut w = DigestWriter::new(k);
            for part in data.chunks(333) {
                w.write_all(part).unwrap();
            }
            assert_eq!(w.finish(), content_digest(&data, k));
        }
    }
}
