//! Test fixtures: repositories (local directory and S3 on the test server), real PostgreSQL
//! clusters in temporary directories, and runners for the built binaries.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A fixed test key (32 random bytes, base64), as `openssl rand -base64 32` prints.
pub const TEST_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
pub const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Path of a binary of this workspace.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "wal-push" => PathBuf::from(env!("CARGO_BIN_EXE_wal-push")),
        "wal-fetch" => PathBuf::from(env!("CARGO_BIN_EXE_wal-fetch")),
        "walvault" => PathBuf::from(env!("CARGO_BIN_EXE_walvault")),
        "base-backup" => PathBuf::from(env!("CARGO_BIN_EXE_base-backup")),
        "pitr-prepare" => PathBuf::from(env!("CARGO_BIN_EXE_pitr-prepare")),
        other => panic!("unknown binary {other}"),
    }
}

pub fn is_root() -> bool {
    // SAFETY-free check: the uid of /proc/self.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A temporary directory the postgres OS user can use (when the tests run as root).
pub fn shared_tempdir() -> TempDir {
    let dir = tempfile::Builder::new().prefix("walvault-test-").tempdir().expect("tempdir");
    if is_root() {
        let status = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().expect("chown");
        assert!(status.success());
    }
    dir
}

/// A command that runs as the postgres OS user when we are root (PostgreSQL refuses root).
/// The process itself changes user (no runuser in between), so its PID is the program's.
pub fn as_postgres(program: impl AsRef<Path>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program.as_ref());
    if is_root() {
        let (uid, gid) = postgres_ids();
        c.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql").env("USER", "postgres");
    }
    c
}

/// uid and gid of the postgres OS user, from /etc/passwd.
pub fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd.lines().find(|l| l.starts_with("postgres:")).expect("a postgres OS user: install postgresql-15");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().expect("uid"), fields[3].parse().expect("gid"))
}

/// A repository for one test: settings as environment variables.
pub struct TestRepo {
    pub url: String,
    pub env: Vec<(String, String)>,
    pub fs_root: Option<PathBuf>,
    pub kind: &'static str,
    _dir: TempDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fs,
    S3,
}

impl TestRepo {
    pub fn new(backend: Backend, key: Option<&str>) -> TestRepo {
        let dir = shared_tempdir();
        let mut env = vec![("WALVAULT_CACHE_DIR".to_string(), dir.path().join("cache").display().to_string())];
        match key {
            Some(k) => env.push(("BACKUP_ENCRYPTION_KEY".into(), k.into())),
            // Unencrypted only when asked for explicitly.
            None => env.push(("WALVAULT_ENCRYPTION".into(), "none".into())),
        }
        let (url, fs_root, kind) = match backend {
            Backend::Fs => {
                let root = dir.path().join("repo");
                (format!("file://{}", root.display()), Some(root), "fs")
            }
            Backend::S3 => {
                let endpoint = s3_endpoint();
                let bucket = unique_name("wv");
                create_bucket(&endpoint, &bucket);
                env.extend(
                    [
                        ("AWS_ENDPOINT_URL", endpoint.as_str()),
                        ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_REGION", "us-east-1"),
                        ("WALVAULT_S3_PATH_STYLE", "true"),
                        ("AWS_EC2_METADATA_DISABLED", "true"),
                    ]
                    .map(|(k, v)| (k.to_string(), v.to_string())),
                );
                (format!("s3://{bucket}/pg"), None, "s3")
            }
        };
        env.push(("WALVAULT_REPO".into(), url.clone()));
        TestRepo { url, env, fs_root, kind, _dir: dir }
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Run one of our binaries with this repository's settings (and a clean WALVAULT_* env).
    pub fn run(&self, name: &str, args: &[&str]) -> Output {
        self.command(name).args(args).output().expect("run binary")
    }

    /// `pitr-prepare --pgdata PGDATA ARGS...` with this repository's settings.
    pub fn pitr_prepare(&self, pgdata: &std::path::Path, args: &[&str]) -> Output {
        self.command("pitr-prepare").arg("--pgdata").arg(pgdata).args(args).output().expect("run pitr-prepare")
    }

    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        self.clean_env(&mut c);
        c
    }

    /// One of our binaries run through `sh -c 'PREFIX; exec BINARY ARGS...'`, for shell
    /// settings a child inherits (`umask 022`, `ulimit -f 1`, an ignored signal).
    pub fn command_after(&self, prefix: &str, name: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("{prefix}; exec \"$0\" \"$@\"")).arg(bin(name));
        self.clean_env(&mut c);
        c
    }

    /// Run one of our binaries as the postgres OS user (as on a database host).
    pub fn command_as_postgres(&self, name: &str) -> Command {
        let mut c = as_postgres(bin(name));
        self.clean_env(&mut c);
        c
    }

    fn clean_env(&self, c: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("WALVAULT_") || k == "BACKUP_ENCRYPTION_KEY" || k.starts_with("AWS_") || k == "PGDATA" {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
    }

    /// Every object of the repository, raw bytes as stored (through `walvault ls` and
    /// `walvault get --raw`, so S3 is read exactly like the local directory).
    pub fn raw_objects(&self) -> Vec<(String, Vec<u8>)> {
        let out = self.run("walvault", &["ls", "--json"]);
        assert!(out.status.success(), "walvault ls: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let keys: Vec<String> =
            v.as_array().expect("array").iter().map(|o| o["key"].as_str().expect("key").to_string()).collect();
        keys.into_iter()
            .map(|key| {
                let out = self.run("walvault", &["get", "--raw", &key]);
                assert!(out.status.success(), "walvault get {key}: {}", stderr(&out));
                (key, out.stdout)
            })
            .collect()
    }
}

/// The detached workers our binaries started with this repository's cache directory stop
/// before the directory is removed, so that none writes it again after the test.
impl Drop for TestRepo {
    fn drop(&mut self) {
        super::workers::stop_using(&self._dir.path().join("cache"));
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// The S3 test server scripts/test.sh started. Never skipped silently.
pub fn s3_endpoint() -> String {
    std::env::var("WALVAULT_TEST_S3_ENDPOINT").expect(
        "WALVAULT_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the S3 test server",
    )
}

/// Create a bucket on the loopback S3 test server with one plain HTTP request.
pub fn create_bucket(endpoint: &str, bucket: &str) {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).expect("connect to S3 test server");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket {bucket}: {resp}");
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sum the `requests: {...}` debug lines our binaries print.
pub fn requests(o: &Output) -> serde_json::Value {
    let text = stderr(o);
    let line = text.lines().rev().find_map(|l| l.split_once("requests: ").map(|(_, j)| j.to_string()));
    line.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or(serde_json::Value::Null)
}

/// PostgreSQL binaries: WALVAULT_TEST_PG_BIN, else Debian's PostgreSQL 15.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("WALVAULT_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Binaries of PostgreSQL `major` (14 through 18): `$WALVAULT_TEST_PG_ROOT/<major>/bin`, which
/// scripts/test.sh fills through scripts/pg-binaries.sh. 15 falls back to Debian's
/// `/usr/lib/postgresql/15/bin` when the root is unset. Never skipped silently.
pub fn pg_bin_for(major: u32) -> PathBuf {
    let debian15 = PathBuf::from("/usr/lib/postgresql/15/bin");
    match std::env::var_os("WALVAULT_TEST_PG_ROOT") {
        Some(root) => {
            let dir = Path::new(&root).join(major.to_string()).join("bin");
            if dir.join("initdb").is_file() {
                dir
            } else if major == 15 && debian15.join("initdb").is_file() {
                debian15
            } else {
                panic!(
                    "PostgreSQL {major}: {} not found: WALVAULT_TEST_PG_ROOT={} lacks it; run the tests with scripts/test.sh, which fills it with scripts/pg-binaries.sh",
                    dir.join("initdb").display(),
                    Path::new(&root).display()
                )
            }
        }
        None if major == 15 => debian15,
        None => panic!(
            "PostgreSQL {major}: WALVAULT_TEST_PG_ROOT is not set: run the tests with scripts/test.sh, or export WALVAULT_TEST_PG_ROOT=$(scripts/pg-binaries.sh)"
        ),
    }
}

/// A real PostgreSQL cluster in a temporary directory, on a private Unix socket (no TCP).
pub struct Cluster {
    pub dir: TempDir,
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub env: Vec<(String, String)>,
    /// The PostgreSQL binaries this cluster runs (initdb, pg_ctl, psql, pgbench): `pg_bin()`
    /// unless made with [`Cluster::init_with`] or [`Cluster::with_bin`].
    pub bin: PathBuf,
    running: bool,
}

impl Cluster {
    /// initdb a new cluster; `env` is the server's environment (archive_command sees it).
    pub fn init(env: Vec<(String, String)>) -> Cluster {
        let dir = shared_tempdir();
        let pgdata = dir.path().join("pgdata");
        let out = as_postgres(pg_bin().join("initdb"))
            .args(["-D"])
            .arg(&pgdata)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {}", stderr(&out));
        Self::at(dir, pgdata, env)
    }

    /// initdb a new cluster with the binaries in `bin` (see [`pg_bin_for`]) and extra initdb
    /// arguments (e.g. `--wal-segsize=64`); the cluster keeps using `bin`.
    pub fn init_with(bin: PathBuf, initdb_args: &[&str], env: Vec<(String, String)>) -> Cluster {
        let dir = shared_tempdir();
        let pgdata = dir.path().join("pgdata");
        let out = as_postgres(bin.join("initdb"))
            .args(["-D"])
            .arg(&pgdata)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .args(initdb_args)
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb {}: {}", bin.display(), stderr(&out));
        Self::at(dir, pgdata, env).with_bin(bin)
    }

    /// The same cluster run by the binaries in `bin`.
    pub fn with_bin(mut self, bin: PathBuf) -> Cluster {
        self.bin = bin;
        self
    }

    /// A cluster over an existing data directory inside `dir`.
    pub fn at(dir: TempDir, pgdata: PathBuf, env: Vec<(String, String)>) -> Cluster {
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir_all(&socket_dir).expect("socket dir");
        if is_root() {
            Command::new("chown").args(["postgres:postgres"]).arg(&socket_dir).status().expect("chown");
        }
        Cluster { dir, pgdata, socket_dir, port: 5432, env, bin: pg_bin(), running: false }
    }

    pub fn append_conf(&self, lines: &str) {
        let conf = self.pgdata.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new().append(true).open(&conf).expect("open postgresql.conf");
        writeln!(f, "\n{lines}").expect("append");
    }

    /// Settings for archiving with wal-push (and a private socket).
    pub fn archive_conf(&self) -> String {
        format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = {}\nwal_level = replica\narchive_mode = on\narchive_command = '{} %p'\nmax_wal_size = 1GB\nwal_keep_size = 2GB\nfsync = off\n",
            self.socket_dir.display(),
            self.port,
            bin("wal-push").display()
        )
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut c = as_postgres(self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.pgdata).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("WALVAULT_")
                || k == "BACKUP_ENCRYPTION_KEY"
                || k.starts_with("AWS_")
                || k.starts_with("PG")
            {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.output().expect("pg_ctl")
    }

    pub fn start(&mut self) {
        let log = self.dir.path().join("server.log");
        let out = self.pg_ctl(&["-w", "-t", "120", "-l", &log.display().to_string(), "start"]);
        assert!(out.status.success(), "pg_ctl start: {}\n{}", stderr(&out), self.log());
        self.running = true;
    }

    /// Start without waiting for connections (a recovery that may stop with FATAL).
    pub fn start_no_wait(&mut self) {
        let log = self.dir.path().join("server.log");
        let out = self.pg_ctl(&["-W", "-l", &log.display().to_string(), "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", stderr(&out));
        self.running = true;
    }

    /// Start and wait until recovery ends (a promoted server accepts writes).
    pub fn start_and_wait_promoted(&mut self, timeout: Duration) {
        self.start();
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_psql("SELECT pg_is_in_recovery()").map(|s| s.trim() == "f").unwrap_or(false) {
                return;
            }
            assert!(Instant::now() < deadline, "recovery did not finish in {timeout:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop(&mut self) {
        if self.running {
            let out = self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"]);
            self.running = false;
            assert!(out.status.success(), "pg_ctl stop: {}", stderr(&out));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = as_postgres(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-c", sql])
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(stderr(&out))
        }
    }

    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    pub fn pgbench(&self, args: &[&str]) {
        let out = as_postgres(self.bin.join("pgbench"))
            .args(["-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .expect("pgbench");
        assert!(out.status.success(), "pgbench: {}", stderr(&out));
    }

    /// Switch to a new segment and wait until everything up to it is archived.
    pub fn switch_and_wait_archived(&self, timeout: Duration) -> String {
        // The segment holding the last byte written: at a segment boundary (just after a
        // switch) pg_walfile_name() names the previous segment up to 16 but the next one,
        // not yet written, from 17 on; `- 1` gives the same answer on 14 through 18.
        let last = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn() - 1)");
        self.psql("SELECT pg_switch_wal()");
        let deadline = Instant::now() + timeout;
        loop {
            let archived = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if archived.as_str() >= last.as_str() {
                return last;
            }
            assert!(Instant::now() < deadline, "{last} not archived in {timeout:?} (last {archived})\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn failed_count(&self) -> i64 {
        self.psql("SELECT failed_count FROM pg_stat_archiver").parse().expect("failed_count")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-w", "-t", "30", "-m", "immediate", "stop"]);
        }
        // A prefetch worker placing segments into pg_wal would write while the directory is removed.
        super::workers::stop_naming(&self.pgdata);
    }
}
