use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).single().unwrap_or_default() + TimeDelta::minutes(minute)
}

/// Timeline `tli` begun at minute `began` (history file; None for timeline 1), its segments
/// archived from `first` to `last`.
fn tl(tli: u32, began: Option<i64>, first: i64, last: i64) -> TimelineInfo {
    TimelineInfo {
        timeline: tli,
        parent: (tli > 1).then_some(tli - 1),
        switchpoint: (tli > 1).then_some(Lsn(0x500_0060)),
        history_file: tli > 1,
        segments: 3,
        first_segment: Some(format!("{tli:08X}0000000000000001")),
        last_segment: Some(format!("{tli:08X}0000000000000003")),
        began_at: began.map(at),
        first_archived_at: Some(at(first)),
        last_archived_at: Some(at(last)),
        summarized: false,
    }
}

#[test]
fn a_promotion_that_replaces_the_old_server_is_one_branch() {
    // Timeline 1 archived until minute 10; timeline 2 began at 12 and is written to 60.
    let tls = [tl(1, None, 0, 10), tl(2, Some(12), 13, 60)];
    assert!(!overlap(&tls[0], &tls[1]));
    assert_eq!(live_branches(&tls, at(61), TimeDelta::hours(1)), Vec::<u32>::new());
    assert_eq!(written_most_recently(&tls).map(|t| t.timeline), Some(2));
    assert_eq!(live_branches_problem(&tls, &[], at(61)), None);
}

#[test]
fn a_side_restore_beside_the_primary_is_two_live_branches() {
    // Timeline 2 began at 20 and was written to 30; the primary went on to 40.
    let tls = [tl(1, None, 0, 40), tl(2, Some(20), 21, 30)];
    assert!(overlap(&tls[0], &tls[1]) && overlap(&tls[1], &tls[0]));
    assert_eq!(live_branches(&tls, at(41), TimeDelta::hours(1)), vec![1, 2]);
    assert_eq!(written_most_recently(&tls).map(|t| t.timeline), Some(1), "the RPO follows the primary");
    let problem = live_branches_problem(&tls, &[1, 2], at(41)).unwrap_or_default();
    assert!(problem.starts_with("two timelines are being written at once: timeline 1 (newest 00000001"), "{problem}");
    assert!(problem.contains("timeline 2 (newest 000000020000000000000003, archived 11m 0s ago)"), "{problem}");
    // A branch written last an hour and more ago is not live any more.
    assert_eq!(live_branches(&tls, at(95), TimeDelta::hours(1)), Vec::<u32>::new());
}

#[test]
fn siblings_and_unknown_times() {
    // Two restores from timeline 1, both archiving: 2 and 3 overlap, 1 stopped before both.
    let tls = [tl(1, None, 0, 10), tl(2, Some(11), 12, 50), tl(3, Some(20), 21, 55)];
    assert_eq!(live_branches(&tls, at(56), TimeDelta::minutes(30)), vec![2, 3]);
    let mut unknown = tl(2, Some(11), 12, 50);
    unknown.last_archived_at = None;
    assert!(!overlap(&tls[0], &unknown) && !overlap(&unknown, &tls[0]));
    assert!(!overlap(&tls[1], &tls[1]), "a timeline is not a branch of itself");
    // A timeline without history file begins with its first segment.
    let mut orphan = tl(4, None, 30, 40);
    (orphan.history_file, orphan.parent, orphan.switchpoint) = (false, None, None);
    assert_eq!(orphan.start(), Some(at(30)));
    assert!(describe(&orphan).starts_with("timeline 4 (history file missing): 00000004"), "{}", describe(&orphan));
}

#[test]
fn describe_names_parent_switchpoint_and_window() {
    let line = describe(&tl(2, Some(12), 13, 60));
    assert_eq!(
        line,
        "timeline 2 (from timeline 1 at 0/5000060): 000000020000000000000001 to 000000020000000000000003 (3 segments), archived 2024-01-15 10:13:00 to 2024-01-15 11:00:00 UTC"
    );
    let mut empty = tl(3, Some(5), 0, 0);
    (empty.first_segment, empty.last_segment, empty.segments) = (None, None, 0);
    assert_eq!(describe(&empty), "timeline 3 (from timeline 2 at 0/5000060): no segments");
    assert_eq!(render(&[]), "\nTIMELINES\nnone: no WAL archived\n");
}
