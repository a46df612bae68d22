//! Retention: which backups and WAL to keep, planned as a pure function, then run.

mod chains;
mod plan;
pub mod prune;
