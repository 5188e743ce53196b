//! Scores: price, reputation, best-fit packing and preferred-provider order.
//!
//! Among the providers that pass every filter, the engine picks the highest
//!
//! ```text
//! score = w_price × (1 − price / reference)       reference = the job's ceiling, else the
//!                                                 highest ask in the fleet
//!       + w_reputation × reputation               0..1
//!       + w_packing × used / free_on_touched      best-fit: GPUs the gang uses over the free
//!                                                 GPUs of the nodes it lands on
//!       + w_preferred × (n − rank) / n            rank in the job's preferred list of n
//!                                                 (0 for providers not in it)
//! ```
//!
//! Ties go to the provider with the smaller id, so decisions are deterministic.

use crate::snapshot::Micros;

/// Score weights. With the defaults the preferred-provider term dominates, so preferred
/// providers are tried strictly in order before spilling over to the rest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Weight of cheapness.
    pub price: f64,
    /// Weight of reputation.
    pub reputation: f64,
    /// Weight of packing (less fragmentation).
    pub packing: f64,
    /// Weight of the preferred-provider order.
    pub preferred: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            price: 1.0,
            reputation: 0.5,
            packing: 1.0,
            preferred: 10.0,
        }
    }
}

/// The outcome of a best-fit walk over free-count buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fit {
    /// GPUs the gang would use.
    pub used: u32,
    /// Free GPUs on the nodes it would touch.
    pub touched_free: u32,
}

impl Fit {
    /// `used / touched_free` in 0..=1 (1 = no fragment left behind).
    pub fn packing(self) -> f64 {
        if self.touched_free == 0 {
            0.0
        } else {
            f64::from(self.used) / f64::from(self.touched_free)
        }
    }
}

/// Walks `counts[k]` (nodes with `k` free GPUs) from the smallest `k ≥ g` up, placing
/// `w` workers of `g` GPUs best-fit. `None` when they do not fit.
pub(crate) fn best_fit(counts: &[u32], g: u8, w: u16) -> Option<Fit> {
    let g32 = u32::from(g);
    if w == 1 {
        // One worker: the smallest bucket that holds it.
        let k = counts.iter().skip(usize::from(g)).position(|&n| n > 0)?;
        let k = u32::try_from(k).unwrap_or(u32::MAX).saturating_add(g32);
        return Some(Fit {
            used: g32,
            touched_free: k,
        });
    }
    let mut remaining = u32::from(w);
    let mut fit = Fit {
        used: 0,
        touched_free: 0,
    };
    for (k, &n) in counts.iter().enumerate().skip(usize::from(g)) {
        if n == 0 {
            continue;
        }
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        let per = k / g32;
        let take = n.min(remaining.div_ceil(per));
        let workers = remaining.min(take * per);
        fit.touched_free += take * k;
        fit.used += workers * g32;
        remaining -= workers;
        if remaining == 0 {
            return Some(fit);
        }
    }
    None
}

/// The weighted score of one candidate; `inv_reference` is `1 / reference` (0 for none).
pub(crate) fn score(
    weights: &Weights,
    price: Micros,
    inv_reference: f64,
    reputation: f64,
    fit: Fit,
    preferred_rank: Option<(usize, usize)>,
) -> f64 {
    let cheap = 1.0 - (price as f64 * inv_reference).min(1.0);
    let pref = match preferred_rank {
        Some((rank, n)) if n > 0 => (n - rank) as f64 / n as f64,
        _ => 0.0,
    };
    weights.price * cheap
        + weights.reputation * reputation
        + weights.packing * fit.packing()
        + weights.preferred * pref
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_prefers_small_buckets() {
        // one node with 1 free, one with 8 free: a 1-GPU job packs perfectly.
        let mut counts = vec![0; 9];
        counts[1] = 1;
        counts[8] = 1;
        let fit = best_fit(&counts, 1, 1).unwrap();
        assert_eq!(
            fit,
            Fit {
                used: 1,
                touched_free: 1
            }
        );
        assert!((fit.packing() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn best_fit_counts_workers_per_node() {
        let mut counts = vec![0; 9];
        counts[8] = 2;
        // 3 workers of 4 GPUs: two per node → both nodes touched.
        assert_eq!(
            best_fit(&counts, 4, 3),
            Some(Fit {
                used: 12,
                touched_free: 16
            })
        );
        assert_eq!(best_fit(&counts, 4, 5), None);
        assert_eq!(
            best_fit(&counts, 8, 2),
            Some(Fit {
                used: 16,
                touched_free: 16
            })
        );
    }

    #[test]
    fn preferred_dominates_with_default_weights() {
        let w = Weights::default();
        let perfect = Fit {
            used: 1,
            touched_free: 1,
        };
        let poor = Fit {
            used: 1,
            touched_free: 8,
        };
        let preferred = score(&w, 10, 0.1, 0.0, poor, Some((0, 1)));
        let other = score(&w, 0, 0.1, 1.0, perfect, None);
        assert!(preferred > other);
    }
}
