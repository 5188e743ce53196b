//! What a challenge costs: the hub's check of one GPU's answer (recomputing the sampled
//! rows and their proofs) against the node's whole workload computed on this CPU by the
//! reference implementation — the work a node without a GPU would have to do in time.
//!
//! Then a tall `f64` shape (docs/trust.md, "What the hub's clock proves"), too long for
//! this CPU: the hub's check of one GPU's answer (a node that computed only the sampled
//! rows passes it, which is all the check needs), against the time a node spends hashing
//! all its rows on one core (what a band's slack must cover besides the device time).
//!
//! Last, the hub's recomputation of sampled rows with B whole against B streamed: time
//! and peak memory, same run.
//!
//! `cargo bench -p gpufed-trust --bench challenge` (prints three tables; BENCHMARKS.md).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use gpufed_trust::Params;
use gpufed_trust::protocol::{ChallengeRequest, Computed, sample_rows};
use gpufed_trust::verify::check_opening;
use gpufed_trust::workload::{self, Arith, RowRef};

fn main() {
    // Each shape in both arithmetics, in the same run (u32 vectorizes on a CPU; binary64
    // fused multiply-adds are one libm `fma` call each where the build does not assume
    // the FMA instruction).
    let shapes = [
        Params::u32(256, 256, 256, 24),
        Params::u32(1024, 256, 1024, 24),
        Params::u32(2048, 512, 2048, 24),
    ]
    .into_iter()
    .flat_map(|p| {
        [
            p,
            Params {
                arith: Arith::F64,
                ..p
            },
        ]
    });
    println!(
        "| rows×depth×cols | arith | samples | node ops | hub ops | CPU node (full workload) | hub check | node/hub time |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for p in shapes {
        let req = ChallengeRequest {
            nonce: "bench-nonce".into(),
            params: p,
            open_seed: Some("seed".into()),
        };
        let t = Instant::now();
        let c = Computed::on_cpu(&req.nonce, "GPU-bench", &p, 1).unwrap();
        let node = t.elapsed();
        let commit = c.commit();
        let opening = c.open(&req, "seed");
        let runs = 5;
        let t = Instant::now();
        for _ in 0..runs {
            check_opening(&req, "seed", &commit, &opening).unwrap();
        }
        let hub = t.elapsed() / runs;
        println!(
            "| {} | {:.3} s | {:.2} ms | {:.0}× |",
            shape_cells(&p),
            node.as_secs_f64(),
            hub.as_secs_f64() * 1e3,
            node.as_secs_f64() / hub.as_secs_f64()
        );
    }
    tall();
    memory();
}

/// The hub's recomputation of one GPU's sampled rows, B held whole (as before) against B
/// streamed a row at a time (`workload::rows_streamed`, what `check_opening` does now):
/// time and the process's peak resident memory above its start (VmHWM, reset through
/// /proc/self/clear_refs before each), in the same run.
fn memory() {
    println!();
    println!(
        "| hub: sampled rows of | arith | samples | B whole: time | B whole: peak RSS | streamed: time | streamed: peak RSS | time ratio | memory ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let shapes = [
        Params::u32(4096, 4096, 4096, 16),
        Params {
            arith: Arith::F64,
            ..Params::u32(4096, 4096, 4096, 16)
        },
        Params {
            arith: Arith::F64,
            ..Params::u32(1 << 20, 65_536, 64, 19)
        },
    ];
    for p in shapes {
        let seeds = workload::seeds("bench-nonce", "GPU-bench");
        let rows = sample_rows("seed", "bench-nonce", "GPU-bench", &p);
        // Streamed first: memory the other freed could otherwise be reused unseen.
        let (streamed, streamed_t, streamed_kib) = peak(|| workload::rows_streamed(&p, &seeds, &rows));
        let (whole, whole_t, whole_kib) = peak(|| {
            let b = workload::matrix_b(&p, &seeds);
            rows.iter()
                .map(|&i| workload::row(&p, &seeds, &b, i))
                .collect::<Vec<_>>()
        });
        // What the streamed rows hold: the sampled rows and one row of B.
        let held_kib = (rows.len() as u64 + 1) * u64::from(p.cols) * p.arith.element_bytes() / 1024;
        assert_eq!(whole, streamed, "the same rows, bit for bit");
        println!(
            "| {}×{}×{} | {} | {} | {:.0} ms | {} KiB | {:.0} ms | {} KiB (holds {} KiB) | {:.2}× | {:.0}× |",
            p.rows,
            p.depth,
            p.cols,
            p.arith.as_str(),
            rows.len(),
            whole_t * 1e3,
            whole_kib,
            streamed_t * 1e3,
            streamed_kib,
            held_kib,
            whole_t / streamed_t,
            whole_kib as f64 / streamed_kib.max(held_kib).max(4) as f64
        );
    }
}

/// What `f` returns, its time (s) and the peak resident memory it added (KiB).
fn peak<T>(f: impl FnOnce() -> T) -> (T, f64, u64) {
    let kib = |field: &str| -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    // Resets VmHWM to the current resident size (Linux ≥ 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS");
    let before = kib("VmRSS:");
    let t = Instant::now();
    let out = f();
    let secs = t.elapsed().as_secs_f64();
    (out, secs, kib("VmHWM:").saturating_sub(before))
}

fn tall() {
    let p = Params {
        arith: Arith::F64,
        ..Params::u32(1 << 20, 65_536, 64, 19)
    };
    let req = ChallengeRequest {
        nonce: "bench-nonce".into(),
        params: p,
        open_seed: Some("seed".into()),
    };
    let uuid = "GPU-bench";
    let seeds = workload::seeds(&req.nonce, uuid);
    // The node's hashing: every row's leaf, from cells as a device returns them.
    let cells: Vec<u64> = (0..p.cols)
        .map(|c| workload::elem_f64(seeds.b, u64::from(c)).to_bits())
        .collect();
    let t = Instant::now();
    let mut leaves: Vec<_> = (0..p.rows)
        .map(|i| workload::leaf(i, RowRef::F64(&cells)))
        .collect();
    let hashing = t.elapsed();
    // Only the sampled rows computed (the rest as above): enough for the hub's check.
    let sampled = sample_rows("seed", &req.nonce, uuid, &p);
    for (&i, cells) in sampled.iter().zip(workload::rows_streamed(&p, &seeds, &sampled)) {
        leaves[i as usize] = workload::leaf(i, cells.as_row());
    }
    let c = Computed::new(uuid, leaves, 1).unwrap();
    let (commit, opening) = (c.commit(), c.open(&req, "seed"));
    let runs = 3;
    let t = Instant::now();
    for _ in 0..runs {
        check_opening(&req, "seed", &commit, &opening).unwrap();
    }
    let hub = t.elapsed() / runs;
    println!();
    println!(
        "| tall rows×depth×cols | arith | samples | node ops | hub ops | node: hash all rows (one core) | hub check |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.2} s | {:.0} ms |",
        shape_cells(&p),
        hashing.as_secs_f64(),
        hub.as_secs_f64() * 1e3
    );
}

/// The shape columns both tables start with: rows×depth×cols, arith, samples, node ops,
/// hub ops.
fn shape_cells(p: &Params) -> String {
    format!(
        "{}×{}×{} | {} | {} | {:.2e} | {:.2e}",
        p.rows,
        p.depth,
        p.cols,
        p.arith.as_str(),
        p.samples,
        p.node_ops() as f64,
        p.hub_ops() as f64
    )
}
