//! One check of a WAL segment's bytes against its name and the cluster: used by wal-fetch
//! (archive and spool) and by the prefetch worker, so the same fault gets the same error.

use super::header::{LONG_HEADER_LEN, parse_long_header};
use super::segment::WalFileName;
use crate::Error;

/// What is wrong with a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentFault {
    /// Fewer bytes than a long page header.
    Short,
    /// The first page header does not parse.
    Header(String),
    /// The file is not one whole segment.
    Length { len: u64, seg_size: u64 },
    /// The page address is another segment's (renamed or copied object).
    OtherSegment { page_addr: String },
    /// The pages are of a timeline newer than the name's.
    NewerTimeline { tli: u32 },
    /// Another cluster's WAL.
    OtherSystem { found: u64, expected: u64 },
}

/// Check the first bytes `head` of segment `name` (and its length when known) against the
/// name and, when known, the cluster's system identifier. Returns the segment size.
///
/// The first segment of a timeline starts as a copy of its parent's: its first page may
/// carry the parent's (older) timeline, never a newer one.
///
/// # Errors
/// The fault found.
pub fn check_segment(head: &[u8], len: Option<u64>, name: &WalFileName, sysid: Option<u64>) -> Result<u64, SegmentFault> {
    if head.len() < LONG_HEADER_LEN {
        return Err(SegmentFault::Short);
    }
    let h = parse_long_header(&head[..LONG_HEADER_LEN]).map_err(|e| SegmentFault::Header(e.to_string()))?;
    let seg_size = u64::from(h.seg_size);
    if let Some(len) = len.filter(|l| *l != seg_size) {
        return Err(SegmentFault::Length { len, seg_size });
    }
    if !name.is_segment() || name.segno(seg_size) != Some(h.segno()) {
        return Err(SegmentFault::OtherSegment { page_addr: h.page_addr.to_string() });
    }
    if h.tli > name.tli() {
        return Err(SegmentFault::NewerTimeline { tli: h.tli });
    }
    match sysid {
        Some(expected) if expected != h.system_id => Err(SegmentFault::OtherSystem { found: h.system_id, expected }),
        _ => Ok(seg_size),
    }
}

impl SegmentFault {
    /// The error for `what` (a file or an object) holding `name`: another cluster's WAL is
    /// refused; every other fault is corruption.
    pub fn into_error(self, what: &str, name: &WalFileName) -> Error {
        match self {
            SegmentFault::Short => Error::corrupt(what, "shorter than a page header"),
            SegmentFault::Header(e) => Error::corrupt(what, e),
            SegmentFault::Length { len, seg_size } => {
                Error::corrupt(what, format!("{len} bytes, not the segment size {seg_size}: truncated"))
            }
            SegmentFault::OtherSegment { page_addr } => Error::corrupt(
                what,
                format!("it holds the segment at {page_addr}, not {name}: the object was renamed or copied"),
            ),
            SegmentFault::NewerTimeline { tli } => {
                Error::corrupt(what, format!("its pages are of timeline {tli}, newer than {name}'s"))
            }
            SegmentFault::OtherSystem { found, expected } => Error::Refused(format!(
                "{what} is WAL of system identifier {found}, not this repository's cluster {expected}"
            )),
        }
    }
}
