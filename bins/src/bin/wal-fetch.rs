//! wal-fetch: PostgreSQL's restore_command. 0 fetched, 1 not in the archive, above 125 for
//! every other failure so that PostgreSQL aborts recovery instead of ending it early.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use walvault::error::{ExitCode as Code, FETCH_HARD_FAILURE_BASE};
use walvault::ops::archive::fetch_call::{self, Answer, FetchCall, FetchRequest};
use walvault_bins::common;

/// Find, download, verify, decrypt and decompress one WAL file into place.
///
/// Exit status: 0 the file is at DEST, complete and verified; 1 the archive does not hold
/// it (normal at the end of recovery), or, in a recovery pitr-prepare planned, the segment
/// is already in pg_wal, complete and verified, for PostgreSQL to read there; 202-207 any
/// other failure (recovery must stop).
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
    /// Internal: run as the detached prefetch worker for segments after NAME (segment size)
    #[arg(long, hide = true, value_name = "SEG_SIZE")]
    prefetch_worker: Option<u64>,
    #[command(flatten)]
    common: common::Common,
}

/// Start the prefetch worker detached (own process group, no stdio), so that PostgreSQL's
/// restore_command returns now while the next segments download.
fn spawn_prefetch_worker(cli: &Cli, seg_size: u64) {
    let Ok(dest) = std::path::absolute(&cli.dest) else { return };
    let Some(mut cmd) = cli.common.detached_self() else { return };
    cmd.arg("--prefetch-worker").arg(seg_size.to_string());
    cmd.arg(&cli.name).arg(dest).stderr(std::process::Stdio::null());
    if let Err(e) = cmd.spawn() {
        tracing::debug!("prefetch worker not started: {e}");
    }
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
    let request = FetchRequest { name: &cli.name, dest: &cli.dest, worker: cli.prefetch_worker };
    let call = match cli.common.load("wal-fetch") {
        Ok(config) => fetch_call::run(&config, &request),
        Err(e) => FetchCall::failed(e, &cli.dest),
    };
    if let Some(seg) = call.start_worker {
        spawn_prefetch_worker(&cli, seg);
    }
    report(&cli, &call);
    ExitCode::from(call.exit_code())
}

/// The file's outcome as JSON (`--json`), or the error's line (and hint).
fn report(cli: &Cli, call: &FetchCall) {
    match &call.answer {
        Answer::Restored(out) | Answer::InPgWal(out) if cli.common.json => common::print_json(out),
        Answer::Failed { error, standby } => {
            common::fail("wal-fetch", error, call.exit_code());
            if *standby {
                eprintln!(
                    "wal-fetch: standby mode (standby.signal): answering {} so that PostgreSQL retries",
                    call.exit_code()
                );
            }
        }
        _ => {}
    }
}
