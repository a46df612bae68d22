//! The SQL side of the restore test: waiting for promotion, the runbook's row counts (the
//! largest user tables of every database by default) and the operator's `--check-sql`.

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::ops::verify::restore_test::{RestoreTestOptions, RestoreTestResult};
use crate::pg::backup_api::pg_error;
use crate::{Error, Result};

/// Rows kept per query in the report.
const MAX_ROWS: usize = 20;

/// One query run against the restored server.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub database: String,
    pub sql: String,
    /// Text values, at most 20 rows.
    pub rows: Vec<Vec<Option<String>>>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl QueryResult {
    /// The first row, for the check line.
    pub fn summary(&self) -> String {
        match self.rows.first() {
            None => "no rows".to_string(),
            Some(row) => {
                let values: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                let more =
                    if self.rows.len() > 1 { format!(" (+{} rows)", self.rows.len() - 1) } else { String::new() };
                format!("{}{more}", values.join(", "))
            }
        }
    }
}

/// Why a poll did not say yes or no.
pub enum Poll {
    /// Starting up or not listening yet: try again.
    NotYet,
    /// A wrong user name: no point in waiting.
    Fatal(Error),
}

async fn connect(socket_dir: &Path, user: &str, db: &str) -> std::result::Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config.host_path(socket_dir).port(5432).user(user).dbname(db).application_name("walvault verify");
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether the server is still in recovery.
///
/// # Errors
/// [`Poll::NotYet`] while it cannot be asked, [`Poll::Fatal`] when the user is refused.
pub async fn in_recovery(socket_dir: &Path, user: &str) -> std::result::Result<bool, Poll> {
    let client = match connect(socket_dir, user, "template1").await {
        Ok(c) => c,
        Err(e) => {
            let fatal = [SqlState::INVALID_AUTHORIZATION_SPECIFICATION, SqlState::INVALID_PASSWORD];
            if e.code().is_some_and(|c| fatal.contains(c)) {
                return Err(Poll::Fatal(pg_error(&format!("connect to the restored server as {user}"), &e)));
            }
            return Err(Poll::NotYet);
        }
    };
    match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
        Ok(row) => Ok(row.get(0)),
        Err(_) => Err(Poll::NotYet),
    }
}

/// Run the checks, recording each query in `r`.
///
/// # Errors
/// [`Error::Postgres`] when the restored server cannot be reached at all.
pub async fn run_checks(socket_dir: &Path, opts: &RestoreTestOptions, r: &mut RestoreTestResult) -> Result<()> {
    let user = opts.check_user.as_str();
    let admin =
        connect(socket_dir, user, "template1").await.map_err(|e| pg_error("connect to the restored server", &e))?;
    let row = admin
        .query_one("SELECT pg_last_xact_replay_timestamp()", &[])
        .await
        .map_err(|e| pg_error("read pg_last_xact_replay_timestamp()", &e))?;
    r.recovered_to = row.get::<_, Option<DateTime<Utc>>>(0);
    if !opts.check_sql.is_empty() {
        let client = connect(socket_dir, user, &opts.check_db).await;
        for sql in &opts.check_sql {
            r.queries.push(match &client {
                Ok(c) => query(c, &opts.check_db, sql).await,
                Err(e) => failed(&opts.check_db, sql, pg_error(&format!("connect to database {}", opts.check_db), e)),
            });
        }
        return Ok(());
    }
    let dbs = admin
        .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", &[])
        .await
        .map_err(|e| pg_error("list databases", &e))?;
    for db in dbs.iter().map(|row| row.get::<_, String>(0)) {
        let client = match connect(socket_dir, user, &db).await {
            Ok(c) => c,
            Err(e) => {
                r.queries.push(failed(&db, "connect", pg_error(&format!("connect to database {db}"), &e)));
                continue;
            }
        };
        let largest = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
             ORDER BY pg_total_relation_size(c.oid) DESC, 1 LIMIT $1";
        let limit = i64::try_from(opts.tables).unwrap_or(i64::MAX);
        match client.query(largest, &[&limit]).await {
            Ok(rows) => {
                for table in rows.iter().map(|row| row.get::<_, String>(0)) {
                    r.queries.push(query(&client, &db, &format!("SELECT count(*) FROM {table}")).await);
                }
            }
            Err(e) => r.queries.push(failed(&db, largest, pg_error("list tables", &e))),
        }
    }
    Ok(())
}

async fn query(client: &Client, db: &str, sql: &str) -> QueryResult {
    let started = Instant::now();
    let mut result =
        QueryResult { database: db.to_string(), sql: sql.to_string(), rows: Vec::new(), seconds: 0.0, error: None };
    match client.simple_query(sql).await {
        Ok(messages) => {
            for m in messages {
                if let SimpleQueryMessage::Row(row) = m
                    && result.rows.len() < MAX_ROWS
                {
                    result.rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
                }
            }
        }
        Err(e) => result.error = Some(pg_error(&format!("query in database {db}"), &e).to_string()),
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

fn failed(db: &str, sql: &str, e: Error) -> QueryResult {
    QueryResult {
        database: db.to_string(),
        sql: sql.to_string(),
        rows: Vec::new(),
        seconds: 0.0,
        error: Some(e.to_string()),
    }
}
