//! PostgreSQL WAL values: LSNs, file names, page headers, timeline history. Pure: no I/O.
//!
//! Names follow PostgreSQL's C helpers in `src/include/access/xlog_internal.h` and
//! `src/backend/access/transam/timeline.c`. Every parser takes untrusted input: it checks
//! lengths before slicing, never panics, and reports [`crate::Error::Invalid`] naming the
//! text it refused.

pub mod check;
pub mod follow;
pub mod header;
pub mod lsn;
pub mod segment;
pub mod sysid;
pub mod timeline;

#[cfg(test)]
mod proptests;

pub use header::{KNOWN_MAGICS, LONG_HEADER_LEN, LongPageHeader, parse_long_header, pg_major_for_magic};
pub use lsn::{Lsn, is_valid_seg_size};
pub use segment::{WalFileName, segments_per_xlog_id};
pub use sysid::SystemId;
pub use timeline::{HistoryEntry, format_history, parse_history, timeline_of_point};

/// A synthetic WAL segment for tests: a valid long page header (`XLP_LONG_HEADER`, 8 kB
/// pages, `xlp_pageaddr` at the start of segment `segno`) followed by `fill` to `seg_size`
/// bytes. The same arguments always give the same bytes.
///
/// With a `seg_size` below [`LONG_HEADER_LEN`] the result is the header cut to that length;
/// with an invalid `seg_size` the header will not parse, which tests of rejection may want.
pub fn synthetic_segment(system_id: u64, tli: u32, segno: u64, seg_size: u32, magic: u16, fill: u8) -> Vec<u8> {
    let header = LongPageHeader {
        magic,
        info: header::XLP_LONG_HEADER,
        tli,
        page_addr: Lsn::from_segment(segno, 0, u64::from(seg_size)),
        system_id,
        seg_size,
        block_size: 8192,
    };
    let len = usize::try_from(seg_size).unwrap_or(usize::MAX);
    let mut segment = vec![fill; len];
    let bytes = header.to_bytes();
    let n = bytes.len().min(len);
    if let (Some(dest), Some(src)) = (segment.get_mut(..n), bytes.get(..n)) {
        dest.copy_from_slice(src);
    }
    segment
}

/// `text` for an error message: quoted and escaped, cut to 100 characters.
pub(crate) fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 100;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}...", text.get(..cut).unwrap_or_default()),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_segment_parses_back() -> crate::Result<()> {
        for (segno, seg_size) in [(1_u64, 16_u32 << 20), (0x16B3, 1 << 20), (7, 64 << 20)] {
            let segment = synthetic_segment(42, 3, segno, seg_size, 0xD116, 0x5A);
            assert_eq!(segment.len(), usize::try_from(seg_size).unwrap_or(0));
            let header = parse_long_header(&segment)?;
            assert_eq!((header.system_id, header.tli, header.seg_size), (42, 3, seg_size));
            assert_eq!((header.segno(), header.pg_major()), (segno, Some(17)));
            assert!(segment.iter().skip(LONG_HEADER_LEN).all(|&b| b == 0x5A));
            let name = WalFileName::from_segno(3, segno, u64::from(seg_size));
            assert_eq!(name.segno(u64::from(seg_size)), Some(header.segno()));
        }
        Ok(())
    }

    #[test]
    fn synthetic_segment_is_deterministic_and_total() {
        let a = synthetic_segment(1, 1, 5, 1 << 20, 0xD118, 0);
        assert_eq!(a, synthetic_segment(1, 1, 5, 1 << 20, 0xD118, 0));
        assert_ne!(a, synthetic_segment(1, 1, 6, 1 << 20, 0xD118, 0));
        assert_eq!(synthetic_segment(1, 1, 5, 0, 0xD118, 0), Vec::<u8>::new());
        assert_eq!(synthetic_segment(1, 1, 5, 10, 0xD118, 0).len(), 10);
        assert!(parse_long_header(&synthetic_segment(1, 1, u64::MAX, 3 << 20, 0xD118, 0)).is_err());
    }

    #[test]
    fn quoted_escapes_and_cuts() {
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(quoted("a\tb\"é"), r#""a\tb\"é""#);
        let long = "é".repeat(150);
        assert_eq!(quoted(&long), format!("{:?}...", "é".repeat(100)));
    }
}
