//! A file's BLAKE3 digest computed in independent pieces, so that one large file is hashed
//! (and, cold, read) on several threads at once. BLAKE3 is a tree of 1 KiB chunks: a piece of
//! a power-of-two length (at least 1 KiB; [`PIECE_LEN`] for the delta comparison) at a multiple
//! of that offset is a whole subtree, whose
//! chaining value [`piece_hasher`] gives; [`merge`] joins the values the way the tree does
//! (each node's left side is the largest power-of-two number of chunks shorter than it), so
//! the result is exactly `blake3::hash` of the file. Checked against it for many lengths below.

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};

use super::FileDigest;

/// The pieces of the delta comparison: 64 MiB (a power of two, a whole number of its 16 MiB
/// reads; long enough that a cold file is still read in long runs, one per thread).
pub const PIECE_LEN: u64 = 64 << 20;

/// Whether a file of `len` bytes is hashed in pieces of `piece` bytes (more than one piece).
pub fn in_pieces(len: u64, piece: u64) -> bool {
    len > piece
}

/// Pieces of `piece` bytes of a file of `len` bytes.
pub fn count(len: u64, piece: u64) -> u64 {
    len.div_ceil(piece.max(1))
}

/// The hasher of the piece starting at `offset` (a multiple of the piece length) of a file
/// hashed in pieces; its value is [`value`].
pub fn piece_hasher(offset: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h
}

/// The chaining value of a finished piece.
pub fn value(h: &blake3::Hasher) -> ChainingValue {
    h.finalize_non_root()
}

/// The digest of a file of `len` bytes hashed in pieces of `piece` bytes (a power of two, at
/// least 1 KiB) from their values in order; `None` when `values` is not one per piece.
pub fn merge(len: u64, piece: u64, values: &[ChainingValue]) -> Option<FileDigest> {
    let valid = piece.is_power_of_two() && piece >= blake3::CHUNK_LEN as u64;
    if !valid || !in_pieces(len, piece) || values.len() as u64 != count(len, piece) {
        return None;
    }
    let left = left_subtree_len(len);
    let (l, r) = values.split_at_checked(usize::try_from(left / piece).ok()?)?;
    let root = merge_subtrees_root(&subtree(left, piece, l)?, &subtree(len - left, piece, r)?, Mode::Hash);
    Some(FileDigest::Blake3(root.to_hex().to_string()))
}

/// The chaining value of a subtree of `len` bytes made of whole pieces (the last may be short).
fn subtree(len: u64, piece: u64, values: &[ChainingValue]) -> Option<ChainingValue> {
    if len <= piece {
        return values.first().copied().filter(|_| values.len() == 1);
    }
    let left = left_subtree_len(len);
    let (l, r) = values.split_at_checked(usize::try_from(left / piece).ok()?)?;
    Some(merge_subtrees_non_root(&subtree(left, piece, l)?, &subtree(len - left, piece, r)?, Mode::Hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_pieces_digest(data: &[u8], piece: u64) -> Option<FileDigest> {
        let values: Vec<ChainingValue> = data
            .chunks(piece as usize)
            .enumerate()
            .map(|(i, bytes)| {
                let mut h = piece_hasher(i as u64 * piece);
                // In several updates, as the comparison reads it.
                for part in bytes.chunks(piece as usize / 3 + 7) {
                    h.update(part);
                }
                value(&h)
            })
            .collect();
        merge(data.len() as u64, piece, &values)
    }

    #[test]
    fn pieces_give_exactly_the_whole_file_digest() {
        let data: Vec<u8> = (0..(9 << 20) + 12345).map(|i: u32| i.wrapping_mul(2654435761).to_le_bytes()[3]).collect();
        for piece in [1024u64, 64 << 10, 1 << 20] {
            let p = piece as usize;
            for len in [
                p + 1,
                p + 1024,
                2 * p,
                2 * p + 1,
                3 * p,
                3 * p + 999,
                4 * p,
                5 * p + 1,
                7 * p + 4096,
                8 * p,
                9 * p + 12345,
            ] {
                let whole = blake3::hash(&data[..len]).to_hex().to_string();
                assert_eq!(in_pieces_digest(&data[..len], piece), Some(FileDigest::Blake3(whole)), "{len} in {piece}");
            }
            // A changed byte in any piece changes the digest.
            let mut other = data[..3 * p + 5].to_vec();
            other[2 * p + 17] ^= 1;
            assert_ne!(in_pieces_digest(&other, piece), in_pieces_digest(&data[..3 * p + 5], piece));
        }
        assert!(!in_pieces(PIECE_LEN, PIECE_LEN) && in_pieces(PIECE_LEN + 1, PIECE_LEN));
        assert_eq!(merge(PIECE_LEN, PIECE_LEN, &[[0; 32]]), None, "one piece is hashed whole");
        assert_eq!(merge(3 * PIECE_LEN, PIECE_LEN, &[[0; 32]; 2]), None, "a piece missing");
        assert_eq!(merge(3000, 1000, &[[0; 32]; 3]), None, "not a power of two");
        assert_eq!(merge(3000, 512, &[[0; 32]; 6]), None, "shorter than a chunk");
    }
}
