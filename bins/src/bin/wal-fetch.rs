//! wal-fetch: PostgreSQL's restore_command. 0 fetched, 1 not in the archive, above 125 for
//! every other failure so that PostgreSQL aborts recovery instead of ending it early.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use walvault::error::{ExitCode as Code, FETCH_HARD_FAILURE_BASE};

#[path = "../common.rs"]
mod common;

/// Find, download, verify, decrypt and decompress one WAL file into place.
///
/// Exit status: 0 the file is at DEST, complete and verified; 1 the archive does not hold
/// it (normal at the end of recovery); 202-207 any other failure (recovery must stop).
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  postgresql.conf:  restore_command = 'wal-fetch %f %p'\n  by hand:          wal-fetch 000000010000000000000003 /tmp/seg"
)]
struct Cli {
    /// WAL file name PostgreSQL asks for (%f)
    name: String,
    /// Where to write it (%p), relative to the data directory
    dest: PathBuf,
    #[command(flatten)]
    common: common::Common,
}

fn main() -> ExitCode {
    // A panic must abort recovery, never look like "not found".
    std::panic::set_hook(Box::new(|info| {
        eprintln!("wal-fetch: error: internal error: {info}");
        std::process::exit(255);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(FETCH_HARD_FAILURE_BASE + Code::Config.code());
        }
    };
    let run = || -> Result<(), walvault::Error> {
        let config = cli.common.load("wal-fetch")?;
        let cache = common::cache_dir(&config);
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            let out = walvault::ops::wal_fetch::wal_fetch(&repo, &cli.name, &cli.dest, cache.as_deref()).await?;
            if cli.common.json {
                common::print_json(&out);
            }
            tracing::debug!("fetched {} from {} ({} bytes, {} ms)", out.name, out.object, out.bytes, out.millis);
            tracing::debug!("requests: {}", serde_json::to_string(&out.requests).unwrap_or_default());
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(walvault::Error::NotFound { what }) => {
            tracing::debug!("{what} not found");
            ExitCode::from(Code::NotFound.code())
        }
        Err(e) => common::fail("wal-fetch", &e, e.exit_code().fetch_code()),
    }
}
