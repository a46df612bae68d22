//! One check of a WAL segment's bytes against its name and the cluster, for every path that
//! trusts a segment: wal-push (the file to archive), wal-fetch (the restored object and a
//! spooled file), the prefetch worker and pitr-prepare's staging. One fault, one error class
//! wherever it is found: another cluster's WAL is refused ([`Error::Refused`], exit 5 / 205);
//! every other fault is a damaged object when read back ([`Error::Corrupt`], 204) and bad
//! input when offered to wal-push ([`Error::Invalid`], 2).

use super::header::{LONG_HEADER_LEN, parse_long_header};
use super::segment::WalFileName;
use crate::Error;

/// What is wrong with a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentFault {
    /// Fewer bytes than a long page header.
    Short { len: usize },
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

/// What the first page header of a sound segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub seg_size: u64,
    pub system_id: u64,
    pub magic: u16,
}

/// Check the first bytes `head` of segment `name` (and its length when known) against the
/// name and, when known, the cluster's system identifier.
///
/// The first segment of a timeline starts as a copy of its parent's: its first page may
/// carry the parent's (older) timeline, never a newer one.
///
/// # Errors
/// The fault found.
pub fn check_segment(
    head: &[u8],
    len: Option<u64>,
    name: &WalFileName,
    sysid: Option<u64>,
) -> Result<SegmentInfo, SegmentFault> {
    if head.len() < LONG_HEADER_LEN {
        return Err(SegmentFault::Short { len: head.len() });
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
        _ => Ok(SegmentInfo { seg_size, system_id: h.system_id, magic: h.magic }),
    }
}

impl SegmentFault {
    /// The error for `what` (an archived object, or a file restored from one) holding
    /// `name`: another cluster's WAL is refused; every other fault is corruption.
    pub fn into_error(self, what: &str, name: &WalFileName) -> Error {
        match self {
            SegmentFault::Short { .. } => Error::corrupt(what, "shorter than a page header"),
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

    /// The error for a file offered to wal-push as `name`: another cluster's WAL is refused;
    /// every other fault is bad input (nothing is archived, PostgreSQL keeps the file).
    pub fn into_input_error(self, name: &str) -> Error {
        match self {
            SegmentFault::Short { len } => {
                Error::Invalid(format!("{name}: wal page header too short: {len} bytes, need {LONG_HEADER_LEN}"))
            }
            SegmentFault::Header(e) => Error::Invalid(format!("{name}: {e}")),
            SegmentFault::Length { len, seg_size } => Error::Invalid(format!(
                "{name}: file is {len} bytes but its page header says the segment size is {seg_size}"
            )),
            SegmentFault::OtherSegment { page_addr } => Error::Invalid(format!(
                "{name}: the page header says this is the segment at {page_addr}; a file archived under another segment's name could never be restored"
            )),
            SegmentFault::NewerTimeline { tli } => Error::Invalid(format!(
                "{name}: its pages are of timeline {tli}, newer than the name's; a file archived under this name could never be restored"
            )),
            SegmentFault::OtherSystem { found, .. } => {
                Error::Refused(format!("{name}: system identifier {found} differs"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitCode;

    const SEG: u64 = 1 << 20;
    const SYSID: u64 = 7_000_000_000_000_000_042;

    fn segment(sysid: u64, tli: u32, segno: u64) -> Vec<u8> {
        crate::wal::synthetic_segment(sysid, tli, segno, SEG as u32, crate::wal::KNOWN_MAGICS[1].0, segno as u8)
    }

    /// Every fault, with the exit class it gets as an archived object and as wal-push input.
    #[test]
    fn each_fault_has_one_class_per_side() {
        let name = WalFileName::from_segno(1, 7, SEG);
        let good = segment(SYSID, 1, 7);
        let check =
            |bytes: &[u8], name: &WalFileName, sysid| check_segment(bytes, Some(bytes.len() as u64), name, sysid);
        let info = check(&good, &name, Some(SYSID)).expect("good");
        assert_eq!((info.seg_size, info.system_id), (SEG, SYSID));
        let cases: Vec<(SegmentFault, ExitCode)> = vec![
            (check(&good[..20], &name, None).expect_err("short"), ExitCode::Corrupt),
            (check(&vec![0u8; SEG as usize], &name, None).expect_err("zeroes"), ExitCode::Corrupt),
            (check(&good[..good.len() - 1], &name, None).expect_err("truncated"), ExitCode::Corrupt),
            (check(&good, &WalFileName::from_segno(1, 8, SEG), None).expect_err("renamed"), ExitCode::Corrupt),
            (check(&segment(SYSID, 2, 7), &name, None).expect_err("newer timeline"), ExitCode::Corrupt),
            (check(&good, &name, Some(SYSID + 1)).expect_err("other cluster"), ExitCode::Refused),
        ];
        for (fault, object_class) in cases {
            let input_class = if object_class == ExitCode::Refused { ExitCode::Refused } else { ExitCode::Config };
            assert_eq!(fault.clone().into_error("obj", &name).exit_code(), object_class, "{fault:?}");
            assert_eq!(fault.clone().into_input_error("f").exit_code(), input_class, "{fault:?}");
        }
        // The first segment of timeline 2 starts as a copy of timeline 1's.
        assert!(check(&good, &WalFileName::from_segno(2, 7, SEG), Some(SYSID)).is_ok());
    }
}
