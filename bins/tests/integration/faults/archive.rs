//! A real PostgreSQL 15 cluster archiving under pgbench load through the fault proxy: every
//! fault kind with several seeds, an S3 outage, and recovery that must stop (not promote)
//! when the archive becomes unreachable for good.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::common::{Cluster, as_postgres, pg_bin, stderr};
use super::super::common::{TestRepo, s3_endpoint};
use super::super::pitr::{base_backup, prepare, primary};
use super::proxy::{Dir, Fault, Plan, Proxy};
use super::{direct, repo_via};

/// Faults on the archive path (mostly uploads): `(fault, methods)`.
const ARCHIVE_FAULTS: &[(Fault, &[&str])] = &[
    (Fault::Delay(Duration::from_millis(300)), &[]),
    (Fault::SlowDown, &[]),
    (Fault::InternalError, &[]),
    // Upload cut mid-body: by a reset, by a clean close ("drop after N bytes").
    (Fault::Reset { dir: Dir::Request, after: 2000 }, &["PUT"]),
    (Fault::Close { dir: Dir::Request, after: 2000 }, &["PUT"]),
    // Stored, but the answer is lost: the retry meets its own object (412).
    (Fault::Reset { dir: Dir::Response, after: 30 }, &["PUT"]),
    (Fault::Stall { dir: Dir::Request, after: 2000 }, &["PUT"]),
    (Fault::Stall { dir: Dir::Response, after: 0 }, &[]),
];

/// Faults on the restore path (downloads): cut or stalled mid-body, resumed by wal-fetch.
const FETCH_FAULTS: &[Fault] = &[
    Fault::Delay(Duration::from_millis(100)),
    Fault::SlowDown,
    Fault::InternalError,
    Fault::Reset { dir: Dir::Response, after: 3000 },
    Fault::Close { dir: Dir::Response, after: 3000 },
    Fault::Stall { dir: Dir::Response, after: 3000 },
    Fault::Reset { dir: Dir::Response, after: 20 },
];

const SEEDS: u64 = 2;

/// WAL segment names in `pg_wal` up to `last`, checked to be one unbroken run.
fn segments_up_to(pgdata: &Path, last: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pgdata.join("pg_wal"))
        .expect("pg_wal")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()) && n.as_str() <= last)
        .collect();
    names.sort();
    let segno = |n: &str| {
        u64::from_str_radix(&n[8..16], 16).expect("hex") * 256 + u64::from_str_radix(&n[16..], 16).expect("hex")
    };
    for pair in names.windows(2) {
        assert_eq!(segno(&pair[1]), segno(&pair[0]) + 1, "pg_wal has a gap between {} and {}", pair[0], pair[1]);
    }
    names
}

/// Fetch every name (through whatever the proxy does now) and compare with pg_wal's copy.
fn fetch_identical(
    repo: &TestRepo,
    pgdata: &Path,
    names: &[String],
    out: &Path,
    via_proxy: bool,
    before_each: impl Fn(usize),
) {
    std::fs::create_dir_all(out).expect("mkdir");
    for (i, name) in names.iter().enumerate() {
        before_each(i);
        let dest = out.join(name);
        let args = [name.as_str(), dest.to_str().expect("utf8")];
        let run = if via_proxy { repo.run("wal-fetch", &args) } else { direct(repo, "wal-fetch", &args) };
        assert_eq!(run.status.code(), Some(0), "fetch {name}: {}", stderr(&run));
        assert!(
            std::fs::read(&dest).expect("read") == std::fs::read(pgdata.join("pg_wal").join(name)).expect("read"),
            "{name} is byte-identical"
        );
        std::fs::remove_file(&dest).expect("rm");
    }
}

/// Every fault kind, two seeds each, then all of them mixed, on a cluster archiving pgbench
/// WAL (and a base backup taken through mixed faults). Then every segment is fetched back
/// through download faults: all archived, byte-identical, no gap; failed_count may be > 0.
#[test]
fn archiving_under_each_fault_kind_loses_nothing() {
    let started = Instant::now();
    let proxy = Proxy::start(&s3_endpoint(), Plan::clean());
    let repo = repo_via(&proxy);
    let mut p = primary(&repo);
    p.pgbench(&["-i", "-s", "1", "-q"]);
    let all: Vec<Fault> = ARCHIVE_FAULTS.iter().map(|(f, _)| *f).collect();
    proxy.set_plan(Plan::mixed(99, 0.04, &all, &[]).transient(2));
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "base-backup under mixed faults: {}", stderr(&out));
    let mut report = vec![format!("base-backup under mixed faults: ok, proxy {:?}", proxy.counts())];

    let mut phases: Vec<(String, Plan)> = Vec::new();
    for (i, (fault, methods)) in ARCHIVE_FAULTS.iter().enumerate() {
        let rate = match fault {
            Fault::Delay(_) => 1.0,
            // Each stall costs an attempt timeout: fewer, or the phase takes minutes.
            Fault::Stall { .. } => 0.25,
            _ => 0.5,
        };
        for seed in 0..SEEDS {
            phases.push((fault.label().to_string(), Plan::one(seed * 100 + i as u64, rate, *fault, methods)));
        }
    }
    for seed in 0..SEEDS {
        phases.push(("mixed".to_string(), Plan::mixed(500 + seed, 0.06, &all, &[])));
    }
    let mut last = String::new();
    let mut per_kind = std::collections::BTreeMap::<String, u64>::new();
    for (label, plan) in phases {
        let seed = plan.seed;
        let injected_before = proxy.counts();
        let failed_before = p.failed_count();
        let t = Instant::now();
        proxy.set_plan(plan);
        for _ in 0..3 {
            p.pgbench(&["-n", "-t", "60", "-c", "2"]);
            p.psql("SELECT pg_switch_wal()");
        }
        last = p.switch_and_wait_archived(Duration::from_secs(150));
        let after = proxy.counts();
        let injected: u64 = after
            .iter()
            .filter(|(k, _)| *k != "requests")
            .map(|(k, v)| v - injected_before.get(k).copied().unwrap_or(0))
            .sum();
        *per_kind.entry(label.clone()).or_default() += injected;
        report.push(format!(
            "archive {label} seed {seed}: {injected} faults injected, failed_count +{}, {:.1} s",
            p.failed_count() - failed_before,
            t.elapsed().as_secs_f64()
        ));
        eprintln!("{}", report.last().expect("line"));
    }
    for (label, injected) in &per_kind {
        assert!(*injected > 0, "{label} was injected: {per_kind:?}");
    }
    proxy.set_plan(Plan::clean());
    let failed = p.failed_count();
    let names = segments_up_to(&p.pgdata, &last);
    assert!(names.len() >= 20, "many segments: {}", names.len());

    // Each download fault in turn, a new seed per file, on two files per kind (spread over
    // the archive); then every file, read straight from S3.
    let fetched = repo.dir().join("fetched");
    let step = (names.len() / (2 * FETCH_FAULTS.len())).max(1);
    let sample: Vec<String> = names.iter().step_by(step).take(2 * FETCH_FAULTS.len()).cloned().collect();
    fetch_identical(&repo, &p.pgdata, &sample, &fetched, true, |i| {
        let fault = FETCH_FAULTS[i % FETCH_FAULTS.len()];
        proxy.set_plan(Plan::one(1000 + i as u64, 0.5, fault, &["GET"]).transient(2));
    });
    let counts = proxy.counts();
    for f in FETCH_FAULTS {
        assert!(counts.get(f.label()).copied().unwrap_or(0) > 0, "{} injected on fetch: {counts:?}", f.label());
    }
    proxy.set_plan(Plan::clean());
    fetch_identical(&repo, &p.pgdata, &names, &fetched, false, |_| {});
    report.push(format!(
        "{} segments archived, none missing, all byte-identical straight from S3 and {} of them through download faults; failed_count {failed}; proxy {counts:?}",
        names.len(),
        sample.len()
    ));
    p.stop();
    eprintln!("archiving under faults ({:.0} s):\n  {}", started.elapsed().as_secs_f64(), report.join("\n  "));
}

/// pg_ctl start without asserting success.
pub(super) fn try_start(c: &Cluster) -> std::process::Output {
    let log = c.dir.path().join("server.log").display().to_string();
    pg_ctl(c, &["-w", "-t", "120", "-l", &log, "start"])
}

/// pg_ctl with the cluster's environment only.
pub(super) fn pg_ctl(c: &Cluster, args: &[&str]) -> std::process::Output {
    let mut cmd = as_postgres(pg_bin().join("pg_ctl"));
    cmd.arg("-D").arg(&c.pgdata).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("WALVAULT_") || k == "BACKUP_ENCRYPTION_KEY" || k.starts_with("AWS_") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(c.env.iter().map(|(k, v)| (k, v))).output().expect("pg_ctl")
}

fn postmaster_gone(pgdata: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !pgdata.join("postmaster.pid").exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn pg_controldata_state(pgdata: &PathBuf) -> String {
    let out = as_postgres(pg_bin().join("pg_controldata")).arg(pgdata).output().expect("pg_controldata");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find(|l| l.starts_with("Database cluster state:")).unwrap_or("").to_string()
}

/// Restore under download faults. When the archive becomes unreachable for good halfway
/// through, wal-fetch exits 203 and PostgreSQL stops instead of promoting; once S3 is back
/// (still with transient faults) recovery completes with every committed row.
#[test]
fn recovery_stops_on_permanent_fault_and_completes_through_transient_ones() {
    let proxy = Proxy::start(&s3_endpoint(), Plan::clean());
    let repo = repo_via(&proxy);
    let mut p = primary(&repo);
    p.psql("CREATE TABLE t(batch int)");
    p.pgbench(&["-i", "-s", "1", "-q"]);
    assert!(base_backup(&repo, &p, &[]).status.success());
    for n in 0..14 {
        p.psql(&format!("INSERT INTO t SELECT {n} FROM generate_series(1, 500)"));
        p.pgbench(&["-n", "-t", "50", "-c", "2"]);
        p.psql("SELECT pg_switch_wal()");
    }
    p.switch_and_wait_archived(Duration::from_secs(120));
    let expected = p.psql("SELECT count(*) || ' ' || (SELECT count(*) FROM pgbench_history) FROM t");
    p.stop();

    let download_faults: Vec<Fault> = FETCH_FAULTS.to_vec();
    proxy.set_plan(Plan::mixed(7, 0.08, &download_faults, &["GET"]).transient(2));
    let (mut c, out) = prepare(&repo, &["--latest"]);
    assert!(out.status.success(), "pitr-prepare under download faults: {}", stderr(&out));
    c.append_conf(&format!("unix_socket_directories = '{}'\narchive_mode = off\n", c.socket_dir.display()));

    // Every request after the first few fails with 500: a permanent fault mid-recovery. (The
    // first calls are history probes, each answered "not found" only after a fresh listing.)
    proxy.set_plan(Plan { after: 16, ..Plan::one(8, 1.0, Fault::InternalError, &[]) });
    let _ = try_start(&c);
    assert!(postmaster_gone(&c.pgdata, Duration::from_secs(120)), "the server stopped by itself\n{}", c.log());
    let log = c.log();
    assert!(log.contains("exit code 203"), "wal-fetch exited 203: {log}");
    // Started: the first segments are either restored through %p or, placed in pg_wal by
    // pitr-prepare, read there ("redo starts").
    assert!(log.contains("restored log file") || log.contains("redo starts at"), "recovery had started: {log}");
    for promoted in
        ["selected new timeline ID", "archive recovery complete", "database system is ready to accept connections"]
    {
        assert!(!log.contains(promoted), "no promotion ({promoted}):\n{log}");
    }
    let state = pg_controldata_state(&c.pgdata);
    assert!(state.contains("in archive recovery"), "{state}");

    // S3 back, transient faults only: recovery resumes and ends with every row.
    proxy.set_plan(Plan::mixed(9, 0.08, &download_faults, &["GET"]).transient(2));
    c.start_and_wait_promoted(Duration::from_secs(180));
    assert_eq!(
        c.psql("SELECT count(*) || ' ' || (SELECT count(*) FROM pgbench_history) FROM t"),
        expected,
        "{}",
        c.log()
    );
    c.stop();
    eprintln!(
        "recovery under faults: stopped with 203 ({state}), then promoted with every row; proxy {:?}",
        proxy.counts()
    );
}

/// The S3 endpoint goes away (port closed, open connections cut) for several seconds while
/// pgbench keeps writing: archiving fails, then resumes by itself, and nothing is lost.
#[test]
fn s3_outage_during_archiving_resumes_by_itself() {
    let proxy = Proxy::start(&s3_endpoint(), Plan::clean());
    let repo = repo_via(&proxy);
    let mut p = primary(&repo);
    p.append_conf("archive_timeout = 1");
    p.psql("SELECT pg_reload_conf()");
    p.pgbench(&["-i", "-s", "1", "-q"]);
    p.switch_and_wait_archived(Duration::from_secs(60));
    let archived = || p.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
    let (before, during, resumed) = std::thread::scope(|s| {
        let load = s.spawn(|| p.pgbench(&["-n", "-T", "16", "-c", "2"]));
        std::thread::sleep(Duration::from_secs(2));
        proxy.down();
        let before = archived();
        std::thread::sleep(Duration::from_secs(6));
        let during = archived();
        proxy.up();
        // No pg_switch_wal here: the archiver must pick up by itself.
        let deadline = Instant::now() + Duration::from_secs(60);
        let resumed = loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = archived();
            if now > during || Instant::now() > deadline {
                break now;
            }
        };
        load.join().expect("pgbench");
        (before, during, resumed)
    });
    assert!(resumed > during, "archiving resumed by itself after the outage: {during} -> {resumed}");
    let failed = p.failed_count();
    // While S3 was down nothing new was acknowledged: archive_command failed, or it waited
    // (a wal-push call waits, bounded, while the push-ahead helper retries its file).
    assert!(
        failed > 0 || during == before,
        "the outage stalled archiving: {before} -> {during}, failed_count {failed}"
    );
    let last = p.switch_and_wait_archived(Duration::from_secs(120));
    let names = segments_up_to(&p.pgdata, &last);
    fetch_identical(&repo, &p.pgdata, &names, &repo.dir().join("fetched"), false, |_| {});
    p.stop();
    eprintln!(
        "S3 outage: archived {before} when it went down, {during} after 6 s down, {resumed} after it came back; failed_count {failed}; {} segments, none missing, byte-identical",
        names.len()
    );
}
