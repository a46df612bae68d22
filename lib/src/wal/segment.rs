//! WAL file names. (stub: owned by the wal worker)

/// A file name PostgreSQL archives or asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// `000000010000000A000000FE`
    Segment { tli: u32, log: u32, seg: u32 },
}
