//! The SQL side of the restore test: waiting for promotion, the runbook's row counts (the
//! largest user tables of every database by default) and the operator's `--check-sql`.

use std::path::Path;
use std::time::Instant;

use crate::Result;
use crate::ops::verify::restore_types::{MAX_ROWS, QueryResult, RestoreTestOptions, RestoreTestResult};
use crate::pg::socket::SocketClient;

/// Run the checks, recording each query in `r`.
///
/// # Errors
/// [`Error::Postgres`] when the restored server cannot be reached at all.
pub async fn run_checks(socket_dir: &Path, opts: &RestoreTestOptions, r: &mut RestoreTestResult) -> Result<()> {
    let user = opts.check_user.as_str();
    let admin = SocketClient::connect(socket_dir, user, "template1", "connect to the restored server").await?;
    r.recovered_to = admin.replay_timestamp().await?;
    if !opts.check_sql.is_empty() {
        let db = &opts.check_db;
        let client = SocketClient::connect(socket_dir, user, db, &format!("connect to database {db}")).await;
        for sql in &opts.check_sql {
            r.queries.push(match &client {
                Ok(c) => query(c, db, sql).await,
                Err(e) => failed(db, sql, e.to_string()),
            });
        }
        return Ok(());
    }
    for db in admin.databases().await? {
        let client = match SocketClient::connect(socket_dir, user, &db, &format!("connect to database {db}")).await {
            Ok(c) => c,
            Err(e) => {
                r.queries.push(failed(&db, "connect", e.to_string()));
                continue;
            }
        };
        match client.largest_tables(opts.tables).await {
            Ok(tables) => {
                for table in tables {
                    r.queries.push(query(&client, &db, &format!("SELECT count(*) FROM {table}")).await);
                }
            }
            Err(e) => r.queries.push(failed(&db, "list the largest tables", e.to_string())),
        }
    }
    Ok(())
}

async fn query(client: &SocketClient, db: &str, sql: &str) -> QueryResult {
    let started = Instant::now();
    let rows = client.text_rows(sql, MAX_ROWS, &format!("query in database {db}")).await;
    let seconds = started.elapsed().as_secs_f64();
    let (rows, error) = match rows {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    QueryResult { database: db.to_string(), sql: sql.to_string(), rows, seconds, error }
}

fn failed(db: &str, sql: &str, error: String) -> QueryResult {
    QueryResult { database: db.to_string(), sql: sql.to_string(), rows: Vec::new(), seconds: 0.0, error: Some(error) }
}
