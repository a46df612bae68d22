//! The restore test's scratch server: which binaries, which user, its settings (on the
//! command line, which outranks both configuration files), start, wait for promotion, stop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::ops::verify::restore_types::RestoreTestOptions;
use crate::pg::socket::{self, Poll};
use crate::{Error, Result};

/// Our own pg_hba.conf (trust on the private socket), and a postgresql.conf if the backup has
/// none (Debian keeps it in /etc).
pub(super) fn write_config(root: &Path, owner: Option<(u32, u32)>) -> Result<()> {
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
pub(super) fn server_owner() -> Result<Option<(u32, u32)>> {
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

pub(super) fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
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
pub(super) struct Server {
    child: Option<Child>,
    bin: PathBuf,
    root: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Server {
    pub(super) fn start(bin: &Path, root: &Path, owner: Option<(u32, u32)>, extra: &[String]) -> Result<Self> {
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
        for s in settings.iter().chain(extra) {
            c.arg("-c").arg(s);
        }
        c.current_dir(root).stdin(Stdio::null()).stdout(log).stderr(err);
        let child =
            c.spawn().map_err(|e| Error::Postgres(format!("cannot start {}: {e}", bin.join("postgres").display())))?;
        tracing::info!("restore test: server started in {} (log {})", pgdata.display(), log_path.display());
        Ok(Server { child: Some(child), bin: bin.to_path_buf(), root: root.to_path_buf(), owner })
    }

    pub(super) fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Poll until the server accepts connections and is out of recovery.
    pub(super) async fn wait_promoted(&mut self, opts: &RestoreTestOptions) -> Result<()> {
        let deadline = Instant::now().checked_add(opts.timeout).unwrap_or_else(crate::ops::repo::far_future);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(Error::Postgres(format!(
                    "the restored server exited ({status}) before recovery ended: {}",
                    self.log_tail()
                )));
            }
            match socket::in_recovery(&self.socket_dir(), &opts.check_user).await {
                Ok(false) => return Ok(()),
                Ok(true) | Err(Poll::NotYet) => {}
                Err(Poll::Fatal(e)) => return Err(e),
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
    pub(super) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let mut c = as_owner(&self.bin.join("pg_ctl"), self.owner);
        c.arg("-D").arg(self.root.join("pgdata")).args(["-m", "fast", "-w", "-t", "60", "stop"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let stopped = crate::ops::repo::blocking(move || Ok(c.status().map(|s| s.success()).unwrap_or(false))).await;
        if !matches!(stopped, Ok(true)) {
            tracing::warn!("restore test: pg_ctl stop failed; killing the server");
            let _ = child.kill();
        }
        let _ = crate::ops::repo::blocking(move || Ok(child.wait())).await;
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
