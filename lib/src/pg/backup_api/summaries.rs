//! WAL summaries (PostgreSQL 17 and newer, `summarize_wal = on`): which relation blocks changed
//! between two LSNs of one timeline, without reading a file.

use std::time::{Duration, Instant};

use super::{Server, pg_error};
use crate::Result;
use crate::blockmap::ChangedBlocks;
use crate::wal::Lsn;

/// Tablespace oids of `pg_default` and `pg_global`.
const DEFAULT_TABLESPACE: i64 = 1663;
const GLOBAL_TABLESPACE: i64 = 1664;

impl Server {
    /// The blocks changed between `from` and `to` on timeline `tli`, from the server's WAL
    /// summaries, once the summarizer has reached `to` (waiting at most `wait`). `Ok(Err(why))`
    /// when the summaries cannot tell: a server before 17, `summarize_wal` off, summaries that
    /// do not cover the whole range (removed, or the summarizer was off for part of it), or a
    /// block size other than 8192.
    ///
    /// # Errors
    /// [`crate::Error::Postgres`] for a failed query.
    pub async fn changed_blocks(
        &self,
        tli: u32,
        from: Lsn,
        to: Lsn,
        wait: Duration,
    ) -> Result<std::result::Result<ChangedBlocks, String>> {
        if self.version_num < 170_000 {
            return Ok(Err(format!("PostgreSQL {} has no WAL summaries", self.version_num / 10_000)));
        }
        let q = "SELECT current_setting('summarize_wal'), current_setting('block_size')::int8, \
                 (SELECT setting::int8 FROM pg_settings WHERE name = 'segment_size')";
        let row = self.client.query_one(q, &[]).await.map_err(|e| pg_error("read summarize_wal", &e))?;
        let (on, block, segment): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if on != "on" {
            return Ok(Err("summarize_wal is off".into()));
        }
        if block != crate::blockmap::BLOCK as i64 {
            return Ok(Err(format!("block_size is {block}")));
        }
        if let Err(why) = self.wait_summarized(to, wait).await? {
            return Ok(Err(why));
        }
        // Sorted here by LSN, not by the server: `ORDER BY start_lsn` would sort the text
        // column of that name ("1/190BF1A0" before "1/C000028") and make a hole of nothing.
        let q = "SELECT start_lsn::text, end_lsn::text FROM pg_available_wal_summaries() \
                 WHERE tli = $1 AND end_lsn > $2::text::pg_lsn AND start_lsn < $3::text::pg_lsn";
        let rows = self
            .client
            .query(q, &[&i64::from(tli), &from.to_string(), &to.to_string()])
            .await
            .map_err(|e| pg_error("list WAL summaries", &e))?;
        let mut ranges = Vec::with_capacity(rows.len());
        for r in &rows {
            let (s, e): (String, String) = (r.get(0), r.get(1));
            ranges.push((s.parse::<Lsn>()?, e.parse::<Lsn>()?));
        }
        if let Err(why) = covers(&ranges, from, to) {
            return Ok(Err(format!("the WAL summaries of timeline {tli} do not cover {from} to {to}: {why}")));
        }
        let mut changed =
            ChangedBlocks { segment_blocks: u64::try_from(segment).unwrap_or(131_072), ..Default::default() };
        let version_dir = self.tablespace_version_dir();
        let q = "SELECT relfilenode::int8, reltablespace::int8, reldatabase::int8, relforknumber::int4, \
                 relblocknumber::int8, is_limit_block FROM pg_wal_summary_contents($1, $2::text::pg_lsn, $3::text::pg_lsn)";
        for (s, e) in ranges {
            let rows = self
                .client
                .query(q, &[&i64::from(tli), &s.to_string(), &e.to_string()])
                .await
                .map_err(|e| pg_error("read WAL summary", &e))?;
            for r in rows {
                let (node, spc, db, fork, blk, limit): (i64, i64, i64, i32, i64, bool) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
                let Some(path) = relation_path(node, spc, db, fork, &version_dir) else { continue };
                changed.relations.entry(path).or_default().add(u64::try_from(blk).unwrap_or(0), limit);
            }
        }
        Ok(Ok(changed))
    }

    async fn wait_summarized(&self, to: Lsn, wait: Duration) -> Result<std::result::Result<(), String>> {
        let deadline = Instant::now().checked_add(wait).unwrap_or_else(Instant::now);
        // The summarizer usually reaches a fresh checkpoint within milliseconds, and after a
        // burst of WAL reads it at a few hundred MB/s: look again soon and often (one tiny
        // query each time); every pause is time the backup waits for nothing.
        let mut pause = FIRST_PAUSE;
        let began = Instant::now();
        loop {
            let q = "SELECT summarized_lsn::text FROM pg_get_wal_summarizer_state()";
            let row = self.client.query_one(q, &[]).await.map_err(|e| pg_error("read WAL summarizer state", &e))?;
            let at: Lsn = row.get::<_, String>(0).parse()?;
            if at >= to {
                tracing::debug!("the WAL summarizer reached {to} after {} ms", began.elapsed().as_millis());
                return Ok(Ok(()));
            }
            if Instant::now() >= deadline {
                return Ok(Err(format!("the WAL summarizer reached only {at}, not {to}, within {} s", wait.as_secs())));
            }
            tokio::time::sleep(pause).await;
            pause = next_pause(pause);
        }
    }
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The pause after `pause` between two looks at the summarizer: doubled, at most [`MAX_PAUSE`].
fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

/// Whether `ranges` (in any order) cover `from..to` without a hole.
fn covers(ranges: &[(Lsn, Lsn)], from: Lsn, to: Lsn) -> std::result::Result<(), String> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut at = from;
    for (s, e) in sorted {
        if s > at {
            return Err(format!("nothing summarizes {at} to {s}"));
        }
        at = at.max(e);
    }
    if at < to { Err(format!("nothing summarizes {at} to {to}")) } else { Ok(()) }
}

/// The PGDATA path of segment 0 of a relation fork; `None` for a fork number this build does
/// not know.
fn relation_path(node: i64, spc: i64, db: i64, fork: i32, version_dir: &str) -> Option<String> {
    let suffix = match fork {
        0 => "",
        1 => "_fsm",
        2 => "_vm",
        3 => "_init",
        _ => return None,
    };
    Some(match spc {
        GLOBAL_TABLESPACE => format!("global/{node}{suffix}"),
        DEFAULT_TABLESPACE => format!("base/{db}/{node}{suffix}"),
        _ => format!("pg_tblspc/{spc}/{version_dir}/{db}/{node}{suffix}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summarizer_is_looked_at_often() {
        let mut p = FIRST_PAUSE;
        let mut waited = Duration::ZERO;
        for _ in 0..10 {
            waited += p;
            p = next_pause(p);
        }
        assert_eq!(p, MAX_PAUSE);
        // Ten looks within 0.4 s (it was 1.5 s with pauses of up to 200 ms).
        assert!(waited < Duration::from_millis(400), "{waited:?}");
    }

    #[test]
    fn coverage_and_paths() {
        let l = |n: u64| Lsn(n);
        assert!(covers(&[(l(0), l(10)), (l(10), l(20))], l(5), l(20)).is_ok());
        assert!(covers(&[(l(0), l(10)), (l(12), l(20))], l(5), l(20)).is_err_and(|e| e.contains("0/A to 0/C")));
        assert!(covers(&[(l(0), l(10))], l(5), l(20)).is_err());
        assert!(covers(&[], l(5), l(20)).is_err());
        // LSNs whose text sorts otherwise ("1/190BF1A0" < "1/C000028"): sorted as numbers.
        let p = |s: &str| s.parse::<Lsn>().expect("lsn");
        let listed =
            [(p("1/190BF1A0"), p("1/1A000028")), (p("1/C000028"), p("1/D000060")), (p("1/D000060"), p("1/190BF1A0"))];
        assert!(covers(&listed, p("1/C000028"), p("1/1A000028")).is_ok());
        assert_eq!(relation_path(1262, 1664, 0, 0, "PG_17_1").as_deref(), Some("global/1262"));
        assert_eq!(relation_path(16384, 1663, 5, 2, "PG_17_1").as_deref(), Some("base/5/16384_vm"));
        assert_eq!(
            relation_path(16390, 16400, 5, 1, "PG_17_1").as_deref(),
            Some("pg_tblspc/16400/PG_17_1/5/16390_fsm")
        );
        assert_eq!(relation_path(1, 1663, 5, 9, "PG_17_1"), None);
    }
}
