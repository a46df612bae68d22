//! Progress of the long commands (base-backup, pitr-prepare, verify, files-backup,
//! files-restore): a bar with bytes, rate and ETA when stderr is a terminal; otherwise (a
//! Kubernetes Job, a CronJob's log) one line every `WALVAULT_PROGRESS_INTERVAL` seconds with
//! the percent done, the rate and the ETA, so a log tells an operator when the command ends.
//!
//! Bytes are counted where they flow, by [`Metered`] readers and writers, which also apply a
//! `--max-rate` [`Throttle`] when there is one.

use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::human::human_bytes;
use crate::throttle::Throttle;

/// Default seconds between two progress lines without a terminal.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// A counter of bytes done of a total, shown as it moves. Cheap to clone; the display stops
/// when [`Progress::finish`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Progress {
    counts: Arc<Counts>,
    display: Arc<Display>,
}

struct Counts {
    what: String,
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
}

enum Display {
    None,
    Bar(indicatif::ProgressBar),
    /// The log thread runs until its sender is dropped.
    Lines(Mutex<Option<mpsc::Sender<()>>>),
}

impl Drop for Display {
    fn drop(&mut self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

impl Progress {
    /// Start showing progress of `what` (e.g. `backup b1`) towards `total` bytes: a bar on a
    /// terminal, else a log line every `every`.
    pub fn start(what: impl Into<String>, total: u64, every: Duration) -> Progress {
        let counts = Arc::new(Counts {
            what: what.into(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            started: Instant::now(),
        });
        let display = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            let template = "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
            bar.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(counts.what.clone());
            Display::Bar(bar)
        } else {
            Display::Lines(Mutex::new(Some(spawn_lines(Arc::clone(&counts), every))))
        };
        Progress { counts, display: Arc::new(display) }
    }

    /// Counting only, nothing shown.
    pub fn hidden() -> Progress {
        let counts =
            Counts { what: String::new(), done: AtomicU64::new(0), total: AtomicU64::new(0), started: Instant::now() };
        Progress { counts: Arc::new(counts), display: Arc::new(Display::None) }
    }

    /// `n` more bytes done.
    pub fn add(&self, n: u64) {
        self.counts.done.fetch_add(n, Ordering::Relaxed);
        if let Display::Bar(bar) = &*self.display {
            bar.inc(n);
        }
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.counts.done.load(Ordering::Relaxed)
    }

    /// Stop showing progress: the bar is cleared; without a terminal, a last line with the
    /// average rate and the time taken.
    pub fn finish(&self) {
        match &*self.display {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines(sender) => {
                if sender.lock().ok().and_then(|mut s| s.take()).is_some() {
                    tracing::info!("{}", self.counts.last_line());
                }
            }
            Display::None => {}
        }
    }
}

/// The log-line thread: a line every `every` until the sender is dropped.
fn spawn_lines(counts: Arc<Counts>, every: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let every = every.max(Duration::from_millis(100));
    let spawned = std::thread::Builder::new().name("progress".into()).spawn(move || {
        while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
            tracing::info!("{}", counts.line());
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("no progress lines: cannot start their thread: {e}");
    }
    tx
}

impl Counts {
    /// `backup b1: 42.3% of 1.60 GiB, 45.10 MiB/s, ETA 38 s`.
    fn line(&self) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed).min(total);
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
        let percent = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        let eta = if rate >= 1.0 { eta_text((total - done) as f64 / rate) } else { "unknown".to_string() };
        format!("{}: {percent:.1}% of {}, {}/s, ETA {eta}", self.what, human_bytes(total), human_bytes(rate as u64))
    }
}

impl Counts {
    /// `backup b1: 100.0% of 1.60 GiB, 45.10 MiB/s, done in 38 s`.
    fn last_line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
        let total = self.total.load(Ordering::Relaxed);
        let percent = if total == 0 { 100.0 } else { done.min(total) as f64 * 100.0 / total as f64 };
        let took = eta_text(seconds);
        format!(
            "{}: {percent:.1}% of {}, {}/s, done in {took}",
            self.what,
            human_bytes(total),
            human_bytes(rate as u64)
        )
    }
}

fn eta_text(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, (s % 3600).div_ceil(60)),
    }
}

/// A reader or writer that counts its bytes into a [`Progress`] and, with a [`Throttle`],
/// moves them no faster than its rate.
pub struct Metered<T> {
    inner: T,
    progress: Progress,
    throttle: Option<Arc<Throttle>>,
}

impl<T> Metered<T> {
    pub fn new(inner: T, progress: Progress, throttle: Option<Arc<Throttle>>) -> Metered<T> {
        Metered { inner, progress, throttle }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn account(&self, n: usize) {
        if let Some(t) = &self.throttle {
            t.take_blocking(n as u64);
        }
        self.progress.add(n as u64);
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.account(n);
        Ok(n)
    }
}

impl<W: Write> Write for Metered<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.account(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_percent_rate_and_eta() {
        let counts = Counts {
            what: "backup b".into(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            started: Instant::now() - Duration::from_secs(10),
        };
        assert_eq!(counts.line(), "backup b: 100.0% of 0 B, 0 B/s, ETA unknown");
        counts.total.store(400 << 20, Ordering::Relaxed);
        counts.done.store(100 << 20, Ordering::Relaxed);
        let line = counts.line();
        assert!(line.starts_with("backup b: 25.0% of 400.00 MiB, 10.00 MiB/s, ETA 3"), "{line}");
        // More counted than expected (tar headers): never past 100%.
        counts.done.store(401 << 20, Ordering::Relaxed);
        assert!(counts.line().starts_with("backup b: 100.0% of 400.00 MiB"), "{}", counts.line());
        assert_eq!(eta_text(30.2), "31 s");
        assert_eq!(eta_text(600.0), "10 min");
        assert_eq!(eta_text(8.0 * 3600.0 + 61.0), "8 h 2 min");
    }

    #[test]
    fn metered_streams_count_every_byte() {
        let progress = Progress::hidden();
        let mut out = Metered::new(Vec::new(), progress.clone(), None);
        out.write_all(&[7; 5000]).expect("write");
        let written = out.into_inner();
        let mut back = Metered::new(&written[..], progress.clone(), None);
        std::io::copy(&mut back, &mut std::io::sink()).expect("read");
        assert_eq!(progress.done(), 10_000);
    }
}
