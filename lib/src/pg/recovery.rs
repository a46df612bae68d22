//! Recovery settings for pitr-prepare: `recovery.signal` plus GUCs in `postgresql.auto.conf`.
//!
//! PostgreSQL 12 to 18 read recovery settings the same way (`recovery.signal` and ordinary
//! GUCs), so [`write_recovery`] is the one place that knows it. The settings go between two
//! marker comments at the end of `postgresql.auto.conf`; a later run replaces that block.
//!
//! Every recovery target GUC is written, the unused ones empty and the chosen one last: a
//! later line wins in PostgreSQL's configuration files, so target settings left in the backed
//! up `postgresql.auto.conf` (by another tool, or an earlier restore of the source cluster)
//! can neither add a second target ("multiple recovery targets specified") nor stop a
//! `--latest` recovery early.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};

use crate::error::IoContext;
use crate::wal::Lsn;
use crate::{Error, Result};

/// First line of the block this module writes.
pub const BEGIN_MARKER: &str = "# walvault recovery settings: begin (pitr-prepare replaces this block)";
/// Last line of the block this module writes.
pub const END_MARKER: &str = "# walvault recovery settings: end";

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(DateTime<FixedOffset>),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
    /// Replay all available WAL.
    Latest,
    /// Stop as soon as the backup is consistent.
    Immediate,
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

/// Everything written for a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    pub restore_command: String,
    pub target: RecoveryTarget,
    pub action: TargetAction,
    /// `recovery_target_timeline`: `latest` (the default), `current` or a timeline id.
    pub timeline: Option<String>,
    /// Whether the restored server archives as its configuration says (`true`), or never
    /// (`false`: `archive_mode = 'off'`, which outranks postgresql.conf). Not a no-op
    /// `archive_command`: that would make PostgreSQL recycle WAL it believes archived.
    pub archive: bool,
}

const TIME_FORMS: &str =
    "use 2024-01-15 10:30:00 with optional .fraction and offset (+02, +02:00, UTC, Z), or RFC 3339";

/// Parse a `--target-time` the way an operator types PostgreSQL's `recovery_target_time`:
/// `2024-01-15 10:30:00`, `2024-01-15 10:30` or `2024-01-15` (midnight), with an optional
/// fraction, then an optional zone (`Z`, `UTC`, `GMT`, `+02`, `+0200`, `+02:00`, `-05`), and
/// RFC 3339's `T` separator. No zone means UTC.
///
/// # Errors
/// [`Error::Config`] for setting `--target-time` naming the value and the accepted forms.
pub fn parse_target_time(s: &str) -> Result<DateTime<FixedOffset>> {
    parse_time_inner(s.trim())
        .ok_or_else(|| Error::config("--target-time", format!("{s:?} is not a time: {TIME_FORMS}")))
}

fn parse_time_inner(s: &str) -> Option<DateTime<FixedOffset>> {
    let date_len = s.find([' ', 'T', 't']).unwrap_or(s.len());
    let date = NaiveDate::parse_from_str(s.get(..date_len)?, "%Y-%m-%d").ok()?;
    let rest = s.get(date_len..)?;
    let rest = rest.strip_prefix(['T', 't']).unwrap_or(rest).trim_start();
    let time_len = rest.find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.')).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(time_len);
    let time = if time.is_empty() { NaiveTime::MIN } else { parse_clock(time)? };
    let offset = parse_zone(zone.trim())?;
    date.and_time(time).and_local_timezone(offset).single()
}

/// `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction` (up to nanoseconds).
fn parse_clock(s: &str) -> Option<NaiveTime> {
    let (hms, frac) = match s.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (s, None),
    };
    let fields: Vec<&str> = hms.split(':').collect();
    let num =
        |f: &str| (f.len() == 2 && f.bytes().all(|b| b.is_ascii_digit())).then(|| f.parse::<u32>().ok()).flatten();
    let (h, m, sec) = match fields.as_slice() {
        [h, m] if frac.is_none() => (num(h)?, num(m)?, 0),
        [h, m, sec] => (num(h)?, num(m)?, num(sec)?),
        _ => return None,
    };
    let nanos = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    NaiveTime::from_hms_nano_opt(h, m, sec, nanos)
}

/// `""`, `Z`, `UTC`, `GMT` or `±HH`, `±HHMM`, `±HH:MM`.
fn parse_zone(z: &str) -> Option<FixedOffset> {
    if z.is_empty() || ["z", "utc", "gmt"].iter().any(|n| z.eq_ignore_ascii_case(n)) {
        return FixedOffset::east_opt(0);
    }
    let sign = match z.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = z[1..].chars().filter(|&c| c != ':').collect();
    let colons = z[1..].matches(':').count();
    let ok_shape = match (digits.len(), colons) {
        (2, 0) | (4, 0) => true,
        (4, 1) => z.as_bytes().get(3) == Some(&b':'),
        _ => false,
    };
    if !ok_shape || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits.get(2..).filter(|m| !m.is_empty()).map_or(Some(0), |m| m.parse().ok())?;
    if hours > 15 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// Quote a value for a PostgreSQL configuration file, as `ALTER SYSTEM` does: single quotes
/// and backslashes doubled; newlines and carriage returns as `\n` and `\r`.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An LSN as PostgreSQL prints it: `16/B374D848`.
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn.0 >> 32, lsn.0 & 0xFFFF_FFFF)
}

/// The block appended to `postgresql.auto.conf`, markers included, ending in a newline.
pub fn render(settings: &RecoverySettings) -> String {
    let chosen: Option<(&str, String)> = match &settings.target {
        RecoveryTarget::Time(t) => Some(("recovery_target_time", t.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string())),
        RecoveryTarget::Lsn(l) => Some(("recovery_target_lsn", format_lsn(*l))),
        RecoveryTarget::Xid(x) => Some(("recovery_target_xid", x.to_string())),
        RecoveryTarget::Name(n) => Some(("recovery_target_name", n.clone())),
        RecoveryTarget::Immediate => Some(("recovery_target", "immediate".to_owned())),
        RecoveryTarget::Latest => None,
    };
    let action = match settings.action {
        TargetAction::Promote => "promote",
        TargetAction::Pause => "pause",
        TargetAction::Shutdown => "shutdown",
    };
    let mut lines = vec![BEGIN_MARKER.to_owned(), format!("restore_command = {}", quote(&settings.restore_command))];
    let targets = [
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
    ];
    for name in targets.iter().filter(|&&n| chosen.as_ref().is_none_or(|(c, _)| *c != n)) {
        lines.push(format!("{name} = ''"));
    }
    if let Some((name, value)) = &chosen {
        lines.push(format!("{name} = {}", quote(value)));
    }
    lines.push("recovery_target_inclusive = 'on'".to_owned());
    lines.push(format!("recovery_target_action = '{action}'"));
    let timeline = settings.timeline.as_deref().unwrap_or("latest");
    lines.push(format!("recovery_target_timeline = {}", quote(timeline)));
    if !settings.archive {
        lines.push("archive_mode = 'off'".to_owned());
    }
    lines.push(END_MARKER.to_owned());
    lines.join("\n") + "\n"
}

/// `text` without any block written by [`render`] (an unterminated block runs to the end).
pub fn strip_block(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == BEGIN_MARKER {
            inside = true;
        } else if inside && bare == END_MARKER {
            inside = false;
        } else if !inside {
            out.push_str(line);
        }
    }
    out
}

fn check_settings(settings: &RecoverySettings) -> Result<()> {
    if settings.restore_command.contains('\0') {
        return Err(Error::config("restore_command", "contains a NUL byte"));
    }
    if let RecoveryTarget::Name(n) = &settings.target
        && (n.is_empty() || n.contains('\0'))
    {
        return Err(Error::config("--target-name", "must be a non-empty name without NUL bytes"));
    }
    if let Some(tl) = &settings.timeline {
        let numeric = tl.strip_prefix("0x").map_or_else(
            || !tl.is_empty() && tl.bytes().all(|b| b.is_ascii_digit()),
            |h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()),
        );
        if !(numeric || tl == "latest" || tl == "current") {
            return Err(Error::config("--target-timeline", format!("{tl:?} is not latest, current or a timeline id")));
        }
    }
    Ok(())
}

/// Write `recovery.signal` and the recovery settings into `pgdata` (both 0600, owned like
/// PGDATA when run as root), replacing an earlier walvault block in `postgresql.auto.conf`.
/// The configuration file is replaced atomically (temporary file, fsync, rename).
///
/// # Errors
/// [`Error::Config`] for a setting that cannot be written; [`Error::Io`] naming the file.
pub fn write_recovery(pgdata: &Path, settings: &RecoverySettings) -> Result<()> {
    check_settings(settings)?;
    let owner = fs::metadata(pgdata).with_path(pgdata)?;
    let conf = pgdata.join("postgresql.auto.conf");
    let existing = match fs::read_to_string(&conf) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&conf, e)),
    };
    let mut text = strip_block(&existing);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&render(settings));
    let tmp = pgdata.join("postgresql.auto.conf.walvault");
    write_private(&tmp, text.as_bytes(), &owner)?;
    fs::rename(&tmp, &conf).with_path(&conf)?;
    write_private(&pgdata.join("recovery.signal"), b"", &owner)?;
    fs::File::open(pgdata).and_then(|d| d.sync_all()).with_path(pgdata)
}

fn write_private(path: &Path, data: &[u8], owner: &fs::Metadata) -> Result<()> {
    use std::io::Write;
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).with_path(path)?;
    f.write_all(data).and_then(|()| f.sync_all()).with_path(path)?;
    let meta = f.metadata().with_path(path)?;
    if meta.uid() != owner.uid() || meta.gid() != owner.gid() {
        std::os::unix::fs::fchown(&f, Some(owner.uid()), Some(owner.gid())).with_path(path)?;
    }
    Ok(())
}

/// Rewrite `tablespace_map` (from the backup stop call) for tablespaces restored elsewhere:
/// each `<oid> <path>` line whose oid is in `remap` gets the new path. PostgreSQL recreates
/// the `pg_tblspc` links from this file when it starts, so it must agree with the restore.
/// Paths are backslash-escaped as PostgreSQL writes them (`\\`, `\<newline>`, `\<return>`).
///
/// # Errors
/// [`Error::Invalid`] for a line that is not `<oid> <path>`.
pub fn rewrite_tablespace_map(map: &str, remap: &BTreeMap<u32, PathBuf>) -> Result<String> {
    let mut out = String::with_capacity(map.len());
    let mut record = String::new();
    let mut chars = map.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                record.push(c);
                record.extend(chars.next());
            }
            '\n' => {
                out.push_str(&rewrite_record(&record, remap)?);
                out.push('\n');
                record.clear();
            }
            c => record.push(c),
        }
    }
    if !record.is_empty() {
        out.push_str(&rewrite_record(&record, remap)?);
    }
    Ok(out)
}

fn rewrite_record(record: &str, remap: &BTreeMap<u32, PathBuf>) -> Result<String> {
    let bad = || Error::Invalid(format!("tablespace_map line {record:?} is not <oid> <path>"));
    let (oid, _path) = record.split_once(' ').ok_or_else(bad)?;
    let oid: u32 = oid.parse().map_err(|_| bad())?;
    let Some(new) = remap.get(&oid) else {
        return Ok(record.to_owned());
    };
    let new =
        new.to_str().ok_or_else(|| Error::Invalid(format!("tablespace {oid}: new location is not valid utf-8")))?;
    let mut escaped = String::with_capacity(new.len());
    for c in new.chars() {
        if matches!(c, '\\' | '\n' | '\r') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    Ok(format!("{oid} {escaped}"))
}

#[cfg(test)]
mod tests;
