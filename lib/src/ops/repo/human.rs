//! Human units for the operations commands: ages and durations (`90d`, `1h`, `3d 4h`), and
//! the `--now` time that drills and tests use instead of the clock.

use chrono::{DateTime, TimeDelta, Utc};

use crate::{Error, Result};

/// Parse a duration such as `90d`, `7d`, `1h`, `30m`, `45s`, `2w`, or several together
/// (`1d12h`, `1h 30m`; humantime's units). A bare number is seconds.
///
/// # Errors
/// [`Error::Config`] naming `setting` and the accepted forms.
pub fn parse_duration(setting: &str, value: &str) -> Result<TimeDelta> {
    let bad = || Error::config(setting, format!("{value:?} is not a duration; expected e.g. 90d, 7d, 26h, 30m, 45s"));
    let text = value.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<i64>() {
        return TimeDelta::try_seconds(secs).filter(|d| *d >= TimeDelta::zero()).ok_or_else(bad);
    }
    let parsed = humantime::parse_duration(text).map_err(|_| bad())?;
    TimeDelta::from_std(parsed).map_err(|_| bad())
}

/// A threshold: a duration as [`parse_duration`], or `off` (also `none`, `0`) for no limit.
///
/// # Errors
/// As [`parse_duration`].
pub fn parse_limit(setting: &str, value: &str) -> Result<Option<TimeDelta>> {
    match value.trim() {
        "off" | "none" | "0" => Ok(None),
        v => parse_duration(setting, v).map(Some),
    }
}

/// `--now`: an RFC 3339 time, or the clock when `None`.
///
/// # Errors
/// [`Error::Config`] naming `--now`.
pub fn parse_now(value: Option<&str>) -> Result<DateTime<Utc>> {
    match value {
        None => Ok(Utc::now()),
        Some(v) => DateTime::parse_from_rfc3339(v.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
            Error::config("--now", format!("{v:?} is not an RFC 3339 time ({e}); e.g. 2024-01-15T10:30:00Z"))
        }),
    }
}

/// An age in the two largest units: `3d 4h`, `2h 5m`, `45s`; negative ages (clock skew) are `0s`.
pub fn human_age(age: TimeDelta) -> String {
    let secs = age.num_seconds().max(0);
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// A duration for `--help`-style echoes and tables: `90d`, `26h`, `1h 30m`.
pub fn human_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs > 0 && secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs > 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        human_age(d)
    }
}

/// Seconds as a float, for JSON and metrics.
pub fn seconds(d: TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// A UTC time as the tables print it.
pub fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Bytes in human units: `1.60 GiB`.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let p = |s: &str| parse_duration("--x", s).map(|d| d.num_seconds());
        assert_eq!(p("90d").ok(), Some(90 * 86_400));
        assert_eq!(p("1h").ok(), Some(3600));
        assert_eq!(p("1d12h").ok(), Some(86_400 + 12 * 3600));
        assert_eq!(p("2w").ok(), Some(14 * 86_400));
        assert_eq!(p("45").ok(), Some(45));
        for bad in ["", "h", "1x", "1h2", "-5", "d1"] {
            match p(bad) {
                Err(Error::Config { setting, .. }) => assert_eq!(setting, "--x"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn ages_and_now() {
        assert_eq!(human_age(TimeDelta::seconds(45)), "45s");
        assert_eq!(human_age(TimeDelta::seconds(3 * 86_400 + 4 * 3600 + 7)), "3d 4h");
        assert_eq!(human_age(TimeDelta::seconds(-5)), "0s");
        assert_eq!(human_duration(TimeDelta::days(90)), "90d");
        assert_eq!(human_duration(TimeDelta::hours(26)), "26h");
        let t = parse_now(Some("2024-01-15T10:30:00+01:00")).map(human_time).ok();
        assert_eq!(t.as_deref(), Some("2024-01-15 09:30:00"));
        assert!(matches!(parse_now(Some("yesterday")), Err(Error::Config { .. })));
    }
}
