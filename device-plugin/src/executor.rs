//! Who computes the challenge workload on this node, and the check a node runs on its
//! device's result before it answers. Pure: the device is behind [`DeviceRunner`] (the
//! CUDA one is [`crate::cuda`]), so the logic is tested with fakes.
//!
//! Why a self-check: an answer is signed and slashable. A GPU that computes wrongly (a
//! kernel bug, a driver bug, failing memory) must not produce a `WrongDigest` against an
//! honest provider — the node recomputes a few rows on its CPU and, if any differs, does
//! not answer for that GPU (the hub then reports it `NotAnswered`, which is not evidence).

use std::time::Instant;

use gpufed_trust::Computed;
use gpufed_trust::workload::{self, Cells, Params, Seeds};

/// Largest workload (multiply-adds) the CPU reference executor takes on.
pub const CPU_MAX_OPS: u64 = 1 << 30;
/// Largest matrix (bytes) the device path takes on: C comes back to the host, and A, B and
/// C share the card with the jobs running on it.
pub const DEVICE_MAX_BYTES: u64 = 1 << 30;
/// Rows of a device's result the node recomputes on its CPU before answering.
pub const SELF_CHECK_ROWS: u32 = 8;

/// What a device computed for one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProduct {
    /// C, row-major (`rows × cols`), in the challenge's arithmetic.
    pub c: Cells,
    /// Device time of the workload, microseconds.
    pub device_micros: u64,
}

/// Runs the workload on the GPU with this UUID.
pub trait DeviceRunner: Send {
    /// C for the seeds and shape, or why not.
    fn product(&mut self, uuid: &str, seeds: Seeds, p: &Params) -> Result<DeviceProduct, String>;
}

/// This node's executor.
pub enum Executor {
    /// The CPU reference, for `--simulate` nodes (their reports say `simulated`; the hub
    /// checks the answer but never counts it verified).
    Cpu,
    /// A GPU executor.
    Device(Box<dyn DeviceRunner>),
    /// None: the node does not answer, for this reason.
    Unavailable(String),
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("Cpu"),
            Self::Device(_) => f.write_str("Device"),
            Self::Unavailable(why) => write!(f, "Unavailable({why:?})"),
        }
    }
}

impl Executor {
    /// The committed workload of GPU `uuid` for challenge `nonce`, or why there is none.
    pub fn compute(&mut self, nonce: &str, uuid: &str, p: &Params) -> Result<Computed, String> {
        match self {
            Self::Unavailable(why) => Err(why.clone()),
            Self::Cpu => {
                if p.node_ops() > CPU_MAX_OPS {
                    return Err(format!(
                        "{} multiply-adds are too many for the CPU reference executor (at most {CPU_MAX_OPS})",
                        p.node_ops()
                    ));
                }
                let started = Instant::now();
                let mut c = Computed::on_cpu(nonce, uuid, p, 0).ok_or("a challenge with no rows")?;
                c.kernel_micros = u64::try_from(started.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                Ok(c)
            }
            Self::Device(runner) => {
                fits_device(p)?;
                let seeds = workload::seeds(nonce, uuid);
                let out = runner.product(uuid, seeds, p)?;
                self_check(p, &seeds, &out.c)?;
                let leaves = out
                    .c
                    .rows(p.cols as usize)
                    .zip(0..p.rows)
                    .map(|(row, i)| workload::leaf(i, row))
                    .collect();
                Computed::new(uuid, leaves, out.device_micros.max(1))
                    .ok_or_else(|| "a challenge with no rows".to_owned())
            }
        }
    }
}

/// Whether every matrix of the shape fits the device path's limit.
fn fits_device(p: &Params) -> Result<(), String> {
    let len = |x: u32, y: u32| u64::from(x) * u64::from(y) * p.arith.element_bytes();
    for (name, n) in [
        ("A", len(p.rows, p.depth)),
        ("B", len(p.depth, p.cols)),
        ("C", len(p.rows, p.cols)),
    ] {
        if n > DEVICE_MAX_BYTES {
            return Err(format!(
                "matrix {name} would take {n} bytes, more than the device executor's {DEVICE_MAX_BYTES}"
            ));
        }
    }
    Ok(())
}

/// The rows a node recomputes: the first, the last, and the rest spread by the seeds (so
/// they differ per challenge).
pub fn self_check_rows(p: &Params, seeds: &Seeds) -> Vec<u32> {
    let mut rows = vec![0, p.rows - 1];
    let mut k = 0u64;
    while rows.len() < SELF_CHECK_ROWS.min(p.rows) as usize {
        let i = (workload::splitmix64(seeds.a ^ seeds.b.rotate_left(17) ^ k) % u64::from(p.rows)) as u32;
        if !rows.contains(&i) {
            rows.push(i);
        }
        k += 1;
    }
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// Checks a device's C: its arithmetic, its size, and [`self_check_rows`] recomputed on
/// the CPU.
pub fn self_check(p: &Params, seeds: &Seeds, c: &Cells) -> Result<(), String> {
    if c.arith() != p.arith {
        return Err(format!(
            "the device returned {} cells for a {} challenge",
            c.arith().as_str(),
            p.arith.as_str()
        ));
    }
    let want = u64::from(p.rows) * u64::from(p.cols);
    if c.len() as u64 != want {
        return Err(format!(
            "the device returned {} elements of C, not {want}",
            c.len()
        ));
    }
    let b = workload::matrix_b(p, seeds);
    let cols = p.cols as usize;
    for i in self_check_rows(p, seeds) {
        if c.row(cols, i as usize) != Some(workload::row(p, seeds, &b, i).as_row()) {
            return Err(format!(
                "row {i} of the device's result differs from the CPU reference: this GPU computes wrongly, not answering"
            ));
        }
    }
    Ok(())
}

/// Flips the low bit of cell `k`: a device's computing error, for tests.
#[cfg(test)]
pub(crate) fn flip_low_bit(c: &mut Cells, k: usize) {
    match c {
        Cells::U32(v) => v[k] ^= 1,
        Cells::F64(v) => v[k] ^= 1,
    }
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
