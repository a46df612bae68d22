//! What one `walvault verify` run reads, so that a run costs what is new: the backups chosen
//! by `--backup NAME|latest|all` or, by default, every backup no run has read yet plus the
//! newest, then older ones within `--max-bytes`, those read longest ago first (so successive
//! runs rotate through them); `--full` reads everything. The progress (when each backup was
//! last read in full and found good, and up to when WAL objects were checked by content) is
//! kept in the repository summary ([`crate::ops::repo::summary::VerifyProgress`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ops::repo::catalog::BackupMetadata;
use crate::ops::repo::summary::VerifyProgress;
use crate::{Error, Result};

/// Which backups to read (`--backup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// New backups, the newest, then older ones within the byte budget.
    Default,
    All,
    /// One backup by name, or `latest`.
    One(String),
}

impl std::str::FromStr for Which {
    type Err = Error;
    fn from_str(s: &str) -> Result<Which> {
        match s {
            "" => Err(Error::config("--backup", "expected a backup name, latest or all")),
            "all" => Ok(Which::All),
            other => Ok(Which::One(other.to_string())),
        }
    }
}

/// A backup this run did not read, and when it was last read in full.
#[derive(Debug, Clone, Serialize)]
pub struct Due {
    pub name: String,
    pub last_verified: Option<DateTime<Utc>>,
    pub stored_bytes: u64,
}

/// What the run reads and leaves for later, as the report shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scope {
    /// `default`, `all`, `full` or the name asked for.
    pub mode: String,
    pub max_bytes: Option<u64>,
    /// Database backups read in full this run, and their stored bytes.
    pub backups_read: Vec<String>,
    pub bytes_read: u64,
    /// Database backups left for a later run, read longest ago first.
    pub backups_due: Vec<Due>,
    /// WAL objects decoded and authenticated this run, and their stored bytes.
    pub wal_checked: u64,
    pub wal_bytes: u64,
    /// Objects stored before this were checked by an earlier run (none: every object).
    pub wal_checked_since: Option<DateTime<Utc>>,
}

/// Pick the database backups to read; `backups` oldest first.
///
/// # Errors
/// [`Error::NotFound`] for `--backup NAME` that is no complete backup.
pub fn select<'a>(
    backups: &'a [BackupMetadata],
    progress: &VerifyProgress,
    which: &Which,
    full: bool,
    max_bytes: Option<u64>,
) -> Result<(Vec<&'a BackupMetadata>, Scope)> {
    let mut scope = Scope { max_bytes, ..Scope::default() };
    let chosen: Vec<&BackupMetadata> = match (which, full) {
        (_, true) | (Which::All, _) => {
            scope.mode = if full { "full" } else { "all" }.to_string();
            backups.iter().collect()
        }
        (Which::One(name), false) => {
            scope.mode = name.clone();
            let found = match name.as_str() {
                "latest" => backups.last(),
                _ => backups.iter().find(|b| &b.name == name),
            };
            vec![found.ok_or_else(|| Error::not_found(format!("backup {name} (--backup)")))?]
        }
        (Which::Default, false) => {
            scope.mode = "default".to_string();
            default_choice(backups, progress, max_bytes)
        }
    };
    scope.backups_read = chosen.iter().map(|b| b.name.clone()).collect();
    scope.bytes_read = chosen.iter().map(|b| b.stored_bytes).sum();
    let mut due: Vec<Due> = backups
        .iter()
        .filter(|b| !scope.backups_read.contains(&b.name))
        .map(|b| Due {
            name: b.name.clone(),
            last_verified: progress.backups.get(&b.name).copied(),
            stored_bytes: b.stored_bytes,
        })
        .collect();
    due.sort_by_key(|d| d.last_verified);
    scope.backups_due = due;
    Ok((chosen, scope))
}

/// Never-read backups and the newest, then the ones read longest ago while the budget lasts.
fn default_choice<'a>(
    backups: &'a [BackupMetadata],
    progress: &VerifyProgress,
    max_bytes: Option<u64>,
) -> Vec<&'a BackupMetadata> {
    let newest = backups.last().map(|b| b.name.as_str());
    let (mut chosen, mut older): (Vec<&BackupMetadata>, Vec<&BackupMetadata>) =
        backups.iter().partition(|b| Some(b.name.as_str()) == newest || !progress.backups.contains_key(&b.name));
    let mut budget = max_bytes.unwrap_or(0).saturating_sub(chosen.iter().map(|b| b.stored_bytes).sum());
    older.sort_by_key(|b| progress.backups.get(&b.name).copied());
    for b in older {
        if b.stored_bytes > budget {
            break;
        }
        budget -= b.stored_bytes;
        chosen.push(b);
    }
    chosen.sort_by_key(|b| b.stop_time);
    chosen
}

/// What was read and what is due, as lines.
pub fn render(s: &Scope) -> String {
    let size = crate::ops::repo::human::human_bytes;
    let mut out = format!(
        "\nread this run ({}): {} backups ({}), {} WAL objects ({})\n",
        s.mode,
        s.backups_read.len(),
        size(s.bytes_read),
        s.wal_checked,
        size(s.wal_bytes)
    );
    for d in &s.backups_due {
        let when = d
            .last_verified
            .map_or("never read".to_string(), |t| format!("last read {}", t.format("%Y-%m-%d %H:%M UTC")));
        out.push_str(&format!("due: {} ({}, {when})\n", d.name, size(d.stored_bytes)));
    }
    out
}

#[cfg(test)]
mod tests;
