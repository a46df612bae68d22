//! `walvault verify --restore-test`: restore the newest backup into a scratch PGDATA, replay
//! the archive, start PostgreSQL on a private socket, run the checks, and measure the time to
//! recover (the RTO that day).
//!
//! The scratch server never touches the host's: no TCP (`listen_addresses = ''`), its own
//! socket directory and `pg_hba.conf` (trust on that socket only, mode 0700), archiving off,
//! tablespaces restored inside the scratch directory. Settings go on the server's command
//! line, which outranks `postgresql.conf` and `postgresql.auto.conf`. When walvault runs as
//! root, the server runs as the `postgres` user, which owns the scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Repo;
use super::catalog::{self, BackupMetadata};
use super::pitr_prepare::{self, PrepareOptions};
use super::restore_test_sql as sql;
pub use super::restore_test_sql::QueryResult;
use super::verify::Check;
use crate::error::IoContext;
use crate::pg::recovery::{RecoveryTarget, TargetAction};
use crate::{Error, Result};

/// How to run the restore test.
#[derive(Debug, Clone)]
pub struct RestoreTestOptions {
    /// PostgreSQL server binaries; default `/usr/lib/postgresql/<major>/bin`, else `pg_config --bindir`.
    pub pg_bin: Option<PathBuf>,
    /// Where the scratch directory is made; default the system temp directory.
    pub scratch_dir: Option<PathBuf>,
    /// The restore_command the scratch server uses (wal-fetch with the repository settings).
    pub restore_command: String,
    /// SQL run in `check_db` after promotion (default: row counts of the largest tables).
    pub check_sql: Vec<String>,
    pub check_db: String,
    pub check_user: String,
    /// Largest user tables counted per database when no `check_sql` is given.
    pub tables: usize,
    /// Give up on replay after this long.
    pub timeout: Duration,
    /// Fail the test when the time to recover exceeds this (the runbook's RTO).
    pub max_rto: Option<Duration>,
    pub jobs: usize,
}

/// What the restore test measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreTestResult {
    /// `passed` or `failed`.
    pub status: String,
    pub backup: Option<String>,
    pub pg_bin: Option<String>,
    pub pg_version: Option<String>,
    /// Restoring the backup into the scratch PGDATA.
    pub prepare_seconds: f64,
    /// Starting the server until it was promoted (WAL replay).
    pub replay_seconds: f64,
    /// prepare + replay: the measured RTO.
    pub time_to_recover_seconds: Option<f64>,
    pub rto_objective_seconds: Option<f64>,
    pub checks_seconds: f64,
    /// The commit time of the last transaction replayed.
    pub recovered_to: Option<DateTime<Utc>>,
    pub queries: Vec<QueryResult>,
    pub error: Option<String>,
}

/// The part of a restore test that `status` reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreTestSummary {
    pub status: String,
    pub time_to_recover_seconds: Option<f64>,
}

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
            let objective = super::human::human_duration(chrono::TimeDelta::seconds(max as i64));
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
    for dir in [root.clone(), root.join("sock"), root.join("tblspc")] {
        if dir != root {
            std::fs::create_dir(&dir).with_path(&dir)?;
        }
        chown(&dir, owner)?;
    }
    let began = Instant::now();
    prepare(repo, opts, &backup, &root).await?;
    r.prepare_seconds = began.elapsed().as_secs_f64();
    write_config(&root, owner)?;
    let mut server = Server::start(&bin, &root, owner)?;
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
        tablespace_map,
        restore_command: opts.restore_command.clone(),
        cache_dir: None,
        jobs: opts.jobs,
    };
    pitr_prepare::pitr_prepare(repo, &prepare).await.map(|_| ())
}

/// Our own pg_hba.conf (trust on the private socket), and a postgresql.conf if the backup has
/// none (Debian keeps it in /etc).
fn write_config(root: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let files = [
        (root.join("pg_hba.conf"), "local all all trust\n"),
        (root.join("pg_ident.conf"), ""),
        (root.join("pgdata/postgresql.conf"), "# written by walvault verify --restore-test\n"),
    ];
    for (path, text) in files {
        if path.exists() {
            continue;
        }
        std::fs::write(&path, text).with_path(&path)?;
        chown(&path, owner)?;
    }
    Ok(())
}

/// The uid and gid to run the server as: the `postgres` user when we are root.
fn server_owner() -> Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").with_path("/etc/passwd")?;
    let ids = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    });
    ids.map(Some).ok_or_else(|| {
        Error::Refused("the restore test runs PostgreSQL as the postgres user when walvault runs as root, and /etc/passwd has no postgres user".into())
    })
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_path(path),
        None => Ok(()),
    }
}

fn as_owner(program: &Path, owner: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    if let Some((uid, gid)) = owner {
        c.uid(uid).gid(gid);
    }
    c
}

/// The server binaries for PostgreSQL `major`, and the version they report.
///
/// # Errors
/// [`Error::Config`] naming `--pg-bin` when none match.
pub fn find_pg_bin(given: Option<&Path>, major: u32) -> Result<(PathBuf, String)> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    match given {
        Some(dir) => candidates.push(dir.to_path_buf()),
        None => {
            candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
            let out = Command::new("pg_config").arg("--bindir").output().ok().filter(|o| o.status.success());
            if let Some(out) = out {
                candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
    }
    let mut seen = Vec::new();
    for dir in &candidates {
        let Ok(out) = Command::new(dir.join("postgres")).arg("--version").output() else { continue };
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let found = text.split("(PostgreSQL) ").nth(1).and_then(|v| v.split(['.', ' ']).next()?.parse::<u32>().ok());
        if found == Some(major) {
            return Ok((dir.clone(), text));
        }
        seen.push(format!("{} is {text:?}", dir.display()));
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    let found = if seen.is_empty() { String::new() } else { format!(" ({})", seen.join(", ")) };
    Err(Error::config(
        "--pg-bin",
        format!(
            "the backup is from PostgreSQL {major} and no PostgreSQL {major} server was found in {}{found}",
            looked.join(", ")
        ),
    ))
}

/// The scratch server: a child process we own, stopped (or killed) before the scratch
/// directory goes.
struct Server {
    child: Option<Child>,
    bin: PathBuf,
    root: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Server {
    fn start(bin: &Path, root: &Path, owner: Option<(u32, u32)>) -> Result<Self> {
        let log_path = root.join("server.log");
        let log = std::fs::File::create(&log_path).with_path(&log_path)?;
        chown(&log_path, owner)?;
        let err = log.try_clone().with_path(&log_path)?;
        let pgdata = root.join("pgdata");
        let mut c = as_owner(&bin.join("postgres"), owner);
        c.arg("-D").arg(&pgdata);
        let settings = [
            "listen_addresses=".to_string(),
            format!("unix_socket_directories={}", root.join("sock").display()),
            "port=5432".to_string(),
            "archive_mode=off".to_string(),
            format!("hba_file={}", root.join("pg_hba.conf").display()),
            format!("ident_file={}", root.join("pg_ident.conf").display()),
            "ssl=off".to_string(),
            "logging_collector=off".to_string(),
            "log_destination=stderr".to_string(),
            "external_pid_file=".to_string(),
            "synchronous_standby_names=".to_string(),
            "primary_conninfo=".to_string(),
        ];
        for s in settings {
            c.arg("-c").arg(s);
        }
        c.current_dir(root).stdin(Stdio::null()).stdout(log).stderr(err);
        let child =
            c.spawn().map_err(|e| Error::Postgres(format!("cannot start {}: {e}", bin.join("postgres").display())))?;
        tracing::info!("restore test: server started in {} (log {})", pgdata.display(), log_path.display());
        Ok(Server { child: Some(child), bin: bin.to_path_buf(), root: root.to_path_buf(), owner })
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Poll until the server accepts connections and is out of recovery.
    async fn wait_promoted(&mut self, opts: &RestoreTestOptions) -> Result<()> {
        let deadline = Instant::now() + opts.timeout;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(Error::Postgres(format!(
                    "the restored server exited ({status}) before recovery ended: {}",
                    self.log_tail()
                )));
            }
            match sql::in_recovery(&self.socket_dir(), &opts.check_user).await {
                Ok(false) => return Ok(()),
                Ok(true) | Err(sql::Poll::NotYet) => {}
                Err(sql::Poll::Fatal(e)) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Postgres(format!(
                    "recovery did not finish within {} s: {}",
                    opts.timeout.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// pg_ctl stop -m fast, then kill if it is still there.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let mut c = as_owner(&self.bin.join("pg_ctl"), self.owner);
        c.arg("-D").arg(self.root.join("pgdata")).args(["-m", "fast", "-w", "-t", "60", "stop"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let stopped = super::blocking(move || Ok(c.status().map(|s| s.success()).unwrap_or(false))).await;
        if !matches!(stopped, Ok(true)) {
            tracing::warn!("restore test: pg_ctl stop failed; killing the server");
            let _ = child.kill();
        }
        let _ = super::blocking(move || Ok(child.wait())).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
