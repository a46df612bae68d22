//! Backup: base backups of a cluster and backups of plain directories (`files-backup`).

mod archived;
pub mod base;
pub mod files;
pub mod flow;
pub mod incremental;
pub mod lease;
pub mod maps;
mod options;
mod piped;
pub mod resume;
mod schedule;
pub mod standby;
