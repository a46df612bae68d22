//! In which order a backup's parts are read: the longest first. Parts run a few at a time
//! (`--jobs`); a long part started last runs alone at the end while the other cores idle. An
//! incremental's parts are very uneven (one holds a big relation file with most of the
//! changed blocks, another a few small files), so their length is estimated from what each
//! will read.

use crate::blockmap::{ChangedBlocks, relation_segment};
use crate::pg::datadir::{DataFile, FileKind};

/// Bytes `files` will be read: with `changed` (an incremental's WAL summaries) only the
/// changed blocks of relation files, every other file whole.
pub fn expected_read(files: &[DataFile], changed: Option<&ChangedBlocks>) -> u64 {
    files.iter().filter(|f| matches!(f.kind, FileKind::File)).map(|f| file_read(f, changed)).sum()
}

fn file_read(f: &DataFile, changed: Option<&ChangedBlocks>) -> u64 {
    let Some(changed) = changed else { return f.size };
    let Some((relation, segment)) = relation_segment(&f.rel_path) else { return f.size };
    let Some(c) = changed.relations.get(&relation) else { return 0 };
    let blocks = crate::blockmap::block_count(f.size);
    let first = segment.saturating_mul(changed.segment_blocks.max(1));
    let end = first.saturating_add(blocks);
    let from_limit = c.limit.map_or(0, |l| end.saturating_sub(l.max(first)));
    let listed = c.blocks.range(first..end).count() as u64;
    (listed + from_limit).min(blocks).saturating_mul(crate::blockmap::BLOCK as u64)
}

/// Order `parts` longest first (ties keep their order).
pub fn longest_first(parts: &mut [(u32, Vec<DataFile>)], changed: Option<&ChangedBlocks>) {
    parts.sort_by_cached_key(|(_, files)| std::cmp::Reverse(expected_read(files, changed)));
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn file(path: &str, size: u64) -> DataFile {
        DataFile {
            rel_path: path.into(),
            abs_path: PathBuf::from("/pgdata").join(path),
            size,
            kind: FileKind::File,
            mode: 0o600,
            mtime: 0,
        }
    }

    #[test]
    fn an_incrementals_longest_part_is_the_one_with_most_changed_blocks() {
        const B: u64 = 8192;
        let mut changed = ChangedBlocks { segment_blocks: 100, ..Default::default() };
        let big = changed.relations.entry("base/5/16384".into()).or_default();
        for b in [1, 2, 3, 150, 151] {
            big.add(b, false);
        }
        big.add(190, true);
        // Segment 0: blocks 1-3; segment 1 (blocks 100-199): 150, 151 and 190-199.
        assert_eq!(expected_read(&[file("base/5/16384", 100 * B)], Some(&changed)), 3 * B);
        assert_eq!(expected_read(&[file("base/5/16384.1", 100 * B)], Some(&changed)), 12 * B);
        // A relation no summary names: nothing; a file that is not a relation's: whole.
        assert_eq!(expected_read(&[file("base/5/99999", 100 * B)], Some(&changed)), 0);
        assert_eq!(expected_read(&[file("pg_xact/0000", 5 * B)], Some(&changed)), 5 * B);
        // Without summaries everything is read.
        assert_eq!(expected_read(&[file("base/5/16384", 100 * B)], None), 100 * B);

        let mut parts = vec![
            (0, vec![file("base/5/99999", 100 * B), file("PG_VERSION", 3)]),
            (1, vec![file("base/5/16384", 100 * B)]),
            (2, vec![file("base/5/16384.1", 100 * B)]),
            (3, vec![file("base/5/88888", 100 * B)]),
        ];
        longest_first(&mut parts, Some(&changed));
        let order: Vec<u32> = parts.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [2, 1, 0, 3]);
        // A full backup's parts keep their order when they are as long.
        let mut parts = vec![(0, vec![file("a", 10)]), (1, vec![file("b", 10)]), (2, vec![file("c", 30)])];
        longest_first(&mut parts, None);
        assert_eq!(parts.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2, 0, 1]);
    }
}
