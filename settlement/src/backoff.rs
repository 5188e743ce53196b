//! Pure backoff schedule: attempt count (and a jitter seed) in, delay out.
//!
//! `delay(n) = min(max, base · 2^(n−1))`, then up to `jitter_pct` % of it removed,
//! chosen deterministically from the seed (e.g. the batch id), so concurrent batches
//! spread out without any randomness source. `delay(0) = 0`.

use serde::{Deserialize, Serialize};

use crate::hash::Encoder;

/// Backoff parameters, milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub base_ms: u64,
    /// Longest delay.
    pub max_ms: u64,
    /// Percentage (0..=100) of the delay that jitter may remove.
    pub jitter_pct: u8,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 300_000,
            jitter_pct: 20,
        }
    }
}

impl BackoffConfig {
    /// Delay before retrying after `failures` consecutive failures.
    pub fn delay_ms(&self, failures: u32, seed: u64) -> u64 {
        if failures == 0 {
            return 0;
        }
        let exp = failures.saturating_sub(1).min(63);
        let raw = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let pct = u64::from(self.jitter_pct.min(100));
        let span = raw / 100 * pct + raw % 100 * pct / 100;
        if span == 0 {
            return raw;
        }
        let mut e = Encoder::new("gpufed:backoff:v1");
        e.u64(seed).u32(failures);
        let h = e.digest();
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[..8]);
        raw - u64::from_be_bytes(b) % (span + 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schedule_without_jitter() {
        let c = BackoffConfig {
            base_ms: 1000,
            max_ms: 10_000,
            jitter_pct: 0,
        };
        let d: Vec<u64> = (0..7).map(|n| c.delay_ms(n, 0)).collect();
        assert_eq!(d, vec![0, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(c.delay_ms(u32::MAX, 0), 10_000);
    }

    proptest! {
        #[test]
        fn jitter_is_bounded_deterministic_and_monotone_cap(n in 1u32..100, seed: u64) {
            let c = BackoffConfig::default();
            let d = c.delay_ms(n, seed);
            let raw = (1000u64.saturating_mul(1 << (n - 1).min(63))).min(300_000);
            prop_assert!(d <= raw);
            prop_assert!(d >= raw - raw / 5);
            prop_assert_eq!(d, c.delay_ms(n, seed));
        }
    }
}
