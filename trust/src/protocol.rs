//! The messages of a challenge, and the node's side of it (commit, then open).
//!
//! 1. The hub writes a [`ChallengeRequest`] (nonce, [`Params`]) to the node.
//! 2. The node computes each GPU's workload, keeps the row leaves, and answers with a
//!    [`GpuCommit`] per GPU: the Merkle root and the kernel time it measured.
//! 3. Only then does the hub add its random `openSeed` to the request. The rows it
//!    opens are derived from that seed, so the node cannot know them when it commits:
//!    a node that computed a fraction `f` of the rows passes with probability at most
//!    `f^samples`, and grinding roots does not help (the seed comes later).
//! 4. The node answers with a [`GpuOpening`] per GPU: a Merkle proof for each sampled
//!    row; the hub recomputes those rows itself ([`crate::verify`]).
//!
//! Every answer travels inside the node's signed inventory report.

use gpufed_settlement::hash::{Hash32, sha256};
use gpufed_settlement::merkle::{MerkleProof, MerkleTree};
use serde::{Deserialize, Serialize};

use crate::workload::{self, Arith, Params};

const SAMPLE_DOMAIN: &[u8] = b"gpufed-challenge-sample-v1";

/// What the hub asks of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeRequest {
    /// Fresh random nonce (hex); never reused.
    pub nonce: String,
    /// Workload shape.
    pub params: Params,
    /// Set by the hub after it has received the commitments: which rows to open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_seed: Option<String>,
}

/// One GPU's commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuCommit {
    /// GPU UUID the workload was seeded with.
    pub uuid: String,
    /// Merkle root over the rows of C.
    pub root: Hash32,
    /// Time the device took for the workload, microseconds (measured by the node).
    pub kernel_micros: u64,
}

/// One GPU's openings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuOpening {
    /// GPU UUID.
    pub uuid: String,
    /// One proof per sampled row, in the order of [`sample_rows`].
    pub proofs: Vec<MerkleProof>,
}

/// The node's answer, carried in its signed report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeAnswer {
    /// The nonce answered.
    pub nonce: String,
    /// The arithmetic the node computed in (absent: `u32`). The hub compares it with what
    /// it asked for, so a device plugin that predates `f64` challenges, and computes the
    /// `u32` workload for one, is seen as not answering rather than as answering wrongly.
    #[serde(default, skip_serializing_if = "Arith::is_u32")]
    pub arith: Arith,
    /// Commitments, one per GPU.
    #[serde(default)]
    pub commits: Vec<GpuCommit>,
    /// The open seed answered (absent until the hub sent one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_seed: Option<String>,
    /// Openings, one per GPU (empty until the hub sent an open seed).
    #[serde(default)]
    pub openings: Vec<GpuOpening>,
}

/// The rows of `gpu_uuid` the hub opens under `open_seed`: `samples` distinct indices.
pub fn sample_rows(open_seed: &str, nonce: &str, gpu_uuid: &str, p: &Params) -> Vec<u32> {
    let want = p.samples.min(p.rows) as usize;
    let mut out: Vec<u32> = Vec::with_capacity(want);
    let mut counter: u64 = 0;
    while out.len() < want {
        let mut buf = SAMPLE_DOMAIN.to_vec();
        for part in [open_seed.as_bytes(), nonce.as_bytes(), gpu_uuid.as_bytes()] {
            buf.extend_from_slice(&(part.len() as u64).to_be_bytes());
            buf.extend_from_slice(part);
        }
        buf.extend_from_slice(&counter.to_be_bytes());
        counter += 1;
        let h = sha256(&buf).0;
        let mut w = [0u8; 8];
        w.copy_from_slice(&h[..8]);
        let row = (u64::from_be_bytes(w) % u64::from(p.rows)) as u32;
        if !out.contains(&row) {
            out.push(row);
        }
    }
    out
}

/// A node's computed workload for one GPU: kept between commit and open.
#[derive(Debug, Clone)]
pub struct Computed {
    /// GPU UUID.
    pub uuid: String,
    tree: MerkleTree,
    /// Kernel time, microseconds.
    pub kernel_micros: u64,
}

impl Computed {
    /// From the row leaves a device produced (`None` for zero rows).
    pub fn new(uuid: &str, leaves: Vec<Hash32>, kernel_micros: u64) -> Option<Self> {
        Some(Self {
            uuid: uuid.to_owned(),
            tree: MerkleTree::from_leaves(leaves)?,
            kernel_micros,
        })
    }

    /// The CPU reference computation (for `--simulate` nodes and tests).
    pub fn on_cpu(nonce: &str, uuid: &str, p: &Params, kernel_micros: u64) -> Option<Self> {
        Self::new(
            uuid,
            workload::all_leaves(p, &workload::seeds(nonce, uuid)),
            kernel_micros,
        )
    }

    /// The commitment.
    pub fn commit(&self) -> GpuCommit {
        GpuCommit {
            uuid: self.uuid.clone(),
            root: self.tree.root(),
            kernel_micros: self.kernel_micros,
        }
    }

    /// Openings of the rows the hub's seed selects.
    pub fn open(&self, req: &ChallengeRequest, open_seed: &str) -> GpuOpening {
        GpuOpening {
            uuid: self.uuid.clone(),
            proofs: sample_rows(open_seed, &req.nonce, &self.uuid, &req.params)
                .into_iter()
                .filter_map(|r| self.tree.proof(r as usize))
                .collect(),
        }
    }
}

/// The node's answer to `req` from its computed GPUs: commitments, plus openings once the
/// request carries an open seed.
pub fn answer(req: &ChallengeRequest, computed: &[Computed]) -> ChallengeAnswer {
    ChallengeAnswer {
        nonce: req.nonce.clone(),
        arith: req.params.arith,
        commits: computed.iter().map(Computed::commit).collect(),
        open_seed: req.open_seed.clone(),
        openings: req
            .open_seed
            .as_deref()
            .map(|seed| computed.iter().map(|c| c.open(req, seed)).collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const P: Params = Params::u32(16, 4, 4, 5);

    #[test]
    fn samples_are_distinct_in_range_and_seed_dependent() {
        let a = sample_rows("s1", "n", "g", &P);
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|&r| r < P.rows));
        let set: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(set.len(), 5);
        assert_ne!(a, sample_rows("s2", "n", "g", &P));
        assert_eq!(a, sample_rows("s1", "n", "g", &P));
        let all = Params { samples: 16, ..P };
        assert_eq!(sample_rows("s", "n", "g", &all).len(), 16);
    }

    #[test]
    fn answer_opens_only_after_the_seed() {
        let mut req = ChallengeRequest {
            nonce: "n".into(),
            params: P,
            open_seed: None,
        };
        let c = Computed::on_cpu("n", "GPU-1", &P, 10).unwrap();
        let first = answer(&req, std::slice::from_ref(&c));
        assert_eq!(first.commits.len(), 1);
        assert!(first.openings.is_empty());
        req.open_seed = Some("seed".into());
        let second = answer(&req, std::slice::from_ref(&c));
        assert_eq!(second.commits, first.commits, "the commitment does not change");
        assert_eq!(second.openings[0].proofs.len(), 5);
    }
}
