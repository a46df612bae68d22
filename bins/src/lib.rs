//! What the walvault binaries share: common flags, logging, configuration, error reporting
//! (`common`), and the flags of `walvault`'s subcommands (`walvault_cli`). No logic lives
//! here: each binary parses its arguments and calls one function of the `walvault` library.

pub mod common;
pub mod walvault_cli;
