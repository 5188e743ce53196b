//! Timing bands: for each GPU model, the challenge shape and how long a real card of that
//! model takes for it. A GPU without a band never verifies (fail closed).
//!
//! A band is set by measurement (docs/trust.md, "Setting a band"): run the workload on
//! the real model repeatedly, idle and under load, take the fastest and slowest kernel
//! times, and widen them (typically ×0.8 below and ×1.5 above). A time below the band is
//! physically impossible for that model (evidence of a lie); a time above it means the
//! card is not what it claims, or is throttled or shared (not verified, no evidence).

use serde::{Deserialize, Serialize};

use crate::workload::Params;

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
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn band(model: &str, min: u64, max: u64) -> Band {
        Band {
            model: model.into(),
            params: Params {
                rows: 64,
                depth: 64,
                cols: 64,
                samples: 8,
            },
            min_kernel_micros: min,
            max_kernel_micros: max,
            round_trip_slack_ms: 1000,
        }
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
