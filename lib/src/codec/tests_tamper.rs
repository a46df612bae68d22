//! Tampering, truncation, reordering: every case must fail as corruption naming the object,
//! and never release plaintext that was not authenticated.
#![allow(clippy::unwrap_used)]

use std::io::Read;

use proptest::prelude::*;

use super::tests::{OBJ, decode, encode, key_a, noise, ring_for};
use super::*;

const CHUNK: usize = 64;

fn assert_corrupt(result: crate::Result<Vec<u8>>, what: &str) -> String {
    match result {
        Err(Error::Corrupt { object, reason }) if object == OBJ => reason,
        other => panic!("{what}: expected corruption of {OBJ}, got {other:?}"),
    }
}

/// An encrypted object of several chunks: (bytes, header length, frame length, chunk count).
fn sample(compression: Compression, digest: bool) -> (Vec<u8>, usize, usize, usize) {
    let data = noise(5 * CHUNK + 10, 21);
    let object = encode(&data, compression, Some(&key_a()), digest, CHUNK as u32);
    let header = read_header(&mut &object[..], OBJ).unwrap().encoded_len();
    let frame = CHUNK + TAG_LEN;
    let chunks = (object.len() - header).div_ceil(frame);
    assert!(chunks >= 5, "{compression:?}: {chunks} chunks");
    (object, header, frame, chunks)
}

fn chunks_of(object: &[u8], header: usize, frame: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let head = object[..header].to_vec();
    (head, object[header..].chunks(frame).map(<[u8]>::to_vec).collect())
}

fn join(head: &[u8], chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = head.to_vec();
    chunks.iter().for_each(|c| out.extend_from_slice(c));
    out
}

#[test]
fn every_flipped_byte_fails() {
    let ring = ring_for(Some(&key_a()));
    for compression in [Compression::None, Compression::Zstd] {
        for digest in [false, true] {
            let (object, ..) = sample(compression, digest);
            for i in 0..object.len() {
                for mask in [0x01, 0x80] {
                    let mut bad = object.clone();
                    bad[i] ^= mask;
                    assert_corrupt(decode(&bad, &ring, false), &format!("{compression:?} byte {i} ^ {mask:#x}"));
                }
            }
        }
    }
}

#[test]
fn every_truncation_fails() {
    let ring = ring_for(Some(&key_a()));
    let (object, header, frame, chunks) = sample(Compression::None, true);
    for len in 0..object.len() {
        let reason = assert_corrupt(decode(&object[..len], &ring, false), &format!("cut at {len}"));
        if len > header && (len - header) % frame == 0 {
            let k = (len - header) / frame - 1;
            assert_eq!(reason, format!("truncated: the object ends after chunk {k}, which is not the last chunk"));
        }
    }
    assert_eq!(
        assert_corrupt(decode(&object[..header], &ring, false), "header only"),
        "truncated: chunk 0 has 0 bytes, less than its 16-byte tag"
    );
    assert!(chunks > 1);
}

#[test]
fn trailing_bytes_fail() {
    let ring = ring_for(Some(&key_a()));
    for compression in [Compression::None, Compression::Zstd, Compression::Gzip] {
        let (object, header, frame, _) = sample(compression, false);
        let (_, chunks) = chunks_of(&object, header, frame);
        let last = chunks.last().cloned().unwrap_or_default();
        for extra in [vec![0u8], vec![0u8; TAG_LEN], vec![0u8; frame], last] {
            let mut bad = object.clone();
            bad.extend_from_slice(&extra);
            assert_corrupt(decode(&bad, &ring, false), &format!("{compression:?} + {} bytes", extra.len()));
        }
    }
}

#[test]
fn reordered_dropped_and_repeated_chunks_fail() {
    let ring = ring_for(Some(&key_a()));
    let (object, header, frame, n) = sample(Compression::None, false);
    let (head, chunks) = chunks_of(&object, header, frame);
    let mut cases: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for i in 0..n - 1 {
        let mut c = chunks.clone();
        c.swap(i, i + 1);
        cases.push((format!("swap {i} {}", i + 1), c));
        let mut c = chunks.clone();
        c.insert(i, chunks[i].clone());
        cases.push((format!("repeat {i}"), c));
        let mut c = chunks.clone();
        c.remove(i);
        cases.push((format!("drop {i}"), c));
    }
    let mut c = chunks.clone();
    c.swap(0, n - 1);
    cases.push(("swap first and last".into(), c));
    for (what, c) in cases {
        assert_corrupt(decode(&join(&head, &c), &ring, false), &what);
    }
}

#[test]
fn header_and_body_of_different_objects_do_not_mix() {
    let a = key_a();
    let ring = ring_for(Some(&a));
    let data = noise(3 * CHUNK, 2);
    let x = encode(&data, Compression::None, Some(&a), false, CHUNK as u32);
    let mut enc = Encoder::with_params(
        Vec::new(),
        &tests::settings(Compression::None),
        Some(&a),
        None,
        [0x77; 32],
        CHUNK as u32,
        Some(tests::ctx_bytes()),
    )
    .unwrap();
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let y = enc.finish().unwrap();
    let header = read_header(&mut &x[..], OBJ).unwrap().encoded_len();
    let mut spliced = x[..header].to_vec();
    spliced.extend_from_slice(&y[header..]);
    assert_corrupt(decode(&spliced, &ring, false), "header of x, body of y");
}

#[test]
fn no_plaintext_from_an_unauthenticated_chunk() {
    let ring = ring_for(Some(&key_a()));
    let data = noise(5 * CHUNK + 10, 21);
    let object = encode(&data, Compression::None, Some(&key_a()), false, CHUNK as u32);
    let header = read_header(&mut &object[..], OBJ).unwrap().encoded_len();
    for bad_chunk in 0..5 {
        let mut bad = object.clone();
        bad[header + bad_chunk * (CHUNK + TAG_LEN) + 3] ^= 0x20;
        let (_, mut reader) = decoder(&bad[..], &ring, OBJ, false, Some(&tests::expect())).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        let err = loop {
            match reader.read(&mut buf) {
                Ok(0) => panic!("tampered chunk {bad_chunk} was read to the end"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break error_from_io(e, OBJ),
            }
        };
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert_eq!(got, data[..bad_chunk * CHUNK], "only whole authenticated chunks before {bad_chunk}");
        assert!(reader.read(&mut buf).is_err(), "the reader stays failed");
    }
}

/// Unencrypted objects have no authentication, but a change must never yield other plaintext:
/// zstd/gzip checksums and the header digest catch it (gzip's mtime/OS bytes may change freely).
#[test]
fn unencrypted_flips_and_cuts_never_yield_other_plaintext() {
    let data = noise(3000, 9);
    let cases =
        [(Compression::Zstd, false), (Compression::Gzip, false), (Compression::None, true), (Compression::Zstd, true)];
    for (compression, digest) in cases {
        let object = encode(&data, compression, None, digest, CHUNK as u32);
        for i in 0..object.len() {
            let mut bad = object.clone();
            bad[i] ^= 0x04;
            match decode(&bad, &Keyring::none(), false) {
                Ok(plain) => assert!(plain == data, "{compression:?} byte {i}: other plaintext"),
                Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{compression:?} byte {i}: {e}"),
            }
        }
        for len in 0..object.len() {
            assert_corrupt(decode(&object[..len], &Keyring::none(), false), &format!("{compression:?} cut {len}"));
        }
        let mut long = object.clone();
        long.push(0);
        assert_corrupt(decode(&long, &Keyring::none(), false), &format!("{compression:?} trailing byte"));
    }
}

#[test]
fn decompression_failure_message() {
    let data = noise(3000, 9);
    let object = encode(&data, Compression::Zstd, None, false, CHUNK as u32);
    let reason = assert_corrupt(decode(&object[..object.len() - 9], &Keyring::none(), false), "cut zstd");
    assert!(reason.starts_with("zstd stream is invalid or truncated: "), "{reason}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn prop_any_change_to_an_encrypted_object_fails(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1u32..100,
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        cut in any::<bool>(),
    ) {
        let a = key_a();
        let object = encode(&data, Compression::Zstd, Some(&a), true, chunk);
        let i = at.index(object.len());
        let mut bad = object.clone();
        if cut { bad.truncate(i) } else { bad[i] ^= mask }
        let result = decode(&bad, &ring_for(Some(&a)), false);
        prop_assert!(matches!(result, Err(Error::Corrupt { .. })), "{:?}", result.map(|v| v.len()));
    }
}
