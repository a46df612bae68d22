//! A base backup taken on a hot standby (the non-exclusive backup API works there): refused
//! when the standby is further behind its primary than `WALVAULT_STANDBY_MAX_LAG`, so a
//! nightly backup of a stalled standby fails loudly instead of saving an old database.
//! The backup is complete only once the WAL up to the standby's stop point (its
//! `minRecoveryPoint`, read from the `pg_control` it copied last) is in the archive, archived
//! by the primary or by the standby with `archive_mode = always`.

use std::time::Duration;

use crate::ops::Repo;
use crate::ops::repo::summary;
use crate::pg::backup_api::{ReplayState, Server};
use crate::pg::recovery::format_lsn;
use crate::wal::{Lsn, WalFileName};
use crate::{Error, Result};

/// Looks at a lagging standby this many times, a little apart, before refusing it: a healthy
/// standby replays what it has just received within milliseconds.
const LOOKS: u32 = 5;

const CATCH_UP: &str = "let the standby catch up (pg_wal_replay_resume() if paused), back up another standby or the primary, or raise WALVAULT_STANDBY_MAX_LAG";

/// Refuse a standby more than `max_lag` behind (`who` names the server). Behind what it
/// received from its primary, or behind the archive (a standby cut off from its primary
/// still shows how far the archive went on).
///
/// # Errors
/// [`Error::Refused`] naming the lag, the positions and the setting; [`Error::Postgres`].
pub async fn check_lag(repo: &Repo, server: &Server, max_lag: Duration, who: &str) -> Result<()> {
    let archived = archived_on(repo, server.timeline, server.wal_segment_size).await;
    let look = async || server.replay_state().await.map(|s| ReplayState { archived, ..s });
    let mut state = look().await?;
    for _ in 1..LOOKS {
        if state.lag_seconds().is_some_and(|l| l <= max_lag.as_secs_f64()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        state = look().await?;
    }
    if state.ahead().is_none() {
        tracing::warn!(
            "{who} is a standby that is not streaming and the archive holds none of its timeline's WAL: its lag behind the primary cannot be measured"
        );
    }
    let Some(lag) = state.lag_seconds() else {
        return Err(Error::Refused(format!(
            "standby {who} is behind ({}) and has replayed no transaction since it started: its lag behind the primary cannot be measured",
            positions(&state)
        ))
        .with_hint(CATCH_UP));
    };
    if lag > max_lag.as_secs_f64() {
        return Err(Error::Refused(format!(
            "standby {who} is {lag:.0} s behind its primary ({}); WALVAULT_STANDBY_MAX_LAG is {} s",
            positions(&state),
            max_lag.as_secs()
        ))
        .with_hint(CATCH_UP));
    }
    tracing::info!("backing up from the standby {who} ({lag:.0} s behind its primary)");
    Ok(())
}

/// The start of the newest segment of `timeline` in the archive (the repository summary
/// brought up to date with its newest day partition: a GET and a LIST); `None` when unknown.
async fn archived_on(repo: &Repo, timeline: u32, seg_size: u64) -> Option<Lsn> {
    let mut s = match summary::load_bound(repo).await {
        Ok(s) => s?,
        Err(e) => {
            tracing::warn!("the standby's lag is measured without the archive: {e}");
            return None;
        }
    };
    if let Err(e) = summary::catch_up(repo, &mut s, chrono::Utc::now()).await {
        tracing::warn!("the standby's lag is measured with the summary alone: {e}");
    }
    let last = s.wal.timelines.get(&timeline)?.last_segment.as_deref()?;
    let segno = WalFileName::parse(last).ok()?.segno(seg_size)?;
    Some(Lsn::from_segment(segno, 0, seg_size))
}

fn positions(s: &ReplayState) -> String {
    let at = |l: Option<Lsn>| l.map_or("nothing".to_string(), format_lsn);
    let archive = match s.archived {
        Some(a) if Some(a) > s.received => format!(", the archive holds WAL from {}", format_lsn(a)),
        _ => String::new(),
    };
    let paused = if s.paused { ", replay is paused" } else { "" };
    format!("replayed up to {}, received up to {}{archive}{paused}", at(s.replayed), at(s.received))
}
