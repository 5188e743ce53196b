//! Timing bands: for each GPU model, the challenge shape and how long a real card of that
//! model takes for it. A GPU without a band never verifies (fail closed).
//!
//! A band's minimum is the model's physical floor ([`physical_floor_micros`]: the work over
//! the card's fastest path), so that no honest implementation, however good, is faster; its
//! maximum is set by measurement (docs/trust.md, "Setting a band": our kernel's slowest time
//! under load, ×1.5). A time below the band is physically impossible for that model
//! (evidence of a lie); a time above it means the card is not what it claims, or is
//! throttled or shared (not verified, no evidence).

use serde::{Deserialize, Serialize};

use crate::workload::{Arith, Params};

/// One model's band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Band {
    /// GPU model (NVML name or label spelling; compared by [`model_key`]).
    pub model: String,
    /// The workload for this model.
    pub params: Params,
    /// Fastest plausible kernel time, microseconds.
    pub min_kernel_micros: u64,
    /// Slowest acceptable kernel time, microseconds.
    pub max_kernel_micros: u64,
    /// Wall-clock time the hub allows beyond `max_kernel_micros` between issuing the
    /// challenge and seeing the commitment (node polling, hashing rows, API latency), ms.
    pub round_trip_slack_ms: u64,
}

impl Band {
    /// The latest the hub accepts a commitment after issuing the challenge, ms: the band's
    /// maximum kernel time plus the slack.
    pub fn max_round_trip_ms(&self) -> u64 {
        self.max_kernel_micros.div_ceil(1000) + self.round_trip_slack_ms
    }

    /// What the hub's own clock proves about a node that passes: it did the work
    /// (`rows × depth × cols` multiply-adds, checked by sampling) within
    /// [`Band::max_round_trip_ms`], so it sustains at least this many a second. The
    /// kernel time in the answer is the node's claim; this is the part that holds
    /// against a node that lies about it.
    pub fn proven_rate(&self) -> f64 {
        self.params.node_ops() as f64 / (self.max_round_trip_ms().max(1) as f64 / 1e3)
    }

    /// [`Band::proven_rate`] as a share of the rate the band claims for the model (the
    /// work over `maxKernelMicros`), in (0, 1]: how much of the claimed card the hub's
    /// clock proves. Near 1 when the work takes far longer than the slack; a band whose
    /// slack dwarfs its kernel time proves only that *some* computer did the work.
    pub fn clock_share(&self) -> f64 {
        (self.max_kernel_micros as f64 / 1e3) / self.max_round_trip_ms().max(1) as f64
    }

    /// Hashes of one GPU's openings in a report (`samples × ⌈log2 rows⌉`).
    pub fn proof_hashes(&self) -> u64 {
        let levels = u64::from(self.params.rows.max(1).next_power_of_two().trailing_zeros());
        u64::from(self.params.samples) * levels
    }
}

/// Most proof hashes a band may ask of one GPU ([`Band::proof_hashes`]): 64 hex characters
/// each, so an eight-GPU node's report stays near 200 KB, inside the 256 KiB the API server
/// allows a Node's annotations.
pub const MAX_PROOF_HASHES: u64 = 384;

/// All known bands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bands {
    /// The bands, one per model.
    pub bands: Vec<Band>,
}

/// Model names compare case-insensitively with spaces and dashes alike
/// (`NVIDIA H100 80GB HBM3` = `NVIDIA-H100-80GB-HBM3`).
pub fn model_key(model: &str) -> String {
    model
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

impl Bands {
    /// The band of `model`, if any.
    pub fn get(&self, model: &str) -> Option<&Band> {
        let key = model_key(model);
        self.bands.iter().find(|b| model_key(&b.model) == key)
    }

    /// Checks every band; `Err` names the model and field.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for b in &self.bands {
            let key = model_key(&b.model);
            if key.is_empty() {
                return Err("bands[].model must not be empty".into());
            }
            if !seen.insert(key) {
                return Err(format!("bands[].model {:?} appears twice", b.model));
            }
            b.params
                .validate()
                .map_err(|e| format!("bands[{}].params: {e}", b.model))?;
            if b.min_kernel_micros == 0 || b.min_kernel_micros > b.max_kernel_micros {
                return Err(format!(
                    "bands[{}]: need 0 < minKernelMicros <= maxKernelMicros",
                    b.model
                ));
            }
            if b.proof_hashes() > MAX_PROOF_HASHES {
                return Err(format!(
                    "bands[{}].params: samples × log2(rows) = {} proof hashes a GPU, more than {MAX_PROOF_HASHES} (the node's report would outgrow a Node annotation); lower samples",
                    b.model,
                    b.proof_hashes()
                ));
            }
        }
        Ok(())
    }
}

/// The fastest any implementation could compute `params` on a card that performs at most
/// `macs_per_sec` multiply-adds of the challenge's arithmetic per second (wrapping u32, or
/// fused binary64), in microseconds (rounded down).
///
/// A band's minimum must be *physically* impossible to beat, not merely faster than our
/// kernel: ours is a plain one-thread-per-element kernel, and a provider running a better
/// one (tiled, or tensor cores on 8-bit limbs) must never be slashed as `ImpossiblyFast`.
/// `macs_per_sec` is therefore the card's best datasheet path (docs/trust.md gives the
/// H100's), and `minKernelMicros` is at most this floor.
pub fn physical_floor_micros(params: &Params, macs_per_sec: f64) -> u64 {
    if !(macs_per_sec.is_finite() && macs_per_sec > 0.0) {
        return 0;
    }
    let micros = params.node_ops() as f64 / macs_per_sec * 1e6;
    micros.floor() as u64
}

/// H100 SXM's fastest path for wrapping u32 multiply-adds, per second (datasheet-derived
/// estimate): 989.5 × 10¹² dense INT8 tensor-core MACs/s, and a u32 product mod 2³² from
/// 8-bit limbs needs the 10 limb products with i + j < 4. (The plain INT32 path:
/// 132 SMs × 64 lanes × 1.98 GHz ≈ 1.7 × 10¹³ IMAD/s, six times slower.)
pub const H100_PEAK_U32_MACS_PER_SEC: f64 = 989.5e12 / 10.0;

/// H100 SXM's fastest path for binary64 fused multiply-adds, per second: 67 × 10¹² FP64
/// tensor-core FLOP/s, two FLOPs a multiply-add. (The plain FP64 path is half of that. No
/// lower-precision path gives the same bits: see `gpufed_trust::workload`.)
pub const H100_PEAK_F64_FMAS_PER_SEC: f64 = 67e12 / 2.0;

/// The H100 SXM's fastest path for the challenge's arithmetic (what the calibration bench
/// uses when `GPUFED_PEAK_MACS_PER_SEC` is not set).
pub fn h100_peak(arith: Arith) -> f64 {
    match arith {
        Arith::U32 => H100_PEAK_U32_MACS_PER_SEC,
        Arith::F64 => H100_PEAK_F64_FMAS_PER_SEC,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn band(model: &str, min: u64, max: u64) -> Band {
        Band {
            model: model.into(),
            params: Params::u32(64, 64, 64, 8),
            min_kernel_micros: min,
            max_kernel_micros: max,
            round_trip_slack_ms: 1000,
        }
    }

    #[test]
    fn the_floor_is_the_work_over_the_peak_rate() {
        let p = Params::u32(4096, 1024, 4096, 24);
        // 2^34 multiply-adds at 9.895e13/s: 173.6 µs.
        assert_eq!(physical_floor_micros(&p, H100_PEAK_U32_MACS_PER_SEC), 173);
        // Twice the rate, half the floor; no or nonsense rate, no floor.
        assert_eq!(physical_floor_micros(&p, 2.0 * H100_PEAK_U32_MACS_PER_SEC), 86);
        assert_eq!(physical_floor_micros(&p, 0.0), 0);
        assert_eq!(physical_floor_micros(&p, f64::NAN), 0);
        assert_eq!(physical_floor_micros(&p, -1.0), 0);
        // The same shape in binary64: 2^34 fused multiply-adds at 3.35e13/s: 512.8 µs.
        let f = Params {
            arith: Arith::F64,
            ..p
        };
        assert_eq!(physical_floor_micros(&f, h100_peak(f.arith)), 512);
        assert_eq!(h100_peak(Arith::U32), H100_PEAK_U32_MACS_PER_SEC);
    }

    #[test]
    fn the_hubs_clock_proves_the_work_over_the_round_trip() {
        // 2^34 multiply-adds, kernel at most 2 s, slack 2 s: the hub saw the roots within
        // 4 s, so the node does at least 2^34 / 4 a second, half the claimed rate.
        let mut b = band("H100", 1, 2_000_000);
        b.params = Params::u32(4096, 1024, 4096, 24);
        b.round_trip_slack_ms = 2000;
        assert_eq!(b.max_round_trip_ms(), 4000);
        assert_eq!(b.proven_rate(), (1u64 << 34) as f64 / 4.0);
        assert!((b.clock_share() - 0.5).abs() < 1e-12);
        // The same work in 5 ms with 30 s of slack proves next to nothing about the card.
        b.max_kernel_micros = 5000;
        b.round_trip_slack_ms = 30_000;
        assert!(b.clock_share() < 0.001, "{}", b.clock_share());
        // A partial millisecond counts as a whole one.
        b.max_kernel_micros = 1;
        assert_eq!(b.max_round_trip_ms(), 30_001);
    }

    #[test]
    fn a_band_whose_proofs_would_not_fit_a_report_is_refused() {
        let mut b = band("tall", 1, 2);
        b.params = Params::u32(crate::workload::MAX_ROWS, 64, 64, 19);
        assert_eq!(b.proof_hashes(), 19 * 20);
        assert!(
            Bands {
                bands: vec![b.clone()]
            }
            .validate()
            .is_ok()
        );
        b.params.samples = 20;
        let err = Bands { bands: vec![b] }.validate().unwrap_err();
        assert!(
            err.contains("400 proof hashes") && err.contains("lower samples"),
            "{err}"
        );
        // Today's H100 shape: 24 × 12.
        let mut h = band("H100", 1, 2);
        h.params = Params::u32(4096, 1024, 4096, 24);
        assert_eq!(h.proof_hashes(), 288);
    }

    #[test]
    fn lookup_ignores_spelling() {
        let bands = Bands {
            bands: vec![band("NVIDIA H100 80GB HBM3", 1, 2)],
        };
        assert!(bands.get("NVIDIA-H100-80GB-HBM3").is_some());
        assert!(bands.get("nvidia h100 80gb hbm3").is_some());
        assert!(bands.get("NVIDIA-A100-SXM4-40GB").is_none());
    }

    #[test]
    fn validation_names_the_problem() {
        let dup = Bands {
            bands: vec![band("A", 1, 2), band("a", 1, 2)],
        };
        assert!(dup.validate().unwrap_err().contains("twice"));
        let inverted = Bands {
            bands: vec![band("A", 5, 2)],
        };
        assert!(inverted.validate().unwrap_err().contains("minKernelMicros"));
        let ok = Bands {
            bands: vec![band("A", 1, 2), band("B", 1, 2)],
        };
        assert!(ok.validate().is_ok());
    }
}
