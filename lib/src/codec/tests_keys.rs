//! Keys and errors through the whole pipeline: rotation, missing and wrong keys, encrypted
//! versus unencrypted, known-answer vectors, and I/O errors kept apart from corruption.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};

use super::tests::{OBJ, ctx, decode, expect, key_a, key_b, noise, ring_for, settings};
use super::*;

#[test]
fn key_rotation_reads_old_objects() {
    let (a, b) = (key_a(), key_b());
    let old = encode_to_vec(b"written with a", &settings(Compression::Zstd), Some(&a), None, &ctx()).unwrap();
    let ring = Keyring::new(Some(b.clone()), vec![a.clone()]);
    assert_eq!(decode(&old, &ring, false).unwrap(), b"written with a");
    let new = encode_to_vec(b"written with b", &settings(Compression::Zstd), ring.write_key(), None, &ctx()).unwrap();
    assert_eq!(read_header(&mut &new[..], OBJ).unwrap().key_fingerprint, Some(b.fingerprint()));
    assert_eq!(decode(&new, &ring, false).unwrap(), b"written with b");
    // a read-only keyring (no write key) reads both too
    assert_eq!(decode(&new, &Keyring::new(None, vec![a, b]), false).unwrap(), b"written with b");
}

#[test]
fn wrong_key_names_the_fingerprint() {
    let (a, b) = (key_a(), key_b());
    let object = encode_to_vec(b"secret", &settings(Compression::Zstd), Some(&a), None, &ctx()).unwrap();
    let err = decode(&object, &ring_for(Some(&b)), false).unwrap_err();
    let want = format!(
        "object {OBJ}: encrypted with key {}, which is not configured (configured: {})",
        a.fingerprint_hex(),
        b.fingerprint_hex()
    );
    assert_eq!(err.to_string(), want);
    assert!(matches!(err, Error::Key { .. }));
}

#[test]
fn encrypted_object_without_a_key() {
    let a = key_a();
    let object = encode_to_vec(b"secret", &settings(Compression::Gzip), Some(&a), None, &ctx()).unwrap();
    for allow in [false, true] {
        let err = decode(&object, &Keyring::none(), allow).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("object {OBJ}: encrypted with key {} but no key is configured", a.fingerprint_hex())
        );
        assert_eq!(err.exit_code(), crate::ExitCode::Corrupt);
    }
}

#[test]
fn unencrypted_object_with_a_key_configured() {
    let object = encode_to_vec(b"plain", &settings(Compression::Zstd), None, None, &ctx()).unwrap();
    let ring = ring_for(Some(&key_a()));
    let err = decode(&object, &ring, false).unwrap_err();
    assert_eq!(err.to_string(), format!("object {OBJ}: not encrypted but a key is configured"));
    assert!(matches!(err, Error::Key { .. }));
    assert_eq!(decode(&object, &ring, true).unwrap(), b"plain");
    // read keys alone do not demand encryption
    assert_eq!(decode(&object, &Keyring::new(None, vec![key_a()]), false).unwrap(), b"plain");
}

/// A source that fails with `make()` after `after` bytes.
struct Failing<F: Fn() -> io::Error> {
    data: Vec<u8>,
    pos: usize,
    after: usize,
    make: F,
}

impl<F: Fn() -> io::Error> Read for Failing<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.after {
            return Err((self.make)());
        }
        let n = buf.len().min(self.after - self.pos).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn source_errors_are_not_reported_as_corruption() {
    let a = key_a();
    let data = noise(200_000, 5);
    for compression in Compression::ALL {
        for key in [None, Some(&a)] {
            let object = encode_to_vec(&data, &settings(compression), key, None, &ctx()).unwrap();
            for after in [10, 100, object.len() / 2] {
                let reset = || io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer");
                let src = Failing { data: object.clone(), pos: 0, after, make: reset };
                let err =
                    decode_to(src, &ring_for(key), OBJ, Some(&expect()), false, &mut io::sink(), "-").unwrap_err();
                assert!(matches!(&err, Error::Io { path, .. } if path == OBJ), "{compression:?} {after}: {err}");
                let storage = || {
                    io::Error::other(Error::Storage {
                        op: "get",
                        key: OBJ.into(),
                        reason: "timeout".into(),
                        permanent: false,
                    })
                };
                let src = Failing { data: object.clone(), pos: 0, after, make: storage };
                let err =
                    decode_to(src, &ring_for(key), OBJ, Some(&expect()), false, &mut io::sink(), "-").unwrap_err();
                assert!(err.is_transient(), "{compression:?} {after}: {err}");
            }
        }
    }
}

struct FullDisk;

impl Write for FullDisk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_name_the_output_path() {
    let object = encode_to_vec(b"data", &settings(Compression::Zstd), None, None, &ctx()).unwrap();
    let err =
        decode_to(&object[..], &Keyring::none(), OBJ, Some(&expect()), false, &mut FullDisk, "/pg/pg_wal/RECOVERYXLOG")
            .unwrap_err();
    assert_eq!(err.to_string(), "/pg/pg_wal/RECOVERYXLOG: no space left on device");
}

#[test]
fn error_from_io_round_trips_typed_errors() {
    let typed = io::Error::other(Error::corrupt("x", "bad"));
    assert_eq!(error_from_io(typed, "y").to_string(), "object x is corrupt: bad");
    let raw = io::Error::new(io::ErrorKind::BrokenPipe, "broken pipe");
    assert_eq!(error_from_io(raw, "y").to_string(), "y: broken pipe");
}

pub(super) const VECTOR_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const VECTOR_1_TEXT: &[u8] =
    b"walvault known-answer vector 1: one hundred bytes of plain text, sealed in chunks of 32 bytes each.\n";
const VECTOR_2_LINE: &[u8] = b"walvault known-answer vector 2: zstd, then AES-256-GCM in 64 KiB chunks.\n";

pub(super) fn unhex(text: &str) -> Vec<u8> {
    let digits: String = text.split_whitespace().collect();
    hex::decode(digits).unwrap()
}

/// The vectors in `testdata/codec/` (described in its README): old objects must stay readable,
/// and the writer must still produce byte-identical output for fixed inputs.
#[test]
fn known_answer_vectors() {
    let key = Key::from_material(VECTOR_KEY.as_bytes(), "K").unwrap();
    assert_eq!(key.fingerprint_hex(), "5d8426f7c39efaeb");
    let ring = ring_for(Some(&key));
    let mut salt = [0u8; 32];
    for (i, b) in salt.iter_mut().enumerate() {
        *b = 0x40 + i as u8;
    }
    let v1 = unhex(include_str!("../../../testdata/codec/v1-none-aes256gcm-chunk32-digest.hex"));
    assert_eq!(decode(&v1, &ring, false).unwrap(), VECTOR_1_TEXT);
    let digest = Some(content_digest(VECTOR_1_TEXT, Some(&key)));
    let mut enc =
        Encoder::with_params(Vec::new(), &settings(Compression::None), Some(&key), digest, salt, 32, None).unwrap();
    enc.write_all(VECTOR_1_TEXT).unwrap();
    assert_eq!(enc.finish().unwrap(), v1);
    let v2 = unhex(include_str!("../../../testdata/codec/v1-zstd-aes256gcm.hex"));
    assert_eq!(decode(&v2, &ring, false).unwrap(), VECTOR_2_LINE.repeat(1000));
    let h = read_header(&mut &v2[..], "v2").unwrap();
    assert_eq!(
        (h.compression, h.salt, h.chunk_size, h.digest),
        (Compression::Zstd, Some(salt), Some(DEFAULT_CHUNK_SIZE), None)
    );
}
