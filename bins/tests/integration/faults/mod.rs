//! Fault injection (issue #4): the binaries talk to the S3 test server through
//! [`proxy::Proxy`], which adds latency, answers 503 SlowDown / 500, resets or closes
//! connections after N bytes and stalls them. Transient faults must end in success, permanent
//! ones in the right exit code within a bounded time; SIGKILL at random points must never
//! leave a half object, a half `%p` or an unrecoverable file ([`crash`]).
//!
//! Every test here uses short, explicit timeouts ([`FAST`]) so that a stall costs seconds,
//! not the production defaults' minutes.

mod archive;
mod crash;
pub(super) mod proxy;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use proxy::{Dir, Fault, Plan, Proxy};

use super::common::{Backend, TEST_KEY, TestRepo, s3_endpoint, stderr};

/// Retry and timeout settings for tests under faults: 4 attempts, connect 2 s, attempt 4 s,
/// stall 2 s, operation 40 s.
pub(super) const FAST: &[(&str, &str)] = &[
    ("WALVAULT_S3_MAX_ATTEMPTS", "4"),
    ("WALVAULT_S3_CONNECT_TIMEOUT", "2"),
    ("WALVAULT_S3_ATTEMPT_TIMEOUT", "4"),
    ("WALVAULT_S3_STALL_TIMEOUT", "2"),
    ("WALVAULT_S3_TIMEOUT", "40"),
];

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}

/// An S3 repository on the test server whose binaries go through `proxy`, with [`FAST`].
pub(super) fn repo_via(proxy: &Proxy) -> TestRepo {
    let mut repo = TestRepo::new(Backend::S3, Some(TEST_KEY));
    set_env(&mut repo.env, "AWS_ENDPOINT_URL", &proxy.endpoint);
    for (k, v) in FAST {
        set_env(&mut repo.env, k, v);
    }
    repo
}

/// Run a binary of `repo` straight against the S3 test server (no proxy, no faults).
pub(super) fn direct(repo: &TestRepo, name: &str, args: &[&str]) -> Output {
    repo.command(name).env("AWS_ENDPOINT_URL", s3_endpoint()).args(args).output().expect("run binary")
}

const SEG: u32 = 1 << 20;
const SYSID: u64 = 7_300_000_000_000_000_004;

fn magic15() -> u16 {
    walvault::wal::header::KNOWN_MAGICS.iter().find(|(_, v)| *v == 15).map(|(m, _)| *m).expect("pg 15 magic")
}

/// A synthetic 1 MiB segment at `dir/<name>`.
pub(super) fn segment(dir: &Path, segno: u64, fill: u8) -> PathBuf {
    segment_of_size(dir, segno, fill, SEG)
}

/// A synthetic segment of `size` bytes (a power of two, 1 MiB or more), poorly
/// compressible after its header, at `dir/<name>`.
pub(super) fn segment_of_size(dir: &Path, segno: u64, fill: u8, size: u32) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let name = walvault::wal::WalFileName::from_segno(1, segno, u64::from(size)).to_string();
    let mut bytes = walvault::wal::synthetic_segment(SYSID, 1, segno, size, magic15(), fill);
    let mut x = segno.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in bytes.iter_mut().skip(8192).step_by(3) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write segment");
    path
}

fn timed(f: impl FnOnce() -> Output) -> (Output, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// Permanent faults end in the documented exit code within a bound that follows from the
/// settings ([`FAST`]: 4 attempts, attempt 4 s, stall 2 s): wal-push 3, wal-fetch 203 (above
/// 125: PostgreSQL stops recovery), and no `%p`. Each case has its own proxy and runs in
/// its own thread, so the stalls overlap.
#[test]
fn permanent_faults_give_the_right_exit_code_in_bounded_time() {
    let clean = Proxy::start(&s3_endpoint(), Plan::clean());
    let repo = repo_via(&clean);
    let work = repo.dir().join("work");
    let seg = segment(&work, 1, 1);
    let name = seg.file_name().and_then(|n| n.to_str()).expect("name").to_string();
    let out = repo.run("wal-push", &[seg.to_str().expect("utf8")]);
    assert!(out.status.success(), "clean push: {}", stderr(&out));

    // (binary, fault, methods, bound in s): attempts x (attempt or stall timeout) + back-off
    // + margin.
    let cases: [(&str, Fault, &[&'static str], u64); 10] = [
        ("wal-push", Fault::SlowDown, &[], 30),
        ("wal-fetch", Fault::SlowDown, &[], 30),
        ("wal-push", Fault::InternalError, &[], 30),
        ("wal-fetch", Fault::InternalError, &[], 30),
        ("wal-push", Fault::Reset { dir: Dir::Response, after: 0 }, &[], 30),
        ("wal-fetch", Fault::Reset { dir: Dir::Response, after: 0 }, &[], 30),
        ("wal-push", Fault::Stall { dir: Dir::Response, after: 0 }, &[], 45),
        ("wal-fetch", Fault::Stall { dir: Dir::Response, after: 0 }, &[], 45),
        ("wal-fetch", Fault::Stall { dir: Dir::Response, after: 4096 }, &["GET"], 45),
        ("wal-fetch", Fault::Reset { dir: Dir::Response, after: 4096 }, &["GET"], 30),
    ];
    let report: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .into_iter()
            .enumerate()
            .map(|(i, (bin, fault, methods, bound))| {
                let (repo, work, name) = (&repo, &work, &name);
                s.spawn(move || {
                    let proxy = Proxy::start(&s3_endpoint(), Plan::one(i as u64, 1.0, fault, methods));
                    let other = segment(work, 10 + i as u64, 2);
                    let dest = work.join(format!("restored-{i}"));
                    let args: Vec<&str> = if bin == "wal-push" {
                        vec![other.to_str().expect("utf8")]
                    } else {
                        vec![name, dest.to_str().expect("utf8")]
                    };
                    let t = Instant::now();
                    let out = repo.command(bin).env("AWS_ENDPOINT_URL", &proxy.endpoint).args(&args).output();
                    let (out, took) = (out.expect("run"), t.elapsed());
                    let expected = if bin == "wal-push" { 3 } else { 203 };
                    assert_eq!(out.status.code(), Some(expected), "{bin} under {fault:?}: {}", stderr(&out));
                    assert!(took < Duration::from_secs(bound), "{bin} under {fault:?} took {took:?}");
                    assert!(stderr(&out).contains("HINT: check WALVAULT_REPO"), "{}", stderr(&out));
                    assert!(!dest.exists(), "no %p after a failure");
                    let scope = if methods.is_empty() { "every request" } else { "GET" };
                    format!("{bin} {} ({scope}): exit {expected} in {:.1} s", fault.label(), took.as_secs_f64())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("case")).collect()
    });

    // The S3 server gone entirely: connection refused, then back.
    let dest = work.join("restored");
    let dest_s = dest.to_str().expect("utf8");
    clean.down();
    let (out, took) = timed(|| repo.run("wal-fetch", &[&name, dest_s]));
    assert_eq!(out.status.code(), Some(203), "wal-fetch with S3 down: {}", stderr(&out));
    let mut report = report;
    report.push(format!("wal-fetch outage: exit 203 in {:.1} s", took.as_secs_f64()));
    let (out, took) = timed(|| repo.run("wal-push", &[seg.to_str().expect("utf8")]));
    assert_eq!(out.status.code(), Some(3), "wal-push with S3 down: {}", stderr(&out));
    report.push(format!("wal-push outage: exit 3 in {:.1} s", took.as_secs_f64()));
    clean.up();
    let out = repo.run("wal-fetch", &[&name, dest_s]);
    assert_eq!(out.status.code(), Some(0), "after the faults: {}", stderr(&out));
    assert_eq!(std::fs::read(&dest).expect("read"), std::fs::read(&seg).expect("read"));
    eprintln!("permanent faults:\n  {}", report.join("\n  "));
}
