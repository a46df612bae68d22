//! wal-fetch: PostgreSQL's restore_command. 0 fetched, 1 not in the archive, above 125 for
//! every other failure so that PostgreSQL aborts recovery instead of ending it early.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use walvault::error::{ExitCode as Code, FETCH_HARD_FAILURE_BASE};
use walvault::ops::archive::fetch::Source;

#[path = "../common.rs"]
mod common;

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
    let run = || -> Result<Source, walvault::Error> {
        let config = cli.common.load("wal-fetch")?;
        let cache = common::cache_dir(&config);
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            if let (Some(seg), Some(cache)) = (cli.prefetch_worker, cache.as_deref()) {
                return prefetch_worker(&repo, cache, &cli, seg, config.fetch_prefetch).await;
            }
            let mut out = walvault::ops::archive::fetch::restore(&repo, &cli.name, &cli.dest, cache.as_deref()).await?;
            if let (true, Some(cache)) = (config.fetch_prefetch > 0, cache.as_deref()) {
                let seg = match out.source {
                    Source::PgWal => Some(out.bytes),
                    _ => walvault::ops::archive::prefetch::seg_size_of(&cli.dest),
                };
                let running = walvault::ops::archive::prefetch::owner_of(&cli.dest).is_some_and(|d| {
                    walvault::ops::archive::prefetch::worker_running(&walvault::ops::archive::prefetch::dir(
                        cache, &repo, &d,
                    ))
                });
                if let (Some(seg), false) = (seg, running) {
                    spawn_prefetch_worker(&cli, seg);
                }
            }
            // Exit 1 ("read it from pg_wal") only for a file that is there right now.
            if out.source == Source::PgWal
                && !walvault::ops::archive::fetch::still_in_pg_wal(&cli.dest, &cli.name, out.bytes)
            {
                tracing::warn!("{} left pg_wal after it was verified: fetching it from the archive", cli.name);
                out = walvault::ops::archive::fetch::wal_fetch(&repo, &cli.name, &cli.dest, cache.as_deref()).await?;
            }
            if cli.common.json {
                common::print_json(&out);
            }
            tracing::debug!(
                "{} {} from {} ({} bytes, {} ms)",
                if out.source == Source::PgWal { "verified" } else { "fetched" },
                out.name,
                out.object,
                out.bytes,
                out.millis
            );
            tracing::debug!("requests: {}", serde_json::to_string(&out.requests).unwrap_or_default());
            Ok(out.source)
        })
    };
    match run() {
        Ok(Source::PgWal) => {
            tracing::debug!("{} is in pg_wal, complete and verified: PostgreSQL reads it there", cli.name);
            ExitCode::from(Code::NotFound.code())
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(walvault::Error::NotFound { what }) => {
            tracing::debug!("{what} not found");
            ExitCode::from(Code::NotFound.code())
        }
        Err(e) if standby_retries(&cli.dest, &e) => {
            // In standby mode "not available" never ends recovery: PostgreSQL retries (or
            // streams). A storage outage or a hole that later archiving may fill must not
            // shut the standby down; it stays fatal in archive recovery toward a target.
            let code = e.exit_code().code();
            common::fail("wal-fetch", &e, code);
            eprintln!("wal-fetch: standby mode (standby.signal): answering {code} so that PostgreSQL retries");
            ExitCode::from(code)
        }
        Err(e) => common::fail("wal-fetch", &e, e.exit_code().fetch_code()),
    }
}

/// A failure worth retrying in standby mode: storage, or a hole in the archive.
fn standby_retries(dest: &std::path::Path, e: &walvault::Error) -> bool {
    let retryable = matches!(e, walvault::Error::Storage { .. } | walvault::Error::Hole(_));
    retryable && walvault::ops::archive::prefetch::pgdata_of(dest).is_some_and(|d| d.join("standby.signal").exists())
}

/// The detached worker: follow PostgreSQL's position, keeping the next segments ready (in
/// pg_wal along pitr-prepare's plan, else in the spool).
async fn prefetch_worker(
    repo: &walvault::ops::Repo,
    cache: &std::path::Path,
    cli: &Cli,
    seg: u64,
    depth: usize,
) -> Result<Source, walvault::Error> {
    use walvault::ops::archive::prefetch::{self, Plan, Target};
    let Some(owner) = prefetch::owner_of(&cli.dest) else { return Ok(Source::Archive) };
    let dir = prefetch::dir(cache, repo, &owner);
    let plan = prefetch::pgdata_of(&cli.dest).and_then(|pgdata| Plan::load(cache, repo, &pgdata));
    let target = match plan {
        Some(plan) => Target::PgWal { pg_wal: plan.pgdata.join("pg_wal"), plan },
        None => Target::Spool { seg_size: seg },
    };
    let n = prefetch::fill(repo, cache, &dir, &cli.name, depth, &target).await?;
    tracing::debug!("prefetched {n} segments after {}", cli.name);
    Ok(Source::Archive)
}
