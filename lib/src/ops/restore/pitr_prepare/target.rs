//! Which timeline a restore follows (`--target-timeline`, PostgreSQL's
//! `recovery_target_timeline`), and whether the archive reaches the target on that timeline.
//!
//! PostgreSQL's default, `latest`, follows the highest timeline found by probing history
//! files upward from the backup's timeline (`findNewestTimeLine`), not the one being
//! written: after a side restore archived a timeline 2 beside a primary still on timeline 1,
//! `latest` follows the side branch. So the check runs on the timeline PostgreSQL will follow,
//! the resolved number is written into the recovery settings, and a `latest` that is only a
//! default is refused when another branch through the backup was written at the same time.

use chrono::Utc;

use crate::ops::Repo;
use crate::ops::repo::catalog::{BackupMetadata, ChainEnd, WalArchive};
use crate::ops::repo::human::human_time;
use crate::ops::repo::timelines::{self, TimelineInfo};
use crate::pg::recovery::RecoveryTarget;
use crate::{Error, Result};

/// `--target-timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The highest timeline after the backup's (PostgreSQL's default).
    Latest,
    /// The backup's own timeline.
    Current,
    /// This timeline.
    Id(u32),
}

impl std::str::FromStr for TimelineChoice {
    type Err = Error;

    /// `latest`, `current`, or a timeline id in decimal or `0x` hexadecimal, as PostgreSQL
    /// reads `recovery_target_timeline`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let digits = |d: &str, radix: u32| {
            (!d.is_empty() && d.chars().all(|c| c.is_digit(radix)))
                .then(|| u32::from_str_radix(d, radix).ok())
                .flatten()
        };
        let id = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => digits(hex, 16),
            None => digits(t, 10),
        };
        match (t, id) {
            ("latest", _) => Ok(Self::Latest),
            ("current", _) => Ok(Self::Current),
            (_, Some(n)) if n > 0 => Ok(Self::Id(n)),
            _ => Err(Error::config(
                "--target-timeline",
                format!("{s:?} is not latest, current or a timeline id (1 or more)"),
            )),
        }
    }
}

/// The timeline PostgreSQL follows from backup `b` (`None`: its default, `latest`).
pub fn resolve(archive: &WalArchive, b: &BackupMetadata, choice: Option<TimelineChoice>) -> u32 {
    match choice.unwrap_or(TimelineChoice::Latest) {
        TimelineChoice::Latest => archive.newest_timeline_from(b.timeline),
        TimelineChoice::Current => b.timeline,
        TimelineChoice::Id(n) => n,
    }
}

/// The archive must hold every WAL file from the backup's start to the target, on the
/// timeline recovery follows.
///
/// # Errors
/// [`Error::Refused`] naming the timeline, what is missing and the newest reachable point;
/// a missing history file; storage failures.
pub async fn check_wal(
    repo: &Repo,
    archive: &WalArchive,
    b: &BackupMetadata,
    target: &RecoveryTarget,
    choice: Option<TimelineChoice>,
) -> Result<ChainEnd> {
    let tli = resolve(archive, b, choice);
    let end = archive.end_on(repo, b, tli).await.map_err(|e| not_through(e, archive, b, choice))?;
    if choice.is_none() {
        refuse_two_branches(repo, archive, b, tli).await?;
    }
    let newest = match end.last_archived_at {
        Some(t) => format!("{} (segment {}, archived {} UTC)", end.last_lsn, end.last_segment, human_time(t)),
        None => format!("{} (segment {})", end.last_lsn, end.last_segment),
    };
    let missing = end.gap.clone().unwrap_or_else(|| "the next segment (not archived yet)".to_string());
    let refuse = |what: String, hint: Option<String>| {
        let e = Error::Refused(format!(
            "{what}: missing {missing}; the newest point the archive reaches is {newest} on timeline {tli}"
        ));
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    };
    if end.last_lsn < b.stop_lsn {
        let what = format!("the archive cannot make backup {} consistent (it needs WAL up to {})", b.name, b.stop_lsn);
        return Err(refuse(what, None));
    }
    match target {
        RecoveryTarget::Lsn(l) if *l > end.last_lsn => {
            Err(refuse(format!("target LSN {l} is beyond the archive on timeline {tli}"), None))
        }
        RecoveryTarget::Time(t) if end.last_archived_at.is_some_and(|a| t.with_timezone(&Utc) > a) => {
            // Object times may be cut to the second (S3): a segment stored in the target's
            // second may hold it.
            let at = t.with_timezone(&Utc) - chrono::TimeDelta::seconds(1);
            let hint = reaching_hint(repo, archive, b, tli, |o| o.last_archived_at.is_some_and(|a| a > at)).await?;
            Err(refuse(format!("target time {} is beyond the archive on timeline {tli}", t.to_rfc3339()), hint))
        }
        RecoveryTarget::Latest | RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) if end.gap.is_some() => Err(refuse(
            "the archive has a gap: recovery would stop there and promote without the transactions after it"
                .to_string(),
            None,
        )),
        _ => Ok(end),
    }
}

/// `latest` leading to a timeline that does not pass through the backup: PostgreSQL stops
/// with "requested timeline is not a child of this server's history". Say which do.
fn not_through(e: Error, archive: &WalArchive, b: &BackupMetadata, choice: Option<TimelineChoice>) -> Error {
    match e {
        Error::Refused(why) if matches!(choice, None | Some(TimelineChoice::Latest)) => {
            let through = archive.timelines.through_point(b.timeline, b.start_lsn, archive.seg_size);
            let ids: Vec<String> = through.iter().map(u32::to_string).collect();
            Error::Refused(format!(
                "{why}; recovery_target_timeline 'latest' follows the highest timeline after {}, so PostgreSQL would refuse this backup",
                b.timeline
            ))
            .with_hint(format!(
                "choose a timeline that passes through it with --target-timeline ({}; current = {})",
                ids.join(", "),
                b.timeline
            ))
        }
        other => other,
    }
}

/// The timelines other than `tli` that pass through backup `b`, and `tli`'s own entry
/// (nothing when only one timeline passes through it).
async fn others(
    repo: &Repo,
    archive: &WalArchive,
    b: &BackupMetadata,
    tli: u32,
) -> Result<(Vec<TimelineInfo>, Option<TimelineInfo>)> {
    let through = archive.timelines.through_point(b.timeline, b.start_lsn, archive.seg_size);
    if through.len() < 2 {
        return Ok((Vec::new(), None));
    }
    let all = timelines::overview(repo, archive).await?;
    let followed = all.iter().find(|t| t.timeline == tli).cloned();
    let others = all.into_iter().filter(|t| t.timeline != tli && through.contains(&t.timeline)).collect();
    Ok((others, followed))
}

/// A default `latest` is refused when another timeline through the backup was written while
/// the followed one was: two branches, and PostgreSQL picks by number, not by what is
/// production.
async fn refuse_two_branches(repo: &Repo, archive: &WalArchive, b: &BackupMetadata, tli: u32) -> Result<()> {
    let (others, followed) = others(repo, archive, b, tli).await?;
    let Some(followed) = followed else { return Ok(()) };
    let Some(other) = others.iter().filter(|o| timelines::overlap(o, &followed)).max_by_key(|o| o.last_archived_at)
    else {
        return Ok(());
    };
    let at = |t: &TimelineInfo| t.last_archived_at.map_or("?".to_string(), human_time);
    Err(Error::Refused(format!(
        "two branches pass through backup {}: timeline {} was written after timeline {tli} began (its newest segment {} archived {} UTC; timeline {tli}'s {} at {} UTC), and recovery_target_timeline 'latest' would follow timeline {tli}, the highest",
        b.name,
        other.timeline,
        other.last_segment.as_deref().unwrap_or("?"),
        at(other),
        followed.last_segment.as_deref().unwrap_or("?"),
        at(&followed),
    ))
    .with_hint(format!("choose the branch to restore: --target-timeline {} or --target-timeline {tli}", other.timeline)))
}

/// "timeline N reaches it" for other timelines through the backup that match `reaches`.
async fn reaching_hint(
    repo: &Repo,
    archive: &WalArchive,
    b: &BackupMetadata,
    tli: u32,
    reaches: impl Fn(&TimelineInfo) -> bool,
) -> Result<Option<String>> {
    let (others, _) = others(repo, archive, b, tli).await?;
    let reaching = others.iter().filter(|o| reaches(o)).map(|o| o.timeline).max();
    Ok(reaching.map(|n| format!("timeline {n} reaches it: add --target-timeline {n}")))
}

#[cfg(test)]
mod tests {
    use super::TimelineChoice::{self, Current, Id, Latest};

    #[test]
    fn parses_like_recovery_target_timeline() {
        let ok = |s: &str| s.parse::<TimelineChoice>().ok();
        assert_eq!(ok("latest"), Some(Latest));
        assert_eq!(ok("current"), Some(Current));
        assert_eq!(ok("2"), Some(Id(2)));
        assert_eq!(ok(" 12 "), Some(Id(12)));
        assert_eq!(ok("0x1A"), Some(Id(26)));
        for bad in ["", "0", "0x", "-1", "+1", "newest", "4294967296", "1.5", "0xZZ"] {
            let err = bad.parse::<TimelineChoice>().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains("--target-timeline") && err.contains("is not latest, current or a timeline id"),
                "{bad}: {err}"
            );
        }
    }
}
