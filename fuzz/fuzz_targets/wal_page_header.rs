//! The long page header of a WAL segment from arbitrary bytes: errors, never panics; what
//! parses serialises back to a header that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walvault::wal::header::{self, parse_long_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_long_header(data) {
        let bytes = h.to_bytes();
        assert_eq!(parse_long_header(&bytes).expect("round trip"), h);
        let _ = h.pg_major();
        let _ = h.segno();
        let _ = header::pg_major_for_magic(h.magic);
    }
});
