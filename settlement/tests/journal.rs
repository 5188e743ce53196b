//! Journal, escrow and chunking tests (no chain model needed); the transaction machine's
//! are in `tx_machine.rs`, the stake machine's in `stake_machine.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::chunks::ChunkError;
use gpufed_settlement::machine::SigStatus;
use gpufed_settlement::{
    AppendOutcome, Commitment, Journal, JournalError, MachineConfig, Observation, PlanConfig, RecordStatus,
};

use common::{Rng, intent, query, records, settle};

#[test]
fn append_dedupes_and_rejects_conflicts() {
    let recs = records(2, 3, 2, &mut Rng(1));
    let mut j = Journal::new();
    assert_eq!(j.append(recs[0][0].clone()).unwrap(), AppendOutcome::Inserted);
    assert_eq!(j.append(recs[0][0].clone()).unwrap(), AppendOutcome::Duplicate);
    let mut conflicting = recs[0][0].clone();
    conflicting.gpu_seconds = conflicting.gpu_seconds.saturating_sub(1);
    conflicting.cumulative_gpu_seconds = conflicting.gpu_seconds;
    conflicting.amount =
        gpufed_settlement::amount_for(conflicting.gpu_seconds, conflicting.price_per_gpu_hour).unwrap();
    assert_eq!(j.append(conflicting), Err(JournalError::Conflict(recs[0][0].id)));
    let mut invalid = recs[0][1].clone();
    invalid.amount += 1;
    assert!(matches!(j.append(invalid), Err(JournalError::Invalid(_))));
    assert_eq!(j.backlog_records(), 1);
}

#[test]
fn failed_batch_returns_records_once_and_prune_keeps_dedupe() {
    let recs: Vec<_> = records(3, 4, 2, &mut Rng(2)).into_iter().flatten().collect();
    let mut j = Journal::new();
    for r in &recs {
        j.append(r.clone()).unwrap();
    }
    let cfg = PlanConfig::default();
    let b0 = j.plan_batch(&cfg, &BTreeSet::new(), 0).unwrap();
    assert!(j.pending().is_empty());
    settle(&mut j, b0, "fail", Some("insufficient funds".into()));
    assert_eq!(j.pending().len(), recs.len(), "failed batch releases its records");
    let b1 = j.plan_batch(&cfg, &BTreeSet::new(), 0).unwrap();
    // Ticking the failed batch again must not release records now held by b1.
    j.tick(10_000, &MachineConfig::default());
    assert!(j.pending().is_empty());
    settle(&mut j, b1, "ok", None);
    assert!(
        recs.iter()
            .all(|r| j.status(&r.id) == Some(RecordStatus::Settled(b1)))
    );
    let proof = j.proof(&recs[0].id).unwrap();
    assert!(gpufed_settlement::verify_proof(
        &recs[0],
        &proof.proof,
        &proof.root
    ));
    let archived = j.prune_settled();
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].records.len(), recs.len());
    assert!(
        archived[0]
            .records
            .iter()
            .all(|(r, p)| gpufed_settlement::verify_proof(r, p, &archived[0].batch.root))
    );
    // Re-metering a pruned interval is still a no-op.
    assert_eq!(j.append(recs[0].clone()).unwrap(), AppendOutcome::Duplicate);
    assert_eq!(j.backlog_records(), 0);
}

#[test]
fn chunks_roundtrip_and_reject_gaps() {
    let recs: Vec<_> = records(5, 5, 3, &mut Rng(3)).into_iter().flatten().collect();
    let mut j = Journal::new();
    for r in &recs {
        j.append(r.clone()).unwrap();
    }
    j.plan_batch(
        &PlanConfig {
            max_records_per_batch: 7,
            ..PlanConfig::default()
        },
        &BTreeSet::new(),
        0,
    )
    .unwrap();
    let (h, chunks) = j.to_chunks(4);
    assert_eq!(chunks.len(), 7);
    let back = Journal::from_chunks(h.clone(), chunks.clone()).unwrap();
    assert_eq!(back, j);
    assert_eq!(back.pending().len(), recs.len() - 7);
    let mut missing = chunks.clone();
    missing.remove(2);
    assert!(matches!(
        Journal::from_chunks(h.clone(), missing),
        Err(ChunkError::Inconsistent { .. })
    ));
    let json = serde_json::to_string(&j).unwrap();
    assert_eq!(serde_json::from_str::<Journal>(&json).unwrap(), j);
}

#[test]
fn planner_respects_tx_size_and_escrow_holds_uncovered_tenants() {
    // 30 tenants x 30 providers, one record each: fully distinct pairs.
    let mut recs = Vec::new();
    for i in 0..30 {
        let job = gpufed_settlement::JobRef {
            namespace: format!("t{i}"),
            name: "j".into(),
            uid: format!("u{i}"),
        };
        let mut m = gpufed_settlement::AttemptMeter::new(job, 0, format!("p{i}"), format!("t{i}"), 3_600_000);
        recs.push(m.record(0, 100, 1).unwrap());
    }
    let mut j = Journal::new();
    for r in &recs {
        j.append(r.clone()).unwrap();
    }
    let cfg = PlanConfig::default();
    let id = j.plan_batch(&cfg, &BTreeSet::new(), 0).unwrap();
    let b = j.batch(id).unwrap();
    assert_eq!(
        b.transfers.len(),
        10,
        "10 fully distinct transfers fit 1232 bytes"
    );
    assert!(b.estimated_tx_bytes + cfg.tx.safety_margin <= 1232);
    assert_eq!(b.total_amount, 10 * 100_000);
    // Escrow: t0..t9 cover their in-flight batch, t10 has nothing, t11 enough; t10 is
    // reported and held, t11 batched.
    let mut balances: BTreeMap<String, u64> = (0..10).map(|i| (format!("t{i}"), 100_000)).collect();
    balances.insert("t11".to_string(), 100_000u64);
    for i in 12..30 {
        balances.insert(format!("t{i}"), 1_000_000u64);
    }
    let (planned, short) = j.plan_covered_batch(&cfg, &balances, &BTreeSet::new(), 0);
    assert_eq!(short.len(), 1);
    assert_eq!(
        (short[0].tenant.as_str(), short[0].needed, short[0].available),
        ("t10", 100_000, 0)
    );
    let b = j.batch(planned.unwrap()).unwrap();
    assert!(b.transfers.iter().all(|t| t.tenant != "t10"));
    assert!(b.transfers.iter().any(|t| t.tenant == "t11"));
}

#[test]
fn records_of_a_provider_without_a_payout_account_wait_and_hold_up_no_one() {
    // A provider deleted (or its wallet invalid) with records pending: a batch paying it
    // could not be signed, and batches run in order, so it must not be planned at all.
    let by_job = records(6, 3, 3, &mut Rng(4));
    let mut j = Journal::new();
    for r in by_job.iter().flatten() {
        j.append(r.clone()).unwrap();
    }
    let gone = by_job[1][0].provider.clone();
    let unpaid = BTreeSet::from([gone.clone()]);
    let rich: BTreeMap<String, u64> = (0..3).map(|i| (format!("tenant-{i}"), u64::MAX / 8)).collect();
    let cfg = PlanConfig::default();
    let (planned, short) = j.plan_covered_batch(&cfg, &rich, &unpaid, 0);
    assert!(short.is_empty(), "{short:?}");
    let b = j.batch(planned.unwrap()).unwrap();
    assert!(
        b.transfers.iter().all(|t| t.provider != gone),
        "{:?}",
        b.transfers
    );
    let waiting: Vec<_> = j.pending().into_iter().map(|r| r.provider.clone()).collect();
    assert_eq!(waiting.len(), 6, "two jobs of 3 records");
    assert!(waiting.iter().all(|p| *p == gone));
    // Nothing else to plan while it has no account; once it has one, its records go.
    assert_eq!(j.plan_covered_batch(&cfg, &rich, &unpaid, 0).0, None);
    let (planned, _) = j.plan_covered_batch(&cfg, &rich, &BTreeSet::new(), 0);
    let b = j.batch(planned.unwrap()).unwrap();
    assert!(b.transfers.iter().all(|t| t.provider == gone));
    assert!(j.pending().is_empty());
}

#[test]
fn a_free_jobs_records_are_anchored_but_move_no_tokens() {
    // A job at price 0 in a namespace that has no escrow: its records go into a batch (the
    // memo's root proves them) but make no transfer, which would need accounts it lacks.
    let free = gpufed_settlement::JobRef {
        namespace: "free".into(),
        name: "demo".into(),
        uid: "uid-free".into(),
    };
    let mut m = gpufed_settlement::AttemptMeter::new(free, 1, "p0".into(), "free".into(), 0);
    let mut j = Journal::new();
    let zero = m.record(0, 60, 1).unwrap();
    assert_eq!(zero.amount, 0);
    j.append(zero.clone()).unwrap();
    let paying = records(1, 1, 1, &mut Rng(5)).remove(0).remove(0);
    j.append(paying.clone()).unwrap();
    let b = j.plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0).unwrap();
    let b = j.batch(b).unwrap();
    assert!(b.records.contains(&zero.id) && b.records.contains(&paying.id));
    assert!(
        b.transfers.iter().all(|t| t.tenant != "free" && t.amount > 0),
        "{:?}",
        b.transfers
    );
    assert_eq!(b.total_amount, paying.amount);
}

#[test]
fn billing_totals_count_each_settled_record_once_and_survive_pruning() {
    let cfg = MachineConfig::default();
    let mut j = Journal::new();
    let job = common::job(0);
    let mut m = j.meter(job.clone(), 1, "p", &job.namespace, 3_600_000_000);
    for s in 0..5u64 {
        j.append(m.record(s * 10, s * 10 + 10, 2).unwrap()).unwrap();
    }
    let b = j.billing(&job.uid);
    assert_eq!((b.records, b.amount, b.settled.records), (5, 5 * 20_000_000, 0));
    let id = j.plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0).unwrap();
    let a = j.tick(0, &cfg);
    let sign_q = query(&[a[0].1.clone()]);
    let a = j
        .step(
            id,
            0,
            Observation::Signed {
                query: sign_q,
                intent: intent("sigA", 100),
            },
            &cfg,
        )
        .unwrap();
    j.step(id, 0, Observation::Broadcasted { query: query(&a) }, &cfg)
        .unwrap();
    let a = j.tick(10_000, &cfg);
    let status = Observation::SignatureStatus {
        query: query(&[a[0].1.clone()]),
        status: Some(SigStatus {
            slot: 9,
            commitment: Commitment::Finalized,
            error: None,
        }),
    };
    j.step(id, 10_000, status, &cfg).unwrap();
    let b = j.billing(&job.uid);
    assert_eq!(b.settled.records, 5);
    assert_eq!(b.settled.amount, b.amount);
    assert_eq!(b.settled.signatures, vec!["sigA".to_string()]);
    // A repeated final observation (after a restart) credits nothing twice.
    let a = j.restarted(20_000, &cfg);
    assert!(a.is_empty(), "a settled batch is not resolved again: {a:?}");
    j.prune_settled();
    let after = j.billing(&job.uid);
    assert_eq!(after, b, "pruning keeps the job's billing");
    // Metering continues after pruning.
    let mut m = j.meter(job.clone(), 1, "p", &job.namespace, 3_600_000_000);
    assert_eq!(m.metered_until(), Some(50));
    j.append(m.record(50, 60, 2).unwrap()).unwrap();
    assert_eq!(j.billing(&job.uid).records, 6);
}

#[test]
fn only_a_batch_nothing_was_signed_for_can_be_withdrawn() {
    let recs: Vec<_> = records(3, 3, 2, &mut Rng(11)).into_iter().flatten().collect();
    let mut j = Journal::new();
    for r in &recs {
        j.append(r.clone()).unwrap();
    }
    let before: Vec<_> = j.pending().into_iter().map(|r| r.id).collect();
    let plan = PlanConfig::default();
    let cfg = MachineConfig::default();
    assert_eq!(j.withdraw_unsigned(99), Err(JournalError::UnknownBatch(99)));
    // Pending, never signed: taken back, its records pending in their append order.
    let b0 = j.plan_batch(&plan, &BTreeSet::new(), 0).unwrap();
    assert!(j.pending().is_empty());
    let taken = j.withdraw_unsigned(b0).unwrap();
    assert_eq!(taken.id, b0);
    assert!(j.batch(b0).is_none());
    let after: Vec<_> = j.pending().into_iter().map(|r| r.id).collect();
    assert_eq!(after, before);
    assert!(
        recs.iter()
            .all(|r| j.status(&r.id) == Some(RecordStatus::Pending))
    );
    assert!(j.proof(&recs[0].id).is_none());
    // The indexes match a journal rebuilt from the same data.
    assert_eq!(j, Journal::from(j.data().clone()));
    // In flight (an intent persisted, maybe broadcast): refused, nothing changes.
    let b1 = j.plan_batch(&plan, &BTreeSet::new(), 0).unwrap();
    let a = j.step(b1, 0, Observation::Restarted, &cfg).unwrap();
    j.step(
        b1,
        0,
        Observation::Signed {
            query: query(&a),
            intent: intent("sig-b1", 10),
        },
        &cfg,
    )
    .unwrap();
    let held = j.clone();
    assert_eq!(j.withdraw_unsigned(b1), Err(JournalError::Signed(b1)));
    assert_eq!(j, held);
    assert!(
        recs.iter()
            .all(|r| j.status(&r.id) == Some(RecordStatus::InBatch(b1)))
    );
    // Its blockhash expired and the signature is unknown after that: proven dead, the
    // batch is Pending again and may be taken back.
    let a = j.step(b1, 0, Observation::Restarted, &cfg).unwrap();
    let a = j
        .step(
            b1,
            0,
            Observation::RpcError {
                query: query(&a),
                message: "refused".into(),
            },
            &cfg,
        )
        .unwrap();
    assert!(a.is_empty());
    let a = j.step(b1, 60_000, Observation::Tick, &cfg).unwrap();
    let a = j
        .step(
            b1,
            60_000,
            Observation::BlockHeight {
                query: query(&a),
                height: 11,
                slot: 20,
            },
            &cfg,
        )
        .unwrap();
    j.step(
        b1,
        60_000,
        Observation::SignatureStatus {
            query: query(&a),
            status: None,
        },
        &cfg,
    )
    .unwrap();
    assert!(j.withdraw_unsigned(b1).is_ok());
    // Settled: refused.
    let b2 = j.plan_batch(&plan, &BTreeSet::new(), 0).unwrap();
    settle(&mut j, b2, "sig-b2", None);
    assert_eq!(j.withdraw_unsigned(b2), Err(JournalError::Signed(b2)));
    assert!(
        recs.iter()
            .all(|r| j.status(&r.id) == Some(RecordStatus::Settled(b2)))
    );
}
