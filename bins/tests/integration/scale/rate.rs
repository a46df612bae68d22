//! `--max-rate` and the progress lines of a run without a terminal: the bytes a throttled
//! backup has read, as its own progress lines report them, against the test's clock.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::super::common::{Backend, TEST_KEY, TestRepo, shared_tempdir, stderr};
use super::super::pitr::primary;

/// Run `cmd`, timing each stderr line on arrival; returns the lines, the exit status and stdout.
fn timed_lines(mut cmd: Command) -> (Vec<(Instant, String)>, std::process::ExitStatus, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let lines = BufReader::new(child.stderr.take().expect("stderr"))
        .lines()
        .map_while(Result::ok)
        .map(|l| (Instant::now(), l))
        .collect();
    let status = child.wait().expect("wait");
    (lines, status, reader.join().expect("stdout reader"))
}

/// `what: 42.3% of 1.60 GiB, 21.00 MiB/s, ETA 38 s`: the percent, if `line` is a progress
/// line of `what`.
fn percent(line: &str, what: &str) -> Option<f64> {
    let rest = line.split_once(&format!("{what}: "))?.1;
    let (pct, rest) = rest.split_once("% of ")?;
    let (_, rest) = rest.split_once(", ")?;
    (rest.contains("/s, ETA ") || rest.contains("/s, done in ")).then_some(())?;
    pct.parse().ok()
}

/// Bytes per second between the first progress line at 5% or more and the last at 95% or
/// less (the steady part of the run), by the test's clock.
fn measured_rate(lines: &[(Instant, String)], what: &str, total: u64) -> (f64, usize) {
    let ticks: Vec<(Instant, f64)> = lines
        .iter()
        .filter(|(_, l)| l.contains("ETA"))
        .filter_map(|(t, l)| percent(l, what).map(|p| (*t, p)))
        .filter(|(_, p)| (5.0..=95.0).contains(p))
        .collect();
    assert!(ticks.len() >= 3, "progress lines of {what} in the steady part: {lines:?}");
    let ((t0, p0), (t1, p1)) = (ticks[0], ticks[ticks.len() - 1]);
    ((p1 - p0) / 100.0 * total as f64 / (t1 - t0).as_secs_f64(), ticks.len())
}

/// A 100+ MB base-backup at `--max-rate 20M` reads at 20 MiB/s within 10%, and logs a line a
/// second (WALVAULT_PROGRESS_INTERVAL=1) with percent, rate and ETA; pitr-prepare and verify
/// of it log their own progress.
#[test]
fn a_throttled_backup_holds_its_rate_and_logs_its_progress() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let p = primary(&repo);
    p.pgbench(&["-i", "-s", "8", "-q"]);
    let mut cmd = repo.command_as_postgres("base-backup");
    cmd.env("PGHOST", &p.socket_dir).env("PGPORT", p.port.to_string()).env("PGUSER", "postgres");
    cmd.env("PGDATA", &p.pgdata).env("WALVAULT_PROGRESS_INTERVAL", "1");
    cmd.args(["--json", "--checkpoint", "fast", "--part-size", "16000000", "--jobs", "2", "--max-rate", "20M"]);
    let (lines, status, stdout) = timed_lines(cmd);
    let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "base-backup: {all:#?}");
    let meta: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let (name, bytes) = (meta["name"].as_str().expect("name"), meta["bytes"].as_u64().expect("bytes"));
    assert!(bytes > 100_000_000, "a backup of more than 100 MB: {bytes}");
    let what = format!("backup {name}");
    let (rate, samples) = measured_rate(&lines, &what, bytes);
    let wanted = 20.0 * 1024.0 * 1024.0;
    eprintln!("--max-rate 20M: {:.2} MiB/s over {samples} progress lines ({bytes} bytes)", rate / 1048576.0);
    assert!((rate - wanted).abs() <= wanted * 0.10, "{:.2} MiB/s, not 20 within 10%: {all:#?}", rate / 1048576.0);
    assert!(all.iter().any(|l| l.contains(&format!("{what}: 100.0% of")) && l.contains("done in")), "{all:#?}");

    let out =
        repo.command("walvault").env("WALVAULT_PROGRESS_INTERVAL", "1").args(["verify"]).output().expect("verify");
    assert!(out.status.success(), "verify: {}", stderr(&out));
    assert!(stderr(&out).contains(&format!("verify backup {name}: 100.0% of")), "{}", stderr(&out));
    let dir = shared_tempdir();
    let target = dir.path().join("pgdata");
    let out = repo
        .command("pitr-prepare")
        .env("WALVAULT_PROGRESS_INTERVAL", "1")
        .arg("--pgdata")
        .arg(&target)
        .arg("--immediate")
        .output()
        .expect("pitr-prepare");
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    assert!(stderr(&out).contains(&format!("restore of {name}: 100.0% of")), "{}", stderr(&out));
}

/// files-backup with `--max-rate` on S3: 16 MiB of incompressible files read at 8 MiB/s and
/// uploaded at 8 MiB/s take at least 4 s, minus 10%; files-restore logs its progress.
#[test]
fn a_throttled_files_backup_on_s3_keeps_under_its_rate() {
    let repo = TestRepo::new(Backend::S3, Some(TEST_KEY));
    let src = shared_tempdir();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..4u32 {
        // xorshift64: bytes zstd cannot shrink, so the upload is as large as the read.
        let data: Vec<u8> = (0..4u32 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        std::fs::write(src.path().join(format!("f{i}")), data).expect("write");
    }
    let mut cmd = repo.command("walvault");
    cmd.env("WALVAULT_PROGRESS_INTERVAL", "1");
    cmd.args(["files-backup", "--kind", "uploads", "--json", "--max-rate", "8M"]).arg(src.path());
    let started = Instant::now();
    let (lines, status, stdout) = timed_lines(cmd);
    let took = started.elapsed().as_secs_f64();
    let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "files-backup: {all:#?}");
    let meta: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let moved = (meta["bytes"].as_u64().expect("bytes") + meta["stored_bytes"].as_u64().expect("stored")) as f64;
    let least = moved / (8.0 * 1024.0 * 1024.0) * 0.9;
    eprintln!("files-backup --max-rate 8M: {moved} bytes read and uploaded in {took:.2} s (at least {least:.2} s)");
    assert!(took >= least, "{took:.2} s for {moved} bytes at 8 MiB/s: {all:#?}");
    let name = meta["name"].as_str().expect("name");
    assert!(all.iter().any(|l| l.contains(&format!("uploads backup {name}: 100.0% of"))), "{all:#?}");

    let dst = shared_tempdir();
    let target = dst.path().join("restored");
    let out = repo
        .command("walvault")
        .env("WALVAULT_PROGRESS_INTERVAL", "1")
        .args(["files-restore", "--kind", "uploads"])
        .arg(&target)
        .output()
        .expect("files-restore");
    assert!(out.status.success(), "files-restore: {}", stderr(&out));
    assert!(stderr(&out).contains(&format!("restore of uploads backup {name}: 100.0% of")), "{}", stderr(&out));
    for i in 0..4 {
        let (a, b) = (src.path().join(format!("f{i}")), target.join(format!("f{i}")));
        assert_eq!(std::fs::read(a).expect("src"), std::fs::read(b).expect("restored"), "f{i}");
    }
}
