//! `walvault verify --restore-test`: restore the newest backup into a scratch PGDATA, replay
//! the archive, start PostgreSQL on a private socket, run the checks, and measure the time to
//! recover (the RTO that day).
//!
//! The scratch server never touches the host's: no TCP (`listen_addresses = ''`), its own
//! socket directory and `pg_hba.conf` (trust on that socket only, mode 0700), archiving off,
//! tablespaces restored inside the scratch directory. Settings go on the server's command
//! line, which outranks `postgresql.conf` and `postgresql.auto.conf`. When walvault runs as
//! root, the server runs as the `postgres` user, which owns the scratch directory.

use std::path::Path;
use std::time::Instant;

use crate::Result;
use crate::error::IoContext;
use crate::ops::Repo;
use crate::ops::repo::catalog::{self, BackupMetadata};
use crate::ops::restore::pitr_prepare::{self, PrepareOptions};
use crate::ops::verify::Check;
use crate::ops::verify::checks_sql as sql;
pub use crate::ops::verify::restore_types::{QueryResult, RestoreTestOptions, RestoreTestResult};
pub use crate::ops::verify::scratch_server::find_pg_bin;
use crate::ops::verify::scratch_server::{Server, chown, server_owner, write_config};
use crate::pg::recovery::{RecoveryTarget, TargetAction};

impl RestoreTestResult {
    /// The report's checks for this test.
    pub fn checks(&self) -> Vec<Check> {
        let now = Instant::now();
        let mut out = Vec::new();
        let name = "restore test";
        match (&self.error, self.time_to_recover_seconds) {
            (Some(e), _) => out.push(Check::failed(name, e.clone(), self.backup.clone(), now)),
            (None, Some(t)) => {
                let detail = format!(
                    "{} restored and replayed: time to recover {t:.1} s (prepare {:.1} s, replay {:.1} s)",
                    self.backup.as_deref().unwrap_or("?"),
                    self.prepare_seconds,
                    self.replay_seconds
                );
                out.push(Check::passed(name, detail, now));
            }
            (None, None) => out.push(Check::failed(name, "did not finish", self.backup.clone(), now)),
        }
        if let (Some(t), Some(max)) = (self.time_to_recover_seconds, self.rto_objective_seconds) {
            let objective = crate::ops::repo::human::human_duration(chrono::TimeDelta::seconds(max as i64));
            let detail = format!("time to recover {t:.1} s, objective {objective}");
            out.push(if t <= max {
                Check::passed("rto", detail, now)
            } else {
                Check::failed("rto", detail, None, now)
            });
        }
        for q in &self.queries {
            let name = format!("restore test query in {}: {}", q.database, q.sql);
            out.push(match &q.error {
                Some(e) => Check::failed(&name, e.clone(), None, now),
                None => Check::passed(&name, q.summary(), now),
            });
        }
        out
    }

    /// One line for the human report.
    pub fn summary_line(&self) -> String {
        match self.time_to_recover_seconds {
            Some(t) if self.error.is_none() => format!(
                "restore test {}: time to recover {t:.1} s (prepare {:.1} s + replay {:.1} s), {} queries",
                self.status.to_uppercase(),
                self.prepare_seconds,
                self.replay_seconds,
                self.queries.len()
            ),
            _ => format!("restore test {}: {}", self.status.to_uppercase(), self.error.as_deref().unwrap_or("")),
        }
    }
}

/// Run the restore test; every failure is recorded in the result, never returned.
pub async fn restore_test(repo: &Repo, opts: &RestoreTestOptions) -> RestoreTestResult {
    let mut r =
        RestoreTestResult { rto_objective_seconds: opts.max_rto.map(|d| d.as_secs_f64()), ..Default::default() };
    if let Err(e) = run(repo, opts, &mut r).await {
        r.error = Some(e.to_string());
    }
    let rto_ok = match (r.time_to_recover_seconds, r.rto_objective_seconds) {
        (Some(t), Some(max)) => t <= max,
        _ => true,
    };
    let ok = r.error.is_none()
        && r.time_to_recover_seconds.is_some()
        && rto_ok
        && r.queries.iter().all(|q| q.error.is_none());
    r.status = if ok { "passed" } else { "failed" }.to_string();
    r
}

async fn run(repo: &Repo, opts: &RestoreTestOptions, r: &mut RestoreTestResult) -> Result<()> {
    let backup = catalog::backup(repo, "latest").await?;
    r.backup = Some(backup.name.clone());
    let major = backup.pg_version_num / 10_000;
    let (bin, version) = find_pg_bin(opts.pg_bin.as_deref(), major)?;
    r.pg_bin = Some(bin.display().to_string());
    r.pg_version = Some(version);
    let owner = server_owner()?;
    let parent = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new().prefix("walvault-restore-test-").tempdir_in(&parent).with_path(&parent)?;
    let root = scratch.path().to_path_buf();
    // Only the server's user (and root) may reach the trust-authenticated socket.
    for dir in [root.clone(), root.join("sock"), root.join("tblspc")] {
        if dir != root {
            std::fs::create_dir(&dir).with_path(&dir)?;
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).with_path(&dir)?;
        chown(&dir, owner)?;
    }
    let began = Instant::now();
    prepare(repo, opts, &backup, &root).await?;
    r.prepare_seconds = began.elapsed().as_secs_f64();
    write_config(&root, owner)?;
    let mut server = Server::start(&bin, &root, owner, &opts.settings)?;
    let replay = Instant::now();
    let waited = server.wait_promoted(opts).await;
    r.replay_seconds = replay.elapsed().as_secs_f64();
    let outcome = match waited {
        Ok(()) => {
            r.time_to_recover_seconds = Some(began.elapsed().as_secs_f64());
            let checks = Instant::now();
            let result = sql::run_checks(&server.socket_dir(), opts, r).await;
            r.checks_seconds = checks.elapsed().as_secs_f64();
            result
        }
        Err(e) => Err(e),
    };
    server.stop().await;
    drop(scratch);
    outcome
}

/// pitr-prepare into `<scratch>/pgdata`, tablespaces into `<scratch>/tblspc/<oid>`.
async fn prepare(repo: &Repo, opts: &RestoreTestOptions, backup: &BackupMetadata, root: &Path) -> Result<()> {
    let tablespace_map =
        backup.tablespaces.iter().map(|t| (t.oid, root.join("tblspc").join(t.oid.to_string()))).collect();
    let prepare = PrepareOptions {
        pgdata: root.join("pgdata"),
        target: RecoveryTarget::Latest,
        backup: Some(backup.name.clone()),
        action: TargetAction::Promote,
        force: false,
        delta: false,
        tablespace_map,
        restore_command: opts.restore_command.clone(),
        cache_dir: None,
        jobs: opts.jobs,
        // The default of WALVAULT_FETCH_PREFETCH: recovery starts with WAL in pg_wal.
        prefetch: 4,
        // PostgreSQL's default, refused when two branches pass through the backup.
        timeline: None,
        // A restore test never writes into the archive it tests.
        archive: false,
    };
    pitr_prepare::pitr_prepare(repo, &prepare).await.map(|_| ())
}
