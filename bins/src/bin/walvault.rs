//! walvault: operations on the repository.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use walvault::ops::repo::decrypt::Source;

use walvault_bins::common;

use walvault::config::Config;
use walvault::ops::Repo;
use walvault::ops::backup::files;
use walvault::ops::repo::human::human_bytes;
use walvault::ops::report::status;
use walvault::ops::retention::prune;
use walvault::ops::verify;
use walvault_bins::walvault_cli::{FilesBackupArgs, FilesRestoreArgs, PruneArgs, StatusArgs, VerifyArgs};

/// Operate a walvault repository: inspect, verify, prune, monitor, back up files, decrypt.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  walvault list\n  walvault verify --restore-test --check-db mykadoo --check-sql 'SELECT count(*) FROM \"User\"'\n  walvault prune --dry-run\n  walvault status --max-wal-age 1h --prometheus > /var/lib/node_exporter/walvault.prom.tmp\n  walvault files-backup --kind uploads /app/uploads\n  walvault decrypt - < downloaded.zst.enc > plain\n  walvault key add    (after a key rotation: register the new write key)\n\nExit codes: 0 ok, 8 verify failed or status unhealthy; 1-7 as for every walvault binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: common::Common,
}

#[derive(Subcommand)]
enum Command {
    /// Backups and the recoverable window per timeline (table, or --json)
    #[command(alias = "info")]
    List,
    /// Write the plaintext of a repository object (a key, a local file, or - for stdin) to stdout
    Decrypt {
        /// Object key in the repository, a path to a local object file, or -
        object: String,
    },
    /// List the objects under a key prefix (all of them by default)
    Ls {
        /// Key prefix, e.g. wal/production/2024/01/
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Check the backups and WAL new since the last run (--max-bytes, --backup, --full for more) and the WAL chain; write the verification report (exit 8 when a check fails)
    Verify(VerifyArgs),
    /// Delete what the retention policy no longer keeps (--dry-run shows the plan)
    Prune(PruneArgs),
    /// Archive health for monitoring: WAL and backup age, gaps, last verification (exit 8 when unhealthy)
    Status(StatusArgs),
    /// Back up a file-storage directory (uploads, assets, config) as one streamed archive
    FilesBackup(FilesBackupArgs),
    /// Restore a file-storage backup into an empty directory
    FilesRestore(FilesRestoreArgs),
    /// The write keys the repository accepts: list them, or register the configured one
    #[command(subcommand)]
    Key(KeyCommand),
    /// Write an object's stored bytes (undecoded) to stdout
    Get {
        /// Object key
        key: String,
        /// Required: says you want the bytes as stored, still encrypted
        #[arg(long, required = true)]
        raw: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Register the configured write key (BACKUP_ENCRYPTION_KEY / WALVAULT_KEY_FILE) in
    /// walvault.json, so that writers accept it: run once per new key, before writers use it
    Add,
    /// The registered key fingerprints, and which of them this process has configured
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<walvault::ExitCode, walvault::Error> {
        let config = cli.common.load("walvault")?;
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            let healthy = dispatch(&repo, &config, &cli.command, cli.common.json).await?;
            Ok(if healthy { walvault::ExitCode::Success } else { walvault::ExitCode::Unhealthy })
        })
    };
    match run() {
        Ok(code) => ExitCode::from(code.code()),
        Err(e) => common::fail("walvault", &e, e.exit_code().code()),
    }
}

/// Run one subcommand and show its result; false when it found the repository unhealthy.
async fn dispatch(repo: &Repo, config: &Config, command: &Command, json: bool) -> Result<bool, walvault::Error> {
    match command {
        Command::List => {
            let listing = walvault::ops::report::list::list(repo).await?;
            show(json, &listing, || walvault::ops::report::list::render(&listing));
        }
        Command::Verify(args) => {
            let report = verify::verify(repo, &args.options(config)?).await?;
            show(json, &report, || verify::render(&report));
            return Ok(report.status == "passed");
        }
        Command::Prune(args) => {
            let options = prune::PruneOptions { resume_window: config.resume_window, ..args.options()? };
            let plan = prune::prune(repo, &options).await?;
            show(json, &plan, || prune::render(&plan));
        }
        Command::Status(args) => {
            let s = status::status(repo, &args.options()?).await?;
            match args.prometheus {
                true => print!("{}", status::prometheus(&s)),
                false => show(json, &s, || status::render(&s)),
            }
            return Ok(s.healthy);
        }
        Command::FilesBackup(a) => {
            let meta = files::files_backup(repo, a.kind.name(), &a.dir, a.spool_dir.clone(), a.max_rate()?).await?;
            show(json, &meta, || {
                let (size, stored) = (human_bytes(meta.bytes), human_bytes(meta.stored_bytes));
                format!("{}: {} files, {size} ({stored} stored)\n", meta.name, meta.files)
            });
        }
        Command::FilesRestore(a) => {
            let done = files::files_restore(repo, a.kind.name(), Some(&a.backup), &a.dir).await?;
            show(json, &done, || format!("restored {} into {}: {} files\n", done.backup, done.dir, done.files));
        }
        Command::Decrypt { object } => decrypt(repo, object).await?,
        Command::Ls { prefix } => {
            let objects = walvault::ops::repo::objects::list(repo, prefix).await?;
            show(json, &objects, || objects.iter().map(|o| format!("{:>12}  {}\n", o.size, o.key)).collect());
        }
        Command::Key(k) => key(repo, k, json).await?,
        Command::Get { key, .. } => {
            walvault::ops::repo::objects::get_raw(repo, key).await?;
        }
    }
    Ok(true)
}

/// `walvault decrypt OBJECT|-`: a key, a local file, or stdin.
async fn decrypt(repo: &Repo, object: &str) -> Result<(), walvault::Error> {
    let source = match object {
        "-" => Source::Stdin,
        o if PathBuf::from(o).is_file() => Source::File(PathBuf::from(o)),
        o => Source::Key(o.to_string()),
    };
    walvault::ops::repo::decrypt::decrypt(repo, source, std::io::stdout()).await.map(|_| ())
}

/// `walvault key add|list`.
async fn key(repo: &Repo, command: &KeyCommand, json: bool) -> Result<(), walvault::Error> {
    match command {
        KeyCommand::Add => {
            let done = walvault::ops::repo::keys::add(repo).await?;
            show(json, &done, || match done.added {
                true => format!("registered key {} in {}\n", done.fingerprint, done.repository),
                false => format!("key {} is already registered in {}\n", done.fingerprint, done.repository),
            });
        }
        KeyCommand::List => {
            let keys = walvault::ops::repo::keys::list(repo).await?;
            show(json, &keys, || {
                keys.keys.iter().map(|k| format!("{}  {}\n", k.fingerprint, k.configured.unwrap_or("-"))).collect()
            });
        }
    }
    Ok(())
}

/// JSON on stdout with --json, else the human table.
fn show(json: bool, value: &impl serde::Serialize, human: impl FnOnce() -> String) {
    if json {
        common::print_json(value);
    } else {
        print!("{}", human());
    }
}
