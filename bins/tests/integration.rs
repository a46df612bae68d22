//! One integration-test binary for the crate that owns the binaries, so every test drives
//! the real `wal-push`, `wal-fetch` and `walvault` exactly as postgresql.conf would.

mod integration {
    pub mod common;
    mod cli_exit_codes;
    mod pg_e2e;
    mod wal_push_fetch;
}
