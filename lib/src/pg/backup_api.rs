//! A session on the server for a base backup: probe, non-exclusive backup start and stop,
//! tablespaces, WAL switch. Never touches storage.
//!
//! The non-exclusive backup lives as long as its session: start and stop run on the same
//! [`Server`], and dropping it before [`Server::backup_stop`] makes PostgreSQL abort the
//! backup. PostgreSQL 15 renamed the functions (`pg_start_backup`/`pg_stop_backup` became
//! `pg_backup_start`/`pg_backup_stop`); [`Server::backup_start`] and [`Server::backup_stop`]
//! are the only places that know. Servers older than 10 are refused.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::wal::Lsn;
use crate::{Error, Result};

pub use super::conn::ConnParams;

/// The oldest supported `server_version_num`.
pub const MIN_VERSION_NUM: u32 = 100_000;

/// A connected session and what it learned about the cluster.
pub struct Server {
    client: Client,
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
    pub system_identifier: u64,
    pub data_directory: PathBuf,
    /// Bytes per WAL segment.
    pub wal_segment_size: u64,
    /// Timeline of the latest checkpoint.
    pub timeline: u32,
    /// `catalog_version_no` from `pg_control_system()`.
    pub catalog_version: u32,
    /// True on a standby.
    pub in_recovery: bool,
}

/// What `backup_start` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStart {
    pub lsn: Lsn,
    pub timeline: u32,
    /// Server clock right after the backup checkpoint.
    pub started_at: DateTime<Utc>,
}

/// What `backup_stop` returned: the files to store beside the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStop {
    pub lsn: Lsn,
    /// Content for `backup_label` (contains `START WAL LOCATION`).
    pub backup_label: String,
    /// Content for `tablespace_map`, when the cluster has tablespaces.
    pub tablespace_map: Option<String>,
    pub stopped_at: DateTime<Utc>,
}

/// A user tablespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: u32,
    pub name: String,
    /// `pg_tablespace_location(oid)`.
    pub location: PathBuf,
}

/// Turn a tokio-postgres error into [`Error::Postgres`] with `context`, keeping the server's
/// message, detail and hint on one line.
pub(crate) fn pg_error(context: &str, e: &tokio_postgres::Error) -> Error {
    let msg = match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_owned();
            if let Some(d) = db.detail() {
                m.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!(" (hint: {h})"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                m.push_str(&format!(": {s}"));
                source = s.source();
            }
            m
        }
    };
    Error::Postgres(format!("{context}: {msg}"))
}

/// Parse an LSN as PostgreSQL prints it (`16/B374D848`).
fn parse_lsn(s: &str) -> Result<Lsn> {
    let bad = || Error::Invalid(format!("{s:?} is not an lsn"));
    let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
    let half =
        |h: &str| (!h.is_empty() && h.len() <= 8).then(|| u32::from_str_radix(h, 16).ok()).flatten().ok_or_else(bad);
    Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
}

/// Bytes in one unit of a `pg_settings.unit` such as `B`, `kB`, `8kB`, `MB`.
fn unit_bytes(unit: &str) -> Option<u64> {
    let digits = unit.bytes().take_while(u8::is_ascii_digit).count();
    let (count, base) = unit.split_at(digits);
    let count: u64 = if count.is_empty() { 1 } else { count.parse().ok()? };
    let base = match base {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    Some(count * base)
}

fn to_u32(what: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Postgres(format!("server returned {what} {v}, out of range")))
}

/// Connect (spawning the connection task on the current tokio runtime), refuse servers older
/// than PostgreSQL 10, disable the session's statement and idle timeouts (a backup session
/// sits idle while files are copied), and read the cluster's identity.
///
/// # Errors
/// [`Error::Postgres`] naming the server for connection failures, or the query that failed.
pub async fn connect(params: &ConnParams, application_name: &str) -> Result<Server> {
    let config = params.to_config(application_name);
    let user = params.user.as_deref().unwrap_or("");
    let context = format!("connect to {} as user {user}", params.describe());
    let (client, connection) = config.connect(NoTls).await.map_err(|e| pg_error(&context, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("{}", pg_error("connection closed", &e));
        }
    });
    let q = "SELECT current_setting('server_version_num')::int4";
    let row = client.query_one(q, &[]).await.map_err(|e| pg_error("read server_version_num", &e))?;
    let version_num = to_u32("server_version_num", i64::from(row.get::<_, i32>(0)))?;
    if version_num < MIN_VERSION_NUM {
        return Err(Error::Postgres(format!(
            "server version {version_num} is not supported: walvault needs postgresql 10 or newer"
        )));
    }
    let mut setup =
        String::from("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;");
    if version_num >= 140_000 {
        setup.push_str(" SET idle_session_timeout = 0;");
    }
    client.batch_execute(&setup).await.map_err(|e| pg_error("set session timeouts", &e))?;
    let q = "SELECT c.system_identifier, current_setting('data_directory'), s.setting::int8, coalesce(s.unit, ''), \
             k.timeline_id::int8, c.catalog_version_no::int8, pg_is_in_recovery() \
             FROM pg_control_system() c, pg_control_checkpoint() k, pg_settings s WHERE s.name = 'wal_segment_size'";
    let row = client.query_one(q, &[]).await.map_err(|e| pg_error("read cluster identity", &e))?;
    let unit: String = row.get(3);
    let unit =
        unit_bytes(&unit).ok_or_else(|| Error::Postgres(format!("wal_segment_size has unknown unit {unit:?}")))?;
    let segments: i64 = row.get(2);
    Ok(Server {
        version_num,
        // pg_control stores an unsigned 64-bit value; bigint shows the same bits.
        system_identifier: row.get::<_, i64>(0) as u64,
        data_directory: PathBuf::from(row.get::<_, String>(1)),
        wal_segment_size: u64::try_from(segments).unwrap_or(0) * unit,
        timeline: to_u32("timeline", row.get(4))?,
        catalog_version: to_u32("catalog_version_no", row.get(5))?,
        in_recovery: row.get(6),
        client,
    })
}

impl Server {
    /// The directory a tablespace holds for this cluster: `PG_<major>_<catalog version>`.
    pub fn tablespace_version_dir(&self) -> String {
        format!("PG_{}_{}", self.version_num / 10_000, self.catalog_version)
    }

    /// Start a non-exclusive backup: `pg_backup_start(label, fast)` on 15 and newer,
    /// `pg_start_backup(label, fast, false)` before. `fast` asks for an immediate checkpoint.
    ///
    /// # Errors
    /// [`Error::Postgres`] with the server's message (e.g. a backup already in progress).
    pub async fn backup_start(&self, label: &str, fast: bool) -> Result<BackupStart> {
        let q = if self.version_num >= 150_000 {
            "SELECT lsn::text, clock_timestamp() FROM pg_backup_start($1, $2) AS lsn"
        } else {
            "SELECT lsn::text, clock_timestamp() FROM pg_start_backup($1, $2, false) AS lsn"
        };
        let row = self.client.query_one(q, &[&label, &fast]).await.map_err(|e| pg_error("start backup", &e))?;
        let lsn = parse_lsn(row.get(0))?;
        let q = "SELECT timeline_id::int8 FROM pg_control_checkpoint()";
        let tl = self.client.query_one(q, &[]).await.map_err(|e| pg_error("read backup timeline", &e))?;
        Ok(BackupStart { lsn, timeline: to_u32("timeline", tl.get(0))?, started_at: row.get(1) })
    }

    /// Stop the session's backup without waiting for WAL archiving (the caller waits for the
    /// stop segment itself): `pg_backup_stop(false)` on 15 and newer, `pg_stop_backup(false,
    /// false)` before.
    ///
    /// # Errors
    /// [`Error::Postgres`] with the server's message (e.g. no backup in progress).
    pub async fn backup_stop(&self) -> Result<BackupStop> {
        let q = if self.version_num >= 150_000 {
            "SELECT lsn::text, labelfile, spcmapfile, clock_timestamp() FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile, clock_timestamp() FROM pg_stop_backup(false, false)"
        };
        let row = self.client.query_one(q, &[]).await.map_err(|e| pg_error("stop backup", &e))?;
        let map: Option<String> = row.get(2);
        Ok(BackupStop {
            lsn: parse_lsn(row.get(0))?,
            backup_label: row.get::<_, Option<String>>(1).unwrap_or_default(),
            tablespace_map: map.filter(|m| !m.is_empty()),
            stopped_at: row.get(3),
        })
    }

    /// User tablespaces (not `pg_default` or `pg_global`), by oid.
    ///
    /// # Errors
    /// [`Error::Postgres`] when the query fails.
    pub async fn tablespaces(&self) -> Result<Vec<Tablespace>> {
        let q = "SELECT oid::int8, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace \
                 WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid";
        let rows = self.client.query(q, &[]).await.map_err(|e| pg_error("list tablespaces", &e))?;
        rows.iter()
            .map(|r| {
                Ok(Tablespace {
                    oid: to_u32("tablespace oid", r.get(0))?,
                    name: r.get(1),
                    location: PathBuf::from(r.get::<_, String>(2)),
                })
            })
            .collect()
    }

    /// Switch to a new WAL file (`pg_switch_wal()`), returning the end of the old one.
    ///
    /// # Errors
    /// [`Error::Postgres`] (for example on a standby).
    pub async fn switch_wal(&self) -> Result<Lsn> {
        parse_lsn(&self.query_one_string("SELECT pg_switch_wal()::text").await?)
    }

    /// The WAL file name holding `lsn` on the current timeline (`pg_walfile_name`).
    ///
    /// # Errors
    /// [`Error::Postgres`] (for example on a standby).
    pub async fn current_wal_file(&self, lsn: Lsn) -> Result<String> {
        let text = super::recovery::format_lsn(lsn);
        let row = self
            .client
            .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&text])
            .await
            .map_err(|e| pg_error("pg_walfile_name", &e))?;
        Ok(row.get(0))
    }

    /// The last WAL file the archiver reported done (`pg_stat_archiver.last_archived_wal`).
    ///
    /// # Errors
    /// [`Error::Postgres`] when the query fails.
    pub async fn last_archived_wal(&self) -> Result<Option<String>> {
        let q = "SELECT last_archived_wal FROM pg_stat_archiver";
        let row = self.client.query_one(q, &[]).await.map_err(|e| pg_error("read pg_stat_archiver", &e))?;
        Ok(row.get(0))
    }

    /// Run `sql` (simple protocol) and return the one value of its one row, as text.
    ///
    /// # Errors
    /// [`Error::Postgres`] when the query fails or does not return exactly one non-null value.
    pub async fn query_one_string(&self, sql: &str) -> Result<String> {
        let messages = self.client.simple_query(sql).await.map_err(|e| pg_error(sql, &e))?;
        let mut rows = messages.iter().filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        });
        match (rows.next(), rows.next()) {
            (Some(row), None) => match row.get(0) {
                Some(v) => Ok(v.to_owned()),
                None => Err(Error::Postgres(format!("{sql}: returned null"))),
            },
            _ => Err(Error::Postgres(format!("{sql}: did not return exactly one row"))),
        }
    }
}

mod standby;
pub use standby::ReplayState;
mod summaries;

#[cfg(test)]
mod tests;
