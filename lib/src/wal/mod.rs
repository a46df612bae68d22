//! PostgreSQL WAL values: LSNs, file names, page headers, timeline history. Pure: no I/O.

pub mod header;
pub mod lsn;
pub mod segment;
pub mod timeline;

pub use header::{LongPageHeader, parse_long_header};
pub use lsn::Lsn;
pub use segment::WalFileName;
