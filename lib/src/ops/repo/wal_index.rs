//! Finding a WAL file by name in the date-partitioned layout, cheaply.
//!
//! `wal-fetch` knows `%f`, not the day it was archived. The index lists each day partition
//! once and keeps what it saw in a small cache file beside PGDATA, where the next wal-fetch
//! (or wal-push) process finds it. A day that ended more than [`CLOSE_MARGIN`] before it was
//! listed is closed: its listing is final. Open days (today, and yesterday just after
//! midnight) are re-listed with `StartAfter` the last key seen, which returns only new keys.
//! In a sequential recovery this costs one GET per file, one listing pass per day partition
//! and one small LIST per miss, plus a listing of the exact name per open day before a name
//! is declared missing (parallel writers store names out of order); see `tests` for the
//! counted requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::ops::Repo;
use crate::ops::repo::identity::Identity;

/// How long after a day ends its partition may still receive objects (clock skew, slow uploads).
pub const CLOSE_MARGIN: Duration = Duration::hours(1);
const CACHE_VERSION: u32 = 1;

/// One day partition as last listed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DayListing {
    /// When the day was last listed; `None` if known to exist but never listed.
    listed_at: Option<DateTime<Utc>>,
    /// The greatest key seen, for `StartAfter`.
    last_key: Option<String>,
    /// WAL name → extension.
    files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    repo: String,
    env: String,
    discovered_at: Option<DateTime<Utc>>,
    days: BTreeMap<NaiveDate, DayListing>,
    /// The day recovery is expected to start from (the base backup's start), listed first.
    hint_day: Option<NaiveDate>,
    /// The verified repository identity, so wal-push need not read it on every call.
    identity: Option<Identity>,
}

/// Where a name was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: String,
    pub day: NaiveDate,
}

/// The listing cache of one repository environment.
pub struct WalIndex {
    path: Option<PathBuf>,
    data: CacheFile,
}

impl WalIndex {
    /// Load the cache for `repo` from `cache_dir` (or keep it in memory only when `None`).
    /// A missing, unreadable or foreign cache is a cold cache, never an error.
    pub fn load(cache_dir: Option<&Path>, repo: &Repo) -> Self {
        let empty = CacheFile {
            version: CACHE_VERSION,
            repo: repo.url.clone(),
            env: repo.layout.env().to_string(),
            ..CacheFile::default()
        };
        let path = cache_dir.map(|d| crate::ops::repo::local::wal_index_file(d, &repo.url, repo.layout.env()));
        let data = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.version == CACHE_VERSION && c.repo == empty.repo && c.env == empty.env)
            .unwrap_or(empty);
        WalIndex { path, data }
    }

    /// Save the cache (best effort: a cache that cannot be written costs requests, not data).
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let result = serde_json::to_vec(&self.data)
            .map_err(|e| crate::Error::Invalid(e.to_string()))
            .and_then(|bytes| crate::fsutil::write_atomic(path, &bytes, false));
        if let Err(e) = result {
            tracing::debug!("cannot write cache {}: {e}", path.display());
        }
    }

    /// The identity verified earlier, if cached.
    pub fn identity(&self) -> Option<&Identity> {
        self.data.identity.as_ref()
    }

    /// Forget everything cached (listings and identity): the repository changed.
    pub fn clear(&mut self) {
        let (repo, env) = (std::mem::take(&mut self.data.repo), std::mem::take(&mut self.data.env));
        self.data = CacheFile { version: CACHE_VERSION, repo, env, ..CacheFile::default() };
    }

    /// Remember a verified identity.
    pub fn set_identity(&mut self, id: Identity) {
        self.data.identity = Some(id);
    }

    /// Start listing from this day (the base backup's start day).
    pub fn set_hint_day(&mut self, day: NaiveDate) {
        self.data.hint_day = Some(day);
    }

    /// Record an object this process wrote.
    pub fn record(&mut self, day: NaiveDate, name: &str, ext: &str) {
        let listing = self.data.days.entry(day).or_default();
        listing.files.insert(name.to_string(), ext.to_string());
    }

    /// Forget an entry that turned out to be stale and make its day listed again.
    pub fn forget(&mut self, day: NaiveDate, name: &str) {
        if let Some(l) = self.data.days.get_mut(&day) {
            l.files.remove(name);
            l.listed_at = None;
            l.last_key = None;
        }
    }

    fn lookup(&self, repo: &Repo, name: &str) -> Option<Found> {
        self.data.days.iter().rev().find_map(|(day, l)| {
            l.files.get(name).map(|ext| Found { key: repo.layout.wal_key(*day, name, ext), day: *day })
        })
    }

    /// Find `name` in the archive. `skip_today` lets wal-push leave today's partition to its
    /// atomic put-if-absent instead of listing it.
    ///
    /// # Errors
    /// Storage failures (a listing that fails is never taken for "not found").
    pub async fn find(&mut self, repo: &Repo, name: &str, skip_today: bool) -> Result<Option<Found>> {
        if let Some(found) = self.lookup(repo, name) {
            return Ok(Some(found));
        }
        let now = Utc::now();
        if self.data.discovered_at.is_none_or(|t| t.date_naive() < now.date_naive()) {
            self.discover_days(repo, now).await?;
        }
        for day in self.unlisted_days_in_search_order() {
            self.list_day(repo, day, now).await?;
            if let Some(found) = self.lookup(repo, name) {
                return Ok(Some(found));
            }
        }
        let today = now.date_naive();
        let open: Vec<NaiveDate> = self.open_days(now).into_iter().filter(|d| !(skip_today && *d == today)).collect();
        for day in &open {
            self.list_day(repo, *day, now).await?;
        }
        if let Some(found) = self.lookup(repo, name) {
            return Ok(Some(found));
        }
        // Parallel writers finish out of name order: a listing "after the last key seen" can
        // pass over a name stored after a later one was listed. Before saying "not found"
        // (which ends a recovery), ask each open day for this very name.
        for day in open {
            self.probe(repo, day, name).await?;
        }
        Ok(self.lookup(repo, name))
    }

    /// List `name`'s own objects in `day` (a prefix listing of the exact name).
    async fn probe(&mut self, repo: &Repo, day: NaiveDate, name: &str) -> Result<()> {
        let prefix = format!("{}{name}", repo.layout.wal_day_prefix(day));
        let listing = repo.storage.list(&prefix, None, None).await?;
        for object in listing.objects {
            if let Some(k) = repo.layout.parse_wal_key(&object.key)
                && k.name == name
            {
                self.data.days.entry(day).or_default().files.insert(k.name, k.ext);
            }
        }
        Ok(())
    }

    /// List every day partition (each once, open days again) and return every WAL name
    /// with its object key.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn load_everything(&mut self, repo: &Repo) -> Result<BTreeMap<String, String>> {
        let now = Utc::now();
        self.discover_days(repo, now).await?;
        for day in self.unlisted_days_in_search_order() {
            self.list_day(repo, day, now).await?;
        }
        for day in self.open_days(now) {
            self.list_day(repo, day, now).await?;
        }
        let mut out = BTreeMap::new();
        for (day, listing) in &self.data.days {
            for (name, ext) in &listing.files {
                out.insert(name.clone(), repo.layout.wal_key(*day, name, ext));
            }
        }
        Ok(out)
    }

    /// Move the cache to another directory (pitr-prepare hands its listing to wal-fetch).
    pub fn relocate(&mut self, cache_dir: &Path, repo: &Repo) {
        self.path = Some(crate::ops::repo::local::wal_index_file(cache_dir, &repo.url, repo.layout.env()));
    }

    /// List `wal/<env>/` by delimiter, three levels deep, to learn which days exist.
    async fn discover_days(&mut self, repo: &Repo, now: DateTime<Utc>) -> Result<()> {
        let mut prefixes = vec![repo.layout.wal_root()];
        for _depth in 0..3 {
            let mut next = Vec::new();
            for prefix in &prefixes {
                next.extend(repo.storage.list(prefix, Some("/"), None).await?.prefixes);
            }
            prefixes = next;
        }
        let found: Vec<NaiveDate> = prefixes.iter().filter_map(|p| repo.layout.parse_wal_day_prefix(p)).collect();
        // Days that vanished (pruned) are dropped; new ones are added unlisted.
        self.data.days.retain(|day, _| found.contains(day) || *day >= now.date_naive() - Duration::days(1));
        for day in found {
            self.data.days.entry(day).or_default();
        }
        self.data.discovered_at = Some(now);
        Ok(())
    }

    /// Unlisted days: from the hint day forward, then backward from it.
    fn unlisted_days_in_search_order(&self) -> Vec<NaiveDate> {
        let unlisted: Vec<NaiveDate> =
            self.data.days.iter().filter(|(_, l)| l.listed_at.is_none()).map(|(d, _)| *d).collect();
        let hint = self.data.hint_day.unwrap_or(NaiveDate::MIN);
        let (before, after): (Vec<_>, Vec<_>) = unlisted.into_iter().partition(|d| *d < hint);
        after.into_iter().chain(before.into_iter().rev()).collect()
    }

    /// Days that may still receive objects: today, and any day listed before it closed.
    fn open_days(&self, now: DateTime<Utc>) -> Vec<NaiveDate> {
        let today = now.date_naive();
        let mut days: Vec<NaiveDate> = self
            .data
            .days
            .iter()
            .filter(|(day, l)| l.listed_at.is_none_or(|t| t < day_end(**day) + CLOSE_MARGIN))
            .map(|(d, _)| *d)
            .filter(|d| *d <= today)
            .collect();
        if !days.contains(&today) {
            days.push(today);
        }
        days
    }

    async fn list_day(&mut self, repo: &Repo, day: NaiveDate, now: DateTime<Utc>) -> Result<()> {
        let prefix = repo.layout.wal_day_prefix(day);
        let entry = self.data.days.entry(day).or_default();
        let listing = repo.storage.list(&prefix, None, entry.last_key.as_deref()).await?;
        for object in listing.objects {
            if let Some(k) = repo.layout.parse_wal_key(&object.key) {
                entry.files.insert(k.name, k.ext);
            }
            entry.last_key = Some(object.key);
        }
        entry.listed_at = Some(now);
        Ok(())
    }
}

fn day_end(day: NaiveDate) -> DateTime<Utc> {
    let next = day.succ_opt().unwrap_or(day);
    next.and_hms_opt(0, 0, 0).map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}
