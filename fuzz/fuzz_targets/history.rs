//! Timeline history files from arbitrary text: errors, never panics; what parses formats
//! back to a file that parses to the same entries (line breaks inside a reason become spaces
//! when formatting, by design).
#![no_main]

use libfuzzer_sys::fuzz_target;
use walvault::wal::timeline::{format_history, parse_history, timeline_of_point};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(entries) = parse_history(text) {
        let printed = format_history(&entries);
        let mut expected = entries.clone();
        for e in &mut expected {
            e.reason = e.reason.replace(['\n', '\r'], " ");
        }
        assert_eq!(parse_history(&printed).expect("formatted history parses"), expected);
        if let Some(last) = entries.last() {
            let _ = timeline_of_point(&entries, last.tli.saturating_add(1), last.switchpoint);
        }
    }
});
