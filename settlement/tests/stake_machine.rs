//! The stake machine without a chain model: deposits verified (or rejected with a reason),
//! slashes and unbonding executed through the settlement path exactly once, eligibility.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use gpufed_settlement::machine::SigStatus;
use gpufed_settlement::stake::{
    self, DepositTx, EffectKind, RejectReason, StakeAction, StakeConfig, StakeEvent, StakePhase, StakePolicy,
    StakeState, TokenMove,
};
use gpufed_settlement::{Action, Commitment, MachineConfig, Observation, hash::sha256};

use common::intent;

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
    // Absurd policies overflow into "no requirement can be met", never wrap or panic.
    let absurd = StakePolicy {
        base_per_gpu: u64::MAX,
        multipliers_bps: BTreeMap::new(),
        default_multiplier_bps: u32::MAX,
    };
    let many: BTreeMap<String, u32> = [("A".to_string(), u32::MAX), ("B".to_string(), u32::MAX)]
        .into_iter()
        .collect();
    assert_eq!(stake::required_stake(&many, &absurd), None);
    assert!(!s.eligible(&many, &absurd));
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
    // New evidence against a Stake slashed before, still holding 700: slashed again.
    let ev2 = sha256(b"evidence 2");
    let (s, _) = stake_step(
        &s,
        600,
        StakeEvent::RaiseSlash {
            kind: "fake-gpu".into(),
            evidence: ev2,
            amount: 100,
        },
    );
    assert!(
        s.pending_slash.is_some(),
        "a slashed Stake with tokens left answers again"
    );
    let (s, signed) = run_effect(s, 1_200, EffectKind::Slash);
    assert_eq!(signed, 1);
    assert_eq!(
        (s.phase.clone(), s.bonded, s.slashes.len()),
        (StakePhase::Slashed, 600, 2)
    );
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

/// The effect a Stake asks to sign once it is due.
fn effect_to_sign(s: &StakeState, now: u64) -> stake::Effect {
    let (_, actions) = stake_step(s, now, StakeEvent::Tick);
    actions
        .into_iter()
        .find_map(|a| match a {
            StakeAction::Tx {
                effect,
                action: Action::SignAndPersistIntent { .. },
                ..
            } => Some(effect),
            _ => None,
        })
        .expect("an effect to sign")
}

/// Two Stakes of one staker with the same amount, slashed for the same evidence and
/// released alike: their effects must never be the same transaction (signed with one
/// blockhash, one signature would land once and be counted by both).
#[test]
fn two_alike_stakes_never_sign_the_same_effect() {
    let bonded = |dep: &str| {
        let s = StakeState::new("alice".into(), 1_000, dep.into(), 1);
        stake_step(&s, 0, StakeEvent::Deposit(Some(deposit("alice", "VAULT", 1_000)))).0
    };
    let (s1, s2) = (bonded("deposit-1"), bonded("deposit-2"));
    let slash = |s: &StakeState| {
        let ev = StakeEvent::RaiseSlash {
            kind: "failed-challenge".into(),
            evidence: sha256(b"the same evidence"),
            amount: 200,
        };
        effect_to_sign(&stake_step(s, 0, ev).0, 600)
    };
    let (e1, e2) = (slash(&s1), slash(&s2));
    assert_ne!(e1, e2);
    let stake::Effect::Slash { memo, .. } = &e1 else {
        panic!("{e1:?}")
    };
    assert_eq!(
        gpufed_settlement::memo::Memo::parse(memo),
        Some(gpufed_settlement::memo::Memo::Slash {
            kind: "failed-challenge".into(),
            evidence: sha256(b"the same evidence"),
            stake: Some(gpufed_settlement::memo::stake_tag("deposit-1")),
        })
    );
    let release = |s: &StakeState| effect_to_sign(&stake_step(s, 0, StakeEvent::RequestUnbond).0, 2_000);
    let (r1, r2) = (release(&s1), release(&s2));
    assert_ne!(r1, r2);
    assert!(
        matches!(&r1, stake::Effect::Release { memo, .. } if memo.ends_with(&gpufed_settlement::memo::stake_tag("deposit-1")))
    );
}
