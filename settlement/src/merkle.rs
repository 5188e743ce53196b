//! Merkle tree over a batch's records.
//!
//! * leaf  = SHA-256(0x00 ‖ canonical record bytes)
//! * node  = SHA-256(0x01 ‖ left ‖ right)
//! * an odd node at the end of a level is promoted unchanged (never duplicated, so no
//!   two different leaf lists share a root — the CVE-2012-2459 pitfall);
//! * root  = SHA-256(0x02 ‖ leaf count as u64 big-endian ‖ top node), so the root also
//!   commits to the number of records (which the memo repeats).
//!
//! Leaves are in the batch's canonical order (ascending record id).

use serde::{Deserialize, Serialize};

use crate::hash::{Hash32, sha256_prefixed};
use crate::record::UsageRecord;

const LEAF: u8 = 0x00;
const NODE: u8 = 0x01;
const ROOT: u8 = 0x02;
/// Longest proof accepted (a tree of 2^64 leaves).
pub const MAX_PROOF_LEN: usize = 64;

/// Leaf hash of a record.
pub fn leaf_hash(record: &UsageRecord) -> Hash32 {
    sha256_prefixed(LEAF, &[&record.canonical_bytes()])
}

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    sha256_prefixed(NODE, &[&left.0, &right.0])
}

fn root_hash(count: u64, top: &Hash32) -> Hash32 {
    sha256_prefixed(ROOT, &[&count.to_be_bytes(), &top.0])
}

/// An inclusion proof: the leaf's position, the number of leaves and the sibling hashes
/// from the leaf level up (levels where the node was promoted have no sibling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MerkleProof {
    /// Index of the leaf in the batch's canonical order.
    pub index: u64,
    /// Number of leaves (records) in the batch.
    pub leaf_count: u64,
    /// Sibling hashes, leaf level first.
    pub siblings: Vec<Hash32>,
}

/// All levels of a tree, leaves first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash32>>,
    root: Hash32,
}

impl MerkleTree {
    /// Builds the tree over leaf hashes; `None` for an empty list.
    pub fn from_leaves(leaves: Vec<Hash32>) -> Option<Self> {
        if leaves.is_empty() {
            return None;
        }
        let count = leaves.len() as u64;
        let mut levels = vec![leaves];
        while let Some(level) = levels.last()
            && level.len() > 1
        {
            let next: Vec<Hash32> = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [single] => *single,
                    _ => Hash32::default(),
                })
                .collect();
            levels.push(next);
        }
        let top = levels.last().and_then(|l| l.first()).copied().unwrap_or_default();
        Some(Self {
            root: root_hash(count, &top),
            levels,
        })
    }

    /// Builds the tree over records in the given order.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a UsageRecord>) -> Option<Self> {
        Self::from_leaves(records.into_iter().map(leaf_hash).collect())
    }

    /// The root (commits to the leaf count).
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// Inclusion proof of leaf `index`.
    pub fn proof(&self, index: usize) -> Option<MerkleProof> {
        if index >= self.leaf_count() {
            return None;
        }
        let mut siblings = Vec::new();
        let mut idx = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sib = idx ^ 1;
            if sib < level.len() {
                siblings.push(level[sib]);
            }
            idx /= 2;
        }
        Some(MerkleProof {
            index: index as u64,
            leaf_count: self.leaf_count() as u64,
            siblings,
        })
    }
}

/// Recomputes the root from a leaf hash and a proof; `None` if the proof is malformed.
pub fn root_from_proof(leaf: Hash32, proof: &MerkleProof) -> Option<Hash32> {
    if proof.index >= proof.leaf_count || proof.siblings.len() > MAX_PROOF_LEN {
        return None;
    }
    let mut idx = proof.index;
    let mut n = proof.leaf_count;
    let mut h = leaf;
    let mut sibs = proof.siblings.iter();
    while n > 1 {
        if idx % 2 == 1 {
            h = node_hash(sibs.next()?, &h);
        } else if idx + 1 < n {
            h = node_hash(&h, sibs.next()?);
        }
        idx /= 2;
        n = n.div_ceil(2);
    }
    if sibs.next().is_some() {
        return None;
    }
    Some(root_hash(proof.leaf_count, &h))
}

/// True when `record` is included, under `proof`, in the tree whose root is `root`.
pub fn verify_proof(record: &UsageRecord, proof: &MerkleProof, root: &Hash32) -> bool {
    root_from_proof(leaf_hash(record), proof).is_some_and(|r| &r == root)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::amount::AttemptMeter;
    use crate::record::JobRef;
    use proptest::prelude::*;

    fn records(n: usize) -> Vec<UsageRecord> {
        let job = JobRef {
            namespace: "t".into(),
            name: "j".into(),
            uid: "u".into(),
        };
        let mut m = AttemptMeter::new(job, 0, "p".into(), "t".into(), 3_000_000);
        (0..n as u64)
            .map(|i| m.record(i * 10, i * 10 + 10, 1).unwrap())
            .collect()
    }

    #[test]
    fn single_leaf_and_count_binding() {
        let rs = records(3);
        let t1 = MerkleTree::from_records(&rs[..1]).unwrap();
        let p = t1.proof(0).unwrap();
        assert!(p.siblings.is_empty());
        assert!(verify_proof(&rs[0], &p, &t1.root()));
        // Same top node, different claimed count: rejected.
        let forged = MerkleProof {
            leaf_count: 2,
            ..p.clone()
        };
        assert!(!verify_proof(&rs[0], &forged, &t1.root()));
        assert!(MerkleTree::from_records(&rs[..0]).is_none());
        assert!(t1.proof(1).is_none());
    }

    #[test]
    fn tampering_fails() {
        let rs = records(7);
        let t = MerkleTree::from_records(&rs).unwrap();
        let p = t.proof(6).unwrap();
        assert!(verify_proof(&rs[6], &p, &t.root()));
        let mut bad = rs[6].clone();
        bad.amount += 1;
        assert!(!verify_proof(&bad, &p, &t.root()));
        let mut badp = p.clone();
        badp.siblings[0].0[0] ^= 1;
        assert!(!verify_proof(&rs[6], &badp, &t.root()));
        let mut badp = p.clone();
        badp.siblings.push(Hash32::default());
        assert!(!verify_proof(&rs[6], &badp, &t.root()));
        assert!(!verify_proof(&rs[5], &p, &t.root()));
        let wrong_index = MerkleProof { index: 5, ..p };
        assert!(!verify_proof(&rs[6], &wrong_index, &t.root()));
    }

    proptest! {
        #[test]
        fn every_proof_verifies_and_no_other_record_does(n in 1usize..70, pick in 0usize..70, other in 0usize..70) {
            let rs = records(n);
            let t = MerkleTree::from_records(&rs).unwrap();
            let i = pick % n;
            let p = t.proof(i).unwrap();
            prop_assert!(verify_proof(&rs[i], &p, &t.root()));
            let proof_json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(serde_json::from_str::<MerkleProof>(&proof_json).unwrap(), p.clone());
            let j = other % n;
            if j != i {
                prop_assert!(!verify_proof(&rs[j], &p, &t.root()));
            }
        }
    }
}
