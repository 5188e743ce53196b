//! The hub's checks of one GPU's answer, and what each failure means.

use gpufed_settlement::merkle::root_from_proof;
use serde::{Deserialize, Serialize};

use crate::bands::Band;
use crate::protocol::{ChallengeRequest, GpuCommit, GpuOpening, sample_rows};
use crate::workload::{self, leaf};

/// Why a GPU is not verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum Failure {
    /// No band for the claimed model: the hub cannot judge it.
    #[error("no timing band for model {model:?}")]
    NoBand {
        /// The claimed model.
        model: String,
    },
    /// The node serves a declared (`--simulate`) inventory: never verified hardware.
    #[error("simulated inventory is never verified")]
    Simulated,
    /// The node did not answer in time (or its report could not be read).
    #[error("no answer: {detail}")]
    NotAnswered {
        /// What was missing.
        detail: String,
    },
    /// The report's signature or key is not acceptable.
    #[error("report not accepted: {detail}")]
    BadReport {
        /// Why.
        detail: String,
    },
    /// Faster than the model can be: the node lies about its timing or its model.
    #[error("kernel time {micros} µs is below the fastest plausible {min} µs for the model")]
    ImpossiblyFast {
        /// Reported.
        micros: u64,
        /// Band minimum.
        min: u64,
    },
    /// Slower than the model should be (other card, throttled or shared).
    #[error("kernel time {micros} µs is above the band's {max} µs")]
    TooSlow {
        /// Reported.
        micros: u64,
        /// Band maximum.
        max: u64,
    },
    /// The commitment came later than the band allows, whatever the node reported.
    #[error("commitment arrived {ms} ms after the challenge; the band allows {max} ms")]
    RoundTripTooSlow {
        /// Observed by the hub.
        ms: u64,
        /// Allowed.
        max: u64,
    },
    /// The openings are not for the rows the hub's seed selects, or are malformed.
    #[error("opening malformed: {detail}")]
    BadOpening {
        /// Why.
        detail: String,
    },
    /// A sampled row does not hash to the committed root: the node did not compute it.
    #[error("row {row} does not match the commitment (wrong result)")]
    WrongDigest {
        /// The row.
        row: u32,
    },
    /// Another node or provider claims the same GPU UUID.
    #[error("GPU UUID also claimed by {others}")]
    DuplicateUuid {
        /// The other claimants (`provider/node`), comma separated.
        others: String,
    },
    /// Another node or provider reports a GPU on the same board (serial number): one
    /// physical card listed more than once, e.g. as virtual GPUs with UUIDs of their own.
    #[error("board serial {serial} also reported by {others}")]
    DuplicateSerial {
        /// The serial number.
        serial: String,
        /// The other claimants (`provider/node`), comma separated.
        others: String,
    },
}

/// Evidence kinds (the Stake's spelling) a failure supports, if any.
pub const EVIDENCE_FAILED_CHALLENGE: &str = "failed-challenge";
/// A GPU UUID (or board serial) claimed twice.
pub const EVIDENCE_DUPLICATE_GPU: &str = "duplicate-gpu";

impl Failure {
    /// Every [`Failure::reason`] (metrics start a series for each).
    pub const REASONS: [&'static str; 11] = [
        "NoBand",
        "Simulated",
        "NotAnswered",
        "BadReport",
        "ImpossiblyFast",
        "TooSlow",
        "RoundTripTooSlow",
        "BadOpening",
        "WrongDigest",
        "DuplicateUuid",
        "DuplicateSerial",
    ];

    /// CamelCase reason for status.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoBand { .. } => "NoBand",
            Self::Simulated => "Simulated",
            Self::NotAnswered { .. } => "NotAnswered",
            Self::BadReport { .. } => "BadReport",
            Self::ImpossiblyFast { .. } => "ImpossiblyFast",
            Self::TooSlow { .. } => "TooSlow",
            Self::RoundTripTooSlow { .. } => "RoundTripTooSlow",
            Self::BadOpening { .. } => "BadOpening",
            Self::WrongDigest { .. } => "WrongDigest",
            Self::DuplicateUuid { .. } => "DuplicateUuid",
            Self::DuplicateSerial { .. } => "DuplicateSerial",
        }
    }

    /// The evidence kind this failure is, when it proves a lie rather than bad luck.
    /// A wrong result, a malformed opening and an impossible time can only come from a
    /// node that does not run the workload it claims; slowness, silence or a missing band
    /// can be honest. A duplicate UUID is evidence too, but of unknown authorship: see
    /// [`crate::fleet`].
    pub fn evidence_kind(&self) -> Option<&'static str> {
        match self {
            Self::WrongDigest { .. } | Self::BadOpening { .. } | Self::ImpossiblyFast { .. } => {
                Some(EVIDENCE_FAILED_CHALLENGE)
            }
            Self::DuplicateUuid { .. } | Self::DuplicateSerial { .. } => Some(EVIDENCE_DUPLICATE_GPU),
            _ => None,
        }
    }
}

/// Timing: the node's own kernel time within the band, and the hub's observed round trip
/// (issue → commitment) within the band's maximum plus slack.
pub fn check_timing(commit: &GpuCommit, band: &Band, round_trip_ms: u64) -> Result<(), Failure> {
    if commit.kernel_micros < band.min_kernel_micros {
        return Err(Failure::ImpossiblyFast {
            micros: commit.kernel_micros,
            min: band.min_kernel_micros,
        });
    }
    if commit.kernel_micros > band.max_kernel_micros {
        return Err(Failure::TooSlow {
            micros: commit.kernel_micros,
            max: band.max_kernel_micros,
        });
    }
    let max = band.max_round_trip_ms();
    if round_trip_ms > max {
        return Err(Failure::RoundTripTooSlow {
            ms: round_trip_ms,
            max,
        });
    }
    Ok(())
}

/// Correctness: every sampled row, recomputed here, hashes into the committed root.
pub fn check_opening(
    req: &ChallengeRequest,
    open_seed: &str,
    commit: &GpuCommit,
    opening: &GpuOpening,
) -> Result<(), Failure> {
    let rows = sample_rows(open_seed, &req.nonce, &commit.uuid, &req.params);
    if opening.proofs.len() != rows.len() {
        return Err(Failure::BadOpening {
            detail: format!("{} proofs for {} sampled rows", opening.proofs.len(), rows.len()),
        });
    }
    for (&row, proof) in rows.iter().zip(&opening.proofs) {
        if proof.index != u64::from(row) || proof.leaf_count != u64::from(req.params.rows) {
            return Err(Failure::BadOpening {
                detail: format!(
                    "proof for row {} of {}, expected row {row} of {}",
                    proof.index, proof.leaf_count, req.params.rows
                ),
            });
        }
    }
    // Every proof's shape too, before any row is recomputed: recomputing costs the hub
    // `depth × cols` multiply-adds a row (≈0.3 s a GPU for an `f64` 4096×1024×4096 band),
    // so a node listing many GPUs, each opened with empty proofs, would otherwise cost the
    // hub that much per GPU for answers it could refuse from their length alone.
    for (&row, proof) in rows.iter().zip(&opening.proofs) {
        let want = proof_len(proof.index, proof.leaf_count);
        if proof.siblings.len() != want {
            return Err(Failure::BadOpening {
                detail: format!(
                    "proof of row {row} has {} sibling hashes, a tree of {} rows needs {want}",
                    proof.siblings.len(),
                    proof.leaf_count
                ),
            });
        }
    }
    // Every proof names its row and has its shape: only now recompute them, B streamed
    // once for all (`samples × cols` cells held, not B's `depth × cols`).
    let seeds = workload::seeds(&req.nonce, &commit.uuid);
    let cells = workload::rows_streamed(&req.params, &seeds, &rows);
    for ((&row, proof), cells) in rows.iter().zip(&opening.proofs).zip(&cells) {
        let expected = leaf(row, cells.as_row());
        match root_from_proof(expected, proof) {
            Some(root) if root == commit.root => {}
            Some(_) => return Err(Failure::WrongDigest { row }),
            None => {
                return Err(Failure::BadOpening {
                    detail: format!("proof of row {row} is malformed"),
                });
            }
        }
    }
    Ok(())
}

/// How many sibling hashes the proof of leaf `index` among `leaf_count` has: one a level,
/// except where the leaf's ancestor is the last of an odd level and is promoted without
/// one (the walk of [`root_from_proof`]). At most `⌈log2 leaf_count⌉`, so 64 levels.
fn proof_len(index: u64, leaf_count: u64) -> usize {
    let (mut idx, mut n, mut len) = (index, leaf_count, 0);
    while n > 1 {
        if idx % 2 == 1 || idx + 1 < n {
            len += 1;
        }
        idx /= 2;
        n = n.div_ceil(2);
    }
    len
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "verify_tests.rs"]
mod tests;
