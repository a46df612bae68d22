//! The local state of walvault, in one place: every file and directory walvault keeps on the
//! machine beside a data directory, and where it is.
//!
//! - the **cache directory** (`WALVAULT_CACHE_DIR`, else `<parent of PGDATA>/.walvault-cache/
//!   <PGDATA's name>`, never inside PGDATA), holding per repository environment:
//!   - `wal-index-<hash>.json`: the WAL listing cache ([`crate::ops::repo::wal_index`]);
//!   - `push-<hash>/`: wal-push's push-ahead state (helper lock, claims, done markers, log);
//!   - `prefetch-<hash>/`: per data directory, wal-fetch's prefetch spool, the worker's lock,
//!     PostgreSQL's last position, the segments pitr-prepare staged (`staged/`) and the
//!     recovery plan pitr-prepare left for wal-fetch (`plan.json`, [`Plan`]).
//! - the data directory a `%p` belongs to ([`pgdata_of`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ops::Repo;
use crate::wal::timeline::HistoryEntry;
use crate::wal::{self, WalFileName, follow};
use crate::{Error, Result};

/// The default cache directory: beside PGDATA, never inside it:
/// `<parent of PGDATA>/.walvault-cache/<PGDATA's name>`.
pub fn default_cache_dir(pgdata: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(pgdata).ok()?;
    let parent = abs.parent()?;
    let name = abs.file_name()?;
    Some(parent.join(".walvault-cache").join(name))
}

/// The cache directory of this process: the `configured` one (`WALVAULT_CACHE_DIR`), else
/// beside PGDATA (or the current directory, which is PGDATA when PostgreSQL runs
/// archive_command and restore_command).
pub fn cache_dir(configured: Option<&Path>) -> Option<PathBuf> {
    configured.map(Path::to_path_buf).or_else(|| {
        let pgdata = std::env::var_os("PGDATA").map(PathBuf::from).or_else(|| std::env::current_dir().ok())?;
        default_cache_dir(&pgdata)
    })
}

/// The cache directory of a restore into `pgdata`: the configured one, else beside it.
pub fn cache_dir_for(configured: Option<&Path>, pgdata: &Path) -> Option<PathBuf> {
    configured.map(Path::to_path_buf).or_else(|| default_cache_dir(pgdata))
}

fn short_hash(parts: &[&str]) -> String {
    let digest = crate::codec::sha256_hex(parts.join("\n").as_bytes());
    digest[..16].to_string()
}

/// The listing cache file of one repository environment: `wal-index-<hash>.json`.
pub fn wal_index_file(cache_dir: &Path, url: &str, env: &str) -> PathBuf {
    cache_dir.join(format!("wal-index-{}.json", short_hash(&[url, env])))
}

/// When WAL summaries were last written by this writer, and what is pending
/// (`summary-<hash>-<env>.json`, see [`crate::ops::repo::summary`]).
pub fn summary_stamp_file(cache_dir: &Path, url: &str, env: &str) -> PathBuf {
    let id = hex::encode(&ring::digest::digest(&ring::digest::SHA256, url.as_bytes()).as_ref()[..8]);
    cache_dir.join(format!("summary-{id}-{env}.json"))
}

/// The push-ahead directory of a repository environment under `cache_dir`.
pub fn push_ahead_dir(cache_dir: &Path, url: &str, env: &str) -> PathBuf {
    cache_dir.join(format!("push-{}", short_hash(&[url, env])))
}

/// The lock of the process working in `dir` (the push-ahead helper, the prefetch worker):
/// a [`crate::fsutil::PidFile`].
pub fn lock_file(dir: &Path) -> PathBuf {
    dir.join(".lock")
}

/// The push-ahead claims (`claim/NAME`: a [`crate::fsutil::PidFile`] of the process pushing
/// NAME now) of push-ahead directory `dir`.
pub fn claims_dir(dir: &Path) -> PathBuf {
    dir.join("claim")
}

/// The push-ahead done markers (`done/NAME`: NAME is durably stored) of push-ahead
/// directory `dir`.
pub fn done_dir(dir: &Path) -> PathBuf {
    dir.join("done")
}

/// The push-ahead helper's log (its stderr) in push-ahead directory `dir`.
pub fn helper_log(dir: &Path) -> PathBuf {
    dir.join("helper.log")
}

/// The segment PostgreSQL asked for last, recorded by wal-fetch in prefetch directory `dir`
/// for the worker to follow.
pub fn position_file(dir: &Path) -> PathBuf {
    dir.join("position")
}

/// Segment `name` spooled in prefetch directory `dir`, ready to be served.
pub fn spooled(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Segment `name` being downloaded into prefetch directory `dir` (never served).
pub fn spooling(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.staged"))
}

/// The data directory as PostgreSQL sees it (its working directory is the resolved path).
pub fn canonical_pgdata(pgdata: &Path) -> PathBuf {
    std::fs::canonicalize(pgdata).or_else(|_| std::path::absolute(pgdata)).unwrap_or_else(|_| pgdata.to_path_buf())
}

/// The prefetch directory of `repo` for the data directory `pgdata` under `cache_dir`: the
/// spool, the worker's lock, PostgreSQL's last position, the staged segments and the plan.
/// One per data directory, so a spool left by a restore into another directory is never
/// looked at.
pub fn prefetch_dir(cache_dir: &Path, repo: &Repo, pgdata: &Path) -> PathBuf {
    let pgdata = canonical_pgdata(pgdata);
    let key = short_hash(&[&repo.url, repo.layout.env(), &pgdata.display().to_string()]);
    cache_dir.join(format!("prefetch-{key}"))
}

/// The directory where pitr-prepare leaves the first segments of a planned recovery.
pub fn staged_dir(prefetch_dir: &Path) -> PathBuf {
    prefetch_dir.join("staged")
}

/// The directory whose spool serves `dest`: the data directory for PostgreSQL's
/// `pg_wal/RECOVERYXLOG`, else `dest`'s own directory (wal-fetch run by hand).
pub fn owner_of(dest: &Path) -> Option<PathBuf> {
    pgdata_of(dest).or_else(|| {
        let abs = std::path::absolute(dest).ok()?;
        Some(canonical_pgdata(abs.parent()?))
    })
}

/// The data directory a `%p` belongs to: `%p` is `pg_wal/RECOVERYXLOG`, relative to PGDATA,
/// PostgreSQL's working directory.
pub fn pgdata_of(dest: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(dest).ok()?;
    let pg_wal = abs.parent()?;
    if pg_wal.file_name()? != "pg_wal" {
        return None;
    }
    Some(canonical_pgdata(pg_wal.parent()?))
}

/// True when the data directory of `%p` is a standby (`standby.signal`).
pub fn in_standby_mode(dest: &Path) -> bool {
    pgdata_of(dest).is_some_and(|d| d.join("standby.signal").exists())
}

const PLAN_VERSION: u32 = 2;

/// What pitr-prepare knows about the recovery it configured, for wal-fetch: `plan.json` in
/// the data directory's prefetch directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub repo: String,
    pub env: String,
    /// The data directory (canonical path).
    pub pgdata: PathBuf,
    pub system_identifier: u64,
    pub seg_size: u64,
    /// The timeline recovery follows and its history: the path PostgreSQL reads.
    pub target_timeline: u32,
    pub history: Vec<HistoryEntry>,
}

impl Plan {
    /// A plan for `pgdata`.
    pub fn new(
        repo: &Repo,
        pgdata: &Path,
        system_identifier: u64,
        seg_size: u64,
        target_timeline: u32,
        history: Vec<HistoryEntry>,
    ) -> Plan {
        Plan {
            version: PLAN_VERSION,
            repo: repo.url.clone(),
            env: repo.layout.env().to_string(),
            pgdata: canonical_pgdata(pgdata),
            system_identifier,
            seg_size,
            target_timeline,
            history,
        }
    }

    fn file(cache_dir: &Path, repo: &Repo, pgdata: &Path) -> PathBuf {
        prefetch_dir(cache_dir, repo, pgdata).join("plan.json")
    }

    /// The plan for `pgdata` in this repository, if pitr-prepare left one.
    pub fn load(cache_dir: &Path, repo: &Repo, pgdata: &Path) -> Option<Plan> {
        let pgdata = canonical_pgdata(pgdata);
        let bytes = std::fs::read(Self::file(cache_dir, repo, &pgdata)).ok()?;
        let plan: Plan = serde_json::from_slice(&bytes).ok()?;
        let ok = plan.version == PLAN_VERSION
            && plan.repo == repo.url
            && plan.env == repo.layout.env()
            && plan.pgdata == pgdata
            && wal::is_valid_seg_size(plan.seg_size)
            && plan.target_timeline > 0;
        ok.then_some(plan)
    }

    /// The plan of the recovery `%p` belongs to, if there is one.
    pub fn for_dest(cache_dir: Option<&Path>, repo: &Repo, dest: &Path) -> Option<Plan> {
        Self::load(cache_dir?, repo, &pgdata_of(dest)?)
    }

    /// Save beside the spool.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save(&self, cache_dir: &Path, repo: &Repo) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::fsutil::write_atomic(&Self::file(cache_dir, repo, &self.pgdata), &bytes, true)
    }

    /// The file PostgreSQL reads for segment `segno`: the newest timeline on the path begun
    /// by it (`XLogFileReadAnyTLI`).
    pub fn name_for(&self, segno: u64) -> Option<WalFileName> {
        Some(WalFileName::from_segno(self.path().reader(segno), segno, self.seg_size))
    }

    /// The timelines PostgreSQL follows in this recovery.
    pub fn path(&self) -> follow::Path {
        follow::Path::new(&self.history, self.target_timeline, self.seg_size)
    }

    /// True when `name` is the file of its segment on the path.
    pub fn on_path(&self, name: &WalFileName) -> bool {
        name.is_segment() && name.segno(self.seg_size).and_then(|s| self.name_for(s)).as_ref() == Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;

    fn plan(path: Vec<(u32, u64)>) -> Plan {
        // Switchpoints in the middle of each begin segment.
        let history = path
            .windows(2)
            .map(|w| HistoryEntry { tli: w[0].0, switchpoint: wal::Lsn(w[1].1 * SEG + 100), reason: String::new() })
            .collect();
        Plan {
            version: PLAN_VERSION,
            repo: "file:///r".into(),
            env: "production".into(),
            pgdata: PathBuf::from("/d"),
            system_identifier: 7_000_000_000_000_000_042,
            seg_size: SEG,
            target_timeline: path.last().map_or(1, |p| p.0),
            history,
        }
    }

    #[test]
    fn the_path_names_the_newest_timeline_begun_by_each_segment() {
        // Timeline 2 begins in segment 5 (its switchpoint's), timeline 3 in segment 9.
        let p = plan(vec![(1, 0), (2, 5), (3, 9)]);
        let name = |s| p.name_for(s).map(|n| n.to_string());
        assert_eq!(name(4).as_deref(), Some("000000010000000000000004"));
        assert_eq!(name(5).as_deref(), Some("000000020000000000000005"));
        assert_eq!(name(8).as_deref(), Some("000000020000000000000008"));
        assert_eq!(name(9).as_deref(), Some("000000030000000000000009"));
        assert!(p.on_path(&WalFileName::from_segno(2, 6, SEG)));
        assert!(!p.on_path(&WalFileName::from_segno(1, 6, SEG)), "timeline 1 after its switch is off the path");
        assert!(!p.on_path(&WalFileName::from_segno(3, 6, SEG)), "timeline 3 before it began is off the path");
    }

    #[test]
    fn local_names_are_stable() {
        // Names a running recovery or an earlier release left on disk must still be found.
        let cache = Path::new("/c");
        let index = wal_index_file(cache, "file:///r", "production");
        let push = push_ahead_dir(cache, "file:///r", "production");
        let hash = index.file_name().and_then(|n| n.to_str()).map(|n| n["wal-index-".len()..][..16].to_string());
        assert_eq!(push, cache.join(format!("push-{}", hash.expect("hash"))));
        // The names earlier releases gave (sha256 of the URL and environment, cut).
        assert_eq!(index, cache.join("wal-index-2692b3d2bde8d3f4.json"));
        assert_eq!(
            summary_stamp_file(cache, "file:///r", "production"),
            cache.join("summary-09ce0d50e14e59cd-production.json")
        );
        assert_eq!(default_cache_dir(Path::new("/srv/pg/data")), Some(PathBuf::from("/srv/pg/.walvault-cache/data")));
        assert_eq!(pgdata_of(Path::new("/nonexistent/d/pg_wal/RECOVERYXLOG")), Some(PathBuf::from("/nonexistent/d")));
        assert_eq!(pgdata_of(Path::new("/nonexistent/d/x")), None);
    }
}
