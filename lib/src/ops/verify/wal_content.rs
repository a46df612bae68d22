//! WAL checked by content: every object of the archive listed once (names for the chains,
//! modification times for the cursor), and each object stored since the last run decoded and
//! authenticated (bound to its name, environment and repository) with its page header checked
//! against its name and the cluster; `--full` checks every object again.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;

use crate::ops::Repo;
use crate::ops::repo::place::Logical;
use crate::ops::verify::Check;
use crate::storage::ObjectMeta;
use crate::wal::WalFileName;
use crate::wal::header::parse_long_header;
use crate::{Error, Result};

/// Objects stored up to this long before the cursor and not checked yet are checked (an
/// upload that began earlier can finish after a later one; S3 dates a multipart upload by its
/// start).
const MARGIN: TimeDelta = TimeDelta::minutes(5);

/// Every WAL object of the environment: name → key (a later day wins, as in the WAL index),
/// and the objects with their modification times.
///
/// # Errors
/// Storage failures.
pub async fn list(repo: &Repo) -> Result<(BTreeMap<String, String>, Vec<ObjectMeta>)> {
    let listing = repo.storage.list(&repo.layout.wal_root(), None, None).await?;
    let mut files = BTreeMap::new();
    let mut objects = Vec::new();
    for o in listing.objects {
        if let Some(w) = repo.layout.parse_wal_key(&o.key) {
            files.insert(w.name, o.key.clone());
            objects.push(o);
        }
    }
    Ok((files, objects))
}

/// What the content check did.
pub struct ContentCheck {
    pub check: Check,
    pub checked: u64,
    pub bytes: u64,
    pub passed: bool,
    /// The progress for the next run (when passed).
    pub through: Option<DateTime<Utc>>,
    pub recent: Vec<String>,
}

/// Decode and authenticate each object stored since `since` (all without it) and not in
/// `recent`, `jobs` at once.
///
/// # Errors
/// Storage failures that stop the run, and [`Error::Key`] (the configured key opens nothing:
/// the operator's setting); any other problem is a failed check naming the object.
pub async fn check(
    repo: &Repo,
    objects: &[ObjectMeta],
    since: Option<DateTime<Utc>>,
    recent: &[String],
    sysid: Option<u64>,
    jobs: usize,
) -> Result<ContentCheck> {
    let started = Instant::now();
    let from = since.map(|t| t - MARGIN);
    let todo: Vec<&ObjectMeta> = objects
        .iter()
        .filter(|o| from.is_none_or(|f| o.last_modified.is_none_or(|m| m >= f && !recent.contains(&o.key))))
        .collect();
    let bytes: u64 = todo.iter().map(|o| o.size).sum();
    let results: Vec<Result<Option<String>>> = futures_util::stream::iter(todo.iter().copied())
        .map(|o| one(repo, o, sysid))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(None) => {}
            Ok(Some(problem)) => problems.push(problem),
            Err(e) => return Err(e),
        }
    }
    problems.sort();
    let checked = todo.len() as u64;
    let size = crate::ops::repo::human::human_bytes(bytes);
    let scope = match since {
        Some(t) => {
            format!("stored since {} (earlier ones were checked by an earlier run)", t.format("%Y-%m-%d %H:%M:%S UTC"))
        }
        None => "in the archive".to_string(),
    };
    let check = match problems.first() {
        None => Check::passed(
            "wal content",
            format!("{checked} objects ({size}) {scope} decoded, authenticated and matched their names"),
            started,
        ),
        Some(first) => {
            let object = first.split(": ").next().map(str::to_string);
            let more = if problems.len() > 1 { format!(" (and {} more)", problems.len() - 1) } else { String::new() };
            Check::failed("wal content", format!("{first}{more}"), object, started)
        }
    };
    let through = objects.iter().filter_map(|o| o.last_modified).max().or(since);
    let window = through.map(|t| t - MARGIN);
    let recent = objects
        .iter()
        .filter(|o| window.is_some_and(|w| o.last_modified.is_some_and(|m| m >= w)))
        .map(|o| o.key.clone())
        .collect();
    Ok(ContentCheck { check, checked, bytes, passed: problems.is_empty(), through, recent })
}

/// One object: `Some(problem)` naming its key, `None` when good.
async fn one(repo: &Repo, o: &ObjectMeta, sysid: Option<u64>) -> Result<Option<String>> {
    let Some(w) = repo.layout.parse_wal_key(&o.key) else { return Ok(None) };
    let data = match repo.read_object(&o.key, &Logical::Wal(&w.name), false).await {
        Ok(d) => d,
        Err(e @ (Error::Key { .. } | Error::Storage { permanent: false, .. })) => return Err(e),
        Err(e) => return Ok(Some(format!("{}: {e}", o.key))),
    };
    let Ok(name) = WalFileName::parse(&w.name) else { return Ok(None) };
    if !name.has_page_header() {
        return Ok(None);
    }
    let problem = match parse_long_header(&data) {
        Err(e) => Some(e.to_string()),
        Ok(h) if sysid.is_some_and(|s| s != h.system_id) => {
            Some(format!("system identifier {} is not the cluster's {}", h.system_id, sysid.unwrap_or_default()))
        }
        Ok(h) if name.segno(u64::from(h.seg_size)) != Some(h.segno()) => {
            Some(format!("its page header starts segment {}, not the one its name says", h.segno()))
        }
        Ok(h) if name.is_segment() && data.len() as u64 != u64::from(h.seg_size) => {
            Some(format!("{} bytes, not the segment size {}", data.len(), h.seg_size))
        }
        Ok(_) => None,
    };
    Ok(problem.map(|p| format!("{}: {p}", o.key)))
}
