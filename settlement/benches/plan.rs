//! Benchmark: journal 100k usage records, plan them into batches (transfers, Merkle
//! root, memo) and compute every inclusion proof. Prints records per transaction and the
//! estimated fees against one record per transaction.
//!
//! Run: `cargo bench -p gpufed-settlement --bench plan`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Instant;

use gpufed_settlement::{AttemptMeter, JobRef, Journal, PlanConfig, verify_proof};

/// Solana base fee per signature, lamports.
const FEE_PER_SIGNATURE: u64 = 5_000;

fn scenario(name: &str, tenants: usize, providers: usize) {
    let jobs = 2_000usize;
    let per_job = 50u64;
    let build = Instant::now();
    let mut journal = Journal::new();
    let mut gpu_seconds: u64 = 0;
    for i in 0..jobs {
        let tenant = format!("tenant-{}", i % tenants);
        let job = JobRef {
            namespace: tenant.clone(),
            name: format!("job-{i}"),
            uid: format!("uid-{i:08}"),
        };
        let provider = format!("provider-{}", (i / tenants) % providers);
        let mut m = AttemptMeter::new(job, 1, provider, tenant, 2_000_000 + (i as u64 % 7) * 250_000);
        for k in 0..per_job {
            let start = 1_700_000_000 + k * 60;
            let r = m.record(start, start + 60, 1 + (i % 8) as u32).unwrap();
            gpu_seconds += r.gpu_seconds;
            journal.append(r).unwrap();
        }
    }
    let records = jobs * per_job as usize;
    let t_build = build.elapsed();

    let cfg = PlanConfig {
        max_in_flight_batches: usize::MAX,
        ..PlanConfig::default()
    };
    let plan = Instant::now();
    let mut ids = Vec::new();
    while let Some(id) = journal.plan_batch(&cfg, &BTreeSet::new(), 0) {
        ids.push(id);
    }
    let t_plan = plan.elapsed();
    assert_eq!(journal.pending().len(), 0);

    let proofs = Instant::now();
    let mut n_proofs = 0usize;
    for id in &ids {
        n_proofs += journal.batch_proofs(*id).unwrap().len();
    }
    let t_proofs = proofs.elapsed();
    assert_eq!(n_proofs, records);

    // Spot-check: proofs verify.
    let b = journal.batch(ids[0]).unwrap();
    let (rid, p) = &journal.batch_proofs(ids[0]).unwrap()[0];
    assert!(verify_proof(journal.record(rid).unwrap(), p, &b.root));

    let txs = ids.len() as u64;
    let max_bytes = journal.batches().map(|b| b.estimated_tx_bytes).max().unwrap_or(0);
    let max_transfers = journal.batches().map(|b| b.transfers.len()).max().unwrap_or(0);
    let gpu_hours = gpu_seconds as f64 / 3600.0;
    let fee_batched = txs * FEE_PER_SIGNATURE;
    let fee_single = records as u64 * FEE_PER_SIGNATURE;
    println!("scenario {name}: {records} records, {tenants} tenants x {providers} providers");
    println!(
        "  journal append           {:>9.1} ms",
        t_build.as_secs_f64() * 1e3
    );
    println!(
        "  plan (transfers+merkle)  {:>9.1} ms  ({:.0} records/s)",
        t_plan.as_secs_f64() * 1e3,
        records as f64 / t_plan.as_secs_f64()
    );
    println!(
        "  all inclusion proofs     {:>9.1} ms",
        t_proofs.as_secs_f64() * 1e3
    );
    println!(
        "  transactions {txs}, records/tx {:.0}, max transfers/tx {max_transfers}, max est. tx bytes {max_bytes}",
        records as f64 / txs as f64
    );
    println!(
        "  fee batched {fee_batched} lamports vs one-per-record {fee_single} lamports ({:.0}x); per 1000 GPU-hours: {:.0} vs {:.0} lamports",
        fee_single as f64 / fee_batched as f64,
        fee_batched as f64 / gpu_hours * 1000.0,
        fee_single as f64 / gpu_hours * 1000.0
    );
}

fn main() {
    scenario("few-pairs", 4, 4);
    scenario("many-pairs", 20, 50);
}
