//! Retention: which backups and WAL to keep, planned as a pure function, then run.

mod plan;
pub mod prune;
