//! The repository summary, `status/<env>/summary.json`: newest WAL, each timeline's newest
//! segment, the backups' counts and newest, the last verification. wal-push (throttled through
//! its cache directory), base-backup, prune and verify keep it current, so that
//! `walvault status` costs one GET and one or two LISTs whatever the archive's size
//! (`docs/FORMAT.md`, the summary).
//!
//! It is plain JSON for people, authenticated like backup metadata: in an encrypted
//! repository `mac` is an HMAC-SHA256 of the canonical form (every field but `mac`, prefixed
//! with a domain string) under the metadata MAC key derived from the write key. A summary that
//! fails the check is refused ([`Error::Corrupt`]) and status falls back to the full listing.
//! The MAC covers `repository`, the id of the repository it was written in: a summary copied
//! from another repository under the same key passes the MAC, so the readers that trust it
//! for more than a display (verify's progress, the writers) load it with [`load_bound`], which
//! refuses it; status uses [`load`] (no request for `walvault.json`: status stays within 3).
//!
//! Writers read, change and write the object; two writers at the same instant can lose one
//! update. Every field is a maximum or a value its writer sets again on its next run, and the
//! counts are exact again after the next prune or verify, which list everything.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::Repo;
use super::catalog::BackupMetadata;
use crate::wal::WalFileName;
use crate::{Error, Result};

/// The summary format this build writes and reads.
pub const SUMMARY_VERSION: u32 = 1;

/// wal-push writes the summary at most this often (and at once for a new day or timeline).
pub const WAL_WRITE_INTERVAL: TimeDelta = TimeDelta::seconds(60);

const MAC_DOMAIN: &[u8] = b"walvault summary v1\0";

/// The whole summary object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub version: u32,
    pub env: String,
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub wal: WalSummary,
    #[serde(default)]
    pub backups: Option<BackupsSummary>,
    #[serde(default)]
    pub verification: Option<VerificationSummary>,
    #[serde(default)]
    pub verify: VerifyProgress,
    /// The id (hex) of the repository it was written in; none in a repository without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What wal-push reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSummary {
    /// The greatest WAL object key written (day partition, then name).
    pub newest_key: Option<String>,
    pub newest_archived_at: Option<DateTime<Utc>>,
    /// WAL objects written (pushes counted by the writers; exact after prune or verify).
    pub files: u64,
    /// Timeline → its newest segment and when it was stored.
    pub timelines: BTreeMap<u32, TimelineSummary>,
}

/// One timeline as the writers saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineSummary {
    pub first_segment: Option<String>,
    pub first_archived_at: Option<DateTime<Utc>>,
    pub last_segment: Option<String>,
    pub last_archived_at: Option<DateTime<Utc>>,
    /// When its history file was stored.
    pub began_at: Option<DateTime<Utc>>,
    /// The timeline it branched off and where (from its history file; set by a recount).
    #[serde(default)]
    pub parent: Option<u32>,
    #[serde(default)]
    pub switchpoint: Option<crate::wal::Lsn>,
}

/// The complete backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsSummary {
    pub count: u64,
    pub stored_bytes: u64,
    pub newest: Option<BackupBrief>,
    pub oldest: Option<BackupBrief>,
    /// The newest full backup, and the newest diff/incr backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_full: Option<BackupBrief>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_incremental: Option<BackupBrief>,
}

/// One backup, as status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupBrief {
    pub name: String,
    pub timeline: u32,
    pub stop_time: DateTime<Utc>,
    pub seconds: f64,
    pub stored_bytes: u64,
    pub wal_segment_size: u64,
    /// The WAL file holding its end: restorable once the archive reaches it.
    pub stop_wal_file: String,
}

impl BackupBrief {
    pub fn of(b: &BackupMetadata) -> BackupBrief {
        BackupBrief {
            name: b.name.clone(),
            timeline: b.timeline,
            stop_time: b.stop_time,
            seconds: b.seconds,
            stored_bytes: b.stored_bytes,
            wal_segment_size: b.wal_segment_size,
            stop_wal_file: b.stop_wal_file.clone(),
        }
    }
}

/// The newest verification report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationSummary {
    pub key: String,
    pub timestamp: DateTime<Utc>,
    pub status: String,
    pub time_to_recover_seconds: Option<f64>,
}

/// How far `walvault verify` got, so that the next run reads what is new.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyProgress {
    /// Backup name → when a run last read it in full and found it good.
    pub backups: BTreeMap<String, DateTime<Utc>>,
    /// The newest modification time (the repository's clock) of the WAL objects a run
    /// decoded and authenticated: older objects were checked, but for those of the last
    /// minutes before it, which are listed in `wal_recent`.
    pub wal_checked_through: Option<DateTime<Utc>>,
    /// Keys checked whose modification time is within a margin before `wal_checked_through`
    /// (an upload can finish after a later one: those are checked by the next run).
    #[serde(default)]
    pub wal_recent: Vec<String>,
}

impl Summary {
    fn canonical(&self) -> Vec<u8> {
        let mut bare = self.clone();
        bare.mac = None;
        let mut out = MAC_DOMAIN.to_vec();
        out.extend(serde_json::to_vec(&bare).unwrap_or_default());
        out
    }

    /// Set `mac` (and the key fingerprint) with the write key, if the repository is encrypted.
    ///
    /// # Errors
    /// Only if the key derivation fails.
    pub fn seal(&mut self, keyring: &crate::codec::crypt::Keyring) -> Result<()> {
        self.mac = None;
        self.key_fingerprint = keyring.write_key().map(|k| k.fingerprint_hex());
        if let Some(key) = keyring.write_key() {
            self.mac = Some(hex::encode(hmac::sign(&key.metadata_mac_key()?, &self.canonical()).as_ref()));
        }
        Ok(())
    }

    /// Check the version, the environment and (with any key configured) the MAC.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object` and the field.
    pub fn check(&self, object: &str, env: &str, keyring: &crate::codec::crypt::Keyring) -> Result<()> {
        let bad = |why: String| Error::corrupt(object, why);
        if self.version != SUMMARY_VERSION {
            return Err(bad(format!("summary version {} is not supported (expected {SUMMARY_VERSION})", self.version)));
        }
        if self.env != env {
            return Err(bad(format!("summary of environment {:?}, not {env:?}", self.env)));
        }
        if keyring.is_empty() {
            return Ok(());
        }
        let Some(mac) = self.mac.as_deref().and_then(|m| hex::decode(m).ok()) else {
            return Err(bad(
                "summary has no valid mac: summaries of an encrypted repository must be authenticated".into()
            ));
        };
        let fingerprint = self.key_fingerprint.as_deref().unwrap_or_default();
        let Some(key) = keyring.keys().find(|k| k.fingerprint_hex() == fingerprint) else {
            return Err(Error::Key {
                object: object.to_string(),
                reason: format!("summary is authenticated with key {fingerprint:?}, which is not configured"),
            });
        };
        hmac::verify(&key.metadata_mac_key()?, &self.canonical(), &mac)
            .map_err(|_| bad("summary mac does not match its fields: it was changed by someone without the key".into()))
    }

    /// Record a WAL object stored at `key` (named `name`) at `at`; `pushes` objects since the
    /// last write.
    pub fn wal_stored(&mut self, key: &str, name: &str, at: DateTime<Utc>, pushes: u64) {
        let w = &mut self.wal;
        w.files += pushes;
        if w.newest_key.as_deref().is_none_or(|n| key > n) {
            w.newest_key = Some(key.to_string());
            w.newest_archived_at = Some(at);
        }
        let Ok(parsed) = WalFileName::parse(name) else { return };
        let t = w.timelines.entry(parsed.tli()).or_default();
        if matches!(parsed, WalFileName::History { .. }) {
            t.began_at.get_or_insert(at);
        } else if parsed.is_segment() {
            if t.first_segment.as_deref().is_none_or(|f| name < f) {
                t.first_segment = Some(name.to_string());
                t.first_archived_at = Some(at);
            }
            if t.last_segment.as_deref().is_none_or(|l| name >= l) {
                t.last_segment = Some(name.to_string());
                t.last_archived_at = Some(at);
            }
        }
    }

    /// Set the backups section from the complete list (oldest first).
    pub fn set_backups(&mut self, all: &[BackupMetadata]) {
        self.verify.backups.retain(|name, _| all.iter().any(|b| &b.name == name));
        self.backups = Some(BackupsSummary {
            count: all.len() as u64,
            stored_bytes: all.iter().map(|b| b.stored_bytes).sum(),
            newest: all.last().map(BackupBrief::of),
            oldest: all.first().map(BackupBrief::of),
            newest_full: all.iter().rfind(|b| b.backup_type.is_full()).map(BackupBrief::of),
            newest_incremental: all.iter().rfind(|b| !b.backup_type.is_full()).map(BackupBrief::of),
        });
    }
}

/// `status/<env>/summary.json`.
pub fn key(repo: &Repo) -> String {
    repo.layout.summary_key()
}

/// The summary, checked; `None` when there is none yet.
///
/// # Errors
/// Storage failures; [`Error::Corrupt`]/[`Error::Key`] for one that is not valid or not
/// authentic.
pub async fn load(repo: &Repo) -> Result<Option<Summary>> {
    let key = key(repo);
    let bytes = match repo.storage.get_bytes(&key).await {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let object = repo.storage.describe(&key);
    let summary: Summary = serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&object, e))?;
    summary.check(&object, repo.layout.env(), &repo.keyring)?;
    Ok(Some(summary))
}

/// Bring `summary` up to date with its newest day partition (the one of `now` when it has no
/// WAL yet): one LIST of what was stored there after the newest segment of each timeline
/// written that day. wal-push writes the summary at most a minute apart (and at once for a
/// new day or timeline), so the summary and this listing together know the newest segment.
///
/// # Errors
/// Storage failures of the listing.
pub async fn catch_up(repo: &Repo, summary: &mut Summary, now: DateTime<Utc>) -> Result<()> {
    let newest_day = summary.wal.newest_key.as_deref().and_then(|k| repo.layout.parse_wal_key(k)).map(|w| w.day);
    let day = newest_day.unwrap_or_else(|| now.date_naive());
    let prefix = repo.layout.wal_day_prefix(day);
    // After the newest segment of every timeline written that day (in name order, an older
    // timeline's segments come first).
    let day_start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let after = summary
        .wal
        .timelines
        .values()
        .filter(|t| t.last_archived_at >= day_start)
        .filter_map(|t| t.last_segment.as_ref().map(|s| format!("{prefix}{s}")))
        .min();
    let listing = repo.storage.list(&prefix, None, after.as_deref()).await?;
    for o in &listing.objects {
        let Some(w) = repo.layout.parse_wal_key(&o.key) else { continue };
        // Up to its timeline's newest known segment, the summary counted it already.
        let tli = WalFileName::parse(&w.name).map(|n| n.tli()).ok();
        let known = tli.and_then(|t| summary.wal.timelines.get(&t)).and_then(|t| t.last_segment.as_deref());
        if known.is_some_and(|k| w.name.as_str() <= k) {
            continue;
        }
        let at: DateTime<Utc> = o.last_modified.unwrap_or_else(Utc::now);
        summary.wal_stored(&o.key, &w.name, at, 1);
    }
    Ok(())
}

/// [`load`], and the summary must have been written in this repository (its `repository`
/// is this repository's id, from `walvault.json`).
///
/// # Errors
/// As [`load`]; [`Error::Corrupt`] for a summary of another repository.
pub async fn load_bound(repo: &Repo) -> Result<Option<Summary>> {
    let Some(summary) = load(repo).await? else { return Ok(None) };
    let here = repository_hex(repo).await?;
    if summary.repository == here {
        return Ok(Some(summary));
    }
    let why = match (&summary.repository, &here) {
        (None, _) => "it was written by an older walvault, which did not name the repository in it \
                      (the next writer replaces it)"
            .to_string(),
        (Some(theirs), ours) => format!(
            "it is the summary of repository {theirs}, not this one ({}): copied from another repository?",
            ours.as_deref().unwrap_or("none")
        ),
    };
    Err(Error::corrupt(repo.storage.describe(&key(repo)), why))
}

/// This repository's id in hex (`None`: a repository without one).
async fn repository_hex(repo: &Repo) -> Result<Option<String>> {
    Ok(repo.place().await?.repository.map(hex::encode))
}

/// Read the summary (a missing or invalid one, or one of another repository, starts afresh),
/// apply `change`, write it back.
///
/// # Errors
/// Storage failures.
pub async fn update(repo: &Repo, change: impl FnOnce(&mut Summary)) -> Result<()> {
    let mut s = match load_bound(repo).await {
        Ok(Some(s)) => s,
        Ok(None) => Summary::default(),
        Err(e @ Error::Storage { .. }) => return Err(e),
        Err(e) => {
            tracing::warn!("{e}: writing a new summary");
            Summary::default()
        }
    };
    s.version = SUMMARY_VERSION;
    s.env = repo.layout.env().to_string();
    s.repository = repository_hex(repo).await?;
    s.updated_at = Some(Utc::now());
    change(&mut s);
    s.seal(&repo.keyring)?;
    let body = serde_json::to_vec_pretty(&s).map_err(|e| Error::Invalid(format!("summary: {e}")))?;
    repo.storage.put(&key(repo), body.into()).await
}

/// Run an update and only log a failure: a summary never fails the command that keeps it.
pub async fn best_effort(repo: &Repo, what: &str, change: impl FnOnce(&mut Summary)) {
    if let Err(e) = update(repo, change).await {
        tracing::warn!("the repository summary was not updated after {what}: {e}");
    }
}

mod writers;

pub use writers::{backup_added, recount, verified, wal_pushed};

#[cfg(test)]
mod tests;
