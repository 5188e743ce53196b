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

/// One job attempt a provider abandoned (kind `abandoned-job`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvidence {
    /// The job's namespace.
    pub namespace: String,
    /// The job's name.
    pub name: String,
    /// The job's UID (names are reused; the UID is not).
    pub uid: String,
    /// The attempt number.
    pub attempt: u32,
    /// When the attempt was ended for it (RFC 3339).
    pub ended_at: String,
    /// The hub's account of the loss.
    pub message: String,
}

/// Kind of the evidence that a provider abandoned running jobs.
pub const EVIDENCE_ABANDONED_JOB: &str = "abandoned-job";

/// Most job attempts one evidence document lists; the rest are counted in `moreJobs`.
pub const MAX_JOBS: usize = 1024;

/// An evidence document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// GPUs of the same failure beyond [`MAX_GPUS`], counted but not listed (absent when
    /// none, so documents without any hash as before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_gpus: u64,
    /// The job attempts concerned (`abandoned-job`; absent otherwise, so documents without
    /// any hash as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobEvidence>,
    /// Job attempts beyond [`MAX_JOBS`], counted but not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_jobs: u64,
}

/// Most GPUs one evidence document lists (≈190 bytes each, so a document stays well inside
/// the API server's 1 MiB for one object). A provider faking more GPUs than that is no
/// less guilty for the rest: they are counted in `moreGpus`.
pub const MAX_GPUS: usize = 2048;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Canonical order of job attempts: by UID, then attempt.
fn job_order(a: &JobEvidence, b: &JobEvidence) -> std::cmp::Ordering {
    (&a.uid, a.attempt).cmp(&(&b.uid, b.attempt))
}

impl Evidence {
    /// The document with at most [`MAX_GPUS`] GPUs listed (the first by node and UUID, as
    /// the canonical form orders them), the rest counted in `more_gpus`.
    pub fn capped(mut self) -> Self {
        if self.gpus.len() > MAX_GPUS {
            self.gpus
                .sort_by(|a, b| (&a.node, &a.uuid).cmp(&(&b.node, &b.uuid)));
            let extra = self.gpus.split_off(MAX_GPUS);
            self.more_gpus = self.more_gpus.saturating_add(extra.len() as u64);
        }
        if self.jobs.len() > MAX_JOBS {
            self.jobs.sort_by(job_order);
            let extra = self.jobs.split_off(MAX_JOBS);
            self.more_jobs = self.more_jobs.saturating_add(extra.len() as u64);
        }
        self
    }

    /// Canonical bytes: the JSON of the document in field order, GPUs sorted.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut doc = self.clone();
        doc.gpus
            .sort_by(|a, b| (&a.node, &a.uuid).cmp(&(&b.node, &b.uuid)));
        doc.nonces.sort();
        doc.jobs.sort_by(job_order);
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// SHA-256 of the canonical bytes: the hash the slash memo carries.
    pub fn hash(&self) -> Hash32 {
        sha256(&self.canonical_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
            ..Default::default()
        };
        let mut b = a.clone();
        b.gpus.reverse();
        b.nonces.reverse();
        assert_eq!(a.hash(), b.hash());
        b.gpus[0].reason = "ImpossiblyFast".into();
        assert_ne!(a.hash(), b.hash());
        // A document with nothing beyond the cap hashes as it did before the field.
        let json = String::from_utf8(a.canonical_bytes()).unwrap();
        assert!(!json.contains("moreGpus"), "{json}");
        assert!(!json.contains("jobs") && !json.contains("moreJobs"), "{json}");
    }

    #[test]
    fn a_huge_failure_is_capped_to_fit_one_configmap_and_counts_the_rest() {
        let gpus: Vec<GpuEvidence> = (0..6_000)
            .map(|i| GpuEvidence {
                node: format!("node-{:05}", i / 8),
                uuid: format!("GPU-{i:036}"),
                reason: "WrongDigest".into(),
                message: "row 1234567 of the commitment does not hash into the committed root".into(),
            })
            .collect();
        let e = Evidence {
            kind: "failed-challenge".into(),
            provider: "p".into(),
            nonces: vec!["n".into()],
            observed_at: "2026-12-01T00:00:00Z".into(),
            gpus,
            ..Default::default()
        }
        .capped();
        assert_eq!((e.gpus.len(), e.more_gpus), (MAX_GPUS, 6_000 - MAX_GPUS as u64));
        assert_eq!(e.gpus[0].node, "node-00000", "the first in canonical order kept");
        let bytes = e.canonical_bytes().len();
        assert!(bytes < 600 << 10, "{bytes} bytes: well inside 1 MiB");
        assert!(
            String::from_utf8(e.canonical_bytes())
                .unwrap()
                .contains("\"moreGpus\":3952")
        );
    }
}
