//! wal-push: PostgreSQL's archive_command. Exit 0 only once the file is durably stored.
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use clap::Parser;
use walvault::ops::archive::{push as wal_push, push_ahead};

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
    /// Internal: run as the detached push-ahead helper; PATH is then the pg_wal directory
    #[arg(long, hide = true)]
    push_ahead_helper: bool,
    #[command(flatten)]
    common: common::Common,
}

/// Start the push-ahead helper detached (own process group, stdin and stdout closed, stderr
/// into `helper.log` in its directory), so that it keeps pushing the backlog after this call
/// returns. Flags name the repository, environment and config file; secrets stay in the
/// environment the helper inherits.
fn spawn_helper(cli: &Cli, dir: &Path, pg_wal: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let log = dir.join("helper.log");
    // Keep the log small: the last run's lines only once it passes 1 MiB.
    let truncate = std::fs::metadata(&log).is_ok_and(|m| m.len() > 1 << 20);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .truncate(truncate)
        .mode(0o600)
        .open(&log)
        .map_or_else(|_| Stdio::null(), Stdio::from);
    let Some(mut cmd) = cli.common.detached_self() else { return };
    cmd.arg("--push-ahead-helper");
    cmd.arg(std::path::absolute(pg_wal).unwrap_or_else(|_| pg_wal.to_path_buf())).stderr(stderr);
    if let Err(e) = cmd.spawn() {
        tracing::debug!("push-ahead helper not started: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(), walvault::Error> {
        let config = cli.common.load("wal-push")?;
        let cache = common::cache_dir(&config);
        // Push-ahead needs a cache directory, more than one file at a time, and a file in a
        // pg_wal (with archive_status beside it).
        let pg_wal = cli.path.parent().filter(|p| p.join("archive_status").is_dir());
        let ahead = match (&cache, pg_wal) {
            (Some(c), Some(_)) if config.push_parallel > 1 || cli.push_ahead_helper => {
                Some(push_ahead::dir(c, &config.repo.to_string(), &config.env))
            }
            _ => None,
        };
        if cli.push_ahead_helper {
            // Here PATH is the pg_wal directory.
            let Some(cache) = cache.as_deref() else { return Ok(()) };
            return common::runtime()?.block_on(async {
                let repo = walvault::ops::Repo::open(&config).await?;
                let stats = push_ahead::run_helper(&repo, cache, &cli.path, config.push_parallel).await?;
                tracing::debug!("push-ahead helper done: {stats:?}");
                Ok(())
            });
        }
        if let (Some(dir), Some(pg_wal)) = (&ahead, pg_wal) {
            // The common case in a backlog: the helper stored this file already. No runtime,
            // no storage client, no read of the file.
            if push_ahead::take_done(dir, &cli.path) {
                let name = cli.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                tracing::debug!("{name} was pushed ahead by the push-ahead helper");
                if cli.common.json {
                    common::print_json(
                        &serde_json::json!({"name": name, "object": "(pushed ahead)", "duplicate": false, "requests": {}}),
                    );
                }
                return Ok(());
            }
            let name = cli.path.file_name().and_then(|n| n.to_str());
            if !push_ahead::ready_files(pg_wal, name).is_empty() && !push_ahead::helper_running(dir) {
                let _ = walvault::fsutil::create_private_dir_all(dir);
                spawn_helper(&cli, dir, pg_wal);
            }
        }
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            let out = wal_push::wal_push(&repo, &cli.path, cache.as_deref(), ahead.as_deref()).await?;
            if cli.common.json {
                common::print_json(&out);
            } else if !out.duplicate && out.object != "(pushed ahead)" {
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
