//! Timeline following: the one place that decides which WAL file PostgreSQL reads for a
//! position, given the archive's history files. `list`, `verify`, `pitr-prepare`, `status`,
//! `prune` and `wal-fetch` all ask these functions (pure; tested against a reference model in
//! `follow_model`).
//!
//! PostgreSQL's rule (`XLogFileReadAnyTLI` over `expectedTLEs`): for segment S on the way to
//! target timeline T, the timelines of T's history are tried newest first, skipping those that
//! begin after S. The file it should read is the newest timeline of T's history that has begun
//! by S; if that file is missing it falls back to an older timeline's file of the same number,
//! which holds the parent's WAL past the fork: recovery then stops there, short of the archive.
//! So only the newest begun timeline's file counts; a missing one is a hole, never bridged by a
//! parent's file.

use std::collections::{BTreeMap, BTreeSet};

use super::lsn::Lsn;
use super::timeline::{HistoryEntry, timeline_of_point};

/// One timeline of a path and the segment where PostgreSQL begins reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub tli: u32,
    pub begin_seg: u64,
}

/// The timelines PostgreSQL follows to reach a target timeline, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    spans: Vec<Span>,
    history: Vec<HistoryEntry>,
}

impl Path {
    /// The path to `target` whose history is `history` (empty for timeline 1).
    pub fn new(history: &[HistoryEntry], target: u32, seg_size: u64) -> Self {
        let mut spans = Vec::with_capacity(history.len() + 1);
        let mut begin = 0;
        for e in history {
            spans.push(Span { tli: e.tli, begin_seg: begin });
            begin = e.switchpoint.segment_number(seg_size);
        }
        spans.push(Span { tli: target, begin_seg: begin });
        Path { spans, history: history.to_vec() }
    }

    /// The target timeline.
    pub fn target(&self) -> u32 {
        self.spans.last().map_or(1, |s| s.tli)
    }

    /// Each timeline with the segment it begins at, oldest first.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Whether `tli` is on this path.
    pub fn has(&self, tli: u32) -> bool {
        self.spans.iter().any(|s| s.tli == tli)
    }

    /// The timeline whose file PostgreSQL reads for segment `segno` on this path.
    pub fn reader(&self, segno: u64) -> u32 {
        self.spans.iter().rev().find(|s| s.begin_seg <= segno).map_or(self.target(), |s| s.tli)
    }

    /// Whether the point `lsn` of timeline `tli` lies on this path (the path's history says
    /// that point belongs to `tli`): a backup taken there can recover along this path.
    pub fn contains_point(&self, tli: u32, lsn: Lsn) -> bool {
        timeline_of_point(&self.history, self.target(), lsn) == tli
    }
}

/// Every timeline the archive knows: timeline 1 and each one with a history file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timelines {
    histories: BTreeMap<u32, Vec<HistoryEntry>>,
}

impl Timelines {
    /// From the parsed history files (timeline → its history). Timeline 1 is always known.
    pub fn new(histories: BTreeMap<u32, Vec<HistoryEntry>>) -> Self {
        let mut histories = histories;
        histories.insert(1, Vec::new());
        Timelines { histories }
    }

    /// Known timelines, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.histories.keys().copied()
    }

    pub fn knows(&self, tli: u32) -> bool {
        self.histories.contains_key(&tli)
    }

    /// The history of `tli`, if known.
    pub fn history(&self, tli: u32) -> Option<&[HistoryEntry]> {
        self.histories.get(&tli).map(Vec::as_slice)
    }

    /// The parent of `tli` and the switchpoint where `tli` begins.
    pub fn parent(&self, tli: u32) -> Option<(u32, Lsn)> {
        self.histories.get(&tli)?.last().map(|e| (e.tli, e.switchpoint))
    }

    /// The path to `target`, if its history is known.
    pub fn path(&self, target: u32, seg_size: u64) -> Option<Path> {
        self.histories.get(&target).map(|h| Path::new(h, target, seg_size))
    }

    /// PostgreSQL's `findNewestTimeLine`: probing `start + 1`, `start + 2`, ... while a history
    /// file exists; `recovery_target_timeline = 'latest'` recovers toward the last one found.
    pub fn newest_from(&self, start: u32) -> u32 {
        let mut newest = start;
        while newest < u32::MAX && self.knows(newest + 1) {
            newest += 1;
        }
        newest
    }

    /// Timelines whose path holds the point `lsn` of `tli` (`tli` itself among them): every
    /// timeline a backup taken there can recover along.
    pub fn through_point(&self, tli: u32, lsn: Lsn, seg_size: u64) -> Vec<u32> {
        self.ids()
            .filter(|t| self.path(*t, seg_size).is_some_and(|p| p.has(tli) && p.contains_point(tli, lsn)))
            .collect()
    }
}

/// The files present in the archive: (segment number, timeline) of every full segment.
pub type Present = BTreeSet<(u64, u32)>;

/// How far the WAL from segment `start` reaches along a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The last segment of the unbroken run from `start` (`None`: not even `start`), with the
    /// timeline it is read from.
    pub last: Option<(u64, u32)>,
    /// The first missing file (segment, timeline).
    pub missing: (u64, u32),
    /// True when the path holds a later file: the missing one is a hole, not the end.
    pub hole: bool,
}

/// Walk `path` from segment `start` as PostgreSQL reads it.
pub fn reach(path: &Path, present: &Present, start: u64) -> Reach {
    let mut segno = start;
    let mut last = None;
    loop {
        let tli = path.reader(segno);
        if !present.contains(&(segno, tli)) {
            let hole = later_on_path(path, present, segno);
            return Reach { last, missing: (segno, tli), hole };
        }
        last = Some((segno, tli));
        match segno.checked_add(1) {
            Some(next) => segno = next,
            None => return Reach { last, missing: (segno, tli), hole: false },
        }
    }
}

/// Whether the path reads a file of a segment after `segno` that the archive holds.
pub fn later_on_path(path: &Path, present: &Present, segno: u64) -> bool {
    present.range((segno.saturating_add(1), 0)..).any(|&(s, t)| s > segno && path.reader(s) == t)
}

/// What restore_command must answer for a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The archive holds it: restore it (exit 0).
    Restore,
    /// Not in the archive, and that is the end for this recovery (exit 1).
    NotFound,
    /// Not in the archive although the path goes on after it: recovery must stop (> 125).
    Hole,
}

/// The answer for segment `segno` of timeline `tli` in a recovery that follows `path`.
///
/// A file is a hole when it is the one PostgreSQL must read for `segno` on the path and a
/// later file of the path is archived. An older timeline's file that PostgreSQL tries only
/// after a newer one was not found answers "not found" even when archived.
pub fn answer(path: &Path, present: &Present, tli: u32, segno: u64) -> Answer {
    if path.has(tli) && path.reader(segno) != tli {
        // PostgreSQL falls back to an older timeline's file of the same number only when the
        // newer one is missing: that file holds the parent's WAL past the fork. Never serve it.
        return Answer::NotFound;
    }
    if present.contains(&(segno, tli)) {
        return Answer::Restore;
    }
    if path.has(tli) && path.reader(segno) == tli && later_on_path(path, present, segno) {
        return Answer::Hole;
    }
    Answer::NotFound
}

/// The answer when no plan names the recovery's target timeline: PostgreSQL's recovery may
/// follow any timeline whose path reads this file, so a missing file is a hole if any such
/// path goes on after it. A present file is served (PostgreSQL asked for it). A timeline
/// without a history file is taken as a path of its own.
pub fn answer_unplanned(timelines: &Timelines, present: &Present, seg_size: u64, tli: u32, segno: u64) -> Answer {
    if present.contains(&(segno, tli)) {
        return Answer::Restore;
    }
    let own = (!timelines.knows(tli)).then(|| Path::new(&[], tli, seg_size));
    let paths = timelines.ids().filter_map(|t| timelines.path(t, seg_size)).chain(own);
    let mut reading = paths.filter(|p| p.has(tli) && p.reader(segno) == tli);
    if reading.any(|p| later_on_path(&p, present, segno)) { Answer::Hole } else { Answer::NotFound }
}

/// The answer for the history file of `tli`: a timeline the archive shows to exist (one of
/// its segments, or a descendant's history naming it) must have its history file.
pub fn answer_history(timelines: &Timelines, present: &Present, history_present: bool, tli: u32) -> Answer {
    if history_present {
        return Answer::Restore;
    }
    let named = timelines.ids().any(|t| timelines.history(t).is_some_and(|h| h.iter().any(|e| e.tli == tli)));
    let has_segments = present.iter().any(|&(_, t)| t == tli);
    if tli > 1 && (named || has_segments) { Answer::Hole } else { Answer::NotFound }
}

/// A kept backup, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub tli: u32,
    pub start_lsn: Lsn,
}

/// What retention must keep: for each anchor, on every path through its start point, the
/// file PostgreSQL reads for each segment from its start on.
pub struct Needs {
    paths: Vec<(Path, u64)>,
}

impl Needs {
    pub fn new(timelines: &Timelines, anchors: &[Anchor], seg_size: u64) -> Self {
        let paths = anchors
            .iter()
            .flat_map(|a| {
                let start = a.start_lsn.segment_number(seg_size);
                timelines
                    .through_point(a.tli, a.start_lsn, seg_size)
                    .into_iter()
                    .filter_map(move |t| timelines.path(t, seg_size).map(|p| (p, start)))
            })
            .collect();
        Needs { paths }
    }

    /// Whether some anchor's recovery reads the file of `segno` on `tli`.
    pub fn needs(&self, segno: u64, tli: u32) -> bool {
        self.paths.iter().any(|(p, start)| segno >= *start && p.reader(segno) == tli)
    }
}

/// Every present file (segment, timeline) some anchor needs ([`Needs`]).
pub fn needed(timelines: &Timelines, present: &Present, anchors: &[Anchor], seg_size: u64) -> Present {
    let needs = Needs::new(timelines, anchors, seg_size);
    present.iter().copied().filter(|&(s, t)| needs.needs(s, t)).collect()
}

#[cfg(test)]
#[path = "follow_model.rs"]
mod follow_model;

/// Cases per run of the model-based tests (timelines here, chains in retention):
/// `WALVAULT_MODEL_CASES`, default 2,000.
#[cfg(test)]
pub(crate) fn model_cases() -> u32 {
    std::env::var("WALVAULT_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}
