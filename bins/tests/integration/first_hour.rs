//! Issue 16, "the first hour": what a new operator met on a fresh machine. A missing config
//! file, a wrong key, a wrong environment, a socket in PGDATA, a backup run as root into a
//! postgres-owned repository, an empty `.ready` backlog, the restore scripts' hints and
//! scratch directories, and the detached workers a test leaves behind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use super::common::{
    Backend, Cluster, OTHER_KEY, TEST_KEY, TestRepo, is_root, postgres_ids, shared_tempdir, stderr, walk,
};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("json ({e}): {}\n{}", stdout(o), stderr(o)))
}

/// A config file that is not there is a setting error (exit 2) naming the setting that named
/// it, never a local I/O error (6) with only the path.
#[test]
fn missing_config_file_is_a_setting_error_naming_the_setting() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let missing = repo.dir().join("nowhere.conf");
    let out = repo.command("walvault").arg("--config").arg(&missing).arg("list").output().expect("walvault");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let want = format!("walvault: error: setting --config: config file {} does not exist", missing.display());
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));

    let out = repo.command("wal-push").env("WALVAULT_CONFIG", &missing).arg("pg_wal/x").output().expect("wal-push");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("setting WALVAULT_CONFIG: config file"), "{}", stderr(&out));
}

/// Every path under `root` belongs to `uid`.
fn assert_owned_by(root: &Path, uid: u32) {
    let mut paths = walk(root);
    paths.extend(std::fs::read_dir(root).expect("repository").flatten().map(|e| e.path()));
    for p in paths {
        let owner = std::fs::symlink_metadata(&p).expect("stat").uid();
        assert_eq!(owner, uid, "{} belongs to uid {owner}, not {uid}", p.display());
    }
}

/// A cluster whose Unix socket (and its lock file) lives in PGDATA, backed up by base-backup
/// run as root: no warning about the socket, one file count from backup to restore, a
/// repository that stays the postgres user's, and the operator's usual mistakes afterwards.
#[test]
fn first_backup_verify_and_list_as_a_new_operator() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let mut c = Cluster::init(repo.env.clone());
    c.append_conf(&c.archive_conf());
    c.append_conf(&format!("unix_socket_directories = '{}, {}'", c.socket_dir.display(), c.pgdata.display()));
    c.start();
    assert!(c.pgdata.join(format!(".s.PGSQL.{}.lock", c.port)).is_file(), "the socket's lock file is in PGDATA");
    c.pgbench(&["-i", "-s", "1", "-q"]);

    // As root when the tests are (a root crontab): the repository's wal/ is postgres's.
    let out = repo
        .command("base-backup")
        .env("PGHOST", &c.socket_dir)
        .env("PGPORT", c.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATA", &c.pgdata)
        .args(["--json", "--checkpoint", "fast", "--part-size", "4000000"])
        .output()
        .expect("base-backup");
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    assert!(!stderr(&out).contains("skipping"), "sockets are skipped quietly: {}", stderr(&out));
    let meta = json(&out);
    let files: u64 = meta["parts"].as_array().expect("parts").iter().map(|p| p["files"].as_u64().expect("files")).sum();
    assert_eq!(meta["files"].as_u64(), Some(files), "one count: the backup's files are its parts' files");
    assert!(stderr(&out).contains(&format!(" complete: {files} files, ")), "{}", stderr(&out));
    let owner = if is_root() { postgres_ids().0 } else { std::fs::metadata(repo.dir()).expect("dir").uid() };
    let root = repo.fs_root.clone().expect("fs");
    assert_owned_by(&root, owner);

    let (_restored, out) = super::pitr::prepare(&repo, &["--immediate", "--json"]);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    assert_eq!(json(&out)["files"].as_u64(), Some(files), "the restore counts the files the backup's parts counted");
    assert!(stderr(&out).contains(&format!(" ({files} files, ")), "pitr-prepare's first line too: {}", stderr(&out));

    let out = repo.run("walvault", &["verify"]);
    assert_eq!(out.status.code(), Some(0), "verify: {}{}", stdout(&out), stderr(&out));
    assert_owned_by(&root, owner);
    let out = repo.command_as_postgres("walvault").arg("verify").output().expect("verify as postgres");
    assert_eq!(out.status.code(), Some(0), "verify as postgres after root: {}{}", stdout(&out), stderr(&out));

    // A wrong key: exit 4 and a line about the key, as pitr-prepare says it.
    let out = repo.command("walvault").env("BACKUP_ENCRYPTION_KEY", OTHER_KEY).arg("verify").output().expect("verify");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "verify with a wrong key: {}{err}", stdout(&out));
    assert!(err.contains("which is not configured") && err.contains("HINT: check BACKUP_ENCRYPTION_KEY"), "{err}");
    assert!(!stdout(&out).contains("nothing can be restored"), "{}", stdout(&out));

    // A wrong environment: the environments the repository holds.
    let out = repo.run("walvault", &["--env", "staging", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("no complete backups in environment staging\nHINT: this repository holds environment production: set WALVAULT_ENV=production"), "{}", stdout(&out));

    // An empty .ready backlog is 0 seconds old, not a missing series.
    let pgdata = repo.dir().join("empty-pgdata");
    std::fs::create_dir_all(pgdata.join("pg_wal/archive_status")).expect("archive_status");
    let out =
        repo.command("walvault").args(["status", "--prometheus", "--pgdata"]).arg(&pgdata).output().expect("status");
    assert!(
        stdout(&out).contains("\nwalvault_wal_ready_files{env=\"production\"} 0\n"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("\nwalvault_wal_ready_oldest_age_seconds{env=\"production\"} 0\n"),
        "{}",
        stdout(&out)
    );
}

/// The restore scripts' hints name the script's knob (FORCE=true), a restore that fails before
/// a server ran leaves no scratch directory, and a first failed backup claims no previous one.
#[test]
fn scripts_name_their_knobs_and_leave_no_scratch_directory() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let tmp = shared_tempdir();
    let pgdata = tmp.path().join("pgdata");
    std::fs::create_dir_all(&pgdata).expect("pgdata");
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").expect("a file in PGDATA");
    let scratch = shared_tempdir();

    let out = super::scripts::script(&repo, "restore-postgresql.sh", false)
        .env("SKIP_CONFIRMATION", "true")
        .env("PGDATA", &pgdata)
        .env("TMPDIR", scratch.path())
        .output()
        .expect("restore-postgresql.sh");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "non-empty PGDATA refused: {err}");
    assert!(err.contains("or set FORCE=true to delete its contents first") && !err.contains("--force"), "{err}");
    let left: Vec<_> = std::fs::read_dir(scratch.path()).expect("scratch").flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "no scratch directory left behind: {left:?}");

    let out = super::scripts::script(&repo, "backup-postgresql.sh", false)
        .env_remove("WALVAULT_REPO")
        .env("WALVAULT_CONFIG", "/dev/null")
        .env("TMPDIR", scratch.path())
        .output()
        .expect("backup-postgresql.sh");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no backup was made complete and latest.json is unchanged"), "{err}");
    assert!(!err.contains("previous complete backup"), "{err}");
}

/// wal-fetch leaves a detached prefetch worker running in the repository's cache directory;
/// a test's repository stops it before removing the directory, which then stays gone.
#[test]
fn test_repository_stops_the_workers_in_its_cache() {
    const SEG: u32 = 1 << 20;
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let cache = repo.dir().join("cache");
    let pg_wal = repo.dir().join("pgdata/pg_wal");
    std::fs::create_dir_all(&pg_wal).expect("pg_wal");
    let magic = walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("magic");
    let name = walvault::wal::WalFileName::from_segno(1, 3, u64::from(SEG)).to_string();
    std::fs::write(
        pg_wal.join(&name),
        walvault::wal::synthetic_segment(7_300_000_000_000_000_016, 1, 3, SEG, magic, 7),
    )
    .expect("segment");
    let out = repo.run("wal-push", &[pg_wal.join(&name).to_str().expect("utf8")]);
    assert!(out.status.success(), "wal-push: {}", stderr(&out));
    std::fs::remove_file(pg_wal.join(&name)).expect("rm");
    let out = repo.run("wal-fetch", &[&name, pg_wal.join("RECOVERYXLOG").to_str().expect("utf8")]);
    assert!(out.status.success(), "wal-fetch: {}", stderr(&out));
    assert!(cache.is_dir(), "wal-fetch used the cache directory");

    drop(repo);
    assert_eq!(super::workers::processes_using(&cache), Vec::<u32>::new(), "no worker outlives the test's repository");
    assert!(!cache.exists(), "{} removed", cache.display());
}

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (name, schedule) of every CronJob in deploy/: the one source of truth for the schedule.
fn cronjobs() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").join("deploy");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .expect("deploy/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cronjob-") && n.ends_with(".yaml"))
        .collect();
    files.sort();
    let field = |text: &str, key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().trim_matches('"').to_string())
    };
    files
        .iter()
        .map(|f| {
            let text = repo_file(&format!("deploy/{f}"));
            let name = field(&text, "  name: ").unwrap_or_else(|| panic!("{f}: metadata.name"));
            let schedule = field(&text, "  schedule: ").unwrap_or_else(|| panic!("{f}: spec.schedule"));
            (name, schedule)
        })
        .collect()
}

/// How the runbook's table and deploy/README.md say a schedule, and the systemd timer's
/// `OnCalendar=`: `(runbook words, README words, OnCalendar)`.
fn schedule_forms(schedule: &str) -> (String, String, String) {
    let f: Vec<&str> = schedule.split(' ').collect();
    match f.as_slice() {
        ["*/5", "*", "*", "*", "*"] => ("Every 5 minutes".into(), "every 5 minutes".into(), "*:0/5".into()),
        [m, h, "*", "*", dow] => {
            let (m, h): (u32, u32) = (m.parse().expect("minute"), h.parse().expect("hour"));
            let (day, cal) = match *dow {
                "*" => ("Daily at", "*-*-*".to_string()),
                "0" => ("Weekly, Sunday", "Sun *-*-*".to_string()),
                other => panic!("schedule {schedule}: day of week {other} has no words here yet"),
            };
            (format!("{day} {h}:{m:02}"), format!("{h:02}:{m:02} UTC"), format!("{cal} {h:02}:{m:02}:00 UTC"))
        }
        _ => panic!("schedule {schedule}: no words for it here yet"),
    }
}

/// Backticked five-field cron expressions, `schedule: "..."` values and `CronJob \`NAME\``
/// mentions in `text`.
fn schedules_and_names(text: &str) -> (Vec<String>, Vec<String>) {
    let cron_field = |f: &str| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c));
    let mut schedules: Vec<String> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.split(' ').count() == 5 && s.split(' ').all(cron_field))
        .map(str::to_string)
        .collect();
    schedules
        .extend(text.lines().filter_map(|l| l.trim().strip_prefix("schedule: ")).map(|v| v.trim_matches('"').into()));
    let names = text.split("CronJob `").skip(1).filter_map(|s| s.split('`').next()).map(str::to_string).collect();
    (schedules, names)
}

/// One schedule and one set of CronJob names: the runbook, docs/operations.md,
/// deploy/README.md, the systemd units and the cron file say what deploy/cronjob-*.yaml say.
#[test]
fn schedules_and_cronjob_names_agree_everywhere() {
    let jobs = cronjobs();
    assert!(jobs.len() >= 5, "deploy/ CronJobs: {jobs:?}");
    let (runbook, operations, readme) =
        (repo_file("docs/runbook.md"), repo_file("docs/operations.md"), repo_file("deploy/README.md"));
    let cron = repo_file("deploy/cron/walvault");
    for (name, schedule) in &jobs {
        let (words, readme_words, calendar) = schedule_forms(schedule);
        let row = runbook.lines().find(|l| l.contains(&format!("CronJob `{name}`")));
        assert!(row.is_some_and(|r| r.contains(&words)), "docs/runbook.md: {name} {words:?}: {row:?}");
        assert!(operations.contains(&format!("| `{name}` | `{schedule}` ")), "docs/operations.md: {name} {schedule}");
        let row = readme.lines().find(|l| l.contains(&format!("`{name}`")));
        assert!(row.is_some_and(|r| r.contains(&readme_words)), "deploy/README.md: {name} {readme_words:?}: {row:?}");
        let timer = repo_file(&format!("deploy/systemd/{name}.timer"));
        assert!(timer.lines().any(|l| l == format!("OnCalendar={calendar}")), "{name}.timer: OnCalendar={calendar}");
        assert!(
            repo_file(&format!("deploy/systemd/{name}.service")).contains("ExecStart=/usr/local/"),
            "{name}.service"
        );
        let line = cron.lines().find(|l| l.ends_with(&format!("logger -t {name}")));
        assert!(line.is_some_and(|l| l.starts_with(&format!("{schedule} "))), "deploy/cron/walvault: {name}: {line:?}");
    }
    for (doc, text) in
        [("docs/runbook.md", &runbook), ("docs/operations.md", &operations), ("deploy/README.md", &readme)]
    {
        let (schedules, names) = schedules_and_names(text);
        for s in schedules {
            assert!(jobs.iter().any(|(_, j)| *j == s), "{doc}: schedule {s:?} is no CronJob's in deploy/");
        }
        for n in names {
            assert!(jobs.iter().any(|(j, _)| *j == n), "{doc}: CronJob {n:?} is not in deploy/");
        }
    }
}

/// The full matrix's S3 suites are `#[ignore]`d (never counted as passes that ran nothing),
/// and scripts/test.sh's full-matrix run selects exactly them.
#[test]
fn full_matrix_s3_suites_are_ignored_and_selected_by_the_flag() {
    let test_sh = repo_file("scripts/test.sh");
    let filter = test_sh
        .lines()
        .find_map(|l| l.strip_prefix("FULL_MATRIX_FILTER='").and_then(|v| v.strip_suffix('\'')))
        .expect("FULL_MATRIX_FILTER in scripts/test.sh");
    assert!(test_sh.contains("--run-ignored only -E \"test(/$FULL_MATRIX_FILTER\\$/)\""), "scripts/test.sh");
    let matrix = repo_file("bins/tests/integration/pg_matrix.rs");
    let s3: Vec<&str> = matrix
        .lines()
        .filter_map(|l| l.strip_prefix("per_version!("))
        .filter_map(|args| args.split(", ").find(|a| a.ends_with("_s3")))
        .collect();
    assert_eq!(s3.len(), 4, "an S3 suite per version 14, 16, 17, 18: {s3:?}");
    assert!(s3.iter().all(|t| t.ends_with(filter)), "{s3:?} vs {filter}");
    let macro_s3 = matrix.split("fn $s3()").next().and_then(|before| before.lines().rev().nth(1)).unwrap_or_default();
    assert!(macro_s3.trim().starts_with("#[ignore = \"full matrix only"), "the S3 suite is ignored: {macro_s3:?}");
}

/// The benchmark's base-backup and restore MB/s divide the bytes backed up and restored, and
/// the report says so.
#[test]
fn benchmark_report_names_its_divisor() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The stored run, as the harness now writes it: with the bytes backed up and restored.
    let mut doc: serde_json::Value =
        serde_json::from_str(&repo_file("docs/benchmarks/basebackup.json")).expect("basebackup.json");
    doc["results"]["backed_up_bytes"] = 400_000_000u64.into();
    doc["results"]["restored_bytes"] = 400_000_000u64.into();
    std::fs::write(dir.path().join("basebackup.json"), doc.to_string()).expect("write");
    let out_md = dir.path().join("BENCHMARKS.md");
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/report.py"))
        .arg("--in")
        .arg(dir.path())
        .arg("--out")
        .arg(&out_md)
        .output()
        .expect("python3 report.py");
    assert!(out.status.success(), "report.py: {}", stderr(&out));
    let md = std::fs::read_to_string(&out_md).expect("report");
    assert!(
        md.contains("MB/s of the bytes backed up (400 MB: base-backup's `bytes`, the data files without pg_wal)"),
        "{md}"
    );
}
