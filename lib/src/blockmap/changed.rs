//! Changed blocks as PostgreSQL's WAL summaries tell them (17 and newer, `summarize_wal`):
//! per relation fork, the blocks modified and the lowest "limit block" (a truncation or a new
//! relation: every block from there on is new). Filled by
//! [`crate::pg::backup_api::Server::changed_blocks`]; used by the incremental tar writer to
//! read only those blocks of relation files.

use std::collections::{BTreeSet, HashMap};

use crate::pg::datadir::parse_relation_file;

/// Blocks changed since a reference, by relation fork path (`base/5/16384`, `global/1262_vm`,
/// `pg_tblspc/16400/PG_17_.../5/16390_fsm`: the path of segment 0 of the fork).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedBlocks {
    pub relations: HashMap<String, RelationChanges>,
    /// Blocks per relation segment file (`segment_size`, 131072 by default).
    pub segment_blocks: u64,
}

/// One relation fork's changes, in blocks from the start of the relation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationChanges {
    pub blocks: BTreeSet<u64>,
    pub limit: Option<u64>,
}

impl RelationChanges {
    /// Record one row of `pg_wal_summary_contents`.
    pub fn add(&mut self, block: u64, is_limit: bool) {
        if is_limit {
            self.limit = Some(self.limit.map_or(block, |l| l.min(block)));
        } else {
            self.blocks.insert(block);
        }
    }
}

impl ChangedBlocks {
    /// Add what `other` says changed (over another range).
    pub fn merge(&mut self, other: ChangedBlocks) {
        self.segment_blocks = self.segment_blocks.max(other.segment_blocks);
        for (path, c) in other.relations {
            let mine = self.relations.entry(path).or_default();
            mine.blocks.extend(c.blocks);
            if let Some(l) = c.limit {
                mine.add(l, true);
            }
        }
    }

    /// The blocks of the file at `path` (`length` bytes now, `ref_blocks` blocks in the
    /// reference) that must be read: those the summaries name, all from a limit block, and all
    /// past the reference's end. `None` when `path` is not a relation segment file (compare it
    /// by content instead).
    pub fn blocks_to_read(&self, path: &str, length: u64, ref_blocks: u64) -> Option<Vec<u64>> {
        let (relation, segment) = relation_segment(path)?;
        let count = super::block_count(length);
        let first = segment.checked_mul(self.segment_blocks.max(1))?;
        let mut out = Vec::new();
        let changes = self.relations.get(&relation);
        for b in 0..count {
            let absolute = first + b;
            let changed = b >= ref_blocks
                || changes.is_some_and(|c| c.limit.is_some_and(|l| absolute >= l) || c.blocks.contains(&absolute));
            if changed {
                out.push(b);
            }
        }
        Some(out)
    }
}

/// `(relation fork path, segment number)` of a relation segment file in PGDATA, else `None`.
pub fn relation_segment(path: &str) -> Option<(String, u64)> {
    let (dir, name) = path.rsplit_once('/')?;
    let parts: Vec<&str> = dir.split('/').collect();
    let in_db = match parts.as_slice() {
        ["global"] => true,
        ["base", db] => is_oid(db),
        ["pg_tblspc", spc, version, db] => is_oid(spc) && version.starts_with("PG_") && is_oid(db),
        _ => false,
    };
    if !in_db {
        return None;
    }
    parse_relation_file(name)?;
    let (stem, segment) = match name.split_once('.') {
        Some((stem, seg)) => (stem, seg.parse().ok()?),
        None => (name, 0),
    };
    Some((format!("{dir}/{stem}"), segment))
}

fn is_oid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_files_and_segments() {
        assert_eq!(relation_segment("base/5/16384"), Some(("base/5/16384".into(), 0)));
        assert_eq!(relation_segment("base/5/16384_vm.3"), Some(("base/5/16384_vm".into(), 3)));
        assert_eq!(relation_segment("global/1262"), Some(("global/1262".into(), 0)));
        assert_eq!(
            relation_segment("pg_tblspc/16400/PG_17_202406281/5/16390_fsm"),
            Some(("pg_tblspc/16400/PG_17_202406281/5/16390_fsm".into(), 0))
        );
        for other in ["global/pg_control", "base/5/PG_VERSION", "pg_xact/0000", "base/5/t3_16384", "x/5/1"] {
            assert_eq!(relation_segment(other), None, "{other}");
        }
    }

    #[test]
    fn blocks_to_read_follow_summaries_limits_and_growth() {
        let mut c = ChangedBlocks { segment_blocks: 10, ..Default::default() };
        let r = c.relations.entry("base/5/1".into()).or_default();
        r.add(3, false);
        r.add(14, false);
        r.add(17, true);
        r.add(25, true);
        const B: u64 = 8192;
        // Segment 0: block 3 only; the file did not grow.
        assert_eq!(c.blocks_to_read("base/5/1", 10 * B, 10), Some(vec![3]));
        // Segment 1: block 14 (4 here) and everything from the limit 17 (7 here).
        assert_eq!(c.blocks_to_read("base/5/1.1", 10 * B, 10), Some(vec![4, 7, 8, 9]));
        // A relation no summary names: nothing, except what grew past the reference.
        assert_eq!(c.blocks_to_read("base/5/2", 4 * B, 2), Some(vec![2, 3]));
        assert_eq!(c.blocks_to_read("PG_VERSION", 3, 1), None);
    }
}
