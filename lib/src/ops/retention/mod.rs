//! Retention: which backups and WAL to keep, planned as a pure function, then run.

mod chains;
mod plan;
mod policy;
pub mod prune;
