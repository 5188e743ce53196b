//! Journal, machine, escrow, chunking and stake tests (no chain model needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use gpufed_settlement::chunks::ChunkError;
use gpufed_settlement::machine::{self, Intent, SigStatus, step};
use gpufed_settlement::stake::{
    self, DepositTx, EffectKind, RejectReason, StakeAction, StakeConfig, StakeEvent, StakePhase, StakePolicy,
    StakeState, TokenMove,
};
use gpufed_settlement::{
    Action, AppendOutcome, Commitment, Journal, JournalError, MachineConfig, Observation, PlanConfig,
    RecordStatus, TxPhase, TxState, hash::sha256,
};

use common::{Rng, records};

fn intent(sig: &str, lvbh: u64) -> Intent {
    Intent {
        signature: sig.into(),
        blockhash: "bh".into(),
        last_valid_block_height: lvbh,
        transaction: "tx".into(),
    }
}

fn query(actions: &[Action]) -> machine::QueryId {
    match actions.first() {
        Some(Action::SignAndPersistIntent { query })
        | Some(Action::Broadcast { query, .. })
        | Some(Action::QuerySignatureStatus { query, .. })
        | Some(Action::QueryBlockHeight { query }) => *query,
        other => panic!("no query in {other:?}"),
    }
}

#[test]
fn stale_unknown_status_cannot_resign() {
    let cfg = MachineConfig::default();
    let s = TxState::new(0);
    let (s, a) = step(&s, 0, Observation::Tick, &cfg).unwrap();
    let (s, a) = step(
        &s,
        0,
        Observation::Signed {
            query: query(&a),
            intent: intent("sig1", 100),
        },
        &cfg,
    )
    .unwrap();
    assert!(matches!(a[0], Action::Broadcast { .. }));
    assert!(
        matches!(s.phase, TxPhase::InFlight { .. }),
        "intent is in the state returned with Broadcast"
    );
    let (s, _) = step(&s, 0, Observation::Broadcasted { query: query(&a) }, &cfg).unwrap();
    let (s, a) = step(&s, 5_000, Observation::Tick, &cfg).unwrap();
    let status_q = query(&a);
    // Unknown → the machine checks the height first, never re-signs directly.
    let (s, a) = step(
        &s,
        5_000,
        Observation::SignatureStatus {
            query: status_q,
            status: None,
        },
        &cfg,
    )
    .unwrap();
    assert!(matches!(a[0], Action::QueryBlockHeight { .. }));
    // Height not past lvbh: re-broadcast the same bytes.
    let (s2, a2) = step(
        &s,
        5_000,
        Observation::BlockHeight {
            query: query(&a),
            height: 100,
        },
        &cfg,
    )
    .unwrap();
    assert!(matches!(&a2[0], Action::Broadcast { signature, .. } if signature == "sig1"));
    assert_eq!(s2.resigns, 0);
    // Height past lvbh, then a *stale* unknown (issued before the height) is refused.
    let (s3, a3) = step(
        &s,
        5_000,
        Observation::BlockHeight {
            query: query(&a),
            height: 101,
        },
        &cfg,
    )
    .unwrap();
    let stale = step(
        &s3,
        5_000,
        Observation::SignatureStatus {
            query: status_q,
            status: None,
        },
        &cfg,
    );
    assert!(matches!(
        stale,
        Err(machine::MachineError::UnexpectedObservation(_))
    ));
    // A fresh unknown after the height: proven dead, re-sign.
    let (s4, a4) = step(
        &s3,
        5_000,
        Observation::SignatureStatus {
            query: query(&a3),
            status: None,
        },
        &cfg,
    )
    .unwrap();
    assert!(matches!(a4[0], Action::SignAndPersistIntent { .. }));
    assert_eq!(s4.resigns, 1);
    assert_eq!(s4.expired_signatures, vec!["sig1".to_string()]);
    // Re-signing with the dead signature is refused.
    let again = step(
        &s4,
        5_000,
        Observation::Signed {
            query: query(&a4),
            intent: intent("sig1", 300),
        },
        &cfg,
    );
    assert!(matches!(again, Err(machine::MachineError::InvalidIntent(_))));
}

#[test]
fn settled_only_at_the_configured_commitment_and_rpc_errors_back_off() {
    let cfg = MachineConfig::default();
    let (s, a) = step(&TxState::new(9), 0, Observation::Tick, &cfg).unwrap();
    let (s, a) = step(
        &s,
        0,
        Observation::Signed {
            query: query(&a),
            intent: intent("s", 100),
        },
        &cfg,
    )
    .unwrap();
    let (s, a) = step(
        &s,
        0,
        Observation::RpcError {
            query: query(&a),
            message: "down".into(),
        },
        &cfg,
    )
    .unwrap();
    assert!(a.is_empty());
    assert_eq!(s.failures, 1);
    assert!(s.wake_at_ms >= 800 && s.wake_at_ms <= 1_000);
    let (_, none) = step(&s, 500, Observation::Tick, &cfg).unwrap();
    assert!(none.is_empty(), "no action before the backoff delay");
    let (s, a) = step(&s, 1_000, Observation::Tick, &cfg).unwrap();
    assert!(matches!(a[0], Action::Broadcast { .. }));
    let (s, _) = step(&s, 1_000, Observation::Broadcasted { query: query(&a) }, &cfg).unwrap();
    assert_eq!(s.failures, 0);
    let (s, a) = step(&s, 4_000, Observation::Tick, &cfg).unwrap();
    let confirmed = SigStatus {
        slot: 7,
        commitment: Commitment::Confirmed,
        error: None,
    };
    let (s, a) = step(
        &s,
        4_000,
        Observation::SignatureStatus {
            query: query(&a),
            status: Some(confirmed),
        },
        &cfg,
    )
    .unwrap();
    assert!(a.is_empty());
    assert!(matches!(s.phase, TxPhase::Landed { .. }));
    let (s, a) = step(&s, 9_000, Observation::Tick, &cfg).unwrap();
    let fin = SigStatus {
        slot: 7,
        commitment: Commitment::Finalized,
        error: None,
    };
    let (s, a) = step(
        &s,
        9_000,
        Observation::SignatureStatus {
            query: query(&a),
            status: Some(fin),
        },
        &cfg,
    )
    .unwrap();
    assert_eq!(
        a,
        vec![Action::MarkSettled {
            signature: "s".into(),
            slot: 7
        }]
    );
    assert!(s.is_terminal());
    let (_, after) = step(&s, 99_000, Observation::Restarted, &cfg).unwrap();
    assert!(after.is_empty(), "a settled effect never acts again");
}

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

fn settle(j: &mut Journal, id: u64, sig: &str, error: Option<String>) {
    let cfg = MachineConfig::default();
    let a = j.step(id, 0, Observation::Restarted, &cfg).unwrap();
    let a = j
        .step(
            id,
            0,
            Observation::Signed {
                query: query(&a),
                intent: intent(sig, 10),
            },
            &cfg,
        )
        .unwrap();
    j.step(id, 0, Observation::Broadcasted { query: query(&a) }, &cfg)
        .unwrap();
    let a = j.step(id, 0, Observation::Restarted, &cfg).unwrap();
    let st = SigStatus {
        slot: 1,
        commitment: Commitment::Finalized,
        error,
    };
    j.step(
        id,
        0,
        Observation::SignatureStatus {
            query: query(&a),
            status: Some(st),
        },
        &cfg,
    )
    .unwrap();
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
    let (planned, short) = j.plan_covered_batch(&cfg, &balances, 0);
    assert_eq!(short.len(), 1);
    assert_eq!(
        (short[0].tenant.as_str(), short[0].needed, short[0].available),
        ("t10", 100_000, 0)
    );
    let b = j.batch(planned.unwrap()).unwrap();
    assert!(b.transfers.iter().all(|t| t.tenant != "t10"));
    assert!(b.transfers.iter().any(|t| t.tenant == "t11"));
}

fn stake_cfg() -> StakeConfig {
    StakeConfig {
        stake_mint: "MINT".into(),
        vault: "VAULT".into(),
        unbonding_period_ms: 1_000,
        dispute_window_ms: 500,
        deposit_not_found_grace_ms: 100,
    }
}

fn deposit(from: &str, to: &str, amount: u64) -> DepositTx {
    DepositTx {
        commitment: Commitment::Finalized,
        error: None,
        moves: vec![TokenMove {
            mint: "MINT".into(),
            from_owner: from.into(),
            to: to.into(),
            amount,
        }],
    }
}

fn stake_step(s: &StakeState, now: u64, ev: StakeEvent) -> (StakeState, Vec<StakeAction>) {
    stake::step(s, now, ev, &stake_cfg(), &MachineConfig::default()).unwrap()
}

#[test]
fn stake_deposit_verification_rejects_clearly() {
    let s = StakeState::new("alice".into(), 1_000, "depsig".into(), 1);
    let (_, a) = stake_step(&s, 0, StakeEvent::Tick);
    assert_eq!(
        a,
        vec![StakeAction::VerifyDeposit {
            signature: "depsig".into()
        }]
    );
    let cases = [
        (Some(deposit("bob", "VAULT", 1_000)), RejectReason::WrongStaker),
        (
            Some(deposit("alice", "VAULT", 999)),
            RejectReason::InsufficientAmount {
                stated: 1_000,
                found: 999,
            },
        ),
        (
            Some(deposit("alice", "ELSEWHERE", 1_000)),
            RejectReason::NotIntoVault,
        ),
    ];
    for (d, reason) in cases {
        let (r, _) = stake_step(&s, 0, StakeEvent::Deposit(d));
        assert_eq!(r.phase, StakePhase::Rejected { reason });
    }
    // A fake signature: retried within the grace period, then rejected.
    let (r, _) = stake_step(&s, 0, StakeEvent::Deposit(None));
    assert_eq!(r.phase, StakePhase::Pending);
    let (r, _) = stake_step(&r, 100, StakeEvent::Deposit(None));
    assert_eq!(
        r.phase,
        StakePhase::Rejected {
            reason: RejectReason::DepositNotFound
        }
    );
    assert_eq!(
        RejectReason::DepositNotFound.condition_reason(),
        "DepositNotFound"
    );
    // Not finalized yet: wait.
    let mut pending = deposit("alice", "VAULT", 1_000);
    pending.commitment = Commitment::Confirmed;
    let (r, _) = stake_step(&s, 0, StakeEvent::Deposit(Some(pending)));
    assert_eq!(r.phase, StakePhase::Pending);
    let (r, _) = stake_step(&s, 0, StakeEvent::Deposit(Some(deposit("alice", "VAULT", 1_500))));
    assert_eq!((r.phase, r.bonded), (StakePhase::Bonded, 1_500));
    assert_eq!(
        stake::duplicate_deposits([("a", "x"), ("b", "x"), ("c", "y")]),
        vec![("x".into(), vec!["a".into(), "b".into()])]
    );
}

/// Runs an effect's transaction to Done; returns how many times it was signed.
fn run_effect(mut s: StakeState, now: u64, kind: EffectKind) -> (StakeState, u32) {
    let mut signed = 0;
    let (n, mut actions) = stake_step(&s, now, StakeEvent::Restarted);
    s = n;
    for _ in 0..10 {
        let Some(StakeAction::Tx { action, .. }) = actions.pop() else {
            break;
        };
        let obs = match action {
            Action::SignAndPersistIntent { query } => {
                signed += 1;
                Observation::Signed {
                    query,
                    intent: intent(&format!("sig{signed}"), 10),
                }
            }
            Action::Broadcast { query, .. } => Observation::Broadcasted { query },
            Action::QuerySignatureStatus { query, .. } => Observation::SignatureStatus {
                query,
                status: Some(SigStatus {
                    slot: 3,
                    commitment: Commitment::Finalized,
                    error: None,
                }),
            },
            Action::MarkSettled { .. } => break,
            other => panic!("unexpected {other:?}"),
        };
        let (n, a) = stake_step(&s, now, StakeEvent::Tx(kind, obs));
        s = n;
        actions = a;
        if actions.is_empty() {
            let (n, a) = stake_step(&s, now + 10_000, StakeEvent::Tick);
            s = n;
            actions = a;
        }
    }
    (s, signed)
}

#[test]
fn stake_slash_and_unbond_execute_once_and_eligibility() {
    let s = StakeState::new("alice".into(), 1_000, "d".into(), 1);
    let (s, _) = stake_step(&s, 0, StakeEvent::Deposit(Some(deposit("alice", "VAULT", 1_000))));
    let policy = StakePolicy {
        base_per_gpu: 100,
        multipliers_bps: [("H100".to_string(), 40_000)].into_iter().collect(),
        default_multiplier_bps: 10_000,
    };
    let gpus: BTreeMap<String, u32> = [("H100".to_string(), 2), ("RTX4090".to_string(), 3)]
        .into_iter()
        .collect();
    assert_eq!(stake::required_stake(&gpus, &policy), Some(2 * 400 + 3 * 100));
    assert!(!s.eligible(&gpus, &policy));
    let fewer: BTreeMap<String, u32> = [("H100".to_string(), 2)].into_iter().collect();
    assert!(s.eligible(&fewer, &policy));
    let ev = sha256(b"evidence");
    let (s, _) = stake_step(
        &s,
        0,
        StakeEvent::RaiseSlash {
            kind: "fake-gpu".into(),
            evidence: ev,
            amount: 300,
        },
    );
    // Within the dispute window nothing executes.
    let (s, a) = stake_step(&s, 100, StakeEvent::Tick);
    assert!(a.is_empty());
    let (s, signed) = run_effect(s, 600, EffectKind::Slash);
    assert_eq!(signed, 1);
    assert_eq!(
        (s.phase.clone(), s.bonded, s.slashes.len()),
        (StakePhase::Slashed, 700, 1)
    );
    assert_eq!(s.slashes[0].evidence, ev);
    let (s, _) = stake_step(&s, 1_000, StakeEvent::RequestUnbond);
    assert!(matches!(s.phase, StakePhase::Unbonding { ends_at_ms: 2_000 }));
    let (s, a) = stake_step(&s, 1_500, StakeEvent::Tick);
    assert!(a.is_empty(), "no release before the unbonding period ends");
    let (s, signed) = run_effect(s, 2_000, EffectKind::Release);
    assert_eq!(signed, 1);
    assert_eq!((s.phase.clone(), s.bonded), (StakePhase::Released, 0));
    let (_, a) = stake_step(&s, 9_000, StakeEvent::Restarted);
    assert!(a.is_empty(), "released stake never acts again");
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
