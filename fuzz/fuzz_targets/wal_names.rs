//! WAL file names and LSNs from arbitrary text: parse, and whatever parses prints back to
//! something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walvault::wal::{Lsn, WalFileName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(name) = WalFileName::parse(text) {
        let printed = name.to_string();
        assert_eq!(WalFileName::parse(&printed).expect("printed name parses"), name, "{text:?}");
        let _ = name.sort_key();
        let _ = name.has_page_header();
        for seg in [1u64 << 20, 16 << 20, 1 << 30] {
            if let Some(segno) = name.segno(seg) {
                let _ = WalFileName::from_segno(name.tli(), segno, seg);
            }
            let _ = name.next_segment(seg);
        }
    }
    if let Ok(lsn) = text.parse::<Lsn>() {
        assert_eq!(lsn.to_string().parse::<Lsn>().expect("printed lsn parses"), lsn);
        for seg in [1u64 << 20, 16 << 20] {
            let back = Lsn::from_segment(lsn.segment_number(seg), lsn.segment_offset(seg), seg);
            assert_eq!(back, lsn);
        }
    }
});
