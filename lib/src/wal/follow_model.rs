//! The timeline rules of `follow` checked against a small reference model of PostgreSQL's
//! recovery: `expectedTLEs` as (tli, begin, end) LSN ranges, `XLogFileReadAnyTLI`'s newest-first
//! search with its `curFileTLI` cut-off, and the data each segment must hold on the target's
//! history (the timeline owning the segment's last byte). Random timeline trees (PITRs that
//! branch from random points, promotions), random holes, random backups and prune policies.
//! `WALVAULT_MODEL_CASES` raises the number of cases (default 2,000).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const SEG: u64 = 1 << 20;

/// One generated archive.
#[derive(Debug, Clone)]
struct World {
    timelines: Timelines,
    present: Present,
    anchors: Vec<Anchor>,
}

/// PostgreSQL's expectedTLEs for `target`, newest first: (tli, begin, end) with end exclusive.
fn expected_tles(history: &[HistoryEntry], target: u32) -> Vec<(u32, u64, u64)> {
    let mut out = Vec::new();
    let mut begin = 0;
    for e in history {
        out.push((e.tli, begin, e.switchpoint.0));
        begin = e.switchpoint.0;
    }
    out.push((target, begin, u64::MAX));
    out.reverse();
    out
}

/// The timeline whose WAL the segment must hold: the owner of its last byte on the history
/// (`tliOfPointInHistory`; the generator only makes non-decreasing switchpoints).
fn owner(tles: &[(u32, u64, u64)], segno: u64) -> u32 {
    let last_byte = (segno + 1) * SEG - 1;
    tles.iter().find(|(_, b, e)| *b <= last_byte && last_byte < *e).map_or(0, |t| t.0)
}

/// The true end: the first segment from `start` whose right file is missing, and whether a
/// later right file exists.
fn true_end(tles: &[(u32, u64, u64)], present: &Present, start: u64) -> (u64, bool) {
    let mut s = start;
    while present.contains(&(s, owner(tles, s))) {
        s += 1;
    }
    let later = present.iter().any(|&(seg, t)| seg > s && owner(tles, seg) == t);
    (s, later)
}

#[derive(Debug, PartialEq)]
enum Recovery {
    /// Recovery ended after reading every segment before this one.
    Ended(u64),
    Aborted(u64),
    /// PostgreSQL was handed a file whose data is not the target's history.
    WrongFile(u64),
}

/// PostgreSQL reading segments from `start` through restore_command answers.
fn recover(tles: &[(u32, u64, u64)], start: u64, ask: impl Fn(u32, u64) -> Answer) -> Recovery {
    let mut cur = 0;
    for segno in start..start + 200 {
        let mut found = None;
        for &(tli, begin, _) in tles {
            if tli < cur {
                break;
            }
            if segno < begin / SEG {
                continue;
            }
            match ask(tli, segno) {
                Answer::Restore => {
                    found = Some(tli);
                    break;
                }
                Answer::Hole => return Recovery::Aborted(segno),
                Answer::NotFound => {}
            }
        }
        match found {
            None => return Recovery::Ended(segno),
            Some(t) if t != owner(tles, segno) => return Recovery::WrongFile(segno),
            Some(t) => cur = t,
        }
    }
    Recovery::Ended(start + 200)
}

fn world() -> impl Strategy<Value = World> {
    let branches = prop::collection::vec((any::<prop::sample::Index>(), 0_u64..10, 0_u64..3), 0..5);
    let holes = prop::collection::vec(any::<bool>(), 96);
    let anchors = prop::collection::vec((any::<prop::sample::Index>(), 0_u64..12, any::<bool>()), 1..5);
    (branches, holes, anchors, 0_u32..4).prop_map(|(branches, holes, raw_anchors, extra)| {
        let mut hist: BTreeMap<u32, Vec<HistoryEntry>> = BTreeMap::new();
        let mut begins: BTreeMap<u32, u64> = BTreeMap::from([(1, 0)]);
        hist.insert(1, Vec::new());
        for (i, (parent, after, offset_kind)) in branches.into_iter().enumerate() {
            let tli = i as u32 + 2;
            let parents: Vec<u32> = hist.keys().copied().collect();
            let parent = parents[parent.index(parents.len())];
            let begin = begins[&parent];
            // A switch at a segment boundary, in the middle of a segment, or at its very end.
            let offset = [0, SEG / 2, SEG - 8][offset_kind as usize];
            let sp = (begin / SEG + after + 1) * SEG + offset;
            let mut h = hist[&parent].clone();
            h.push(HistoryEntry { tli: parent, switchpoint: Lsn(sp), reason: String::new() });
            hist.insert(tli, h);
            begins.insert(tli, sp);
        }
        let mut present = Present::new();
        let mut k = 0;
        for (&tli, &begin) in &begins {
            let len = 10 + u64::from(extra) * (u64::from(tli) % 3);
            for s in begin / SEG..begin / SEG + len {
                if holes[k % holes.len()] || k % 7 != 3 {
                    present.insert((s, tli));
                }
                k += 1;
            }
        }
        let tlis: Vec<u32> = begins.keys().copied().collect();
        let anchors = raw_anchors
            .into_iter()
            .map(|(t, after, mid)| {
                let tli = tlis[t.index(tlis.len())];
                let lsn = (begins[&tli] / SEG + after) * SEG + if mid { SEG / 3 } else { 40 };
                Anchor { tli, start_lsn: Lsn(lsn.max(begins[&tli])) }
            })
            .collect();
        hist.remove(&1);
        World { timelines: Timelines::new(hist), present, anchors }
    })
}

fn cases() -> u32 {
    super::model_cases()
}

/// Every (anchor, timeline through it) pair: the recoveries a backup allows.
fn recoveries(w: &World) -> Vec<(Anchor, u32)> {
    w.anchors
        .iter()
        .flat_map(|a| w.timelines.through_point(a.tli, a.start_lsn, SEG).into_iter().map(move |t| (*a, t)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// `reach` (what list, verify, status and pitr-prepare report) agrees with the model.
    #[test]
    fn reach_agrees_with_the_model(w in world()) {
        for (a, target) in recoveries(&w) {
            let path = w.timelines.path(target, SEG).expect("known");
            let tles = expected_tles(w.timelines.history(target).expect("known"), target);
            let start = a.start_lsn.segment_number(SEG);
            let got = reach(&path, &w.present, start);
            let (end, later) = true_end(&tles, &w.present, start);
            prop_assert_eq!(got.missing.0, end, "{:?} target {}", a, target);
            prop_assert_eq!(got.missing.1, owner(&tles, end));
            prop_assert_eq!(got.hole, later);
            prop_assert_eq!(got.last.map(|l| l.0), end.checked_sub(1).filter(|e| *e >= start));
        }
    }

    /// Planned recovery (pitr-prepare wrote the target timeline): PostgreSQL driven by
    /// `answer` never reads a wrong file, ends exactly at the true end, aborts only at a hole.
    #[test]
    fn planned_answers_never_promote_early(w in world()) {
        for (a, target) in recoveries(&w) {
            let path = w.timelines.path(target, SEG).expect("known");
            let tles = expected_tles(w.timelines.history(target).expect("known"), target);
            let start = a.start_lsn.segment_number(SEG);
            let (end, later) = true_end(&tles, &w.present, start);
            let got = recover(&tles, start, |t, s| answer(&path, &w.present, t, s));
            let want = if later { Recovery::Aborted(end) } else { Recovery::Ended(end) };
            prop_assert_eq!(got, want, "{:?} target {}", a, target);
        }
    }

    /// Without a plan wal-fetch does not know the target timeline: it must still never say
    /// "not found" while the recovery's own path goes on (no early promotion).
    #[test]
    fn unplanned_answers_never_end_short(w in world()) {
        for (a, target) in recoveries(&w) {
            let tles = expected_tles(w.timelines.history(target).expect("known"), target);
            let start = a.start_lsn.segment_number(SEG);
            let (end, later) = true_end(&tles, &w.present, start);
            let got = recover(&tles, start, |t, s| answer_unplanned(&w.timelines, &w.present, SEG, t, s));
            if let Recovery::Ended(at) = got {
                prop_assert!(!later || at > end, "ended at {} with the archive going on after {}", at, end);
            }
        }
    }

    /// After any prune, every kept backup still recovers to the end of each of its paths.
    #[test]
    fn prune_keeps_every_path_of_every_kept_backup(w in world(), keep in prop::collection::vec(any::<bool>(), 4)) {
        let kept: Vec<Anchor> = w.anchors.iter().zip(keep.iter().cycle()).filter(|(_, k)| **k).map(|(a, _)| *a).collect();
        let needed = needed(&w.timelines, &w.present, &kept, SEG);
        prop_assert!(needed.is_subset(&w.present));
        for a in &kept {
            for target in w.timelines.through_point(a.tli, a.start_lsn, SEG) {
                let tles = expected_tles(w.timelines.history(target).expect("known"), target);
                let start = a.start_lsn.segment_number(SEG);
                let before = true_end(&tles, &w.present, start);
                let after = true_end(&tles, &needed, start);
                prop_assert_eq!(before, after, "{:?} target {}", a, target);
            }
        }
    }
}

#[test]
fn issue_scenario_prune_after_a_rewind_keeps_timeline_2() {
    // B1, B2 on timeline 1; PITR of B1 branches timeline 2 at segment 4; B3 on timeline 2.
    let h2 = vec![HistoryEntry { tli: 1, switchpoint: Lsn(4 * SEG + 100), reason: String::new() }];
    let tls = Timelines::new(BTreeMap::from([(2, h2)]));
    let mut present = Present::new();
    present.extend((0..14).map(|s| (s, 1)));
    present.extend((4..12).map(|s| (s, 2)));
    let b2 = Anchor { tli: 1, start_lsn: Lsn(9 * SEG) };
    let b3 = Anchor { tli: 2, start_lsn: Lsn(8 * SEG) };
    let kept = needed(&tls, &present, &[b2, b3], SEG);
    assert!((8..12).all(|s| kept.contains(&(s, 2))), "timeline 2 from B3's start stays");
    assert!((9..14).all(|s| kept.contains(&(s, 1))), "timeline 1 from B2's start stays");
    assert!(!kept.contains(&(7, 2)) && !kept.contains(&(8, 1)), "older WAL may go");
}

#[test]
fn issue_scenario_parent_never_stands_in_past_the_fork() {
    let h2 = vec![HistoryEntry { tli: 1, switchpoint: Lsn(4 * SEG + 100), reason: String::new() }];
    let tls = Timelines::new(BTreeMap::from([(2, h2)]));
    let mut present = Present::new();
    present.extend((0..20).map(|s| (s, 1)));
    present.extend((4..20).filter(|s| *s != 14).map(|s| (s, 2)));
    let path = tls.path(2, SEG).expect("known");
    let r = reach(&path, &present, 2);
    assert_eq!((r.last, r.missing, r.hole), (Some((13, 2)), (14, 2), true));
    assert_eq!(answer(&path, &present, 2, 14), Answer::Hole);
    assert_eq!(answer(&path, &present, 1, 14), Answer::NotFound, "the parent's file is never served past the fork");
    assert_eq!(answer_unplanned(&tls, &present, SEG, 2, 14), Answer::Hole);
    assert_eq!(answer(&path, &present, 2, 20), Answer::NotFound, "the true end");
}
