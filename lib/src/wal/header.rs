//! The long page header at the start of each WAL segment. (stub: owned by the wal worker)

use crate::Result;

/// The fields of `XLogLongPageHeaderData` walvault uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongPageHeader {
    pub magic: u16,
    pub system_id: u64,
    pub seg_size: u32,
}

/// Parse the long page header from the first bytes of a segment.
pub fn parse_long_header(_bytes: &[u8]) -> Result<LongPageHeader> {
    Err(crate::Error::Invalid("not implemented".into()))
}
