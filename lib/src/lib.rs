//! walvault: PostgreSQL WAL archiving and point-in-time recovery.
//!
//! Architecture (see `docs/ARCHITECTURE.md`): the binaries in `bins/` parse arguments, build a
//! [`config::Config`], call one function in [`ops`] and map the returned [`Error`] to an exit code
//! from the one table in [`error`]. Below `ops`, each module owns one concern and knows nothing
//! of the others: [`wal`] (names, LSNs, page headers, history files; pure), [`layout`] (every
//! object key; pure), [`codec`] (object header, compression, encryption; sync streams),
//! [`storage`] (the repository backends: local directory and S3).
//!
//! Exit codes: 0 success, 1 not found (wal-fetch: not in the archive), 2 configuration or bad
//! input, 3 storage unavailable, 4 corrupt object or wrong key, 5 refused (different content,
//! other cluster), 6 local I/O, 7 PostgreSQL, 8 unhealthy (`verify` found a problem, `status`
//! is past a threshold), 9 internal (a bug in walvault: a worker task panicked). wal-fetch reports every failure other than 1 as
//! 200 + code, so PostgreSQL aborts recovery instead of ending it early.

pub mod blockmap;
pub mod codec;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod layout;
pub mod manifest;
pub mod ops;
pub mod pg;
pub mod storage;
pub mod tarball;
pub mod throttle;
pub mod wal;

pub use error::{Error, ExitCode, Result};
