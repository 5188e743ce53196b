//! The challenge workload: a nonce-seeded matrix product, committed row by row.
//!
//! For one GPU (UUID `u`) and a challenge nonce `N`:
//!
//! ```text
//! seed      = SHA-256("gpufed-challenge-seed-v1" ‖ N ‖ u)        → sa = bytes 0..8, sb = 8..16 (BE)
//! A[i][j]   = elem(sa, i·depth + j)        i < rows, j < depth
//! B[j][c]   = elem(sb, j·cols + c)         j < depth, c < cols
//! C[i][c]   = Σ_j A[i][j]·B[j][c]          in the challenge's arithmetic (below)
//! leaf(i)   = SHA-256(0x00 ‖ domain ‖ i as u64 BE ‖ C[i][..] little endian)
//! root      = Merkle root over leaf(0..rows)   (the settlement crate's tree: count-committing)
//! mix(s,k)  = splitmix64(s + k·0x9E3779B97F4A7C15)
//! ```
//!
//! Two arithmetics ([`Arith`]), both bit-exact on every GPU and on the hub's CPU, so the hub
//! can recompute any row (`depth·cols` multiply-adds) while the node must compute all
//! `rows·depth·cols` of them:
//!
//! - `u32`: `elem = high 32 bits of mix`, wrapping u32 multiply-adds, domain
//!   `"gpufed-challenge-row-v1"`, cells as u32.
//! - `f64`: `elem = the binary64 number in [1, 2) whose mantissa is mix >> 12`, and
//!   `C[i][c] = fma(A[i][j], B[j][c], C[i][c])` for j = 0, 1, … in order from +0.0 (one
//!   IEEE-754 rounding per step, so the result is the same on any conforming device),
//!   domain `"gpufed-challenge-row-f64-v1"`, cells as their bit patterns (u64).
//!
//! Why two: integer multiply-add throughput is about the same on a consumer card and a
//! data-center card (an RTX 4090 does as many as an H100), so a `u32` band cannot tell
//! them apart. Binary64 throughput can: data-center GPUs run it at half their FP32 rate,
//! consumer GPUs at 1/64, and the in-order rounding leaves no shortcut through tensor cores
//! or lower precision (a different summation order changes the low bits: `WrongDigest`).
//! Per-GPU seeds bind each answer to one claimed UUID.

use gpufed_settlement::hash::{Hash32, sha256, sha256_prefixed};
use serde::{Deserialize, Serialize};

const SEED_DOMAIN: &[u8] = b"gpufed-challenge-seed-v1";
const ROW_DOMAIN: &[u8] = b"gpufed-challenge-row-v1";
const ROW_F64_DOMAIN: &[u8] = b"gpufed-challenge-row-f64-v1";
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Bits of binary64 1.0: sign 0, biased exponent 1023, mantissa 0.
pub const F64_ONE_BITS: u64 = 0x3FF0_0000_0000_0000;

/// The arithmetic of a challenge (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arith {
    /// Wrapping u32 multiply-adds (every CUDA GPU; does not separate card classes).
    #[default]
    U32,
    /// In-order binary64 fused multiply-adds (separates data-center from consumer cards).
    F64,
}

impl Arith {
    /// The default, left out of serialized params so that `u32` challenges keep the bytes
    /// they had before `f64` existed.
    pub fn is_u32(&self) -> bool {
        *self == Self::U32
    }

    /// Bytes of one matrix element.
    pub fn element_bytes(&self) -> u64 {
        match self {
            Self::U32 => 4,
            Self::F64 => 8,
        }
    }

    /// Its spelling in params.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::U32 => "u32",
            Self::F64 => "f64",
        }
    }
}

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
    /// The arithmetic (`u32` when absent).
    #[serde(default, skip_serializing_if = "Arith::is_u32")]
    pub arith: Arith,
}

/// Largest accepted `depth` and `cols` (the hub recomputes `depth × cols` multiply-adds a
/// sampled row, so these bound its cost).
pub const MAX_DIM: u32 = 1 << 16;
/// Largest accepted `rows`. Rows cost the node, not the hub (only the proofs grow, by one
/// hash a doubling), so a challenge is made long with rows: the hub's own clock can only
/// bound work that takes longer than its round trip (docs/trust.md, "What the hub's clock
/// proves"). A device runs tall challenges in row blocks.
pub const MAX_ROWS: u32 = 1 << 20;
/// Most samples a challenge may ask for (bounds the report's size).
pub const MAX_SAMPLES: u32 = 64;

impl Params {
    /// A `u32` challenge of this shape.
    pub const fn u32(rows: u32, depth: u32, cols: u32, samples: u32) -> Self {
        Self {
            rows,
            depth,
            cols,
            samples,
            arith: Arith::U32,
        }
    }

    /// Checks the bounds; `Err` names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v, max) in [
            ("rows", self.rows, MAX_ROWS),
            ("depth", self.depth, MAX_DIM),
            ("cols", self.cols, MAX_DIM),
        ] {
            if v == 0 || v > max {
                return Err(format!("{name} must be within 1..={max}, got {v}"));
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

impl Seeds {
    /// The seeds of the rows from `row` on, as a product of their own: A's stream started
    /// at element `row · depth` (`mix(s, k + o) = mix(s + o·GOLDEN, k)`, wrapping), B's
    /// unchanged. Row `k` of that product is row `row + k` of this one; a device computes
    /// a tall challenge block by block with these.
    pub fn from_row(&self, row: u32, depth: u32) -> Self {
        let offset = u64::from(row).wrapping_mul(u64::from(depth));
        Self {
            a: self.a.wrapping_add(offset.wrapping_mul(GOLDEN)),
            b: self.b,
        }
    }
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

fn mix(seed: u64, k: u64) -> u64 {
    splitmix64(seed.wrapping_add(k.wrapping_mul(GOLDEN)))
}

/// Element `k` of the `u32` stream seeded with `seed`.
pub fn elem(seed: u64, k: u64) -> u32 {
    (mix(seed, k) >> 32) as u32
}

/// Element `k` of the `f64` stream seeded with `seed`: in [1, 2), never a NaN, an
/// infinity or a subnormal, so every product and sum stays a normal number.
pub fn elem_f64(seed: u64, k: u64) -> f64 {
    f64::from_bits(F64_ONE_BITS | (mix(seed, k) >> 12))
}

/// B in row-major order (`depth × cols`), the part every row shares.
#[derive(Debug, Clone, PartialEq)]
pub enum MatrixB {
    /// Of a `u32` challenge.
    U32(Vec<u32>),
    /// Of an `f64` challenge.
    F64(Vec<f64>),
}

/// B of the challenge.
pub fn matrix_b(p: &Params, s: &Seeds) -> MatrixB {
    let len = u64::from(p.depth) * u64::from(p.cols);
    match p.arith {
        Arith::U32 => MatrixB::U32((0..len).map(|k| elem(s.b, k)).collect()),
        Arith::F64 => MatrixB::F64((0..len).map(|k| elem_f64(s.b, k)).collect()),
    }
}

/// Cells of C (one row or all of them, row-major), as a device returns them: `f64` cells
/// as their bit patterns, so that equality is bit equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cells {
    /// Of a `u32` challenge.
    U32(Vec<u32>),
    /// Of an `f64` challenge (IEEE-754 bit patterns).
    F64(Vec<u64>),
}

/// A borrowed row of [`Cells`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRef<'a> {
    /// Of a `u32` challenge.
    U32(&'a [u32]),
    /// Of an `f64` challenge.
    F64(&'a [u64]),
}

impl Cells {
    /// Number of cells.
    pub fn len(&self) -> usize {
        match self {
            Self::U32(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    /// No cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Their arithmetic.
    pub fn arith(&self) -> Arith {
        match self {
            Self::U32(_) => Arith::U32,
            Self::F64(_) => Arith::F64,
        }
    }

    /// All of them as one row.
    pub fn as_row(&self) -> RowRef<'_> {
        match self {
            Self::U32(v) => RowRef::U32(v),
            Self::F64(v) => RowRef::F64(v),
        }
    }

    /// Row `i` of a row-major matrix with `cols` columns, if it is there.
    pub fn row(&self, cols: usize, i: usize) -> Option<RowRef<'_>> {
        let range = i.checked_mul(cols)?..(i + 1).checked_mul(cols)?;
        match self {
            Self::U32(v) => v.get(range).map(RowRef::U32),
            Self::F64(v) => v.get(range).map(RowRef::F64),
        }
    }

    /// The complete rows of a row-major matrix with `cols` columns (`cols > 0`).
    pub fn rows(&self, cols: usize) -> Box<dyn Iterator<Item = RowRef<'_>> + '_> {
        match self {
            Self::U32(v) => Box::new(v.chunks_exact(cols).map(RowRef::U32)),
            Self::F64(v) => Box::new(v.chunks_exact(cols).map(RowRef::F64)),
        }
    }
}

/// Row `i` of C, given B from [`matrix_b`] (of the same params).
pub fn row(p: &Params, s: &Seeds, b: &MatrixB, i: u32) -> Cells {
    let cols = p.cols as usize;
    let base = u64::from(i) * u64::from(p.depth);
    match b {
        MatrixB::U32(b) => {
            let mut out = vec![0u32; cols];
            for (j, b_row) in b.chunks_exact(cols).take(p.depth as usize).enumerate() {
                let a = elem(s.a, base + j as u64);
                for (acc, &bv) in out.iter_mut().zip(b_row) {
                    *acc = acc.wrapping_add(a.wrapping_mul(bv));
                }
            }
            Cells::U32(out)
        }
        MatrixB::F64(b) => {
            let mut out = vec![0.0f64; cols];
            for (j, b_row) in b.chunks_exact(cols).take(p.depth as usize).enumerate() {
                let a = elem_f64(s.a, base + j as u64);
                for (acc, &bv) in out.iter_mut().zip(b_row) {
                    *acc = a.mul_add(bv, *acc);
                }
            }
            Cells::F64(out.into_iter().map(f64::to_bits).collect())
        }
    }
}

/// Rows `rows` of C (in that order), with B generated one row at a time rather than held
/// whole: `rows.len() + 1` rows of `cols` cells in memory instead of `depth × cols` (B of
/// a 4096 × 4096 `f64` shape is 128 MiB, per GPU checked). Bit for bit [`row`]: each cell
/// still sums over `j = 0, 1, …` in order. The hub's check of sampled rows and a node's
/// self-check use it (BENCHMARKS.md, "Challenge memory").
pub fn rows_streamed(p: &Params, s: &Seeds, rows: &[u32]) -> Vec<Cells> {
    let depth = u64::from(p.depth);
    let cols = u64::from(p.cols);
    match p.arith {
        Arith::U32 => stream_rows(
            rows,
            depth,
            cols,
            |k| elem(s.b, k),
            |k| elem(s.a, k),
            |a, b, acc| acc.wrapping_add(a.wrapping_mul(b)),
        )
        .into_iter()
        .map(Cells::U32)
        .collect(),
        Arith::F64 => stream_rows(
            rows,
            depth,
            cols,
            |k| elem_f64(s.b, k),
            |k| elem_f64(s.a, k),
            f64::mul_add,
        )
        .into_iter()
        .map(|r| Cells::F64(r.into_iter().map(f64::to_bits).collect()))
        .collect(),
    }
}

/// `out[r][c] = Σ_j a(rows[r]·depth + j) · b(j·cols + c)`, folded by `fma(a, b, acc)` over
/// `j` in order from the type's zero.
fn stream_rows<T: Copy + Default>(
    rows: &[u32],
    depth: u64,
    cols: u64,
    b: impl Fn(u64) -> T,
    a: impl Fn(u64) -> T,
    fma: impl Fn(T, T, T) -> T,
) -> Vec<Vec<T>> {
    let width = usize::try_from(cols).unwrap_or(0);
    let mut out = vec![vec![T::default(); width]; rows.len()];
    let mut b_row = vec![T::default(); width];
    for j in 0..depth {
        for (c, v) in (0..cols).zip(b_row.iter_mut()) {
            *v = b(j * cols + c);
        }
        for (acc, &i) in out.iter_mut().zip(rows) {
            let a = a(u64::from(i) * depth + j);
            for (cell, &bv) in acc.iter_mut().zip(&b_row) {
                *cell = fma(a, bv, *cell);
            }
        }
    }
    out
}

/// All of C, row-major (`rows × cols`): what a GPU executor returns, computed on the CPU
/// (tests' fake devices; `rows·depth·cols` multiply-adds, so only for small shapes).
pub fn product(p: &Params, s: &Seeds) -> Cells {
    let b = matrix_b(p, s);
    let mut out = match p.arith {
        Arith::U32 => Cells::U32(Vec::new()),
        Arith::F64 => Cells::F64(Vec::new()),
    };
    for i in 0..p.rows {
        match (&mut out, row(p, s, &b, i)) {
            (Cells::U32(all), Cells::U32(r)) => all.extend(r),
            (Cells::F64(all), Cells::F64(r)) => all.extend(r),
            // `row` answers in B's arithmetic, which is `p.arith`.
            _ => {}
        }
    }
    out
}

/// Leaf hash of row `i`.
pub fn leaf(i: u32, row: RowRef<'_>) -> Hash32 {
    let (domain, cells) = match row {
        RowRef::U32(v) => (ROW_DOMAIN, v.len() * 4),
        RowRef::F64(v) => (ROW_F64_DOMAIN, v.len() * 8),
    };
    let mut bytes = Vec::with_capacity(domain.len() + 8 + cells);
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(&u64::from(i).to_be_bytes());
    match row {
        RowRef::U32(v) => v.iter().for_each(|c| bytes.extend_from_slice(&c.to_le_bytes())),
        RowRef::F64(v) => v.iter().for_each(|c| bytes.extend_from_slice(&c.to_le_bytes())),
    }
    sha256_prefixed(0x00, &[&bytes])
}

/// The CPU reference: every row's leaf. Used by `--simulate` nodes and by tests; a real
/// node computes C on its GPU and hashes the rows the same way.
pub fn all_leaves(p: &Params, s: &Seeds) -> Vec<Hash32> {
    let b = matrix_b(p, s);
    (0..p.rows).map(|i| leaf(i, row(p, s, &b, i).as_row())).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "workload_tests.rs"]
mod tests;
