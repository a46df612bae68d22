//! What a hot standby reports about how far behind it is.

use super::{Server, parse_lsn, pg_error};
use crate::Result;
use crate::wal::Lsn;

/// Where a standby's replay stands against the WAL it has received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayState {
    /// `pg_last_wal_receive_lsn()`: `None` when nothing is streamed (archive recovery only).
    pub received: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`.
    pub replayed: Option<Lsn>,
    /// Seconds since the last replayed transaction committed on the primary.
    pub replayed_age: Option<f64>,
    /// `pg_is_wal_replay_paused()`.
    pub paused: bool,
    /// The start of the newest segment of the standby's timeline in the archive, when known:
    /// a standby cut off from its primary still sees how far the archive went on.
    pub archived: Option<Lsn>,
}

impl ReplayState {
    /// How far the standby knows it must replay: what it received, or the newest segment in
    /// the archive, whichever is further.
    pub fn ahead(&self) -> Option<Lsn> {
        self.received.max(self.archived)
    }

    /// Seconds the standby is behind: 0 when it has replayed everything it received and the
    /// archive holds no newer segment, else the age of the last transaction it replayed;
    /// `None` when it is behind but has replayed no transaction since it started (the lag
    /// cannot be measured then).
    pub fn lag_seconds(&self) -> Option<f64> {
        match (self.ahead(), self.replayed) {
            (Some(a), Some(p)) if p < a => self.replayed_age.map(|s| s.max(0.0)),
            _ => Some(0.0),
        }
    }
}

impl Server {
    /// The standby's replay position, received position and replay age.
    ///
    /// # Errors
    /// [`Error::Postgres`](crate::Error::Postgres) when the query fails.
    pub async fn replay_state(&self) -> Result<ReplayState> {
        let q = "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
                 extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8, \
                 pg_is_wal_replay_paused()";
        let row = self.client.query_one(q, &[]).await.map_err(|e| pg_error("read the standby's replay state", &e))?;
        let lsn = |i: usize| row.get::<_, Option<String>>(i).map(|s| parse_lsn(&s)).transpose();
        Ok(ReplayState {
            received: lsn(0)?,
            replayed: lsn(1)?,
            replayed_age: row.get(2),
            paused: row.get(3),
            archived: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_replay_age_only_while_received_or_archived_wal_waits() {
        let mut s = ReplayState {
            received: Some(Lsn(200)),
            replayed: Some(Lsn(200)),
            replayed_age: Some(3600.0),
            paused: false,
            archived: None,
        };
        assert_eq!(s.lag_seconds(), Some(0.0), "caught up with what it received: an idle primary is no lag");
        s.replayed = Some(Lsn(100));
        assert_eq!(s.lag_seconds(), Some(3600.0));
        s.received = None;
        assert_eq!(s.lag_seconds(), Some(0.0), "not streaming, nothing archived beyond: nothing to compare with");
        s.archived = Some(Lsn(150));
        assert_eq!(s.lag_seconds(), Some(3600.0), "cut off from its primary, behind the archive");
        s.received = Some(Lsn(120));
        assert_eq!(s.ahead(), Some(Lsn(150)), "the archive went further than what it received");
        s.replayed_age = None;
        assert_eq!(s.lag_seconds(), None, "behind, no transaction replayed: not measurable");
        s.replayed = Some(Lsn(150));
        assert_eq!(s.lag_seconds(), Some(0.0));
    }
}
