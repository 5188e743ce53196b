//! Shared test fixtures: deterministic RNG and record generation.
#![allow(dead_code, clippy::unwrap_used)]

use gpufed_settlement::{AttemptMeter, JobRef, UsageRecord};

/// SplitMix64: deterministic, seedable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

pub fn job(i: usize) -> JobRef {
    JobRef {
        namespace: format!("tenant-{}", i % 3),
        name: format!("job-{i}"),
        uid: format!("uid-{i}"),
    }
}

/// `jobs` jobs × `per_job` one-minute records; tenant = namespace, provider by job index.
pub fn records(jobs: usize, per_job: usize, providers: usize, rng: &mut Rng) -> Vec<Vec<UsageRecord>> {
    (0..jobs)
        .map(|i| {
            let j = job(i);
            let price = 500_000 + rng.below(4_000_000);
            let mut m = AttemptMeter::new(
                j.clone(),
                1,
                format!("prov-{}", i % providers),
                j.namespace,
                price,
            );
            let gpus = 1 + rng.below(8) as u32;
            (0..per_job as u64)
                .map(|k| {
                    let start = 1_700_000_000 + k * 60;
                    let used = rng.below(u64::from(gpus) * 60 + 1);
                    m.record_with(start, start + 60, gpus, used).unwrap()
                })
                .collect()
        })
        .collect()
}

/// A signed transaction's intent (fixed blockhash and body) with the given signature and
/// last valid block height.
pub fn intent(sig: &str, lvbh: u64) -> gpufed_settlement::machine::Intent {
    gpufed_settlement::machine::Intent {
        signature: sig.into(),
        blockhash: "bh".into(),
        last_valid_block_height: lvbh,
        transaction: "tx".into(),
        signed_at_slot: None,
    }
}

/// The query id of the first action (which must carry one).
pub fn query(actions: &[gpufed_settlement::Action]) -> gpufed_settlement::machine::QueryId {
    use gpufed_settlement::Action;
    match actions.first() {
        Some(Action::SignAndPersistIntent { query })
        | Some(Action::Broadcast { query, .. })
        | Some(Action::QuerySignatureStatus { query, .. })
        | Some(Action::QueryBlockHeight { query }) => *query,
        other => panic!("no query in {other:?}"),
    }
}

/// Runs batch `id` to a final status at finalized: `error` makes it fail.
pub fn settle(j: &mut gpufed_settlement::Journal, id: u64, sig: &str, error: Option<String>) {
    let cfg = gpufed_settlement::MachineConfig::default();
    let a = j
        .step(id, 0, gpufed_settlement::Observation::Restarted, &cfg)
        .unwrap();
    let a = j
        .step(
            id,
            0,
            gpufed_settlement::Observation::Signed {
                query: query(&a),
                intent: intent(sig, 10),
            },
            &cfg,
        )
        .unwrap();
    j.step(
        id,
        0,
        gpufed_settlement::Observation::Broadcasted { query: query(&a) },
        &cfg,
    )
    .unwrap();
    let a = j
        .step(id, 0, gpufed_settlement::Observation::Restarted, &cfg)
        .unwrap();
    let st = gpufed_settlement::machine::SigStatus {
        slot: 1,
        commitment: gpufed_settlement::Commitment::Finalized,
        error,
    };
    j.step(
        id,
        0,
        gpufed_settlement::Observation::SignatureStatus {
            query: query(&a),
            status: Some(st),
        },
        &cfg,
    )
    .unwrap();
}
