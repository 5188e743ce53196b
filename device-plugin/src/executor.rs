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
use gpufed_trust::workload::{self, Cells, Params, RowRef, Seeds};

/// Largest workload (multiply-adds) the CPU reference executor takes on.
pub const CPU_MAX_OPS: u64 = 1 << 30;
/// Most bytes one device run may take for A or C (and B, which every run needs whole):
/// C comes back to the host, and the matrices share the card with the jobs running on it.
/// A taller challenge runs in row blocks of at most this ([`block_rows`]).
pub const DEVICE_MAX_BYTES: u64 = 1 << 30;
/// Most bytes of C one device run brings back to the host. At most two blocks of C per
/// GPU are in host memory (one hashed, one arriving), and all of a node's GPUs answer at
/// once: this, not the device's budget, bounds the plugin's memory (a whole 4096 × 4096
/// `f64` C is 128 MiB, eight GPUs' twice that 2 GiB, against a container limit of a few
/// hundred MiB). Generating B again for each block costs `1 / block rows` of the block's
/// product (under 1% for a block of 128 rows or more).
pub const HOST_BLOCK_BYTES: u64 = 8 << 20;
/// Most rows of one device run (the product kernel's grid holds 65 535 × 16 rows).
pub const MAX_BLOCK_ROWS: u32 = 1 << 19;
/// Rows of a device's result the node recomputes on its CPU before answering, at least.
pub const SELF_CHECK_ROWS: u32 = 8;
/// Blocks of a challenge run in blocks ([`block_rows`]) that get a self-checked row of
/// their own, at most: every block of a challenge of up to this many (each block has
/// fresh device buffers, so a fault can be a block's alone), a seeded choice of this many
/// of a taller one. Each checked row costs the CPU `depth × cols` multiply-adds.
pub const MAX_CHECKED_BLOCKS: u32 = 16;

/// What a device computed for one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProduct {
    /// C, row-major (`rows × cols`), in the challenge's arithmetic.
    pub c: Cells,
    /// Device time of the workload, microseconds.
    pub device_micros: u64,
}

/// Opens GPUs for the workload. Shared by the threads that answer for a node's GPUs at
/// once (one each), so `Sync`.
pub trait DeviceRunner: Send + Sync {
    /// The GPU with this UUID, ready for one challenge's row blocks.
    fn open(&self, uuid: &str) -> Result<Box<dyn OpenDevice + '_>, String>;
}

/// One GPU opened for one challenge (a CUDA context, kernels loaded): it runs every row
/// block of the challenge, so the context is made once, and is dropped after it.
pub trait OpenDevice {
    /// C for the seeds and shape, or why not.
    fn product(&mut self, seeds: Seeds, p: &Params) -> Result<DeviceProduct, String>;
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
    pub fn compute(&self, nonce: &str, uuid: &str, p: &Params) -> Result<Computed, String> {
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
                let block = block_rows(p)?;
                let seeds = workload::seeds(nonce, uuid);
                let mut gpu = runner.open(uuid)?;
                let mut leaves = Vec::with_capacity(p.rows as usize);
                let micros = run_blocks(gpu.as_mut(), p, &seeds, block, |i, row| {
                    leaves.push(workload::leaf(i, row));
                })?;
                Computed::new(uuid, leaves, micros.max(1))
                    .ok_or_else(|| "a challenge with no rows".to_owned())
            }
        }
    }
}

/// Rows per device run: all of them when A and C fit [`DEVICE_MAX_BYTES`] and C fits
/// [`HOST_BLOCK_BYTES`], else blocks that do. Only B (`depth × cols`, which every block
/// needs) has to fit whole.
pub fn block_rows(p: &Params) -> Result<u32, String> {
    let elem = p.arith.element_bytes();
    let b = u64::from(p.depth) * u64::from(p.cols) * elem;
    if b > DEVICE_MAX_BYTES {
        return Err(format!(
            "matrix B would take {b} bytes, more than the device executor's {DEVICE_MAX_BYTES}"
        ));
    }
    // One row of A and of C.
    let row = (u64::from(p.depth) + u64::from(p.cols)) * elem;
    let c_row = (u64::from(p.cols) * elem).max(1);
    let block = (DEVICE_MAX_BYTES / row)
        .min(HOST_BLOCK_BYTES / c_row)
        .min(u64::from(p.rows))
        .min(u64::from(MAX_BLOCK_ROWS));
    u32::try_from(block.max(1)).map_err(|e| e.to_string())
}

/// The host memory one GPU's answer to `p` takes at its peak, bytes: two blocks of C
/// ([`block_rows`]), the row leaves and the Merkle tree above them (64 bytes a row; kept
/// until the hub's open seed), and the self-check's rows. A node's answer takes this
/// times its GPUs (they compute at once); `None` when the device executor refuses `p`.
pub fn host_bytes(p: &Params) -> Option<u64> {
    let block = u64::from(block_rows(p).ok()?);
    let cells = |rows: u64| rows * u64::from(p.cols) * p.arith.element_bytes();
    let checked = u64::from(SELF_CHECK_ROWS + MAX_CHECKED_BLOCKS + 1);
    Some(2 * cells(block) + 64 * u64::from(p.rows) + cells(checked))
}

/// Runs the product of `p` on `gpu` in blocks of `block` rows — block `r0` is the product
/// of rows `r0..` with A's stream started at row `r0` ([`Seeds::from_row`]), so the blocks
/// together are exactly C — checks each block ([`self_check_rows`] recomputed on the CPU),
/// hands every row to `on_row` in order, and returns the device time of all blocks, µs.
///
/// The checking and `on_row` (the node's hashing: 0.6 s a GPU for 2²⁰ rows of 64 cells)
/// run on a thread of their own, one block behind the device: the hub's clock runs from
/// its request to the commitment, so hashing that waits for the last block is slack every
/// band must grant. At most two blocks of C are in memory: the one being hashed and the
/// one the device is computing.
pub fn run_blocks(
    gpu: &mut dyn OpenDevice,
    p: &Params,
    seeds: &Seeds,
    block: u32,
    mut on_row: impl FnMut(u32, RowRef<'_>) + Send,
) -> Result<u64, String> {
    let cols = p.cols as usize;
    // Capacity 0: the device starts a block once the hasher has taken the one before.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u32, Cells)>(0);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || -> Result<(), String> {
            // The reference rows, computed here while the device computes the first block
            // (B streamed: a few rows of `cols` cells, not B whole).
            let check = self_check_rows(p, seeds, block);
            let expected = workload::rows_streamed(p, seeds, &check);
            for (r0, c) in rx {
                for (k, row) in c.rows(cols).enumerate() {
                    let i = r0 + k as u32;
                    if let Ok(at) = check.binary_search(&i)
                        && Some(row) != expected.get(at).map(Cells::as_row)
                    {
                        return Err(wrong_row(i));
                    }
                    on_row(i, row);
                }
            }
            Ok(())
        });
        let computed = (|| {
            let mut micros = 0u64;
            let mut r0 = 0u32;
            while r0 < p.rows {
                let part = Params {
                    rows: block.max(1).min(p.rows - r0),
                    ..*p
                };
                let out = gpu.product(seeds.from_row(r0, p.depth), &part)?;
                check_cells(&part, &out.c)?;
                micros = micros.saturating_add(out.device_micros);
                if tx.send((r0, out.c)).is_err() {
                    // The hasher stopped at a wrong row: its error is the answer.
                    break;
                }
                r0 += part.rows;
            }
            drop(tx);
            Ok(micros)
        })();
        let hashed = hasher
            .join()
            .unwrap_or_else(|_| Err("the thread checking the device's rows panicked".to_owned()));
        hashed.and(computed)
    })
}

/// The rows a node recomputes for a challenge run in blocks of `block` rows: the first,
/// the last, one seeded row in each block (in [`MAX_CHECKED_BLOCKS`] seeded blocks of a
/// challenge with more), and seeded rows anywhere up to [`SELF_CHECK_ROWS`]. Seeded, so
/// they differ per challenge. Sorted.
pub fn self_check_rows(p: &Params, seeds: &Seeds, block: u32) -> Vec<u32> {
    let mix = |k: u64| workload::splitmix64(seeds.a ^ seeds.b.rotate_left(17) ^ k);
    let block = block.clamp(1, p.rows.max(1));
    let blocks = p.rows.div_ceil(block);
    let chosen: Vec<u32> = if blocks <= MAX_CHECKED_BLOCKS {
        (0..blocks).collect()
    } else {
        let mut chosen = Vec::new();
        let mut k = 1u64 << 32;
        while chosen.len() < MAX_CHECKED_BLOCKS as usize {
            let b = (mix(k) % u64::from(blocks)) as u32;
            if !chosen.contains(&b) {
                chosen.push(b);
            }
            k += 1;
        }
        chosen
    };
    let mut rows = vec![0, p.rows - 1];
    for (k, b) in chosen.into_iter().enumerate() {
        let start = b * block;
        let len = block.min(p.rows - start);
        rows.push(start + (mix(1 << 40 | k as u64) % u64::from(len)) as u32);
    }
    rows.sort_unstable();
    rows.dedup();
    let mut k = 0u64;
    while rows.len() < SELF_CHECK_ROWS.min(p.rows) as usize {
        let i = (mix(k) % u64::from(p.rows)) as u32;
        if !rows.contains(&i) {
            rows.push(i);
        }
        k += 1;
    }
    rows.sort_unstable();
    rows
}

fn wrong_row(i: u32) -> String {
    format!(
        "row {i} of the device's result differs from the CPU reference: this GPU computes wrongly, not answering"
    )
}

/// A device's C (of the whole shape `p`, or of one block) is in `p`'s arithmetic and has
/// `rows × cols` cells.
fn check_cells(p: &Params, c: &Cells) -> Result<(), String> {
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
    Ok(())
}

/// Checks a device's whole C: its arithmetic, its size, and [`self_check_rows`]
/// recomputed on the CPU (the calibration bench's check of one run).
pub fn self_check(p: &Params, seeds: &Seeds, c: &Cells) -> Result<(), String> {
    check_cells(p, c)?;
    let cols = p.cols as usize;
    let check = self_check_rows(p, seeds, p.rows);
    for (&i, want) in check.iter().zip(workload::rows_streamed(p, seeds, &check)) {
        if c.row(cols, i as usize) != Some(want.as_row()) {
            return Err(wrong_row(i));
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
