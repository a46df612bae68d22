//! The long page header at the start of each WAL segment (`XLogLongPageHeaderData`).
//!
//! Layout, from `src/include/access/xlog_internal.h` (the same on 14 through 18 and on
//! master), little-endian on every platform walvault supports:
//!
//! | offset | field             | type |
//! |-------:|-------------------|------|
//! |      0 | `xlp_magic`       | u16  |
//! |      2 | `xlp_info`        | u16  |
//! |      4 | `xlp_tli`         | u32  |
//! |      8 | `xlp_pageaddr`    | u64  |
//! |     16 | `xlp_rem_len`     | u32  |
//! |     20 | (padding)         | 4    |
//! |     24 | `xlp_sysid`       | u64  |
//! |     32 | `xlp_seg_size`    | u32  |
//! |     36 | `xlp_xlog_blcksz` | u32  |
//!
//! `SizeOfXLogLongPHD` is `MAXALIGN(40)`, that is 40.

use super::lsn::{Lsn, is_valid_seg_size};
use crate::{Error, Result};

/// Bytes of the long page header, `SizeOfXLogLongPHD`.
pub const LONG_HEADER_LEN: usize = 40;

/// `XLP_FIRST_IS_CONTRECORD`: the page starts with the rest of a record.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`: the page has the long header (the first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_BKP_REMOVABLE`: set on pages written while no base backup runs (14 through 18).
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: the page replaces a missing continuation record.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`: every `xlp_info` bit PostgreSQL 14 through 18 define.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// `XLOG_PAGE_MAGIC` of each supported PostgreSQL major version, from
/// `src/include/access/xlog_internal.h` on each `REL_xx_STABLE` branch and checked against
/// segments written by `initdb` of 14.23, 15.18, 16.15, 17.11 and 18.6 (`testdata/wal/`).
pub const KNOWN_MAGICS: &[(u16, u32)] = &[(0xD10D, 14), (0xD110, 15), (0xD113, 16), (0xD116, 17), (0xD118, 18)];

/// The fields of `XLogLongPageHeaderData` walvault uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// `xlp_magic`: the WAL format version, see [`pg_major_for_magic`].
    pub magic: u16,
    /// `xlp_info` flag bits; [`XLP_LONG_HEADER`] is always set.
    pub info: u16,
    /// `xlp_tli`: the timeline of the first record on the page.
    pub tli: u32,
    /// `xlp_pageaddr`: the WAL address of this page, the start of the segment.
    pub page_addr: Lsn,
    /// `xlp_sysid`: the cluster's system identifier from `pg_control`.
    pub system_id: u64,
    /// `xlp_seg_size`: the cluster's WAL segment size.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`: the WAL page size.
    pub block_size: u32,
}

impl LongPageHeader {
    /// The segment number this header says it starts.
    pub fn segno(&self) -> u64 {
        self.page_addr.segment_number(u64::from(self.seg_size))
    }

    /// The PostgreSQL major version that writes this header's magic, if known.
    pub fn pg_major(&self) -> Option<u32> {
        pg_major_for_magic(self.magic)
    }

    /// The 40 bytes PostgreSQL would write for this header (`xlp_rem_len` and padding zero).
    pub fn to_bytes(&self) -> [u8; LONG_HEADER_LEN] {
        let mut out = Vec::with_capacity(LONG_HEADER_LEN);
        out.extend_from_slice(&self.magic.to_le_bytes());
        out.extend_from_slice(&self.info.to_le_bytes());
        out.extend_from_slice(&self.tli.to_le_bytes());
        out.extend_from_slice(&self.page_addr.0.to_le_bytes());
        out.extend_from_slice(&[0; 8]); // xlp_rem_len and padding
        out.extend_from_slice(&self.system_id.to_le_bytes());
        out.extend_from_slice(&self.seg_size.to_le_bytes());
        out.extend_from_slice(&self.block_size.to_le_bytes());
        out.try_into().unwrap_or([0; LONG_HEADER_LEN])
    }
}

/// The PostgreSQL major version a page magic belongs to (`XLOG_PAGE_MAGIC` per major):
/// 14, 15, 16, 17, 18. `None` if unknown.
pub fn pg_major_for_magic(magic: u16) -> Option<u32> {
    KNOWN_MAGICS.iter().find(|(known, _)| *known == magic).map(|&(_, major)| major)
}

/// Parse the long page header from the first bytes of a segment.
///
/// Checks what `XLogReaderValidatePageHeader` checks without context: the long-header flag,
/// no undefined flag bits, a valid segment size, a power-of-two page size from 1 kB to
/// 32 kB, a page address at a segment boundary and a timeline other than 0. The magic is
/// returned, not judged: see [`pg_major_for_magic`].
///
/// # Errors
///
/// [`Error::Invalid`] when `bytes` is shorter than [`LONG_HEADER_LEN`] or a check fails.
pub fn parse_long_header(bytes: &[u8]) -> Result<LongPageHeader> {
    let short = || Error::Invalid(format!("wal page header too short: {} bytes, need {LONG_HEADER_LEN}", bytes.len()));
    let mut cursor = Cursor(bytes);
    let magic = cursor.u16().ok_or_else(short)?;
    let info = cursor.u16().ok_or_else(short)?;
    let tli = cursor.u32().ok_or_else(short)?;
    let page_addr = Lsn(cursor.u64().ok_or_else(short)?);
    let _rem_len = cursor.u32().ok_or_else(short)?;
    let _padding = cursor.u32().ok_or_else(short)?;
    let system_id = cursor.u64().ok_or_else(short)?;
    let seg_size = cursor.u32().ok_or_else(short)?;
    let block_size = cursor.u32().ok_or_else(short)?;
    let header = LongPageHeader { magic, info, tli, page_addr, system_id, seg_size, block_size };
    validate(&header)?;
    Ok(header)
}

fn validate(h: &LongPageHeader) -> Result<()> {
    let invalid = |what: String| Err(Error::Invalid(format!("invalid wal page header: {what}")));
    if h.info & XLP_LONG_HEADER == 0 {
        return invalid(format!("no long header flag in xlp_info 0x{:04X}", h.info));
    }
    if h.info & !XLP_ALL_FLAGS != 0 {
        return invalid(format!("undefined bits in xlp_info 0x{:04X}", h.info));
    }
    if !is_valid_seg_size(u64::from(h.seg_size)) {
        return invalid(format!("segment size {} is not a power of two from 1 MiB to 1 GiB", h.seg_size));
    }
    if !h.block_size.is_power_of_two() || !(1024..=32768).contains(&h.block_size) {
        return invalid(format!("block size {} is not a power of two from 1 kB to 32 kB", h.block_size));
    }
    if h.page_addr.segment_offset(u64::from(h.seg_size)) != 0 {
        return invalid(format!("page address {} is not at a segment boundary", h.page_addr));
    }
    if h.tli == 0 {
        return invalid("timeline 0".to_string());
    }
    Ok(())
}

/// Little-endian reads that advance, `None` past the end.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/wal/", $name))
        };
    }

    fn decode(hex_text: &str) -> Vec<u8> {
        hex::decode(hex_text.trim()).unwrap_or_default()
    }

    /// First 40 bytes of `000000010000000000000001` right after `initdb`, with the system
    /// identifier `pg_controldata` printed for that cluster.
    const INITDB: [(&str, u32, u64); 5] = [
        (fixture!("pg14-initdb-000000010000000000000001.head.hex"), 14, 7712391237821469717),
        (fixture!("pg15-initdb-000000010000000000000001.head.hex"), 15, 7712391157499920647),
        (fixture!("pg16-initdb-000000010000000000000001.head.hex"), 16, 7712391173505532216),
        (fixture!("pg17-initdb-000000010000000000000001.head.hex"), 17, 7712391184104595843),
        (fixture!("pg18-initdb-000000010000000000000001.head.hex"), 18, 7712391190059999643),
    ];

    #[test]
    fn real_initdb_headers() -> Result<()> {
        for (text, major, system_id) in INITDB {
            let bytes = decode(text);
            assert_eq!(bytes.len(), LONG_HEADER_LEN);
            let h = parse_long_header(&bytes)?;
            assert_eq!(h.pg_major(), Some(major));
            assert_eq!(h.info, XLP_LONG_HEADER);
            assert_eq!((h.tli, h.page_addr, h.system_id), (1, Lsn(0x100_0000), system_id));
            assert_eq!((h.seg_size, h.block_size, h.segno()), (16 * 1024 * 1024, 8192, 1));
            assert_eq!(h.to_bytes().as_slice(), bytes.as_slice(), "pg{major}");
        }
        Ok(())
    }

    #[test]
    fn real_headers_with_other_sizes_and_timelines() -> Result<()> {
        // PostgreSQL 17, --wal-segsize=1, after two promotions: 000000030000000000000009.
        let h = parse_long_header(&decode(fixture!("pg17-seg1m-000000030000000000000009.head.hex")))?;
        assert_eq!((h.magic, h.info, h.tli, h.page_addr), (0xD116, 0x0006, 3, Lsn(0x90_0000)));
        assert_eq!((h.system_id, h.seg_size, h.segno()), (7712391262649885869, 1 << 20, 9));
        // PostgreSQL 18, --wal-segsize=64, after one promotion: 000000020000000000000003.
        let h = parse_long_header(&decode(fixture!("pg18-seg64m-000000020000000000000003.head.hex")))?;
        assert_eq!((h.magic, h.info, h.tli, h.page_addr), (0xD118, 0x0006, 2, Lsn(0xC00_0000)));
        assert_eq!((h.system_id, h.seg_size, h.segno()), (7712391300625733113, 64 << 20, 3));
        Ok(())
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = decode(INITDB[4].0);
        for len in 0..LONG_HEADER_LEN {
            let err = parse_long_header(bytes.get(..len).unwrap_or_default()).err();
            let want = format!("wal page header too short: {len} bytes, need 40");
            assert_eq!(err.map(|e| e.to_string()), Some(want));
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xAB; 100]);
        assert!(parse_long_header(&longer).is_ok());
    }

    fn sample() -> LongPageHeader {
        LongPageHeader {
            magic: 0xD116,
            info: XLP_LONG_HEADER,
            tli: 1,
            page_addr: Lsn(0x100_0000),
            system_id: 42,
            seg_size: 16 << 20,
            block_size: 8192,
        }
    }

    #[test]
    fn rejects_bad_fields_with_exact_messages() {
        type Case = (fn(&mut LongPageHeader), &'static str);
        let cases: [Case; 7] = [
            (|h| h.info = 0, "no long header flag in xlp_info 0x0000"),
            (|h| h.info = 0x0012, "undefined bits in xlp_info 0x0012"),
            (|h| h.seg_size = 0, "segment size 0 is not a power of two from 1 MiB to 1 GiB"),
            (|h| h.seg_size = 3 << 20, "segment size 3145728 is not a power of two from 1 MiB to 1 GiB"),
            (|h| h.block_size = 65536, "block size 65536 is not a power of two from 1 kB to 32 kB"),
            (|h| h.page_addr = Lsn(0x100_2000), "page address 0/1002000 is not at a segment boundary"),
            (|h| h.tli = 0, "timeline 0"),
        ];
        for (break_it, want) in cases {
            let mut h = sample();
            break_it(&mut h);
            let err = parse_long_header(&h.to_bytes()).err().map(|e| e.to_string());
            assert_eq!(err, Some(format!("invalid wal page header: {want}")));
        }
    }

    #[test]
    fn accepts_every_block_size_and_unknown_magic() -> Result<()> {
        for shift in 10..=15 {
            let h = LongPageHeader { block_size: 1 << shift, magic: 0x0001, ..sample() };
            assert_eq!(parse_long_header(&h.to_bytes())?, h);
            assert_eq!(h.pg_major(), None);
        }
        Ok(())
    }

    #[test]
    fn magic_table() {
        assert_eq!(pg_major_for_magic(0xD10D), Some(14));
        assert_eq!(pg_major_for_magic(0xD110), Some(15));
        assert_eq!(pg_major_for_magic(0xD113), Some(16));
        assert_eq!(pg_major_for_magic(0xD116), Some(17));
        assert_eq!(pg_major_for_magic(0xD118), Some(18));
        assert_eq!(pg_major_for_magic(0xD106), None, "13 is not supported");
        assert_eq!(pg_major_for_magic(0), None);
    }
}
