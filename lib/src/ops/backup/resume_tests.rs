//! Part records written by a build of another block digest are not reused.

use super::*;
use crate::blockmap::{BlockMap, DigestAlgo, FileBlocks};
use crate::manifest::{EntryKind, ManifestEntry};

fn entry() -> ManifestEntry {
    let digest = crate::manifest::digest::of_bytes(b"abc");
    ManifestEntry { path: "f".into(), size: 3, digest, mode: 0o600, part: 0, kind: EntryKind::File, link_target: None }
}

#[test]
fn a_record_with_sha256_block_digests_is_not_reused() {
    crate::ops::repo::test_repo::with_repo(async |repo| {
        let name = "main_x_20261203_120000";
        for (index, algo) in [(0, DigestAlgo::Blake3), (1, DigestAlgo::Sha256)] {
            let mut blocks = BlockMap { algo, ..BlockMap::default() };
            blocks.files.insert("f".into(), FileBlocks { length: 3, digests: vec![algo.digest(b"abc")] });
            let output = IncrementalPart { entries: vec![entry()], blocks, ..IncrementalPart::default() };
            let info = PartInfo { index, key: format!("part{index}"), files: 1, bytes: 3, stored_bytes: 10 };
            let wrote = write_record(repo, name, 7, (Vec::new(), 0), &info, &output).await;
            assert!(wrote.is_ok(), "{wrote:?}");
        }
        assert!(reused_blocks(repo, name, 0).await.is_ok_and(|m| m.algo == DigestAlgo::Blake3));
        let old = reused_blocks(repo, name, 1).await.map_err(|e| e.to_string());
        assert!(old.is_err_and(|e| e.contains("SHA-256")), "a record of SHA-256 digests is redone");
    });
}
