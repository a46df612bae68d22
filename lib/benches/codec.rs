//! Criterion benches of the object codec (issue #7): encode and decode one 16 MiB WAL
//! segment with zstd 1, zstd 3 and gzip 6, with and without AES-256-GCM, reporting throughput.
//!
//! The segment is a real one when `WALVAULT_BENCH_SEGMENT` names a file (the harness
//! `scripts/bench.sh` passes one from its pgbench corpus; any 16 MiB file of `pg_wal` works),
//! else synthetic WAL-like pages (8 KiB pages with page headers, repeated record headers,
//! tuple data that is partly random, partly repetitive), which compress like OLTP WAL.
//!
//!   cargo bench -p walvault --bench codec -- --quick
//!   WALVAULT_BENCH_SEGMENT=/path/to/000000010000000000000042 cargo bench -p walvault --bench codec
//!
//! `WALVAULT_BENCH_LABEL` names the group (`codec/LABEL`, results in `target/criterion/codec_LABEL/`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use walvault::codec::{
    CodecSettings, Compression, Context, Expect, Key, Keyring, content_digest, decode_to, encode_slice,
};

const SEGMENT: usize = 16 * 1024 * 1024;
const PAGE: usize = 8192;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// 16 MiB of WAL-like pages: a 24-byte page header per 8 KiB page, records of 60-400 bytes
/// with a 24-byte header (xid, length, previous pointer: small, slowly changing numbers),
/// a block reference, and tuple data that is half hex text from a small alphabet, half
/// repeated column values. zstd 1 compresses it about 3-5x, like OLTP WAL.
fn synthetic_segment() -> Vec<u8> {
    let mut rng = Rng(0x5eed_0000_0000_0001);
    let mut out = Vec::with_capacity(SEGMENT);
    let mut lsn: u64 = 0x0300_0000;
    let mut xid: u32 = 750;
    while out.len() < SEGMENT {
        let page_start = out.len();
        out.extend_from_slice(&0xD110u16.to_le_bytes());
        out.extend_from_slice(&5u16.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        while out.len() - page_start < PAGE - 64 {
            let len = 60 + (rng.next() % 340) as usize;
            xid += u32::from(rng.next().is_multiple_of(4));
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&xid.to_le_bytes());
            out.extend_from_slice(&(lsn - 120).to_le_bytes());
            out.extend_from_slice(&[0x0a, 0x80, 0, 0]);
            out.extend_from_slice(&(rng.next() as u32).to_le_bytes());
            out.extend_from_slice(&[0, 0x7f, 6, 0, 0, 0, 0x40, 0x35, 0, 0, (rng.next() % 200) as u8, 0]);
            let body = len.saturating_sub(36);
            for i in 0..body {
                let b = if i < body / 2 {
                    b"0123456789abcdef"[(rng.next() % 16) as usize]
                } else {
                    [0u8, 0, 1, 0, 0x20, 0x61, 0x62, 0x63][i % 8]
                };
                out.push(b);
            }
            lsn += len as u64;
        }
        out.resize(page_start + PAGE, 0);
    }
    out.truncate(SEGMENT);
    out
}

/// The segment and its label in the benchmark names (`WALVAULT_BENCH_LABEL`, else `real` or
/// `synthetic`).
fn segment() -> (Vec<u8>, String) {
    let label = std::env::var("WALVAULT_BENCH_LABEL").ok().filter(|l| !l.is_empty());
    if let Some(path) = std::env::var_os("WALVAULT_BENCH_SEGMENT") {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("WALVAULT_BENCH_SEGMENT={path:?}: {e}"));
        return (data, label.unwrap_or_else(|| "real".into()));
    }
    (synthetic_segment(), label.unwrap_or_else(|| "synthetic".into()))
}

fn codec(c: &mut Criterion) {
    let (plain, kind) = segment();
    // Every object is bound to its place, as wal-push and wal-fetch bind and check it.
    let place = Context {
        repository: [5; 16],
        env: "production".into(),
        system_identifier: 7_300_000_000_000_000_005,
        object: "wal/000000010000000000000003".into(),
    };
    let expect = Expect::strict(place.clone());
    let key = Key::from_bytes([7u8; 32]);
    let cases: [(&str, Compression, i32); 3] =
        [("zstd-1", Compression::Zstd, 1), ("zstd-3", Compression::Zstd, 3), ("gzip-6", Compression::Gzip, 6)];
    for (name, compression, level) in cases {
        let settings = CodecSettings { compression, level };
        for encrypted in [false, true] {
            let key = encrypted.then_some(&key);
            let keyring = Keyring::new(key.cloned(), Vec::new());
            let label = format!("{name}{}", if encrypted { "+aes256gcm" } else { "" });
            // As wal-push writes: zstd objects carry no separate digest (the frame's checksum
            // covers the plaintext), others do.
            let with_digest = compression != Compression::Zstd;
            let encoded =
                encode_slice(&plain, &settings, key, with_digest.then(|| content_digest(&plain, key)), &place).unwrap();
            eprintln!(
                "{kind} segment, {label}: {} -> {} bytes (ratio {:.2})",
                plain.len(),
                encoded.len(),
                plain.len() as f64 / encoded.len() as f64
            );

            let mut group = c.benchmark_group(format!("codec/{kind}"));
            group.throughput(Throughput::Bytes(plain.len() as u64));
            group.sample_size(10);
            group.bench_with_input(BenchmarkId::new("encode", &label), &plain, |b, plain| {
                b.iter(|| {
                    let digest = with_digest.then(|| content_digest(plain, key));
                    black_box(encode_slice(plain, &settings, key, digest, &place).unwrap())
                });
            });
            group.bench_with_input(BenchmarkId::new("decode", &label), &encoded, |b, encoded| {
                let mut out = Vec::with_capacity(SEGMENT);
                b.iter(|| {
                    out.clear();
                    let expect = Some(&expect);
                    black_box(decode_to(&encoded[..], &keyring, "bench", expect, false, &mut out, "memory").unwrap());
                });
            });
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = codec
}
criterion_main!(benches);
