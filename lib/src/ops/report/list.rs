//! `walvault list`: backups and the recoverable window per timeline.

use serde::Serialize;

use crate::Result;
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, BackupMetadata, WalArchive};
use crate::ops::repo::human::human_bytes;
use crate::ops::repo::timelines::{self, TimelineInfo};
use crate::ops::repo::wal_index::WalIndex;
use crate::ops::repo::windows::{self, Window};

/// What `walvault list` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The environment listed (`WALVAULT_ENV`).
    pub env: String,
    pub backups: Vec<BackupMetadata>,
    pub windows: Vec<Window>,
    /// With no backup here: the other environments the repository holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_envs: Vec<String>,
    /// Every timeline with its parent, switchpoint and the window of its own files.
    pub timelines: Vec<TimelineInfo>,
    /// Each backup's type and chain, in the order of `backups`.
    pub chains: Vec<ChainInfo>,
}

/// A backup's place in its incremental chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainInfo {
    pub backup: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub reference: Option<String>,
    /// Backups a restore reads (1 for a full backup); `None` when a link is missing.
    pub length: Option<usize>,
    /// Bytes stored by the whole chain.
    pub stored_bytes: Option<u64>,
}

fn chains(backups: &[BackupMetadata]) -> Vec<ChainInfo> {
    backups
        .iter()
        .map(|b| {
            let names = crate::ops::repo::chain::names_of(backups, b);
            let stored = names
                .as_ref()
                .map(|n| backups.iter().filter(|m| n.contains(&m.name)).map(|m| m.stored_bytes).sum::<u64>());
            ChainInfo {
                backup: b.name.clone(),
                kind: b.backup_type.name(),
                reference: b.reference.clone(),
                length: names.map(|n| n.len()),
                stored_bytes: stored,
            }
        })
        .collect()
}

/// Backups and windows.
///
/// # Errors
/// Storage failures, unreadable metadata or history files.
pub async fn list(repo: &Repo) -> Result<Listing> {
    let backups = catalog::backups(repo).await?;
    // The backups' segment size (WAL alone: PostgreSQL's default, as status assumes).
    let seg_size = backups.first().map_or(16 << 20, |b| b.wal_segment_size);
    let mut index = WalIndex::load(None, repo);
    let archive = WalArchive::load(repo, &mut index, seg_size).await?;
    let windows = windows::windows(repo, &backups, &archive).await?;
    let timelines = timelines::overview(repo, &archive).await?;
    let env = repo.layout.env().to_string();
    let other_envs = match backups.is_empty() {
        true => crate::ops::repo::envs::environments(repo).await?.into_iter().filter(|e| *e != env).collect(),
        false => Vec::new(),
    };
    let chains = chains(&backups);
    Ok(Listing { env, backups, windows, other_envs, timelines, chains })
}

/// The listing as tables that fit a terminal.
pub fn render(l: &Listing) -> String {
    let mut out = String::new();
    if l.backups.is_empty() {
        out.push_str(&format!("no complete backups in environment {}\n", l.env));
        if let Some(hint) = crate::ops::repo::envs::hint(&l.env, &l.other_envs) {
            out.push_str(&format!("{hint}\n"));
        }
    } else {
        out.push_str(&format!(
            "{:<40} {:<4} {:>5} {:<19} {:<19} {:>3} {:>12} {:>12} {:>10} {:>10}  {}\n",
            "BACKUP",
            "TYPE",
            "CHAIN",
            "STARTED (UTC)",
            "STOPPED (UTC)",
            "TL",
            "START LSN",
            "STOP LSN",
            "SIZE",
            "STORED",
            "BUILDS ON"
        ));
        for (b, c) in l.backups.iter().zip(&l.chains) {
            out.push_str(&format!(
                "{:<40} {:<4} {:>5} {:<19} {:<19} {:>3} {:>12} {:>12} {:>10} {:>10}  {}\n",
                b.name,
                c.kind,
                c.length.map_or("BROKEN".to_string(), |n| n.to_string()),
                b.start_time.format("%Y-%m-%d %H:%M:%S"),
                b.stop_time.format("%Y-%m-%d %H:%M:%S"),
                b.timeline,
                b.start_lsn.to_string(),
                b.stop_lsn.to_string(),
                human_bytes(b.bytes),
                human_bytes(b.stored_bytes),
                c.reference.as_deref().unwrap_or("-")
            ));
        }
    }
    out.push_str("\nRECOVERABLE WINDOW\n");
    if l.windows.is_empty() {
        out.push_str("none: no backup has the WAL it needs to be consistent\n");
    }
    for w in &l.windows {
        let latest = w.latest.map_or("?".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        out.push_str(&format!(
            "timeline {}: from {} (backup {}) to about {} UTC (WAL to {}, segment {}){}\n",
            w.timeline,
            w.earliest.format("%Y-%m-%d %H:%M:%S"),
            w.earliest_backup,
            latest,
            w.wal_ends_at,
            w.last_segment,
            w.gap.as_ref().map_or(String::new(), |g| format!("; GAP: {g} is missing"))
        ));
    }
    out.push_str(&timelines::render(&l.timelines));
    out
}
