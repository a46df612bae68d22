//! Restore: a data directory made ready to recover to a target (`pitr-prepare`).

pub mod chain;
pub mod pitr_prepare;
pub mod restore_command;
