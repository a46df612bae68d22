//! Log sequence numbers and the segment arithmetic of `xlog_internal.h`.
//!
//! Every helper takes the segment size explicitly: it is a property of the cluster
//! (`initdb --wal-segsize`), not a constant. Helpers are named after the PostgreSQL macros
//! they mirror. None of them panics: a segment size of 0 yields 0 instead of a division
//! fault, and sums that would pass `u64::MAX` saturate or return `None`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Smallest WAL segment size PostgreSQL accepts (`WalSegMinSize`).
pub const WAL_SEG_MIN_SIZE: u64 = 1024 * 1024;
/// Largest WAL segment size PostgreSQL accepts (`WalSegMaxSize`).
pub const WAL_SEG_MAX_SIZE: u64 = 1024 * 1024 * 1024;
/// The default WAL segment size, 16 MiB.
pub const DEFAULT_SEG_SIZE: u64 = 16 * 1024 * 1024;

/// A WAL position (`XLogRecPtr`), printed as PostgreSQL does: `16/B374D848`.
///
/// Serializes as that string, so manifests stay readable and match what `psql` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `InvalidXLogRecPtr`.
    pub const INVALID: Lsn = Lsn(0);

    /// True unless this is `InvalidXLogRecPtr` (`XLogRecPtrIsValid`).
    pub fn is_valid(self) -> bool {
        self != Lsn::INVALID
    }

    /// The number of the segment holding this position (`XLByteToSeg`). 0 if `seg_size` is 0.
    pub fn segment_number(self, seg_size: u64) -> u64 {
        self.0.checked_div(seg_size).unwrap_or(0)
    }

    /// The byte offset of this position inside its segment (`XLogSegmentOffset`).
    /// 0 if `seg_size` is 0.
    pub fn segment_offset(self, seg_size: u64) -> u64 {
        self.0.checked_rem(seg_size).unwrap_or(0)
    }

    /// The position `offset` bytes into segment `segno` (`XLogSegNoOffsetToRecPtr`).
    ///
    /// Saturates at `Lsn(u64::MAX)` where PostgreSQL's unsigned arithmetic would wrap; no
    /// segment number derived from a real LSN gets there.
    pub fn from_segment(segno: u64, offset: u64, seg_size: u64) -> Lsn {
        Lsn(segno.saturating_mul(seg_size).saturating_add(offset))
    }

    /// `self + n`, or `None` past the end of the WAL address space.
    pub fn checked_add(self, n: u64) -> Option<Lsn> {
        self.0.checked_add(n).map(Lsn)
    }

    /// The high half printed before the slash (the old "xlog id").
    pub fn hi(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The low half printed after the slash.
    pub fn lo(self) -> u32 {
        // Truncation to the low 32 bits is the point.
        self.0 as u32
    }
}

/// True for a power of two from 1 MiB to 1 GiB (`IsValidWalSegSize`).
pub fn is_valid_seg_size(seg_size: u64) -> bool {
    seg_size.is_power_of_two() && (WAL_SEG_MIN_SIZE..=WAL_SEG_MAX_SIZE).contains(&seg_size)
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.hi(), self.lo())
    }
}

impl FromStr for Lsn {
    type Err = Error;

    /// Parse `X/X` as `pg_lsn` input does: hexadecimal in either case, one to eight digits
    /// on each side of the slash, nothing else (no sign, no spaces, no `0x`).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the text.
    fn from_str(text: &str) -> Result<Lsn> {
        let invalid = || Error::Invalid(format!("invalid lsn: {}", super::quoted(text)));
        let (hi, lo) = text.split_once('/').ok_or_else(invalid)?;
        let hi = parse_hex_half(hi).ok_or_else(invalid)?;
        let lo = parse_hex_half(lo).ok_or_else(invalid)?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// One to eight hex digits of either case. `from_str_radix` alone would also take a sign.
fn parse_hex_half(digits: &str) -> Option<u32> {
    let ok = (1..=8).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit());
    if ok { u32::from_str_radix(digits, 16).ok() } else { None }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Lsn, D::Error> {
        struct LsnVisitor;
        impl serde::de::Visitor<'_> for LsnVisitor {
            type Value = Lsn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an lsn such as \"16/B374D848\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Lsn, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(LsnVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const SIZES: [u64; 4] = [MIB, 16 * MIB, 64 * MIB, 1024 * MIB];

    #[test]
    fn parse_and_display() -> Result<()> {
        assert_eq!("16/B374D848".parse::<Lsn>()?, Lsn(0x16_B374_D848));
        assert_eq!("16/b374d848".parse::<Lsn>()?, Lsn(0x16_B374_D848));
        assert_eq!("0/0".parse::<Lsn>()?, Lsn::INVALID);
        assert_eq!("00000000/00000001".parse::<Lsn>()?, Lsn(1));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>()?, Lsn(u64::MAX));
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0x0060_0238).to_string(), "0/600238");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!(Lsn::INVALID.to_string(), "0/0");
        Ok(())
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/0/0",
            "+1/0",
            "1/-0",
            " 1/0",
            "1/0 ",
            "0x1/0",
            "1 /0",
            "123456789/0",
            "0/123456789",
            "G/0",
            "0/é",
            "é/0",
            "1/2\n",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parse_error_names_the_text() {
        let err = "16/XYZ".parse::<Lsn>().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some(r#"invalid lsn: "16/XYZ""#));
    }

    #[test]
    fn serde_uses_the_text_form() -> std::result::Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_string(&Lsn(0x16_B374_D848))?, r#""16/B374D848""#);
        assert_eq!(serde_json::from_str::<Lsn>(r#""16/b374d848""#)?, Lsn(0x16_B374_D848));
        assert!(serde_json::from_str::<Lsn>(r#""16""#).is_err());
        assert!(serde_json::from_str::<Lsn>("5").is_err());
        Ok(())
    }

    #[test]
    fn segment_math_for_each_size() {
        for size in SIZES {
            let lsn = Lsn(0x16_B374_D848);
            let segno = lsn.segment_number(size);
            let offset = lsn.segment_offset(size);
            assert_eq!(segno, 0x16_B374_D848 / size, "size {size}");
            assert!(offset < size);
            assert_eq!(Lsn::from_segment(segno, offset, size), lsn);
            assert_eq!(Lsn::from_segment(segno + 1, 0, size).segment_number(size), segno + 1);
            assert_eq!(Lsn(u64::MAX).segment_number(size), u64::MAX / size);
            assert_eq!(Lsn(u64::MAX).segment_offset(size), size - 1);
        }
    }

    #[test]
    fn segment_math_known_answers() {
        // 16/B374D848 is in 0000000100000016000000B3 with 16 MiB segments.
        assert_eq!(Lsn(0x16_B374_D848).segment_number(16 * MIB), 0x16 * 256 + 0xB3);
        assert_eq!(Lsn(0x16_B374_D848).segment_offset(16 * MIB), 0x74_D848);
        assert_eq!(Lsn(0x16_B374_D848).segment_number(MIB), 0x16 * 4096 + 0xB37);
        assert_eq!(Lsn(0x16_B374_D848).segment_number(64 * MIB), 0x16 * 64 + 0x2C);
        assert_eq!(Lsn(0x16_B374_D848).segment_number(1024 * MIB), 0x16 * 4 + 2);
        assert_eq!(Lsn(0x16_B374_D848).segment_offset(1024 * MIB), 0x3374_D848);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        assert_eq!(Lsn(5).segment_number(0), 0);
        assert_eq!(Lsn(5).segment_offset(0), 0);
        assert_eq!(Lsn::from_segment(u64::MAX, 1, 16 * MIB), Lsn(u64::MAX));
        assert_eq!(Lsn::from_segment(1, u64::MAX, 16 * MIB), Lsn(u64::MAX));
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(1).checked_add(2), Some(Lsn(3)));
    }

    #[test]
    fn valid_seg_sizes() {
        for size in SIZES.into_iter().chain([2 * MIB, 512 * MIB]) {
            assert!(is_valid_seg_size(size), "{size}");
        }
        for size in [0, 1, MIB / 2, MIB + 1, 3 * MIB, 2048 * MIB, u64::MAX, 1 << 63] {
            assert!(!is_valid_seg_size(size), "{size}");
        }
    }
}
