//! Round trips, key handling, error mapping and streaming of the whole codec pipeline.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};

use proptest::prelude::*;

use super::*;

pub(super) const OBJ: &str = "wal/production/2024/01/15/000000010000000000000001.zst.enc";

pub(super) fn key_a() -> Key {
    Key::from_bytes([0xa1; 32])
}

pub(super) fn key_b() -> Key {
    Key::from_bytes([0xb2; 32])
}

/// The place the test objects are bound to.
pub(super) fn ctx() -> Context {
    Context {
        repository: [0x3c; 16],
        env: "production".into(),
        system_identifier: 7_300_000_000_000_000_005,
        object: "wal/000000010000000000000001".into(),
    }
}

pub(super) fn ctx_bytes() -> Vec<u8> {
    ctx().encode().unwrap()
}

/// What the test reader demands: [`ctx`]; format-1 objects (the old vectors) accepted.
pub(super) fn expect() -> Expect {
    Expect { context: ctx(), cluster_optional: false, format1: Ok(()) }
}

pub(super) fn settings(compression: Compression) -> CodecSettings {
    CodecSettings { compression, level: compression.default_level() }
}

/// Deterministic, hard-to-compress test data.
pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Encode with a given chunk size and salt; `digest` stores the right content digest.
pub(super) fn encode(data: &[u8], c: Compression, key: Option<&Key>, digest: bool, chunk: u32) -> Vec<u8> {
    let d = digest.then(|| content_digest(data, key));
    let mut enc = Encoder::with_params(Vec::new(), &settings(c), key, d, [0x5a; 32], chunk, Some(ctx_bytes())).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub(super) fn decode(object: &[u8], ring: &Keyring, allow_unencrypted: bool) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    let (_, n) = decode_to(object, ring, OBJ, Some(&expect()), allow_unencrypted, &mut out, "/tmp/out")?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

pub(super) fn ring_for(key: Option<&Key>) -> Keyring {
    Keyring::new(key.cloned(), vec![])
}

#[test]
fn round_trip_every_setting_and_boundary_size() {
    let c = DEFAULT_CHUNK_SIZE as usize;
    let a = key_a();
    for compression in Compression::ALL {
        for key in [None, Some(&a)] {
            for size in [0, 1, c - 1, c, c + 1, 5 * c + 7] {
                let data = noise(size, size as u64);
                let d = Some(content_digest(&data, key));
                let object = encode_to_vec(&data, &settings(compression), key, d, &ctx()).unwrap();
                let (header, plain) = {
                    let mut out = Vec::new();
                    let (h, _) =
                        decode_to(&object[..], &ring_for(key), OBJ, Some(&expect()), false, &mut out, "-").unwrap();
                    (h, out)
                };
                assert!(plain == data, "{compression:?} key={} size={size}", key.is_some());
                assert_eq!(header.compression, compression);
                assert_eq!(header.encrypted, key.is_some());
                assert_eq!(header.digest, d);
            }
        }
    }
}

#[test]
fn encrypted_framing_has_the_documented_length() {
    let a = key_a();
    for chunk in [1u32, 16, 17] {
        for size in 0..70usize {
            let data = noise(size, 3);
            let object = encode(&data, Compression::None, Some(&a), false, chunk);
            let chunks = size.div_ceil(chunk as usize).max(1);
            let header = 62 + 2 + ctx_bytes().len();
            assert_eq!(object.len(), header + size + TAG_LEN * chunks, "chunk {chunk} size {size}");
            assert_eq!(decode(&object, &ring_for(Some(&a)), false).unwrap(), data);
        }
    }
}

#[test]
fn unencrypted_body_is_the_plain_compressed_stream() {
    let data = noise(1000, 8);
    let object = encode(&data, Compression::Zstd, None, false, 64);
    let header = 18 + 2 + ctx_bytes().len();
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(&object[header..]).unwrap().read_to_end(&mut plain).unwrap();
    assert_eq!(plain, data);
    let none = encode(&data, Compression::None, None, false, 64);
    assert_eq!(&none[header..], &data[..]);
}

#[test]
fn write_granularity_does_not_change_the_object() {
    let a = key_a();
    let data = noise(300, 4);
    let whole = encode(&data, Compression::None, Some(&a), true, 32);
    let mut enc = Encoder::with_params(
        Vec::new(),
        &settings(Compression::None),
        Some(&a),
        Some(content_digest(&data, Some(&a))),
        [0x5a; 32],
        32,
        Some(ctx_bytes()),
    )
    .unwrap();
    for b in &data {
        enc.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(enc.finish().unwrap(), whole);
}

#[test]
fn fresh_salt_per_object() {
    let a = key_a();
    let s = settings(Compression::Zstd);
    let x = encode_to_vec(b"same", &s, Some(&a), None, &ctx()).unwrap();
    let y = encode_to_vec(b"same", &s, Some(&a), None, &ctx()).unwrap();
    let hx = read_header(&mut &x[..], OBJ).unwrap();
    let hy = read_header(&mut &y[..], OBJ).unwrap();
    assert_ne!(hx.salt, hy.salt);
    assert_ne!(x[hx.encoded_len()..], y[hy.encoded_len()..]);
    assert_eq!(hx.key_fingerprint, Some(a.fingerprint()));
    assert_eq!(hx.chunk_size, Some(DEFAULT_CHUNK_SIZE));
}

#[test]
fn object_extensions() {
    let ext = |c, enc| object_ext(&settings(c), enc);
    assert_eq!(ext(Compression::Zstd, true), ".zst.enc");
    assert_eq!(ext(Compression::Gzip, true), ".gz.enc");
    assert_eq!(ext(Compression::None, true), ".enc");
    assert_eq!(ext(Compression::Zstd, false), ".zst");
    assert_eq!(ext(Compression::Gzip, false), ".gz");
    assert_eq!(ext(Compression::None, false), "");
}

#[test]
fn bad_level_is_a_config_error() {
    let s = CodecSettings { compression: Compression::Zstd, level: 30 };
    let err = encode_to_vec(b"x", &s, None, None, &ctx()).unwrap_err();
    assert!(matches!(&err, Error::Config { setting, .. } if setting == "WALVAULT_COMPRESSION_LEVEL"), "{err}");
}

#[test]
fn digest_in_header_is_checked_on_both_sides() {
    let a = key_a();
    for key in [None, Some(&a)] {
        let wrong = content_digest(b"other", key);
        let mut enc = Encoder::new(Vec::new(), &settings(Compression::None), key, Some(wrong), &ctx()).unwrap();
        enc.write_all(b"data").unwrap();
        let err = enc.finish().unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        // a digest made with another key is just as wrong
        let other = content_digest(b"data", if key.is_some() { None } else { Some(&a) });
        assert!(encode_to_vec(b"data", &settings(Compression::Zstd), key, Some(other), &ctx()).is_err());
    }
}

/// Endless, moderately compressible data: a random block with a counter stamped into it.
struct Generator {
    block: Vec<u8>,
    left: u64,
    count: u64,
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.block.len()).min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.count += 1;
        self.block[..8].copy_from_slice(&self.count.to_le_bytes());
        buf[..n].copy_from_slice(&self.block[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Stream `len` bytes through encoder and decoder connected by a pipe; nothing holds the
/// whole object, and the plaintext is compared by digest.
fn stream_through_a_pipe(compression: Compression, len: u64) {
    let a = key_a();
    let mut block = noise(1 << 16, 11);
    block[32_768..].fill(0);
    let (reader, writer) = io::pipe().unwrap();
    let key = a.clone();
    let producer = std::thread::spawn(move || -> crate::Result<[u8; 32]> {
        let mut src = Generator { block, left: len, count: 0 };
        let mut tee = DigestWriter::new(None);
        let mut enc = Encoder::new(writer, &settings(compression), Some(&key), None, &ctx())?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = src.read(&mut buf).map_err(|e| error_from_io(e, "gen"))?;
            if n == 0 {
                break;
            }
            tee.update(&buf[..n]);
            enc.write_all(&buf[..n]).map_err(|e| error_from_io(e, "pipe"))?;
        }
        enc.finish()?;
        Ok(tee.finish())
    });
    let mut check = DigestWriter::new(None);
    let (_, n) = decode_to(reader, &ring_for(Some(&a)), OBJ, Some(&expect()), false, &mut check, "-").unwrap();
    assert_eq!(n, len);
    assert_eq!(producer.join().unwrap().unwrap(), check.finish());
}

#[test]
fn hundred_mib_streams_through_a_pipe() {
    // zstd: the compressor's and decompressor's buffers stay bounded
    stream_through_a_pipe(Compression::Zstd, 100 << 20);
    // no compression: 1600 encrypted chunks of 64 KiB
    stream_through_a_pipe(Compression::None, 100 << 20);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn prop_round_trip(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        compression in prop::sample::select(Compression::ALL.to_vec()),
        encrypted in any::<bool>(),
        digest in any::<bool>(),
        chunk in 1u32..300,
        step in 1usize..500,
    ) {
        let a = key_a();
        let key = encrypted.then_some(&a);
        let d = digest.then(|| content_digest(&data, key));
        let mut enc = Encoder::with_params(Vec::new(), &settings(compression), key, d, [1; 32], chunk, Some(ctx_bytes())).unwrap();
        for part in data.chunks(step) {
            enc.write_all(part).unwrap();
        }
        let object = enc.finish().unwrap();
        prop_assert_eq!(decode(&object, &ring_for(key), false).unwrap(), data);
    }
}

#[test]
fn pipeline_types_cross_threads() {
    fn send<T: Send>() {}
    fn shared<T: Send + Sync>() {}
    send::<Encoder<std::fs::File>>();
    send::<DigestWriter>();
    shared::<Keyring>();
    shared::<Key>();
}

/// The whole-slice encoder (wal-push) writes objects the streaming decoder reads, with the
/// digest in the header; a flipped body byte or a wrong digest is caught on decode.
#[test]
fn whole_slice_encoding_round_trips_and_is_checked() {
    let a = key_a();
    let mut data = noise(300_000, 9);
    data.extend(std::iter::repeat_n(0u8, 2 << 20));
    for compression in Compression::ALL {
        for key in [None, Some(&a)] {
            let digest = content_digest(&data, key);
            let object = encode_slice(&data, &settings(compression), key, Some(digest), &ctx()).unwrap();
            assert_eq!(read_header(&mut object.as_slice(), OBJ).unwrap().digest, Some(digest));
            let bare = encode_slice(&data, &settings(compression), key, None, &ctx()).unwrap();
            assert_eq!(read_header(&mut bare.as_slice(), OBJ).unwrap().digest, None);
            assert_eq!(decode(&bare, &ring_for(key), false).unwrap(), data, "{compression:?} without digest");
            if compression != Compression::None || key.is_some() {
                let mut bad = bare.clone();
                let at = bad.len() - 40;
                bad[at] ^= 0x01;
                assert!(decode(&bad, &ring_for(key), false).is_err(), "{compression:?}: caught without digest");
            }
            assert_eq!(decode(&object, &ring_for(key), false).unwrap(), data, "{compression:?} {}", key.is_some());
            let mut bad = object.clone();
            let at = bad.len() - 40;
            bad[at] ^= 0x01;
            assert!(decode(&bad, &ring_for(key), false).is_err(), "{compression:?}: flipped byte caught");
            let wrong = encode_slice(&data, &settings(compression), key, Some([7; 32]), &ctx()).unwrap();
            assert!(decode(&wrong, &ring_for(key), false).is_err(), "{compression:?}: wrong digest caught");
        }
    }
}
