//! The `restore_command` line a restore writes: `wal-fetch` beside the running binary, with
//! the repository, environment and config file named (and `WALVAULT_ENCRYPTION=none` when
//! that was chosen) -- never a key. Every word is quoted for the shell PostgreSQL runs it
//! with (`shlex`).

use std::path::Path;

use crate::config::Config;
use crate::{Error, Result};

/// The restore_command for `config`, fetching with the `wal-fetch` beside the running
/// binary (else the one on PATH).
///
/// # Errors
/// [`Error::Config`] for a setting that cannot be written into a shell line (a NUL byte).
pub fn restore_command(config: &Config) -> Result<String> {
    let fetch = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("wal-fetch")))
        .filter(|p| p.is_file())
        .map_or_else(|| "wal-fetch".to_string(), |p| p.display().to_string());
    restore_command_with(config, &fetch)
}

/// [`restore_command`] with the wal-fetch binary `fetch`.
///
/// # Errors
/// As [`restore_command`].
pub fn restore_command_with(config: &Config, fetch: &str) -> Result<String> {
    let repo = config.repo.to_string();
    let mut words = vec![quote("wal-fetch", fetch)?, "--repo".into(), quote("WALVAULT_REPO", &repo)?];
    words.extend(["--env".into(), quote("WALVAULT_ENV", &config.env)?]);
    if let Some(file) = &config.config_file {
        words.extend(["--config".into(), quote_path("--config", file)?]);
    }
    if let Some(dir) = &config.cache_dir {
        words.insert(0, format!("WALVAULT_CACHE_DIR={}", quote_path("WALVAULT_CACHE_DIR", dir)?));
    }
    // The choice to run without a key is carried over (it is not a secret; a key is).
    if config.keyring.unencrypted_by_choice() {
        words.insert(0, "WALVAULT_ENCRYPTION=none".into());
    }
    words.extend(["%f".into(), "%p".into()]);
    Ok(words.join(" "))
}

fn quote(setting: &str, value: &str) -> Result<String> {
    shlex::try_quote(value)
        .map(|q| q.into_owned())
        .map_err(|e| Error::config(setting, format!("{value:?} cannot be written into restore_command: {e}")))
}

fn quote_path(setting: &str, path: &Path) -> Result<String> {
    quote(setting, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, RawSettings};

    fn config(pairs: &[(&str, &str)]) -> Config {
        let env: std::collections::BTreeMap<_, _> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let raw = RawSettings::load_from(None, &Overrides::new(), |n| env.get(n).cloned()).expect("raw");
        Config::from_raw(&raw).expect("config")
    }

    #[test]
    fn every_word_survives_the_shell() {
        let hostile = "/srv/it's a \"dir\" $(rm -rf /) `x`";
        let cfg = config(&[
            ("WALVAULT_REPO", "file:///srv/backups"),
            ("WALVAULT_ENV", "staging"),
            ("WALVAULT_ENCRYPTION", "none"),
            ("WALVAULT_CACHE_DIR", hostile),
        ]);
        let line = restore_command_with(&cfg, "/opt/wal vault/wal-fetch").expect("line");
        let words = shlex::split(&line).expect("splits");
        assert_eq!(
            words,
            [
                "WALVAULT_ENCRYPTION=none",
                &format!("WALVAULT_CACHE_DIR={hostile}"),
                "/opt/wal vault/wal-fetch",
                "--repo",
                "file:///srv/backups",
                "--env",
                "staging",
                "%f",
                "%p"
            ]
        );
        assert!(!line.contains("KEY"), "never a key: {line}");
    }
}
