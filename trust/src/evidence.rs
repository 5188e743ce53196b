//! Evidence against a provider: what was observed, hashed so the slash memo on chain
//! points to exactly this document.

use gpufed_settlement::hash::{Hash32, sha256};
use serde::{Deserialize, Serialize};

/// One GPU's part in the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuEvidence {
    /// Node.
    pub node: String,
    /// GPU UUID.
    pub uuid: String,
    /// Failure reason.
    pub reason: String,
    /// Failure details.
    pub message: String,
}

/// An evidence document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Kind, in the Stake's spelling (`failed-challenge`, `duplicate-gpu`, `abandoned-job`).
    pub kind: String,
    /// The provider it is against.
    pub provider: String,
    /// The challenge nonce(s) it comes from.
    pub nonces: Vec<String>,
    /// When the hub observed it (RFC 3339).
    pub observed_at: String,
    /// The GPUs concerned.
    pub gpus: Vec<GpuEvidence>,
}

impl Evidence {
    /// Canonical bytes: the JSON of the document in field order, GPUs sorted.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut doc = self.clone();
        doc.gpus
            .sort_by(|a, b| (&a.node, &a.uuid).cmp(&(&b.node, &b.uuid)));
        doc.nonces.sort();
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// SHA-256 of the canonical bytes: the hash the slash memo carries.
    pub fn hash(&self) -> Hash32 {
        sha256(&self.canonical_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(node: &str, uuid: &str) -> GpuEvidence {
        GpuEvidence {
            node: node.into(),
            uuid: uuid.into(),
            reason: "WrongDigest".into(),
            message: "row 3".into(),
        }
    }

    #[test]
    fn the_hash_is_order_independent_and_content_bound() {
        let a = Evidence {
            kind: "failed-challenge".into(),
            provider: "p".into(),
            nonces: vec!["n2".into(), "n1".into()],
            observed_at: "2026-12-01T00:00:00Z".into(),
            gpus: vec![gpu("a", "1"), gpu("b", "2")],
        };
        let mut b = a.clone();
        b.gpus.reverse();
        b.nonces.reverse();
        assert_eq!(a.hash(), b.hash());
        b.gpus[0].reason = "ImpossiblyFast".into();
        assert_ne!(a.hash(), b.hash());
    }
}
