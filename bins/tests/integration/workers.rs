//! The detached helpers our binaries start (wal-fetch's prefetch worker, wal-push's push-ahead
//! helper) outlive the call that started them by design, and write into the cache directory
//! they were given. A test's repository stops the ones that use its cache directory before
//! removing it, so that none recreates `/tmp/walvault-test-*/cache` after the test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Live processes whose environment sets `WALVAULT_CACHE_DIR` to `dir` (zombies have no
/// environment and are not counted).
pub fn processes_using(dir: &Path) -> Vec<u32> {
    let wanted = format!("WALVAULT_CACHE_DIR={}", dir.display()).into_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted))
        })
        .collect()
}

/// Stop (SIGTERM, then SIGKILL) every process using `dir` as its cache directory, and wait
/// until none is left.
pub fn stop_using(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = processes_using(dir);
        if pids.is_empty() {
            return;
        }
        let signal = if Instant::now() < deadline { "-TERM" } else { "-KILL" };
        for pid in pids {
            let _ = Command::new("kill").arg(signal).arg(pid.to_string()).output();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes with an argument inside `dir` (wal-fetch's prefetch worker names its `%p`,
/// the push-ahead helper its pg_wal).
pub fn processes_naming(dir: &Path) -> Vec<u32> {
    let prefix = dir.as_os_str().as_encoded_bytes().to_vec();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|args| args.split(|b| *b == 0).any(|a| a.starts_with(&prefix)))
        })
        .collect()
}

/// Stop the detached workers serving the data directory `pgdata` (its server already stopped),
/// so that none writes into it while, or after, it is removed.
pub fn stop_naming(pgdata: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = processes_naming(pgdata);
        if pids.is_empty() {
            return;
        }
        let signal = if Instant::now() < deadline { "-TERM" } else { "-KILL" };
        for pid in pids {
            let _ = Command::new("kill").arg(signal).arg(pid.to_string()).output();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
