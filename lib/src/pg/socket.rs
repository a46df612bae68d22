//! A client of a server reached through its socket directory (the restore test's private
//! server): whether it is still in recovery, and plain queries with text results.

use std::path::Path;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::backup_api::pg_error;
use crate::{Error, Result};

/// Why a poll did not say yes or no.
pub enum Poll {
    /// Starting up or not listening yet: try again.
    NotYet,
    /// A wrong user name: no point in waiting.
    Fatal(Error),
}

/// One session on the server.
pub struct SocketClient {
    client: Client,
}

async fn open(socket_dir: &Path, user: &str, db: &str) -> std::result::Result<Client, tokio_postgres::Error> {
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
    let client = match open(socket_dir, user, "template1").await {
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

impl SocketClient {
    /// Connect to database `db` as `user`; `context` names the attempt in the error.
    ///
    /// # Errors
    /// [`Error::Postgres`] naming `context`.
    pub async fn connect(socket_dir: &Path, user: &str, db: &str, context: &str) -> Result<Self> {
        let client = open(socket_dir, user, db).await.map_err(|e| pg_error(context, &e))?;
        Ok(SocketClient { client })
    }

    /// The time of the last transaction replayed (`pg_last_xact_replay_timestamp()`).
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub async fn replay_timestamp(&self) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .client
            .query_one("SELECT pg_last_xact_replay_timestamp()", &[])
            .await
            .map_err(|e| pg_error("read pg_last_xact_replay_timestamp()", &e))?;
        Ok(row.get(0))
    }

    /// Every database that allows connections, templates excluded, by name.
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub async fn databases(&self) -> Result<Vec<String>> {
        let sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname";
        let rows = self.client.query(sql, &[]).await.map_err(|e| pg_error("list databases", &e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// The `limit` largest user tables (quoted `schema.table`), largest first.
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub async fn largest_tables(&self, limit: usize) -> Result<Vec<String>> {
        let sql = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
             ORDER BY pg_total_relation_size(c.oid) DESC, 1 LIMIT $1";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.client.query(sql, &[&limit]).await.map_err(|e| pg_error("list tables", &e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Run `sql` (simple protocol) and keep the first `max_rows` rows as text.
    ///
    /// # Errors
    /// [`Error::Postgres`] naming `context`.
    pub async fn text_rows(&self, sql: &str, max_rows: usize, context: &str) -> Result<Vec<Vec<Option<String>>>> {
        let messages = self.client.simple_query(sql).await.map_err(|e| pg_error(context, &e))?;
        let rows = messages.into_iter().filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
            _ => None,
        });
        Ok(rows.take(max_rows).collect())
    }
}
