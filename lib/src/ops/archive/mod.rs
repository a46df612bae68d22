//! Archive: the WAL stream in both directions (`wal-push`, its push-ahead helper, `wal-fetch`
//! and its prefetch worker).

pub mod claims;
pub mod fetch;
pub mod fetch_call;
mod fetch_place;
pub mod missing;
pub mod prefetch;
pub mod push;
pub mod push_ahead;
pub mod push_call;
pub mod spool;
