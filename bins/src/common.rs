//! What every walvault binary shares: common flags, logging, configuration, error reporting.
//! No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use walvault::Error;
use walvault::config::{Config, Overrides};

/// Flags every binary accepts. Each overrides the environment and the config file.
#[derive(Debug, Args)]
pub struct Common {
    /// Config file of NAME=value lines (default: $WALVAULT_CONFIG, else /etc/walvault/walvault.conf if present)
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Repository: s3://bucket/prefix or file:///abs/path (WALVAULT_REPO)
    #[arg(long, value_name = "URL", global = true)]
    pub repo: Option<String>,
    /// Environment segment of the layout (WALVAULT_ENV, default production)
    #[arg(long = "env", value_name = "ENV", global = true)]
    pub environment: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More log lines (debug); WALVAULT_LOG sets a filter too
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

impl Common {
    /// A detached copy of this binary (its own process group, stdin and stdout closed) with
    /// the flags that name the repository, environment and config file; secrets stay in the
    /// environment it inherits. The caller adds its own arguments and stderr.
    pub fn detached_self(&self) -> Option<std::process::Command> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().ok()?;
        let mut cmd = std::process::Command::new(exe);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(r) = &self.repo {
            cmd.arg("--repo").arg(r);
        }
        if let Some(e) = &self.environment {
            cmd.arg("--env").arg(e);
        }
        cmd.process_group(0).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        Some(cmd)
    }

    /// Set up logging, then load the configuration.
    pub fn load(&self, bin: &'static str) -> Result<Config, Error> {
        init_logging(bin, self.verbose);
        let mut overrides = Overrides::new();
        if let Some(r) = &self.repo {
            overrides.insert("WALVAULT_REPO".into(), r.clone());
        }
        if let Some(e) = &self.environment {
            overrides.insert("WALVAULT_ENV".into(), e.clone());
        }
        Config::load(self.config.as_deref(), &overrides)
    }
}

/// One line per event on stderr: `wal-push: message`, `wal-push: warning: message`.
pub fn init_logging(bin: &'static str, verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("WALVAULT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat { bin })
        .try_init();
}

struct LineFormat {
    bin: &'static str,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LineFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing::Level;
        let level = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::DEBUG | Level::TRACE => "debug: ",
            Level::INFO => "",
        };
        write!(writer, "{}: {level}", self.bin)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Print an error as one line (plus its hint) and return its exit code.
pub fn fail(bin: &str, err: &Error, code: u8) -> ExitCode {
    eprintln!("{bin}: error: {err}");
    if let Some(hint) = err.hint() {
        eprintln!("HINT: {hint}");
    }
    ExitCode::from(code)
}

/// Print `value` as JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot print json: {e}"),
    }
}

/// A small runtime: one WAL file per process needs no more than two workers.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    walvault::ops::repo::runtime::runtime()
}
