//! Report: what the repository holds (`walvault list`) and whether it is healthy (`status`,
//! Prometheus).

mod facts;
pub mod list;
mod prometheus;
mod quick;
pub mod status;
