//! What a challenge costs: the hub's check of one GPU's answer (recomputing the sampled
//! rows and their proofs) against the node's whole workload computed on this CPU by the
//! reference implementation — the work a node without a GPU would have to do in time.
//!
//! `cargo bench -p gpufed-trust --bench challenge` (prints a table; BENCHMARKS.md).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use gpufed_trust::Params;
use gpufed_trust::protocol::{ChallengeRequest, Computed};
use gpufed_trust::verify::check_opening;
use gpufed_trust::workload::Arith;

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
            "| {}×{}×{} | {} | {} | {:.2e} | {:.2e} | {:.3} s | {:.2} ms | {:.0}× |",
            p.rows,
            p.depth,
            p.cols,
            p.arith.as_str(),
            p.samples,
            p.node_ops() as f64,
            p.hub_ops() as f64,
            node.as_secs_f64(),
            hub.as_secs_f64() * 1e3,
            node.as_secs_f64() / hub.as_secs_f64()
        );
    }
}
