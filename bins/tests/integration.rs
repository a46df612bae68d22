//! One integration-test binary for the crate that owns the binaries, so every test drives
//! the real `wal-push`, `wal-fetch` and `walvault` exactly as postgresql.conf would.

mod integration {
    mod binding;
    mod binding_cache;
    mod binding_metadata;
    mod cli_exit_codes;
    pub mod common;
    mod compat;
    mod delta;
    mod delta_chain;
    mod deploy;
    mod faults;
    mod first_hour;
    mod forks;
    mod hardening;
    mod incremental;
    mod incremental_chains;
    mod keys;
    mod ops;
    mod pg_e2e;
    mod pg_matrix;
    mod pitr;
    mod push_ahead;
    mod raw;
    mod scale;
    mod scripts;
    mod security;
    mod slow_s3;
    mod standby;
    mod status_summary;
    mod timelines;
    mod verify_scale;
    mod wal_push_fetch;
    pub mod workers;
}
