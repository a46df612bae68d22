//! wal-push: PostgreSQL's archive_command. Exit 0 only once the file is durably stored.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use walvault::ops::archive::push_call::{self, PushAnswer, PushRequest};
use walvault_bins::common;

/// Compress, encrypt and upload one WAL file to the walvault repository.
///
/// Exit 0 once the file is durably stored (or an identical copy already was); any other
/// status makes PostgreSQL keep the file and retry.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  postgresql.conf:  archive_command = 'wal-push %p'\n  by hand:          WALVAULT_REPO=file:///backups wal-push pg_wal/000000010000000000000003"
)]
struct Cli {
    /// Path of the WAL file (%p), relative to the data directory
    path: PathBuf,
    /// Internal: run as the detached push-ahead helper; PATH is then the pg_wal directory
    #[arg(long, hide = true)]
    push_ahead_helper: bool,
    #[command(flatten)]
    common: common::Common,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let request = PushRequest { path: &cli.path, helper: cli.push_ahead_helper };
    let answer = match cli.common.load("wal-push") {
        Ok(config) => push_call::run(&config, &request, &|| cli.common.detached_self()),
        Err(e) => PushAnswer::Failed(e),
    };
    match &answer {
        PushAnswer::Pushed(out) if cli.common.json => common::print_json(out),
        PushAnswer::Pushed(out) if !out.duplicate && out.object != "(pushed ahead)" => tracing::info!(
            "archived {} as {} ({} -> {} bytes, {} ms)",
            out.name,
            out.object,
            out.bytes_in,
            out.bytes_out,
            out.millis
        ),
        PushAnswer::PushedAhead { name } if cli.common.json => common::print_json(
            &serde_json::json!({"name": name, "object": "(pushed ahead)", "duplicate": false, "requests": {}}),
        ),
        PushAnswer::Failed(e) => {
            common::fail("wal-push", e, answer.exit_code());
        }
        _ => {}
    }
    ExitCode::from(answer.exit_code())
}
