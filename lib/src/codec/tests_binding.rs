//! Format 2: every object bound to its place. A renamed, copied or foreign object is refused
//! with [`Error::Misplaced`]; a lie about the place fails authentication; format-1 objects
//! are read only where the reader allows them; the format-2 known-answer vector.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use super::tests::{OBJ, ctx, ctx_bytes, expect, key_a, ring_for, settings};
use super::tests_keys::{VECTOR_KEY, unhex};
use super::*;

fn decode_expecting(object: &[u8], ring: &Keyring, expect: &Expect) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_to(object, ring, OBJ, Some(expect), false, &mut out, "-")?;
    Ok(out)
}

fn strict() -> Expect {
    Expect::strict(ctx())
}

#[test]
fn an_object_opens_only_in_its_place() {
    let a = key_a();
    let ring = ring_for(Some(&a));
    for key in [Some(&a), None] {
        let ring = if key.is_some() { ring.clone() } else { Keyring::none() };
        let object = encode_to_vec(b"segment 1", &settings(Compression::Zstd), key, None, &ctx()).unwrap();
        assert_eq!(decode_expecting(&object, &ring, &strict()).unwrap(), b"segment 1");
        let cases: [(fn(&mut Context), &str); 4] = [
            (|c| c.object = "wal/000000010000000000000002".into(), "the object was renamed or copied"),
            (|c| c.env = "staging".into(), "written in environment production, not staging"),
            (|c| c.system_identifier = 42, "system identifier 7300000000000000005, not 42"),
            (|c| c.repository = [9; 16], "written in repository 3c3c"),
        ];
        for (change, words) in cases {
            let mut wanted = strict();
            change(&mut wanted.context);
            let err = decode_expecting(&object, &ring, &wanted).unwrap_err();
            assert!(matches!(err, Error::Misplaced { .. }), "{err}");
            assert_eq!(err.exit_code(), crate::ExitCode::Corrupt);
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("object {OBJ} is bound to another place: ")), "{msg}");
            assert!(msg.contains(words), "{msg}");
        }
        // `walvault decrypt` reads any place.
        let mut out = Vec::new();
        decode_to(&object[..], &ring, OBJ, None, false, &mut out, "-").unwrap();
        assert_eq!(out, b"segment 1");
    }
}

#[test]
fn a_forged_context_fails_authentication() {
    let a = key_a();
    let mut theirs = ctx();
    theirs.object = "wal/000000010000000000000009".into();
    let object = encode_to_vec(b"their segment 9", &settings(Compression::None), Some(&a), None, &theirs).unwrap();
    // Rewrite the stored name to ours (same length) and fix the header check: the chunks
    // were sealed over the true context, so the object no longer opens.
    let header_len = read_header(&mut &object[..], OBJ).unwrap().encoded_len();
    let mut forged = object.clone();
    let at = forged[..header_len].windows(3).rposition(|w| w == b"009").unwrap();
    forged[at..at + 3].copy_from_slice(b"001");
    let check = ring::digest::digest(&ring::digest::SHA256, &forged[..header_len - 4]);
    forged[header_len - 4..header_len].copy_from_slice(&check.as_ref()[..4]);
    let err = decode_expecting(&forged, &ring_for(Some(&a)), &strict()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("failed authentication"), "{err}");
}

#[test]
fn cluster_optional_accepts_system_identifier_zero_only() {
    let a = key_a();
    let mut unknown = ctx();
    unknown.system_identifier = 0;
    let object = encode_to_vec(b"history", &settings(Compression::Zstd), Some(&a), None, &unknown).unwrap();
    let ring = ring_for(Some(&a));
    assert!(matches!(decode_expecting(&object, &ring, &strict()), Err(Error::Misplaced { .. })));
    let mut lenient = strict();
    lenient.cluster_optional = true;
    assert_eq!(decode_expecting(&object, &ring, &lenient).unwrap(), b"history");
}

#[test]
fn format1_objects_only_where_allowed() {
    let a = key_a();
    let ring = ring_for(Some(&a));
    let old = encode_format1_for_tests(b"old segment", &settings(Compression::Zstd), Some(&a)).unwrap();
    assert_eq!(read_header(&mut &old[..], OBJ).unwrap().version, FORMAT_VERSION_1);
    assert_eq!(decode_expecting(&old, &ring, &expect()).unwrap(), b"old segment");
    let mut refusing = strict();
    refusing.format1 = Err("written after environment production moved to format 2 at 000000010000000000000010".into());
    let err = decode_expecting(&old, &ring, &refusing).unwrap_err();
    assert!(matches!(err, Error::Misplaced { .. }), "{err}");
    assert!(err.to_string().contains("format-1 object, bound to no place") && err.to_string().contains("at 0000"));
}

#[test]
fn an_unusable_context_is_an_error_not_a_panic() {
    let mut c = ctx();
    c.env = String::new();
    let err = encode_to_vec(b"x", &settings(Compression::None), None, None, &c).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    c.env = "production".into();
    c.object = "x".repeat(context::MAX_NAME_LEN + 1);
    assert!(encode_to_vec(b"x", &settings(Compression::None), None, None, &c).is_err());
    assert_eq!(ctx_bytes(), ctx().encode().unwrap());
}

const VECTOR_3_TEXT: &[u8] =
    b"walvault known-answer vector 3: format 2, bound to one WAL file of one cluster in one place.\n";

fn vector_3_context() -> Context {
    Context {
        repository: [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
        env: "production".into(),
        system_identifier: 7_300_000_000_000_000_005,
        object: "wal/000000010000000000000003".into(),
    }
}

/// `testdata/codec/v2-none-aes256gcm-chunk32-digest-bound.hex`, written by an independent
/// Python implementation of `docs/FORMAT.md`: read it in its place, refuse it elsewhere, and
/// write it byte for byte.
#[test]
fn known_answer_vector_format_2() {
    let key = Key::from_material(VECTOR_KEY.as_bytes(), "K").unwrap();
    let ring = ring_for(Some(&key));
    let v3 = unhex(include_str!("../../../testdata/codec/v2-none-aes256gcm-chunk32-digest-bound.hex"));
    let place = Expect::strict(vector_3_context());
    assert_eq!(decode_expecting(&v3, &ring, &place).unwrap(), VECTOR_3_TEXT);
    let h = read_header(&mut &v3[..], "v3").unwrap();
    assert_eq!((h.version, h.encoded_len()), (2, 94 + 2 + 65));
    assert_eq!(Context::parse(h.context.as_deref().unwrap()).unwrap(), vector_3_context());
    let mut elsewhere = place.clone();
    elsewhere.context.object = "wal/000000010000000000000004".into();
    assert!(matches!(decode_expecting(&v3, &ring, &elsewhere), Err(Error::Misplaced { .. })));

    let mut salt = [0u8; 32];
    for (i, b) in salt.iter_mut().enumerate() {
        *b = 0x40 + i as u8;
    }
    let digest = Some(content_digest(VECTOR_3_TEXT, Some(&key)));
    let bytes = vector_3_context().encode();
    let mut enc =
        Encoder::with_params(Vec::new(), &settings(Compression::None), Some(&key), digest, salt, 32, bytes).unwrap();
    enc.write_all(VECTOR_3_TEXT).unwrap();
    assert_eq!(enc.finish().unwrap(), v3);
}
