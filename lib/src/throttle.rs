//! A byte-rate limit shared by every thread and task of one command (`--max-rate`).
//!
//! A reservation bucket: each caller reserves its bytes and sleeps until the bucket has
//! earned them, so parallel readers and uploaders together stay under the rate and none is
//! starved. Unused rate is kept for at most [`BURST`], so an idle moment does not turn into a
//! burst at full speed afterwards.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How much unused rate is carried over (as time at the full rate).
pub const BURST: Duration = Duration::from_millis(250);

/// The smallest rate accepted: 32 KiB/s (as `pg_basebackup --max-rate`).
pub const MIN_RATE: u64 = 32 << 10;

/// A rate limit in bytes per second.
#[derive(Debug)]
pub struct Throttle {
    rate: u64,
    /// Bytes the bucket holds (negative: owed by callers already sleeping), and when.
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A limit of `rate` bytes per second.
    pub fn new(rate: u64) -> Throttle {
        Throttle { rate: rate.max(1), bucket: Mutex::new((0.0, Instant::now())) }
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Reserve `n` bytes; returns how long the caller must wait before moving them.
    pub fn reserve(&self, n: u64) -> Duration {
        let rate = self.rate as f64;
        // A poisoned lock only means another thread panicked mid-update: the numbers are fine.
        let mut bucket = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let earned = now.saturating_duration_since(bucket.1).as_secs_f64() * rate;
        let held = (bucket.0 + earned).min(rate * BURST.as_secs_f64()) - n as f64;
        *bucket = (held, now);
        if held >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-held / rate) }
    }

    /// Wait (blocking the thread) until `n` bytes may pass.
    pub fn take_blocking(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Wait (asynchronously) until `n` bytes may pass.
    pub async fn take(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parse a rate in bytes per second: digits with an optional `K`, `M` or `G` suffix (powers of
/// 1024; `k`, `m`, `g` and a trailing `B` or `/s` accepted), e.g. `20M`, `512K`, `1G`.
///
/// # Errors
/// [`Error::Config`] naming `setting`, for anything else or a rate under [`MIN_RATE`].
pub fn parse_rate(setting: &str, value: &str) -> Result<u64> {
    let text = value.trim();
    parse_bytes(setting, text.strip_suffix("/s").unwrap_or(text), MIN_RATE).map_err(|_| {
        Error::config(
            setting,
            format!(
                "{value:?} is not a rate; expected bytes per second with an optional K, M or G suffix, at least 32K (e.g. 20M)"
            ),
        )
    })
}

/// Parse a size in bytes: digits with an optional `K`, `M` or `G` suffix (powers of 1024;
/// lowercase, `Ki`/`Mi`/`Gi` and a trailing `B` accepted), at least `min`.
///
/// # Errors
/// [`Error::Config`] naming `setting`.
pub fn parse_bytes(setting: &str, value: &str, min: u64) -> Result<u64> {
    let bad = || {
        Error::config(
            setting,
            format!(
                "{value:?} is not a size; expected bytes with an optional K, M or G suffix, at least {min} (e.g. 64M)"
            ),
        )
    };
    let text = value.trim();
    let text = text.strip_suffix(['B', 'b']).unwrap_or(text);
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit {
        "" => 0,
        "k" | "K" | "Ki" => 10,
        "m" | "M" | "Mi" => 20,
        "g" | "G" | "Gi" => 30,
        _ => return Err(bad()),
    };
    let bytes = number.checked_mul(1 << shift).ok_or_else(bad)?;
    if bytes < min {
        return Err(bad());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(parse_rate("--max-rate", "20M").ok(), Some(20 << 20));
        assert_eq!(parse_rate("--max-rate", "512K").ok(), Some(512 << 10));
        assert_eq!(parse_rate("--max-rate", "1G").ok(), Some(1 << 30));
        assert_eq!(parse_rate("--max-rate", "1GiB/s").ok(), Some(1 << 30));
        assert_eq!(parse_rate("--max-rate", "100000").ok(), Some(100_000));
        for bad in ["", "M", "20T", "1K", "-5M", "20 M", "99999999999999G"] {
            let e = parse_rate("--max-rate", bad).expect_err(bad).to_string();
            assert!(e.starts_with("setting --max-rate: "), "{bad}: {e}");
        }
    }

    #[test]
    fn reservations_add_up_to_the_rate() {
        let t = Throttle::new(1 << 20);
        // The bucket starts empty: 4 MiB at 1 MiB/s are owed for about 4 s, in order.
        let waits: Vec<Duration> = (0..4).map(|_| t.reserve(1 << 20)).collect();
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
        let last = waits[3].as_secs_f64();
        assert!((3.9..=4.01).contains(&last), "{waits:?}");
    }
}
