//! The signed inventory report: what a node claims to have, signed with its node key and
//! bound to the hub's nonce so it cannot be replayed. The device plugin signs it; the
//! operator calls [`verify`]. It carries the node's answer to the compute challenge.
//!
//! Signed bytes are a fixed domain-separation prefix followed by the report's JSON in
//! field order (the struct order below), so the verifier reproduces them from the parsed
//! report; any change to any field breaks the signature.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::protocol::ChallengeAnswer;

/// Node annotation where the device plugin publishes its signed report (JSON of
/// [`SignedReport`]) and the hub reads it.
pub const ANNOTATION: &str = "gpufed.io/inventory-report";

/// Prefix of the signed bytes (domain separation from any other use of the key).
pub const SIGNING_CONTEXT: &[u8] = b"gpufed-inventory-report-v1\n";

/// Most GPUs one report may list. The hub recomputes sampled rows of every listed GPU's
/// challenge (≈0.3 s of its CPU a GPU for an `f64` 4096×1024×4096 band), so a report
/// listing hundreds of made-up GPUs would cost it minutes a node a round. No node holds
/// this many: an 8-GPU server, or one sliced into 7 MIG devices a GPU, stays under it.
pub const MAX_GPUS_PER_REPORT: usize = 64;

/// One GPU in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportGpu {
    /// NVML UUID.
    pub uuid: String,
    /// NVML product name.
    pub model: String,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Compute capability, `MAJOR.MINOR`.
    pub compute_capability: String,
    /// The board's serial number (NVML), where the board reports one (data-center boards
    /// do, consumer cards do not). Absent from the signed JSON when `None`, so reports
    /// without one keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// What a node claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReport {
    /// Node name.
    pub node: String,
    /// The hub's nonce this report answers.
    pub nonce: String,
    /// Seconds since the Unix epoch when it was made.
    pub issued_at: u64,
    /// Driver version.
    pub driver_version: String,
    /// CUDA driver version.
    pub cuda_version: String,
    /// True for a `--simulate` node: authentic perhaps, but never verified hardware.
    pub simulated: bool,
    /// The GPUs.
    pub gpus: Vec<ReportGpu>,
    /// The node's answer to the hub's current compute challenge, if one was asked.
    /// Absent from the signed JSON when `None`, so reports without one keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeAnswer>,
}

impl InventoryReport {
    pub(crate) fn signed_bytes(&self) -> Result<Vec<u8>, ReportError> {
        let mut b = SIGNING_CONTEXT.to_vec();
        serde_json::to_writer(&mut b, self).map_err(|e| ReportError::Encode(e.to_string()))?;
        Ok(b)
    }
}

/// A report with its signature and the public key that made it (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedReport {
    /// The claims.
    pub report: InventoryReport,
    /// Node public key, base64 of 32 bytes.
    pub public_key: String,
    /// Ed25519 signature, base64 of 64 bytes.
    pub signature: String,
}

/// Why a report is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The key or signature field is not valid base64 / of the wrong length.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Signature does not match the report and key.
    #[error("signature does not match the report: the report was altered or signed by another key")]
    BadSignature,
    /// Signed by a key other than the one the hub pinned for this node.
    #[error("report signed by key {got}, but this node's pinned key is {expected}")]
    WrongKey {
        /// The pinned key.
        expected: String,
        /// The key in the report.
        got: String,
    },
    /// Answers another nonce (replay).
    #[error("report answers nonce {got:?}, expected {expected:?} (stale or replayed)")]
    WrongNonce {
        /// The hub's current nonce.
        expected: String,
        /// The report's nonce.
        got: String,
    },
    /// Could not serialize the report.
    #[error("cannot encode report: {0}")]
    Encode(String),
    /// Lists more GPUs than [`MAX_GPUS_PER_REPORT`].
    #[error("report lists {listed} GPUs, at most {max} are accepted")]
    TooManyGpus {
        /// GPUs listed.
        listed: usize,
        /// [`MAX_GPUS_PER_REPORT`].
        max: usize,
    },
}

/// An authentic report. Use [`VerifiedReport::counts_as_verified`] before trusting it
/// as real hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReport {
    /// The claims, now known to come from the key's holder.
    pub report: InventoryReport,
    /// The key that signed it (base64).
    pub public_key: String,
}

impl VerifiedReport {
    /// False for a simulated node: simulated inventory never counts as verified supply.
    pub fn counts_as_verified(&self) -> bool {
        !self.report.simulated
    }
}

/// Signs a report with the node key.
pub fn sign(report: InventoryReport, key: &SigningKey) -> Result<SignedReport, ReportError> {
    let sig = key.sign(&report.signed_bytes()?);
    Ok(SignedReport {
        public_key: B64.encode(key.verifying_key().to_bytes()),
        signature: B64.encode(sig.to_bytes()),
        report,
    })
}

/// Checks a report: the number of GPUs it lists ([`MAX_GPUS_PER_REPORT`]), the signature
/// over every field, the nonce, and (when the hub has pinned one for this node, base64)
/// the key.
pub fn verify(
    signed: &SignedReport,
    expected_nonce: &str,
    pinned_key: Option<&str>,
) -> Result<VerifiedReport, ReportError> {
    // First: a report this long is refused whoever signed it, and the signature's hash
    // need not run over all of it.
    if signed.report.gpus.len() > MAX_GPUS_PER_REPORT {
        return Err(ReportError::TooManyGpus {
            listed: signed.report.gpus.len(),
            max: MAX_GPUS_PER_REPORT,
        });
    }
    let key_bytes: [u8; 32] = B64
        .decode(&signed.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ReportError::Malformed("public key"))?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| ReportError::Malformed("public key"))?;
    let sig_bytes: [u8; 64] = B64
        .decode(&signed.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ReportError::Malformed("signature"))?;
    let sig = Signature::from_bytes(&sig_bytes);
    key.verify(&signed.report.signed_bytes()?, &sig)
        .map_err(|_| ReportError::BadSignature)?;
    if let Some(pinned) = pinned_key
        && pinned != signed.public_key
    {
        return Err(ReportError::WrongKey {
            expected: pinned.to_owned(),
            got: signed.public_key.clone(),
        });
    }
    if signed.report.nonce != expected_nonce {
        return Err(ReportError::WrongNonce {
            expected: expected_nonce.to_owned(),
            got: signed.report.nonce.clone(),
        });
    }
    Ok(VerifiedReport {
        report: signed.report.clone(),
        public_key: signed.public_key.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(gpus: usize) -> InventoryReport {
        InventoryReport {
            node: "n1".into(),
            nonce: "nonce".into(),
            issued_at: 1,
            driver_version: "550".into(),
            cuda_version: "12.4".into(),
            simulated: false,
            gpus: (0..gpus)
                .map(|i| ReportGpu {
                    uuid: format!("GPU-{i}"),
                    model: "NVIDIA H100 80GB HBM3".into(),
                    memory_mib: 81_559,
                    compute_capability: "9.0".into(),
                    serial: None,
                })
                .collect(),
            challenge: None,
        }
    }

    #[test]
    fn a_report_listing_more_gpus_than_any_node_holds_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let full = sign(report(MAX_GPUS_PER_REPORT), &key).unwrap();
        assert_eq!(verify(&full, "nonce", None).unwrap().report.gpus.len(), 64);
        let over = sign(report(MAX_GPUS_PER_REPORT + 1), &key).unwrap();
        assert_eq!(
            verify(&over, "nonce", None),
            Err(ReportError::TooManyGpus { listed: 65, max: 64 }),
            "signed by the node itself, and still refused"
        );
    }
}
