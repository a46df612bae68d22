//! WAL file names: the four kinds PostgreSQL archives, parsed strictly and printed exactly.
//!
//! PostgreSQL writes every name with `%08X` (`XLogFileName`, `TLHistoryFileName`,
//! `BackupHistoryFileName` in `xlog_internal.h`), so parsing accepts uppercase hex of the
//! exact length and nothing else; a name that parses prints back byte for byte.

use std::fmt;
use std::str::FromStr;

use super::lsn::is_valid_seg_size;
use crate::{Error, Result};

/// Length of a segment name, `XLOG_FNAME_LEN`.
pub const XLOG_FNAME_LEN: usize = 24;

/// The suffixes of the names that are not plain segments (history, partial, backup history):
/// no other dot occurs in a name PostgreSQL archives.
pub const NAME_SUFFIXES: [&str; 3] = [".history", ".partial", ".backup"];
const HISTORY_SUFFIX: &[u8] = NAME_SUFFIXES[0].as_bytes();
const PARTIAL_SUFFIX: &[u8] = NAME_SUFFIXES[1].as_bytes();
const BACKUP_SUFFIX: &[u8] = NAME_SUFFIXES[2].as_bytes();

/// A file name PostgreSQL archives or asks for.
///
/// Timeline 0 never exists, so names with timeline `00000000` are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// A completed segment: `000000010000000A000000FE`.
    Segment { tli: u32, log: u32, seg: u32 },
    /// A segment cut short at promotion or by pg_receivewal: `000000010000000A000000FE.partial`.
    Partial { tli: u32, log: u32, seg: u32 },
    /// A timeline history file: `00000002.history`.
    History { tli: u32 },
    /// A backup history file, named after the backup's start segment and offset in it:
    /// `000000010000000000000002.00000028.backup`.
    Backup { tli: u32, log: u32, seg: u32, offset: u32 },
}

/// How many segments one "xlog id" (the high 32 bits of an LSN) holds
/// (`XLogSegmentsPerXLogId`). 0 if `seg_size` is 0.
pub fn segments_per_xlog_id(seg_size: u64) -> u64 {
    0x1_0000_0000_u64.checked_div(seg_size).unwrap_or(0)
}

impl WalFileName {
    /// Parse a name exactly as PostgreSQL writes it (`IsXLogFileName`,
    /// `IsPartialXLogFileName`, `IsTLHistoryFileName`, `IsBackupHistoryFileName`, but strict
    /// about the backup name's length too).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] (`not a wal file name: "..."`) for anything else: lowercase hex,
    /// another length, another suffix, timeline 0.
    pub fn parse(name: &str) -> Result<Self> {
        parse_bytes(name.as_bytes())
            .filter(|parsed| parsed.tli() != 0)
            .ok_or_else(|| Error::Invalid(format!("not a wal file name: {}", super::quoted(name))))
    }

    /// The segment `segno` of timeline `tli` (`XLogFileName`).
    ///
    /// `seg_size` should pass [`is_valid_seg_size`] and `segno` be below `2^64 / seg_size`
    /// (true of every segment an [`Lsn`](super::Lsn) falls in); otherwise the high part is
    /// truncated as PostgreSQL's `(uint32)` cast does.
    pub fn from_segno(tli: u32, segno: u64, seg_size: u64) -> Self {
        let per_id = segments_per_xlog_id(seg_size).max(1);
        let log = segno.checked_div(per_id).unwrap_or(0);
        let seg = segno.checked_rem(per_id).unwrap_or(0);
        // Truncation as in XLogFileName; seg < per_id <= 2^32 always fits.
        WalFileName::Segment { tli, log: log as u32, seg: seg as u32 }
    }

    /// The segment number (`XLogFromFileName`), or `None` for a history file, an invalid
    /// `seg_size`, or a `seg` part too large for `seg_size` (such a name cannot come from
    /// this cluster).
    pub fn segno(&self, seg_size: u64) -> Option<u64> {
        let (log, seg) = match *self {
            WalFileName::Segment { log, seg, .. }
            | WalFileName::Partial { log, seg, .. }
            | WalFileName::Backup { log, seg, .. } => (u64::from(log), u64::from(seg)),
            WalFileName::History { .. } => return None,
        };
        if !is_valid_seg_size(seg_size) {
            return None;
        }
        let per_id = segments_per_xlog_id(seg_size);
        if seg >= per_id {
            return None;
        }
        log.checked_mul(per_id)?.checked_add(seg)
    }

    /// The timeline the name belongs to.
    pub fn tli(&self) -> u32 {
        match *self {
            WalFileName::Segment { tli, .. }
            | WalFileName::Partial { tli, .. }
            | WalFileName::History { tli }
            | WalFileName::Backup { tli, .. } => tli,
        }
    }

    /// True for a completed segment only.
    pub fn is_segment(&self) -> bool {
        matches!(self, WalFileName::Segment { .. })
    }

    /// True for the kinds whose content starts with a WAL long page header.
    pub fn has_page_header(&self) -> bool {
        matches!(self, WalFileName::Segment { .. } | WalFileName::Partial { .. })
    }

    /// A total order matching archive time order within a cluster:
    /// `(tli, log, seg, kind rank, backup offset)`.
    ///
    /// `History{tli}` sorts before every file of timeline `tli`. For the same segment the
    /// order is segment, backup history file, partial segment: the order of PostgreSQL's
    /// archiver, which sends names in `strcmp` order.
    pub fn sort_key(&self) -> (u32, u32, u32, u8, u32) {
        match *self {
            WalFileName::History { tli } => (tli, 0, 0, 0, 0),
            WalFileName::Segment { tli, log, seg } => (tli, log, seg, 1, 0),
            WalFileName::Backup { tli, log, seg, offset } => (tli, log, seg, 2, offset),
            WalFileName::Partial { tli, log, seg } => (tli, log, seg, 3, 0),
        }
    }

    /// The segment after this one on the same timeline; `None` unless this is a
    /// [`WalFileName::Segment`] valid for `seg_size`, or at the end of the address space.
    pub fn next_segment(&self, seg_size: u64) -> Option<Self> {
        let WalFileName::Segment { tli, .. } = *self else {
            return None;
        };
        let next = self.segno(seg_size)?.checked_add(1)?;
        next.checked_mul(seg_size)?; // the next segment must start at an addressable LSN
        Some(WalFileName::from_segno(tli, next, seg_size))
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalFileName::Segment { tli, log, seg } => write!(f, "{tli:08X}{log:08X}{seg:08X}"),
            WalFileName::Partial { tli, log, seg } => {
                write!(f, "{tli:08X}{log:08X}{seg:08X}.partial")
            }
            WalFileName::History { tli } => write!(f, "{tli:08X}.history"),
            WalFileName::Backup { tli, log, seg, offset } => {
                write!(f, "{tli:08X}{log:08X}{seg:08X}.{offset:08X}.backup")
            }
        }
    }
}

impl FromStr for WalFileName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        WalFileName::parse(name)
    }
}

fn parse_bytes(name: &[u8]) -> Option<WalFileName> {
    if let Some(tli) = name.strip_suffix(HISTORY_SUFFIX).and_then(hex8) {
        return Some(WalFileName::History { tli });
    }
    if let Some(stem) = name.strip_suffix(PARTIAL_SUFFIX) {
        let (tli, log, seg) = segment_parts(stem)?;
        return Some(WalFileName::Partial { tli, log, seg });
    }
    if let Some(stem) = name.strip_suffix(BACKUP_SUFFIX) {
        let (segment, offset) = stem.split_at_checked(XLOG_FNAME_LEN)?;
        let (tli, log, seg) = segment_parts(segment)?;
        let offset = hex8(offset.strip_prefix(b".")?)?;
        return Some(WalFileName::Backup { tli, log, seg, offset });
    }
    let (tli, log, seg) = segment_parts(name)?;
    Some(WalFileName::Segment { tli, log, seg })
}

/// `TTTTTTTTLLLLLLLLSSSSSSSS`, exactly 24 uppercase hex digits.
fn segment_parts(name: &[u8]) -> Option<(u32, u32, u32)> {
    if name.len() != XLOG_FNAME_LEN {
        return None;
    }
    let (tli, rest) = name.split_at_checked(8)?;
    let (log, seg) = rest.split_at_checked(8)?;
    Some((hex8(tli)?, hex8(log)?, hex8(seg)?))
}

/// Exactly eight digits of `0-9A-F`, as `%08X` writes them.
fn hex8(digits: &[u8]) -> Option<u32> {
    if digits.len() != 8 {
        return None;
    }
    digits.iter().try_fold(0_u32, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' | b'A'..=b'F' => char::from(b).to_digit(16)?,
            _ => return None,
        };
        Some((acc << 4) | digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn seg(tli: u32, log: u32, seg: u32) -> WalFileName {
        WalFileName::Segment { tli, log, seg }
    }

    #[test]
    fn parses_every_kind_and_prints_it_back() -> Result<()> {
        let cases = [
            ("000000010000000A000000FE", seg(1, 0xA, 0xFE)),
            ("000000010000000A000000FE.partial", WalFileName::Partial { tli: 1, log: 0xA, seg: 0xFE }),
            ("00000002.history", WalFileName::History { tli: 2 }),
            ("000000010000000000000002.00000028.backup", WalFileName::Backup { tli: 1, log: 0, seg: 2, offset: 0x28 }),
            ("FFFFFFFFFFFFFFFFFFFFFFFF", seg(u32::MAX, u32::MAX, u32::MAX)),
        ];
        for (text, want) in cases {
            let got = WalFileName::parse(text)?;
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
            assert_eq!(text.parse::<WalFileName>()?, want);
        }
        Ok(())
    }

    #[test]
    fn rejects_what_postgresql_does_not_write() {
        for bad in [
            "",
            "000000010000000a000000fe",
            "000000010000000A000000Fe",
            "000000010000000A000000F",
            "000000010000000A000000FE0",
            "000000010000000A000000FE.partia",
            "000000010000000A000000FE.partial.gz",
            "000000010000000A000000FE.zst",
            "000000010000000A000000FE ",
            " 000000010000000A000000FE",
            "+00000010000000A000000FE",
            "0000000G0000000A000000FE",
            "000000010000000A000000FÉ",
            "00000001000000é0A000000F",
            "0000002.history",
            "000000002.history",
            "0000000a.history",
            "00000002.History",
            "00000002.histor",
            ".history",
            "000000010000000000000002.0000028.backup",
            "000000010000000000000002.000000280.backup",
            "000000010000000000000002.00000028.backup.1",
            "000000010000000000000002_00000028.backup",
            "000000010000000000000002.00000028.partial",
            "0000000100000000000000020.0000028.backup",
            "000000000000000000000001",
            "00000000.history",
            "archive_status",
            "\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}.history",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn error_message_names_the_input() {
        let msg = WalFileName::parse("00000002.History").err().map(|e| e.to_string());
        assert_eq!(msg.as_deref(), Some(r#"not a wal file name: "00000002.History""#));
        let msg = WalFileName::parse("").err().map(|e| e.to_string());
        assert_eq!(msg.as_deref(), Some(r#"not a wal file name: """#));
    }

    #[test]
    fn from_segno_for_each_size() {
        assert_eq!(WalFileName::from_segno(1, 0x16 * 256 + 0xB3, 16 * MIB), seg(1, 0x16, 0xB3));
        assert_eq!(WalFileName::from_segno(1, 0x16 * 4096 + 0xB37, MIB), seg(1, 0x16, 0xB37));
        assert_eq!(WalFileName::from_segno(3, 0x16 * 64 + 0x2C, 64 * MIB), seg(3, 0x16, 0x2C));
        assert_eq!(WalFileName::from_segno(2, 0x16 * 4 + 2, 1024 * MIB), seg(2, 0x16, 2));
        assert_eq!(WalFileName::from_segno(1, 1, 16 * MIB).to_string(), "000000010000000000000001");
        // Degenerate sizes do not panic.
        let _ = WalFileName::from_segno(1, u64::MAX, 0);
        let _ = WalFileName::from_segno(1, u64::MAX, 1);
        let _ = WalFileName::from_segno(1, u64::MAX, u64::MAX);
    }

    #[test]
    fn segno_checks_the_size() {
        assert_eq!(seg(1, 0x16, 0xB3).segno(16 * MIB), Some(0x16 * 256 + 0xB3));
        assert_eq!(seg(1, 0x16, 0xB37).segno(MIB), Some(0x16 * 4096 + 0xB37));
        assert_eq!(seg(1, 0x16, 0xB37).segno(16 * MIB), None, "seg too large for 16 MiB");
        assert_eq!(seg(1, 0, 4).segno(1024 * MIB), None);
        assert_eq!(seg(1, 0, 3).segno(1024 * MIB), Some(3));
        assert_eq!(seg(1, 0, 1).segno(0), None);
        assert_eq!(seg(1, 0, 1).segno(3 * MIB), None);
        assert_eq!(WalFileName::History { tli: 2 }.segno(16 * MIB), None);
        let backup = WalFileName::Backup { tli: 1, log: 1, seg: 2, offset: 0x28 };
        assert_eq!(backup.segno(16 * MIB), Some(258));
        let max = seg(1, u32::MAX, 0xFF).segno(16 * MIB);
        assert_eq!(max, Some(u64::MAX / (16 * MIB)));
    }

    #[test]
    fn next_segment_rolls_over_the_xlog_id() {
        assert_eq!(seg(1, 0, 0xFE).next_segment(16 * MIB), Some(seg(1, 0, 0xFF)));
        assert_eq!(seg(1, 0, 0xFF).next_segment(16 * MIB), Some(seg(1, 1, 0)));
        assert_eq!(seg(1, 0, 0xFFF).next_segment(MIB), Some(seg(1, 1, 0)));
        assert_eq!(seg(1, 0, 3).next_segment(1024 * MIB), Some(seg(1, 1, 0)));
        assert_eq!(seg(1, u32::MAX, 0xFF).next_segment(16 * MIB), None);
        assert_eq!(seg(1, 0, 0x100).next_segment(16 * MIB), None);
        assert_eq!(WalFileName::History { tli: 1 }.next_segment(16 * MIB), None);
        let partial = WalFileName::Partial { tli: 1, log: 0, seg: 1 };
        assert_eq!(partial.next_segment(16 * MIB), None);
    }

    #[test]
    fn kinds_and_timelines() {
        let names = [
            seg(1, 0, 1),
            WalFileName::Partial { tli: 2, log: 0, seg: 1 },
            WalFileName::History { tli: 3 },
            WalFileName::Backup { tli: 4, log: 0, seg: 1, offset: 0 },
        ];
        let tlis: Vec<u32> = names.iter().map(WalFileName::tli).collect();
        assert_eq!(tlis, [1, 2, 3, 4]);
        let segs: Vec<bool> = names.iter().map(WalFileName::is_segment).collect();
        assert_eq!(segs, [true, false, false, false]);
        let headers: Vec<bool> = names.iter().map(WalFileName::has_page_header).collect();
        assert_eq!(headers, [true, true, false, false]);
    }

    #[test]
    fn sort_key_follows_archive_order() -> Result<()> {
        let ordered = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000002.00000100.backup",
            "000000010000000000000003",
            "000000010000000000000004.partial",
            "00000002.history",
            "000000020000000000000004",
            "000000020000000100000000",
            "00000003.history",
        ];
        let mut names: Vec<WalFileName> = ordered.iter().rev().map(|n| WalFileName::parse(n)).collect::<Result<_>>()?;
        names.sort_by_key(WalFileName::sort_key);
        let printed: Vec<String> = names.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ordered);
        Ok(())
    }

    #[test]
    fn segments_per_id() {
        assert_eq!(segments_per_xlog_id(MIB), 4096);
        assert_eq!(segments_per_xlog_id(16 * MIB), 256);
        assert_eq!(segments_per_xlog_id(64 * MIB), 64);
        assert_eq!(segments_per_xlog_id(1024 * MIB), 4);
        assert_eq!(segments_per_xlog_id(0), 0);
    }
}
