//! Where a long command's wall time goes (base-backup, pitr-prepare): each phase is the time
//! since the previous one ended, logged at debug as it ends and all in one line at the end,
//! e.g. `phases (ms): connect 9, reference 120, start 45, ...` (target
//! `walvault::ops::repo::phases`, level info; the `incremental` and `rto` bench stages read it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The phases of one backup run, in the order they ended.
pub struct Phases {
    began: Instant,
    ended: Mutex<(Instant, Vec<(&'static str, Duration)>)>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases::start()
    }
}

impl Phases {
    /// Start timing now.
    pub fn start() -> Phases {
        let now = Instant::now();
        Phases { began: now, ended: Mutex::new((now, Vec::new())) }
    }

    /// Phase `name` ends now: it took the time since the previous one ended. A phase named
    /// again adds to its earlier time.
    pub fn end(&self, name: &'static str) {
        let Ok(mut guard) = self.ended.lock() else { return };
        let (last, list) = &mut *guard;
        let now = Instant::now();
        let took = now.saturating_duration_since(*last);
        *last = now;
        tracing::debug!("phase {name}: {} ms", took.as_millis());
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += took,
            None => list.push((name, took)),
        }
    }

    /// Every phase so far with its time, in the order they first ended.
    pub fn list(&self) -> Vec<(&'static str, Duration)> {
        self.ended.lock().map(|g| g.1.clone()).unwrap_or_default()
    }

    /// Log the one line: each phase in milliseconds, and the total.
    pub fn log(&self) {
        let total = self.began.elapsed();
        tracing::info!("{}", line(&self.list(), total));
    }
}

/// `phases (ms): connect 9, reference 120, total 1600`.
fn line(list: &[(&'static str, Duration)], total: Duration) -> String {
    let mut out = String::from("phases (ms):");
    for (name, d) in list {
        out.push_str(&format!(" {name} {},", d.as_millis()));
    }
    out.push_str(&format!(" total {}", total.as_millis()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_in_order() {
        let p = Phases::start();
        p.end("connect");
        std::thread::sleep(Duration::from_millis(5));
        p.end("copy");
        p.end("connect");
        let list = p.list();
        let names: Vec<_> = list.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["connect", "copy"]);
        assert!(list[1].1 >= Duration::from_millis(5));
        let ms = |n| Duration::from_millis(n);
        assert_eq!(line(&[("a", ms(3)), ("b", ms(40))], ms(50)), "phases (ms): a 3, b 40, total 50");
    }
}
