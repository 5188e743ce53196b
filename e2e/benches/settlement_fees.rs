//! Benchmark: settlement on a real local Solana test validator. Records per transaction
//! and the fee per 1000 GPU-hours recorded, batched (many records and aggregated transfers
//! per transaction, a Merkle root in the memo) against one record per transaction, in the
//! same run; and the batched settlement throughput at finalized commitment.
//! Run: `cargo bench -p gpufed-e2e --bench settlement_fees` (`-- --records N` to size it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/chainsupport/mod.rs"]
mod chainsupport;

use std::time::{Duration, Instant};

use gpufed_chain::Settler;
use gpufed_chain::store::MemoryStore;
use gpufed_settlement::{Commitment, PlanConfig, UsageRecord};

struct Run {
    records: usize,
    transactions: usize,
    fee_lamports: u64,
    gpu_hours: f64,
    elapsed: Duration,
}

async fn settle(chain: &chainsupport::Chain, recs: Vec<UsageRecord>, per_batch: usize) -> Run {
    let mut cfg = chain.settler_config();
    cfg.plan = PlanConfig {
        max_records_per_batch: per_batch,
        max_in_flight_batches: if per_batch == 1 { 32 } else { 4 },
        ..Default::default()
    };
    let mut settler = Settler::open(chain.rpc.clone(), chain.authority(), MemoryStore::default(), cfg)
        .await
        .unwrap();
    let gpu_hours = recs.iter().map(|r| r.gpu_seconds).sum::<u64>() as f64 / 3600.0;
    let n = recs.len();
    settler.append(recs).await.unwrap();
    let t = Instant::now();
    let report = settler
        .drain(Duration::from_secs(1800), Duration::from_millis(200))
        .await
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(report.backlog, 0, "{report:?}");
    let mut fee = 0;
    let mut transactions = 0;
    for b in settler.journal().batches() {
        let sig = b.tx.signature().unwrap();
        let tx = chain
            .rpc
            .transaction_when_served(sig, Commitment::Finalized, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        fee += tx["meta"]["fee"].as_u64().unwrap();
        transactions += 1;
    }
    Run {
        records: n,
        transactions,
        fee_lamports: fee,
        gpu_hours,
        elapsed,
    }
}

fn line(name: &str, r: &Run) -> f64 {
    let per_1000h = r.fee_lamports as f64 * 1000.0 / r.gpu_hours;
    println!(
        "{name:>22}: {:>5} records in {:>4} tx ({:>7.1} records/tx), fee {:>9} lamports, \
         {:>12.0} lamports per 1000 GPU-h, {:>6.1} records/s (finalized)",
        r.records,
        r.transactions,
        r.records as f64 / r.transactions as f64,
        r.fee_lamports,
        per_1000h,
        r.records as f64 / r.elapsed.as_secs_f64()
    );
    per_1000h
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: usize = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(4000);
    let tenants = ["t-0", "t-1", "t-2", "t-3"];
    let providers = ["p-0", "p-1", "p-2", "p-3", "p-4", "p-5", "p-6", "p-7"];
    let chain = chainsupport::Chain::start(&tenants, &providers, 1_000_000_000_000).await;
    // One-minute slices of 8 GPUs; jobs spread over every (tenant, provider) pair.
    let jobs = records.div_ceil(tenants.len() * providers.len() * 5).max(1);
    let batched: Vec<UsageRecord> = chainsupport::records("b", &tenants, &providers, jobs, 5, 1_700_000_000);
    let single: Vec<UsageRecord> =
        chainsupport::records("s", &tenants[..1], &providers[..2], 10, 5, 1_700_000_000);
    let b = settle(&chain, batched, 4096).await;
    let s = settle(&chain, single, 1).await;
    println!("settlement on solana-test-validator 3.1.12 (127.0.0.1), commitment finalized");
    let fb = line("batched (Merkle memo)", &b);
    let fs = line("one record per tx", &s);
    println!(
        "fee per 1000 GPU-h, batched / one-per-tx: {:.5} ({:.0}x cheaper)",
        fb / fs,
        fs / fb
    );
}
