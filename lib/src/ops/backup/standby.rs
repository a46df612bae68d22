//! A base backup taken on a hot standby (the non-exclusive backup API works there): refused
//! when the standby is further behind its primary than `WALVAULT_STANDBY_MAX_LAG`, so a
//! nightly backup of a stalled standby fails loudly instead of saving an old database.
//! The backup is complete only once the WAL up to the standby's stop point (its
//! `minRecoveryPoint`, read from the `pg_control` it copied last) is in the archive, archived
//! by the primary or by the standby with `archive_mode = always`.

use std::time::Duration;

use crate::pg::backup_api::{ReplayState, Server};
use crate::pg::recovery::format_lsn;
use crate::{Error, Result};

/// Looks at a lagging standby this many times, a little apart, before refusing it: a healthy
/// standby replays what it has just received within milliseconds.
const LOOKS: u32 = 5;

/// Refuse a standby more than `max_lag` behind (`who` names the server).
///
/// # Errors
/// [`Error::Refused`] naming the lag, the positions and the setting; [`Error::Postgres`].
pub async fn check_lag(server: &Server, max_lag: Duration, who: &str) -> Result<()> {
    let mut state = server.replay_state().await?;
    for _ in 1..LOOKS {
        if state.lag_seconds() <= max_lag.as_secs_f64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        state = server.replay_state().await?;
    }
    if state.received.is_none() {
        tracing::warn!("{who} is a standby that is not streaming: its lag behind the primary cannot be measured");
    }
    let lag = state.lag_seconds();
    if lag > max_lag.as_secs_f64() {
        return Err(Error::Refused(refusal(who, &state, lag, max_lag)).with_hint(
            "let the standby catch up (pg_wal_replay_resume() if paused), back up another standby or the primary, or raise WALVAULT_STANDBY_MAX_LAG",
        ));
    }
    tracing::info!("backing up from the standby {who} ({lag:.0} s behind its primary)");
    Ok(())
}

fn refusal(who: &str, s: &ReplayState, lag: f64, max_lag: Duration) -> String {
    let at = |l: Option<crate::wal::Lsn>| l.map_or("nothing".to_string(), format_lsn);
    let paused = if s.paused { ", replay is paused" } else { "" };
    format!(
        "standby {who} is {lag:.0} s behind its primary (replayed up to {}, received up to {}{paused}); WALVAULT_STANDBY_MAX_LAG is {} s",
        at(s.replayed),
        at(s.received),
        max_lag.as_secs()
    )
}
