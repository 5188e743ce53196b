//! The challenge workload: a nonce-seeded integer matrix product, committed row by row.
//!
//! For one GPU (UUID `u`) and a challenge nonce `N`:
//!
//! ```text
//! seed      = SHA-256("gpufed-challenge-seed-v1" ‖ N ‖ u)        → sa = bytes 0..8, sb = 8..16 (BE)
//! A[i][j]   = elem(sa, i·depth + j)        i < rows, j < depth        (u32)
//! B[j][c]   = elem(sb, j·cols + c)         j < depth, c < cols        (u32)
//! C[i][c]   = Σ_j A[i][j]·B[j][c]          wrapping u32 arithmetic (exact on any device)
//! leaf(i)   = SHA-256(0x00 ‖ "gpufed-challenge-row-v1" ‖ i as u64 BE ‖ C[i][..] as u32 LE)
//! root      = Merkle root over leaf(0..rows)   (the settlement crate's tree: count-committing)
//! elem(s,k) = high 32 bits of splitmix64(s + k·0x9E3779B97F4A7C15)
//! ```
//!
//! Integer arithmetic makes the result bit-exact on every GPU and on the hub's CPU, so
//! the hub can recompute any row (`depth·cols` multiply-adds) while the node must compute
//! all `rows·depth·cols` of them. Per-GPU seeds bind each answer to one claimed UUID.

use gpufed_settlement::hash::{Hash32, sha256, sha256_prefixed};
use serde::{Deserialize, Serialize};

const SEED_DOMAIN: &[u8] = b"gpufed-challenge-seed-v1";
const ROW_DOMAIN: &[u8] = b"gpufed-challenge-row-v1";
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Shape of one challenge. The hub picks it per GPU model (see [`crate::bands`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    /// Rows of A and C (Merkle leaves).
    pub rows: u32,
    /// Inner dimension.
    pub depth: u32,
    /// Columns of B and C.
    pub cols: u32,
    /// Rows the hub opens and recomputes after the commitment.
    pub samples: u32,
}

/// Largest accepted dimension (keeps the hub's recomputation and the proofs bounded).
pub const MAX_DIM: u32 = 1 << 16;
/// Most samples a challenge may ask for (bounds the report's size).
pub const MAX_SAMPLES: u32 = 64;

impl Params {
    /// Checks the bounds; `Err` names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("rows", self.rows), ("depth", self.depth), ("cols", self.cols)] {
            if v == 0 || v > MAX_DIM {
                return Err(format!("{name} must be within 1..={MAX_DIM}, got {v}"));
            }
        }
        if self.samples == 0 || self.samples > MAX_SAMPLES || self.samples > self.rows {
            return Err(format!(
                "samples must be within 1..={} and at most rows, got {}",
                MAX_SAMPLES, self.samples
            ));
        }
        Ok(())
    }

    /// Multiply-adds the node performs.
    pub fn node_ops(&self) -> u64 {
        u64::from(self.rows) * u64::from(self.depth) * u64::from(self.cols)
    }

    /// Multiply-adds the hub performs to check the samples.
    pub fn hub_ops(&self) -> u64 {
        u64::from(self.samples) * u64::from(self.depth) * u64::from(self.cols)
    }
}

/// The two matrix seeds of one GPU's workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds {
    /// Seed of A.
    pub a: u64,
    /// Seed of B.
    pub b: u64,
}

/// Seeds for `gpu_uuid` under challenge `nonce`.
pub fn seeds(nonce: &str, gpu_uuid: &str) -> Seeds {
    let mut buf = Vec::with_capacity(SEED_DOMAIN.len() + nonce.len() + gpu_uuid.len() + 16);
    buf.extend_from_slice(SEED_DOMAIN);
    for part in [nonce.as_bytes(), gpu_uuid.as_bytes()] {
        buf.extend_from_slice(&(part.len() as u64).to_be_bytes());
        buf.extend_from_slice(part);
    }
    let h = sha256(&buf).0;
    let word = |r: std::ops::Range<usize>| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&h[r]);
        u64::from_be_bytes(w)
    };
    Seeds {
        a: word(0..8),
        b: word(8..16),
    }
}

/// SplitMix64's output function.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Element `k` of the stream seeded with `seed`.
pub fn elem(seed: u64, k: u64) -> u32 {
    (splitmix64(seed.wrapping_add(k.wrapping_mul(GOLDEN))) >> 32) as u32
}

/// B in row-major order (`depth × cols`), the part every row shares.
pub fn matrix_b(p: &Params, s: &Seeds) -> Vec<u32> {
    let len = u64::from(p.depth) * u64::from(p.cols);
    (0..len).map(|k| elem(s.b, k)).collect()
}

/// Row `i` of C, given B from [`matrix_b`].
pub fn row(p: &Params, s: &Seeds, b: &[u32], i: u32) -> Vec<u32> {
    let cols = p.cols as usize;
    let mut out = vec![0u32; cols];
    let base = u64::from(i) * u64::from(p.depth);
    for (j, b_row) in b.chunks_exact(cols).take(p.depth as usize).enumerate() {
        let a = elem(s.a, base + j as u64);
        for (acc, &bv) in out.iter_mut().zip(b_row) {
            *acc = acc.wrapping_add(a.wrapping_mul(bv));
        }
    }
    out
}

/// All of C, row-major (`rows × cols`): what a GPU executor returns, computed on the CPU
/// (tests' fake devices; `rows·depth·cols` multiply-adds, so only for small shapes).
pub fn product(p: &Params, s: &Seeds) -> Vec<u32> {
    let b = matrix_b(p, s);
    (0..p.rows).flat_map(|i| row(p, s, &b, i)).collect()
}

/// Leaf hash of row `i`.
pub fn leaf(i: u32, row: &[u32]) -> Hash32 {
    let mut bytes = Vec::with_capacity(ROW_DOMAIN.len() + 8 + row.len() * 4);
    bytes.extend_from_slice(ROW_DOMAIN);
    bytes.extend_from_slice(&u64::from(i).to_be_bytes());
    for v in row {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    sha256_prefixed(0x00, &[&bytes])
}

/// The CPU reference: every row's leaf. Used by `--simulate` nodes and by tests; a real
/// node computes C on its GPU and hashes the rows the same way.
pub fn all_leaves(p: &Params, s: &Seeds) -> Vec<Hash32> {
    let b = matrix_b(p, s);
    (0..p.rows).map(|i| leaf(i, &row(p, s, &b, i))).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const P: Params = Params {
        rows: 8,
        depth: 5,
        cols: 3,
        samples: 2,
    };

    #[test]
    fn rows_are_the_matrix_product() {
        let s = seeds("n1", "GPU-a");
        let b = matrix_b(&P, &s);
        let c = product(&P, &s);
        assert_eq!(c.len(), (P.rows * P.cols) as usize);
        for i in 0..P.rows {
            let r = row(&P, &s, &b, i);
            assert_eq!(r[..], c[(i * P.cols) as usize..((i + 1) * P.cols) as usize]);
            for (c, &v) in r.iter().enumerate() {
                let mut want = 0u32;
                for j in 0..P.depth {
                    let a = elem(s.a, u64::from(i * P.depth + j));
                    let bv = elem(s.b, u64::from(j * P.cols) + c as u64);
                    want = want.wrapping_add(a.wrapping_mul(bv));
                }
                assert_eq!(v, want, "C[{i}][{c}]");
            }
        }
    }

    #[test]
    fn seeds_bind_nonce_and_gpu() {
        let base = seeds("n1", "GPU-a");
        assert_ne!(base, seeds("n2", "GPU-a"));
        assert_ne!(base, seeds("n1", "GPU-b"));
        // Length prefixes: moving a character between the parts changes the seed.
        assert_ne!(seeds("n1G", "PU-a"), base);
        assert_eq!(base, seeds("n1", "GPU-a"));
    }

    #[test]
    fn splitmix_matches_the_reference_vector() {
        // First outputs of SplitMix64 seeded with 0 (state advanced by the golden gamma).
        assert_eq!(splitmix64(GOLDEN), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(GOLDEN.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn leaves_differ_per_row_and_per_value() {
        let s = seeds("n", "g");
        let leaves = all_leaves(&P, &s);
        let unique: std::collections::BTreeSet<_> = leaves.iter().collect();
        assert_eq!(unique.len(), leaves.len());
        assert_ne!(leaf(0, &[1, 2, 3]), leaf(0, &[1, 2, 4]));
        assert_ne!(leaf(0, &[1, 2, 3]), leaf(1, &[1, 2, 3]));
    }

    #[test]
    fn params_are_bounded() {
        assert!(P.validate().is_ok());
        let bad = Params { rows: 0, ..P };
        assert!(bad.validate().unwrap_err().contains("rows"));
        let bad = Params { samples: 9, ..P };
        assert!(bad.validate().unwrap_err().contains("samples"));
        assert_eq!(P.node_ops(), 120);
        assert_eq!(P.hub_ops(), 30);
    }
}
