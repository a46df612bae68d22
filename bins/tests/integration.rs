//! One integration-test binary for the crate that owns the binaries, so every test drives
//! the real `wal-push`, `wal-fetch` and `walvault` exactly as postgresql.conf would.

mod integration {
    mod cli_exit_codes;
    pub mod common;
    mod faults;
    mod pg_e2e;
    mod pitr;
    mod security;
    mod wal_push_fetch;
}
