//! wal-push: PostgreSQL's archive_command. Exit 0 only once the file is durably stored.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[path = "../common.rs"]
mod common;

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
    #[command(flatten)]
    common: common::Common,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(), walvault::Error> {
        let config = cli.common.load("wal-push")?;
        let cache = common::cache_dir(&config);
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            let out =
                walvault::ops::wal_push::wal_push(&repo, &cli.path, cache.as_deref(), config.push_parallel).await?;
            if cli.common.json {
                common::print_json(&out);
            } else if !out.duplicate {
                tracing::info!(
                    "archived {} as {} ({} -> {} bytes, {} ms)",
                    out.name,
                    out.object,
                    out.bytes_in,
                    out.bytes_out,
                    out.millis
                );
            }
            tracing::debug!("requests: {}", serde_json::to_string(&out.requests).unwrap_or_default());
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => common::fail("wal-push", &e, e.exit_code().code()),
    }
}
