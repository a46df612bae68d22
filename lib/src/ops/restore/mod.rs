//! Restore: a data directory made ready to recover to a target (`pitr-prepare`).

pub mod chain;
pub mod delta;
pub mod pitr_prepare;
pub mod restore_command;

/// Parts restored at once when no `--jobs` is given: the cores this process may use (at
/// least 2, as a download waits on the network as much as on a core).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}
