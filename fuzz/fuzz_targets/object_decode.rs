//! The object-format decoder on arbitrary bytes: header, key choice, chunked AES-GCM,
//! zstd/gzip, digest. It must return an error (never panic, never hang, never allocate
//! without bound) and, when it succeeds, the plaintext must match the header's digest (the
//! decoder checks that itself, so success on garbage would be a finding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use walvault::codec::{Key, Keyring, decode_to, read_header};

/// The key of the corpus' encrypted seeds (testdata/codec's vector key).
const KEY_HEX: &[u8] = b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fuzz_target!(|data: &[u8]| {
    let _ = read_header(&mut &data[..], "fuzz");
    let key = Key::from_material(KEY_HEX, "fuzz").expect("key");
    for keyring in [Keyring::new(Some(key.clone()), Vec::new()), Keyring::none()] {
        let mut out = Vec::new();
        // Any place: the binding check is a comparison before the chunks are opened; the
        // decoder's handling of every byte after it is what is fuzzed here.
        if let Ok((header, len)) = decode_to(data, &keyring, "fuzz", None, true, &mut out, "memory") {
            assert_eq!(len as usize, out.len());
            if let Some(digest) = header.digest {
                let k = header.key_fingerprint.and(keyring.write_key());
                assert_eq!(walvault::codec::content_digest(&out, k), digest, "digest checked");
            }
        }
    }
});
