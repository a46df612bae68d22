//! Timeline history files (`00000002.history`), as `src/backend/access/transam/timeline.c`
//! reads and writes them.
//!
//! The history file of timeline N lists N's ancestors, oldest first, one line each:
//! `parentTLI<TAB>switchpoint<TAB>reason`, where the switchpoint is the LSN at which the
//! parent was left. Blank lines and lines starting with `#` are ignored.

use super::lsn::Lsn;
use crate::{Error, Result};

/// One line of a history file: timeline `tli` ended at `switchpoint`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub tli: u32,
    /// The first LSN that is no longer on `tli`.
    pub switchpoint: Lsn,
    /// Free text PostgreSQL wrote, e.g. `no recovery target specified`.
    pub reason: String,
}

/// Parse a history file (`readTimeLineHistory`).
///
/// Fields are separated by whitespace as `sscanf("%u\t%X/%X")` allows; the reason is the
/// rest of the line without surrounding whitespace and may be empty. Beyond PostgreSQL's own
/// checks, timeline 0 is refused. Switchpoints may decrease: PostgreSQL writes that when a
/// recovery that followed a newer timeline stops before the point where it branched (the
/// new timeline then inherits only the older ancestor's WAL up to its own switchpoint).
///
/// # Errors
///
/// [`Error::Invalid`] quoting the offending line: a timeline ID that is not a decimal
/// `u32`, a switchpoint that is not an LSN, or timeline IDs that do not increase.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>> {
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for line in text.split('\n') {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let entry = parse_line(trimmed)
            .map_err(|why| Error::Invalid(format!("syntax error in history file: {}: {why}", super::quoted(line))))?;
        let invalid =
            |why: &str| Error::Invalid(format!("invalid data in history file: {}: {why}", super::quoted(line)));
        if entry.tli == 0 {
            return Err(invalid("timeline 0 does not exist"));
        }
        if let Some(last) = entries.last()
            && entry.tli <= last.tli
        {
            return Err(invalid("timeline ids must be in increasing sequence"));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> std::result::Result<HistoryEntry, &'static str> {
    let (tli, rest) = split_token(line);
    let tli = parse_decimal(tli).ok_or("expected a numeric timeline id")?;
    let (lsn, reason) = split_token(rest);
    let switchpoint = lsn.parse().map_err(|_| "expected a write-ahead log switchpoint location")?;
    Ok(HistoryEntry { tli, switchpoint, reason: reason.trim().to_string() })
}

/// The first whitespace-delimited token and the rest after the whitespace that follows it.
fn split_token(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.split_once(char::is_whitespace) {
        Some((token, rest)) => (token, rest.trim_start()),
        None => (text, ""),
    }
}

/// ASCII digits only (no sign), fitting in a `u32`.
fn parse_decimal(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Format a history file as PostgreSQL's `writeTimeLineHistory` builds it over successive
/// promotions: each line copied from the parent's file, then a newline, then the new line.
/// Line breaks in a reason become spaces so the result always parses back.
pub fn format_history(entries: &[HistoryEntry]) -> String {
    let mut out = String::new();
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let reason = entry.reason.replace(['\n', '\r'], " ");
        out.push_str(&format!("{}\t{}\t{}\n", entry.tli, entry.switchpoint, reason));
    }
    out
}

/// Given the history of timeline `tli`, the timeline that contains `lsn`
/// (`tliOfPointInHistory`).
///
/// Each ancestor holds the LSNs from the previous switchpoint up to, but not including, its
/// own; `tli` itself holds everything from the last switchpoint on. So an LSN equal to a
/// switchpoint belongs to the child timeline.
pub fn timeline_of_point(history: &[HistoryEntry], tli: u32, lsn: Lsn) -> u32 {
    history.iter().find(|entry| lsn < entry.switchpoint).map_or(tli, |entry| entry.tli)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by PostgreSQL 17.11 promoting twice (`--wal-segsize=1`).
    const PG17_TLI2: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/wal/pg17-00000002.history"));
    const PG17_TLI3: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/wal/pg17-00000003.history"));
    /// Written by PostgreSQL 18.6 promoting once (`--wal-segsize=64`).
    const PG18_TLI2: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/wal/pg18-00000002.history"));

    fn entry(tli: u32, switchpoint: u64, reason: &str) -> HistoryEntry {
        HistoryEntry { tli, switchpoint: Lsn(switchpoint), reason: reason.to_string() }
    }

    #[test]
    fn real_files_parse_and_format_back() -> Result<()> {
        const REASON: &str = "no recovery target specified";
        let cases = [
            (PG17_TLI2, vec![entry(1, 0x60_0238, REASON)]),
            (PG17_TLI3, vec![entry(1, 0x60_0238, REASON), entry(2, 0x80_00C8, REASON)]),
            (PG18_TLI2, vec![entry(1, 0x800_0238, REASON)]),
        ];
        for (text, want) in cases {
            let got = parse_history(text)?;
            assert_eq!(got, want);
            assert_eq!(format_history(&got), text, "byte-exact like writeTimeLineHistory");
        }
        Ok(())
    }

    #[test]
    fn comments_blank_lines_and_spacing() -> Result<()> {
        let text = "# written by hand\n\n   \n  1\t0/16B3D48\tbefore 2000-01-01 00:00:00+00\r\n\
                    # another comment\n2 A/0   reason with  spaces  \n5\t10/FF\n";
        let want = vec![
            entry(1, 0x16B_3D48, "before 2000-01-01 00:00:00+00"),
            entry(2, 0xA_0000_0000, "reason with  spaces"),
            entry(5, 0x10_0000_00FF, ""),
        ];
        assert_eq!(parse_history(text)?, want);
        assert_eq!(parse_history("")?, vec![]);
        assert_eq!(parse_history("\n# only comments\n")?, vec![]);
        Ok(())
    }

    #[test]
    fn garbage_is_refused_with_the_line() {
        let got = parse_history("bogus line\n").err().map(|e| e.to_string());
        let want = r#"syntax error in history file: "bogus line": expected a numeric timeline id"#;
        assert_eq!(got.as_deref(), Some(want));

        const SYNTAX: &str = "syntax error";
        const INVALID: &str = "invalid data";
        const NO_TLI: &str = "expected a numeric timeline id";
        const NO_LSN: &str = "expected a write-ahead log switchpoint location";
        const ORDER: &str = "timeline ids must be in increasing sequence";
        let cases = [
            ("7\n", "7", SYNTAX, NO_LSN),
            ("1\t0/10x\tr", "1\t0/10x\tr", SYNTAX, NO_LSN),
            ("1\t0/\tr", "1\t0/\tr", SYNTAX, NO_LSN),
            ("-1\t0/10\tr", "-1\t0/10\tr", SYNTAX, NO_TLI),
            ("4294967296\t0/10", "4294967296\t0/10", SYNTAX, NO_TLI),
            ("0\t0/10\tr", "0\t0/10\tr", INVALID, "timeline 0 does not exist"),
            ("2\t0/10\tx\n1\t0/20\ty\n", "1\t0/20\ty", INVALID, ORDER),
            ("2\t0/10\tx\n2\t0/20\ty\n", "2\t0/20\ty", INVALID, ORDER),
        ];
        for (text, line, kind, why) in cases {
            let got = parse_history(text).err().map(|e| e.to_string());
            let want = format!("{kind} in history file: {line:?}: {why}");
            assert_eq!(got, Some(want), "{text:?}");
        }
    }

    #[test]
    fn timeline_of_point_follows_tli_of_point_in_history() -> Result<()> {
        let history = parse_history(PG17_TLI3)?;
        assert_eq!(timeline_of_point(&history, 3, Lsn(0)), 1);
        assert_eq!(timeline_of_point(&history, 3, Lsn(0x60_0237)), 1);
        assert_eq!(timeline_of_point(&history, 3, Lsn(0x60_0238)), 2, "switchpoint is on the child");
        assert_eq!(timeline_of_point(&history, 3, Lsn(0x80_00C7)), 2);
        assert_eq!(timeline_of_point(&history, 3, Lsn(0x80_00C8)), 3);
        assert_eq!(timeline_of_point(&history, 3, Lsn(u64::MAX)), 3);
        assert_eq!(timeline_of_point(&[], 1, Lsn(0x1234)), 1);
        Ok(())
    }

    #[test]
    fn format_keeps_reasons_on_one_line() -> Result<()> {
        let entries = vec![entry(1, 0x10, "two\nlines"), entry(4, 0x20, "")];
        let text = format_history(&entries);
        assert_eq!(text, "1\t0/10\ttwo lines\n\n4\t0/20\t\n");
        assert_eq!(parse_history(&text)?, vec![entry(1, 0x10, "two lines"), entry(4, 0x20, "")]);
        Ok(())
    }
}
