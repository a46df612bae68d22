//! walvault: operations on the repository.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use walvault::ops::decrypt::Source;

#[path = "../common.rs"]
mod common;

/// Operate a walvault repository: inspect, verify, prune, decrypt.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  walvault list\n  walvault decrypt wal/production/2024/01/15/000000010000000000000003.zst.enc > seg\n  walvault decrypt - < downloaded.zst.enc > plain"
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
    /// Write an object's stored bytes (undecoded) to stdout
    Get {
        /// Object key
        key: String,
        /// Required: says you want the bytes as stored, still encrypted
        #[arg(long, required = true)]
        raw: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(), walvault::Error> {
        let config = cli.common.load("walvault")?;
        common::runtime()?.block_on(async {
            let repo = walvault::ops::Repo::open(&config).await?;
            match &cli.command {
                Command::List => {
                    let listing = walvault::ops::list::list(&repo).await?;
                    if cli.common.json {
                        common::print_json(&listing);
                    } else {
                        print!("{}", walvault::ops::list::render(&listing));
                    }
                }
                Command::Decrypt { object } => {
                    let source = match object.as_str() {
                        "-" => Source::Stdin,
                        o if PathBuf::from(o).is_file() => Source::File(PathBuf::from(o)),
                        o => Source::Key(o.to_string()),
                    };
                    walvault::ops::decrypt::decrypt(&repo, source, std::io::stdout()).await?;
                }
                Command::Ls { prefix } => {
                    let objects = walvault::ops::objects::list(&repo, prefix).await?;
                    if cli.common.json {
                        common::print_json(&objects);
                    } else {
                        for o in objects {
                            println!("{:>12}  {}", o.size, o.key);
                        }
                    }
                }
                Command::Get { key, .. } => {
                    walvault::ops::objects::get_raw(&repo, key).await?;
                }
            }
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => common::fail("walvault", &e, e.exit_code().code()),
    }
}
