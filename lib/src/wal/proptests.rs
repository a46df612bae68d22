//! Property tests across the wal module: round trips, and no panic on any input.

use proptest::prelude::*;

use super::*;

/// Every valid segment size, 1 MiB to 1 GiB.
fn seg_size() -> impl Strategy<Value = u64> {
    (20_u32..=30).prop_map(|shift| 1_u64 << shift)
}

/// Strings close enough to WAL names to reach the deeper parsing paths.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9A-F]{0,26}",
        "[0-9A-Fa-f]{24}(\\.partial|\\.history|\\.backup|\\.[0-9A-F]{8}\\.backup)?",
        "[0-9A-F]{8}\\.histor[a-z]?",
        "[0-9A-F]{24}\\.[0-9A-Fé]{7,9}\\.backup",
        "[0-9A-F\\.a-z/é\\x00]{0,45}",
        any::<String>(),
    ]
}

/// Text close enough to a history file to reach every check.
fn history_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "([0-9]{0,11}[\t ]{0,2}[0-9A-Fa-f/]{0,20}[\t ]?[ -~]{0,10}\n?){0,5}",
        "([1-9]\t[0-9]/[0-9A-F]{1,3}\t[a-z ]{0,8}\n){0,6}",
        "\\PC{0,80}",
    ]
}

fn history_entries() -> impl Strategy<Value = Vec<HistoryEntry>> {
    prop::collection::vec((1_u32..1000, any::<u32>(), "[ -~]{0,40}"), 0..8).prop_map(|raw| {
        let (mut tli, mut lsn) = (0_u32, 0_u64);
        raw.into_iter()
            .map(|(tli_step, lsn_step, reason)| {
                tli = tli.saturating_add(tli_step);
                lsn = lsn.saturating_add(u64::from(lsn_step));
                HistoryEntry { tli, switchpoint: Lsn(lsn), reason: reason.trim().to_string() }
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn lsn_display_parse_round_trip(value in any::<u64>()) {
        let text = Lsn(value).to_string();
        prop_assert_eq!(text.parse::<Lsn>().ok(), Some(Lsn(value)));
        prop_assert_eq!(text.to_lowercase().parse::<Lsn>().ok(), Some(Lsn(value)));
    }

    #[test]
    fn lsn_parse_never_panics(text in "[0-9A-Fa-fx/+ -]{0,20}|\\PC{0,20}") {
        if let Ok(lsn) = text.parse::<Lsn>() {
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().ok(), Some(lsn));
        }
    }

    #[test]
    fn lsn_segment_math_round_trips(value in any::<u64>(), size in seg_size()) {
        let lsn = Lsn(value);
        let (segno, offset) = (lsn.segment_number(size), lsn.segment_offset(size));
        prop_assert!(offset < size);
        prop_assert_eq!(Lsn::from_segment(segno, offset, size), lsn);
        let name = WalFileName::from_segno(1, segno, size);
        prop_assert_eq!(name.segno(size), Some(segno));
    }

    #[test]
    fn wal_file_name_segno_round_trip(tli in 1_u32.., raw in any::<u64>(), size in seg_size()) {
        let segno = raw % (u64::MAX / size + 1);
        let name = WalFileName::from_segno(tli, segno, size);
        let text = name.to_string();
        prop_assert_eq!(text.len(), 24);
        let parsed = WalFileName::parse(&text);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&name));
        prop_assert_eq!(name.segno(size), Some(segno));
        prop_assert_eq!(name.tli(), tli);
        if let Some(next) = name.next_segment(size) {
            prop_assert_eq!(next.segno(size), Some(segno + 1));
            prop_assert!(next.sort_key() > name.sort_key());
        }
    }

    #[test]
    fn wal_file_name_parse_never_panics(text in name_like()) {
        if let Ok(name) = WalFileName::parse(&text) {
            prop_assert_eq!(name.to_string(), text);
            prop_assert!(name.tli() != 0);
            for size in [1_u64 << 20, 1 << 24, 1 << 30] {
                let _ = name.segno(size);
                let _ = name.next_segment(size);
            }
        }
    }

    #[test]
    fn every_other_kind_round_trips(
        tli in 1_u32.., log in any::<u32>(), seg in any::<u32>(), offset in any::<u32>(),
    ) {
        for name in [
            WalFileName::Partial { tli, log, seg },
            WalFileName::History { tli },
            WalFileName::Backup { tli, log, seg, offset },
        ] {
            prop_assert_eq!(WalFileName::parse(&name.to_string()).ok(), Some(name));
        }
    }

    #[test]
    fn parse_long_header_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(header) = parse_long_header(&bytes) {
            prop_assert!(bytes.len() >= LONG_HEADER_LEN);
            prop_assert!(is_valid_seg_size(u64::from(header.seg_size)));
        }
    }

    #[test]
    fn parse_long_header_of_mutated_real_header(
        at in 0_usize..LONG_HEADER_LEN, byte in any::<u8>(), cut in 0_usize..=LONG_HEADER_LEN,
    ) {
        let mut bytes = synthetic_segment(7, 2, 3, 1 << 24, 0xD118, 0);
        bytes.truncate(LONG_HEADER_LEN);
        if let Some(b) = bytes.get_mut(at) {
            *b = byte;
        }
        bytes.truncate(cut);
        let _ = parse_long_header(&bytes);
    }

    #[test]
    fn header_encode_parse_round_trip(
        magic in any::<u16>(), extra in 0_u16..16, tli in 1_u32..,
        segno in 0_u64..(1 << 30), shift in 20_u32..=30, block_shift in 10_u32..=15,
        system_id in any::<u64>(),
    ) {
        let seg_size = 1_u32 << shift;
        let header = LongPageHeader {
            magic, info: extra | header::XLP_LONG_HEADER, tli,
            page_addr: Lsn::from_segment(segno, 0, u64::from(seg_size)),
            system_id, seg_size, block_size: 1 << block_shift,
        };
        prop_assert_eq!(parse_long_header(&header.to_bytes()).ok(), Some(header));
    }

    #[test]
    fn history_format_parse_round_trip(entries in history_entries()) {
        let text = format_history(&entries);
        prop_assert_eq!(parse_history(&text).ok(), Some(entries));
    }

    #[test]
    fn history_parse_never_panics(text in history_like()) {
        if let Ok(entries) = parse_history(&text) {
            prop_assert!(entries.windows(2).all(|w| matches!(w, [a, b] if a.tli < b.tli)));
            for lsn in [0, 0x1000, u64::MAX] {
                let _ = timeline_of_point(&entries, u32::MAX, Lsn(lsn));
            }
        }
    }
}
