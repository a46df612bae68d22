//! The status in Prometheus text format, for node_exporter's textfile collector.

use chrono::{DateTime, Utc};

use super::status::Status;
use crate::ops::repo::timelines;
use crate::ops::repo::windows::Window;

/// The status in Prometheus text format (for node_exporter's textfile collector).
pub fn prometheus(s: &Status) -> String {
    let mut out = String::new();
    let env = escape_label(&s.env);
    let mut metric = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        out.push_str(&format!("# HELP walvault_{name} {help}\n# TYPE walvault_{name} gauge\n"));
        for (labels, v) in samples {
            out.push_str(&format!("walvault_{name}{{env=\"{env}\"{labels}}} {v}\n"));
        }
    };
    let one = |v: Option<f64>| v.map(|v| vec![(String::new(), v)]).unwrap_or_default();
    let ts = |t: Option<DateTime<Utc>>| one(t.map(|t| t.timestamp_millis() as f64 / 1000.0));
    metric(
        "healthy",
        "1 when no threshold is exceeded and nothing is missing",
        one(Some(f64::from(u8::from(s.healthy)))),
    );
    metric("problems", "Problems found (see walvault status)", one(Some(s.problems.len() as f64)));
    metric("wal_files", "Objects in the WAL archive", one(Some(s.wal.files as f64)));
    metric(
        "wal_last_archived_timestamp_seconds",
        "When the newest WAL segment was stored",
        ts(s.wal.newest_archived_at),
    );
    metric("wal_last_archived_age_seconds", "Age of the newest archived WAL segment (RPO)", one(s.wal.age_seconds));
    metric(
        "wal_timeline",
        "The timeline written most recently (the RPO is measured on it)",
        one(s.wal.timeline.map(f64::from)),
    );
    metric(
        "wal_live_branches",
        "Timelines being written at once (0 normally; 2 or more: a restored server archives beside the primary)",
        one(Some(s.live_branches.len() as f64)),
    );
    metric(
        "timeline_last_archived_timestamp_seconds",
        "When the newest segment of each timeline was stored",
        timelines::last_archived_samples(&s.timelines),
    );
    metric("wal_gaps", "Missing WAL files with later WAL archived", one(Some(s.wal.gaps.len() as f64)));
    metric("backups", "Complete base backups", one(Some(s.backups.count as f64)));
    metric("backups_stored_bytes", "Bytes stored by all base backups", one(Some(s.backups.stored_bytes as f64)));
    metric(
        "backup_last_completion_timestamp_seconds",
        "When the newest base backup finished",
        ts(s.backups.newest_stop_time),
    );
    metric("backup_last_age_seconds", "Age of the newest base backup", one(s.backups.age_seconds));
    metric(
        "backup_last_full_completion_timestamp_seconds",
        "When the newest full base backup finished",
        ts(s.backups.newest_full.as_ref().map(|b| b.1)),
    );
    metric(
        "backup_last_incremental_completion_timestamp_seconds",
        "When the newest diff or incr base backup finished",
        ts(s.backups.newest_incremental.as_ref().map(|b| b.1)),
    );
    metric(
        "backup_last_duration_seconds",
        "Wall time of the newest base backup",
        one(s.backups.newest_duration_seconds),
    );
    metric(
        "backup_last_stored_bytes",
        "Bytes stored by the newest base backup",
        one(s.backups.newest_stored_bytes.map(|b| b as f64)),
    );
    let windows = |f: &dyn Fn(&Window) -> Option<DateTime<Utc>>| -> Vec<(String, f64)> {
        s.recoverable_window
            .iter()
            .filter_map(|w| f(w).map(|t| (format!(",timeline=\"{}\"", w.timeline), t.timestamp() as f64)))
            .collect()
    };
    metric(
        "recoverable_window_start_timestamp_seconds",
        "Earliest point restorable, per timeline",
        windows(&|w| Some(w.earliest)),
    );
    metric(
        "recoverable_window_end_timestamp_seconds",
        "About the newest point restorable, per timeline",
        windows(&|w| w.latest),
    );
    if let Some(v) = &s.verification {
        metric("verification_last_timestamp_seconds", "When the newest verification ran", ts(Some(v.timestamp)));
        metric(
            "verification_last_success",
            "1 if the newest verification passed",
            one(Some(f64::from(u8::from(v.status == "passed")))),
        );
        metric(
            "verification_last_time_to_recover_seconds",
            "Time to recover measured by the newest restore test (RTO)",
            one(v.time_to_recover_seconds),
        );
    }
    if let Some(r) = &s.ready {
        metric("wal_ready_files", "WAL files waiting for archive_command", one(Some(r.files as f64)));
        metric(
            "wal_ready_oldest_age_seconds",
            "Age of the oldest WAL file waiting for archive_command",
            // An empty backlog is 0 s old: an alert on this series must see a value.
            one(if r.files == 0 { Some(0.0) } else { r.oldest_age_seconds }),
        );
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
