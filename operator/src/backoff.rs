//! Per-object exponential backoff with jitter (kube-runtime has none per object):
//! 1 s doubling to 5 min, ±20 % jitter so a fleet of failing objects spreads out, and
//! a reset on success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Backoff state per object key.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Delay before retrying `key` after one more failure; `jitter` in `[0, 1)`.
    pub fn fail(&self, key: &str, jitter: f64) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        self.delay(*n, jitter)
    }

    /// Forgets the failures of `key`.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Delay after `failures` consecutive failures (pure).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        raw.mul_f64(factor).min(self.max)
    }
}

/// Backoff of the controllers' own watches: 250 ms doubling to 5 s, reset on success.
/// kube-runtime's default grows to 30 s with jitter: after a hub API server restart a
/// watch sat out 40 s with the server long back, its store stale and every status write
/// refused as a conflict (found by `e2e/tests/hub_restarts.rs`).
#[derive(Debug, Clone, Default)]
pub struct WatchBackoff {
    failures: u32,
}

impl WatchBackoff {
    /// The longest wait between two attempts.
    pub const MAX: Duration = Duration::from_secs(5);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let exp = self.failures.min(10);
        self.failures = self.failures.saturating_add(1);
        Some(
            Duration::from_millis(250)
                .saturating_mul(1u32 << exp)
                .min(Self::MAX),
        )
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_is_short_capped_and_resets() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::default();
        let first: Vec<Duration> = b.by_ref().take(6).collect();
        assert_eq!(first[0], Duration::from_millis(250));
        assert_eq!(first[1], Duration::from_millis(500));
        assert_eq!(first[5], WatchBackoff::MAX);
        assert!(b.by_ref().take(100).all(|d| d <= WatchBackoff::MAX));
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn doubles_caps_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.fail("a", 0.5), Duration::from_secs(1));
        assert_eq!(b.fail("a", 0.5), Duration::from_secs(2));
        assert_eq!(b.fail("a", 0.5), Duration::from_secs(4));
        assert_eq!(b.fail("b", 0.5), Duration::from_secs(1), "keys are independent");
        for _ in 0..20 {
            b.fail("a", 0.5);
        }
        assert_eq!(b.fail("a", 1.0), Duration::from_secs(300), "capped");
        b.reset("a");
        assert_eq!(b.fail("a", 0.5), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_within_twenty_percent() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(3200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(4800));
    }
}
