//! Log sequence numbers. (stub: owned by the wal worker)

/// A WAL position, printed as PostgreSQL does: `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);
