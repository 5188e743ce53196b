#![allow(clippy::unwrap_used)]

use super::*;
use crate::stake::status::{StatusView, stalled, status};
use gpufed_api::ConditionStatus::{False, True, Unknown};
use gpufed_api::conditions;
use gpufed_api::stake::StakePhase as ApiPhase;
use gpufed_api::{Condition, StakeStatus};
use gpufed_settlement::stake::{ExecutedSlash, PendingSlash, RejectReason, StakeState};
use gpufed_settlement::{TxPhase, TxState};

const WALLET: &str = "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH";
const SIG: &str = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
const NOW: &str = "2026-01-01T00:00:00Z";

fn spec(amount: &str) -> StakeSpec {
    StakeSpec {
        provider: "p".into(),
        amount: amount.into(),
        deposit_signature: SIG.into(),
        staker_wallet: WALLET.into(),
        unbond: false,
    }
}

fn doc(phase: StakePhase, bonded: u64) -> StakeDoc {
    let mut s = StakeState::new(WALLET.into(), 100, SIG.into(), 1);
    s.phase = phase;
    s.bonded = bonded;
    StakeDoc::new("uid", s)
}

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cond<'a>(st: &'a StakeStatus, t: &str) -> Option<&'a Condition> {
    conditions::find(&st.conditions, t)
}

fn view(doc: &StakeDoc) -> StatusView<'_> {
    StatusView {
        doc,
        generation: Some(3),
        decimals: 6,
        held_by: None,
        note: None,
        grace_ms: 60_000,
    }
}

#[test]
fn amounts_convert_exactly_or_not_at_all() {
    assert_eq!(to_base_units("2.5", 6), Ok(2_500_000));
    assert_eq!(to_base_units("2.5", 9), Ok(2_500_000_000));
    assert_eq!(to_base_units("2.5", 1), Ok(25));
    assert!(to_base_units("2.55", 1).is_err(), "finer than the mint");
    assert!(to_base_units("x", 6).is_err());
    assert_eq!(display_amount(2_500_000, 6), "2.5");
    assert_eq!(display_amount(25, 1), "2.5");
    assert_eq!(display_amount(2_500_000_001, 9), "2.5", "cut to 6 digits");
    assert_eq!(display_amount(0, 6), "0");
}

#[test]
fn spec_is_checked() {
    let v = spec_view(&spec("250"), 6).unwrap();
    assert_eq!((v.amount, v.staker.as_str()), (250_000_000, WALLET));
    assert!(spec_view(&spec("0"), 6).is_err());
    let mut bad = spec("1");
    bad.deposit_signature = WALLET.into();
    assert!(spec_view(&bad, 6).unwrap_err().contains("depositSignature"));
    let mut bad = spec("1");
    bad.staker_wallet = "111".into();
    assert!(spec_view(&bad, 6).unwrap_err().contains("stakerWallet"));
}

fn request(hash: &str, amount: &str) -> String {
    format!(r#"{{"kind": "failed-challenge", "evidenceHash": "{hash}", "amount": "{amount}"}}"#)
}

#[test]
fn unbond_only_when_something_is_bonded() {
    let a = ann(&[]);
    assert_eq!(
        inputs(true, &a, &doc(StakePhase::Bonded, 5), 6).0,
        vec![Input::Unbond]
    );
    assert_eq!(
        inputs(true, &a, &doc(StakePhase::Slashed, 5), 6).0,
        vec![Input::Unbond]
    );
    assert!(inputs(true, &a, &doc(StakePhase::Slashed, 0), 6).0.is_empty());
    assert!(inputs(true, &a, &doc(StakePhase::Pending, 0), 6).0.is_empty());
    assert!(inputs(false, &a, &doc(StakePhase::Bonded, 5), 6).0.is_empty());
    let unbonding = StakePhase::Unbonding { ends_at_ms: 1 };
    assert!(inputs(true, &a, &doc(unbonding, 5), 6).0.is_empty());
}

#[test]
fn a_slash_request_is_raised_once() {
    let hash = "ab".repeat(32);
    let a = ann(&[(SLASH_REQUEST_ANNOTATION, &request(&hash, "1.5"))]);
    let mut d = doc(StakePhase::Bonded, 5_000_000);
    let (ins, note) = inputs(false, &a, &d, 6);
    assert_eq!(note, None);
    assert_eq!(
        ins,
        vec![Input::Raise(SlashRequest {
            kind: "failed-challenge".into(),
            evidence: Hash32::from_hex(&hash).unwrap(),
            amount: 1_500_000,
        })]
    );
    d.handled_slash_requests.push(hash.clone());
    assert!(inputs(false, &a, &d, 6).0.is_empty(), "handled already");
    // Another one waits while a slash is pending.
    d.state.pending_slash = Some(PendingSlash {
        kind: "duplicate-gpu".into(),
        evidence: Hash32([9; 32]),
        amount: 1,
        dispute_until_ms: 10,
        tx: TxState::new(1),
    });
    let other = ann(&[(SLASH_REQUEST_ANNOTATION, &request(&"cd".repeat(32), "1"))]);
    let (ins, note) = inputs(false, &other, &d, 6);
    assert!(ins.is_empty());
    assert!(note.unwrap().contains("waits"));
}

#[test]
fn invalid_slash_requests_are_reported_not_raised() {
    let d = doc(StakePhase::Bonded, 5);
    for text in [
        "not json".to_string(),
        request("zz", "1"),
        request(&"ab".repeat(32), "0"),
        request(&"ab".repeat(32), "1").replace("failed-challenge", "rumour"),
        r#"{"kind": "failed-challenge", "evidenceHash": "x", "amount": "1", "extra": 1}"#.to_string(),
    ] {
        let (ins, note) = inputs(false, &ann(&[(SLASH_REQUEST_ANNOTATION, &text)]), &d, 6);
        assert!(ins.is_empty(), "{text}");
        assert!(note.unwrap().contains(SLASH_REQUEST_ANNOTATION), "{text}");
    }
}

#[test]
fn dismiss_targets_the_pending_slash() {
    let mut d = doc(StakePhase::Bonded, 5);
    let a = ann(&[(SLASH_DISMISS_ANNOTATION, "true")]);
    assert!(inputs(false, &a, &d, 6).0.is_empty(), "nothing pending");
    d.state.pending_slash = Some(PendingSlash {
        kind: "duplicate-gpu".into(),
        evidence: Hash32([9; 32]),
        amount: 1,
        dispute_until_ms: 10,
        tx: TxState::new(1),
    });
    let hex = Hash32([9; 32]).to_hex();
    assert_eq!(inputs(false, &a, &d, 6).0, vec![Input::Dismiss(hex.clone())]);
    let by_hash = ann(&[(SLASH_DISMISS_ANNOTATION, &hex)]);
    assert_eq!(inputs(false, &by_hash, &d, 6).0, vec![Input::Dismiss(hex)]);
    let other = ann(&[(SLASH_DISMISS_ANNOTATION, &"01".repeat(32))]);
    assert!(inputs(false, &other, &d, 6).0.is_empty());
}

#[test]
fn pending_deposit_is_reconciling() {
    let d = doc(StakePhase::Pending, 0);
    let st = status(None, &view(&d), NOW);
    assert_eq!(st.phase, Some(ApiPhase::Pending));
    assert_eq!(st.bonded_amount, None);
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(cond(&st, "Reconciling").unwrap().status, True);
    assert_eq!(cond(&st, "DepositVerified").unwrap().status, Unknown);
    assert_eq!(cond(&st, "Ready").unwrap().observed_generation, Some(3));
    assert!(cond(&st, "Stalled").is_none());
}

#[test]
fn rejections_stall_with_the_machine_reason() {
    for (reason, want) in [
        (RejectReason::DepositNotFound, "DepositNotFound"),
        (RejectReason::WrongStaker, "DepositWrongStaker"),
        (
            RejectReason::InsufficientAmount { stated: 2, found: 1 },
            "DepositInsufficient",
        ),
    ] {
        let d = doc(StakePhase::Rejected { reason }, 0);
        let old = status(None, &view(&doc(StakePhase::Pending, 0)), "2025-01-01T00:00:00Z");
        let st = status(Some(&old), &view(&d), NOW);
        assert_eq!(st.phase, Some(ApiPhase::Rejected));
        for t in ["Ready", "DepositVerified", "Stalled"] {
            assert_eq!(cond(&st, t).unwrap().reason, want, "{t}");
        }
        assert!(cond(&st, "Reconciling").is_none());
        assert_eq!(cond(&st, "Stalled").unwrap().status, True);
        // Ready stayed False: its transition time did not move.
        assert_eq!(
            cond(&st, "Ready").unwrap().last_transition_time,
            "2025-01-01T00:00:00Z"
        );
    }
}

#[test]
fn claimed_deposit_stalls() {
    let d = doc(StakePhase::Pending, 0);
    let mut v = view(&d);
    v.held_by = Some("first");
    let st = status(None, &v, NOW);
    let stalled = cond(&st, "Stalled").unwrap();
    assert_eq!(stalled.reason, "DepositAlreadyClaimed");
    assert!(stalled.message.contains("first"));
}

#[test]
fn bonded_unbonding_released() {
    let st = status(None, &view(&doc(StakePhase::Bonded, 2_500_000)), NOW);
    assert_eq!(st.phase, Some(ApiPhase::Bonded));
    assert_eq!(st.bonded_amount.as_deref(), Some("2.5"));
    assert_eq!(cond(&st, "Ready").unwrap().status, True);
    assert_eq!(cond(&st, "DepositVerified").unwrap().status, True);
    assert!(cond(&st, "Reconciling").is_none());

    let mut d = doc(
        StakePhase::Unbonding {
            ends_at_ms: 1_767_225_600_500,
        },
        2_500_000,
    );
    d.track();
    let st = status(Some(&st), &view(&d), NOW);
    assert_eq!(st.phase, Some(ApiPhase::Unbonding));
    assert_eq!(
        st.unbonding_end_time.as_deref(),
        Some("2026-01-01T00:00:01Z"),
        "rounded up"
    );
    assert_eq!(cond(&st, "Reconciling").unwrap().reason, "Unbonding");
    assert_eq!(cond(&st, "Ready").unwrap().status, False);

    d.state.phase = StakePhase::Released;
    d.state.bonded = 0;
    let mut tx = TxState::new(1);
    tx.phase = TxPhase::Done {
        signature: SIG.into(),
        slot: 1,
    };
    d.state.release = Some(tx);
    let st = status(Some(&st), &view(&d), NOW);
    assert_eq!(st.phase, Some(ApiPhase::Released));
    assert_eq!(st.release_signature.as_deref(), Some(SIG));
    assert_eq!(
        st.unbonding_end_time.as_deref(),
        Some("2026-01-01T00:00:01Z"),
        "kept"
    );
    assert!(cond(&st, "Reconciling").is_none());
    assert_eq!(cond(&st, "Ready").unwrap().reason, "Released");
}

#[test]
fn slashes_pending_and_executed() {
    let mut d = doc(StakePhase::Bonded, 4_000_000);
    d.state.pending_slash = Some(PendingSlash {
        kind: "abandoned-job".into(),
        evidence: Hash32([7; 32]),
        amount: 1_000_000,
        dispute_until_ms: 1_767_225_600_000,
        tx: TxState::new(1),
    });
    d.track();
    let st = status(None, &view(&d), NOW);
    assert_eq!(st.slashes.len(), 1);
    assert!(!st.slashes[0].executed);
    assert_eq!(st.slashes[0].evidence, EvidenceKind::AbandonedJob);
    assert_eq!(st.slashes[0].dispute_window_end_time, "2026-01-01T00:00:00Z");
    assert_eq!(cond(&st, "Reconciling").unwrap().reason, "SlashPending");
    assert_eq!(cond(&st, "Ready").unwrap().status, True, "still bonded");

    d.state.pending_slash = None;
    d.state.slashes.push(ExecutedSlash {
        kind: "abandoned-job".into(),
        evidence: Hash32([7; 32]),
        amount: 1_000_000,
        signature: SIG.into(),
    });
    d.state.phase = StakePhase::Slashed;
    d.state.bonded = 3_000_000;
    let st = status(Some(&st), &view(&d), NOW);
    assert_eq!(st.phase, Some(ApiPhase::Slashed));
    assert!(st.slashes[0].executed);
    assert_eq!(st.slashes[0].signature.as_deref(), Some(SIG));
    assert_eq!(st.slashes[0].amount, "1");
    assert_eq!(
        st.slashes[0].dispute_window_end_time, "2026-01-01T00:00:00Z",
        "kept"
    );
    assert_eq!(st.bonded_amount.as_deref(), Some("3"));
    assert_eq!(cond(&st, "Stalled").unwrap().reason, "Slashed");
    assert!(cond(&st, "Reconciling").is_none());
}

#[test]
fn stalled_keeps_the_rest_of_the_status() {
    let st = status(None, &view(&doc(StakePhase::Bonded, 1)), NOW);
    let s2 = stalled(Some(&st), Some(4), "StateConflict", "x", NOW);
    assert_eq!(s2.phase, Some(ApiPhase::Bonded));
    assert_eq!(s2.observed_generation, Some(4));
    assert_eq!(cond(&s2, "Stalled").unwrap().reason, "StateConflict");
    assert_eq!(cond(&s2, "Ready").unwrap().status, False);
    let fresh = stalled(None, Some(1), "InvalidSpec", "bad", NOW);
    assert_eq!(fresh.phase, Some(ApiPhase::Pending));
}

#[test]
fn evidence_raises_one_slash_at_a_time_and_waits_while_it_cannot() {
    let ev = |n: u8| EvidenceRef {
        kind: "failed-challenge".into(),
        hash: Hash32([n; 32]),
        observed_at: None,
    };
    let evidence = [ev(1), ev(2)];
    let mut d = doc(StakePhase::Bonded, 1_000);
    let Some(Input::Raise(r)) = evidence_input(&evidence, &d, 1_000, None) else {
        panic!("expected a slash");
    };
    assert_eq!(
        (r.evidence, r.amount, r.kind.as_str()),
        (Hash32([1; 32]), 100, "failed-challenge")
    );
    d.handled_slash_requests.push(Hash32([1; 32]).to_hex());
    let Some(Input::Raise(r)) = evidence_input(&evidence, &d, 1_000, None) else {
        panic!("expected the second evidence");
    };
    assert_eq!(r.evidence, Hash32([2; 32]));
    d.handled_slash_requests.push(Hash32([2; 32]).to_hex());
    assert_eq!(
        evidence_input(&evidence, &d, 1_000, None),
        None,
        "each evidence once"
    );
    // Not bonded yet, or automatic slashing off: nothing now, and nothing marked handled.
    assert_eq!(
        evidence_input(&[ev(3)], &doc(StakePhase::Pending, 0), 1_000, None),
        None
    );
    assert_eq!(
        evidence_input(&[ev(3)], &doc(StakePhase::Bonded, 1_000), 0, None),
        None
    );
    // A tiny stake still loses at least one base unit.
    let Some(Input::Raise(r)) = evidence_input(&[ev(3)], &doc(StakePhase::Bonded, 5), 1_000, None) else {
        panic!("expected a slash");
    };
    assert_eq!(r.amount, 1);
    let unknown = EvidenceRef {
        kind: "bad-vibes".into(),
        hash: Hash32([4; 32]),
        observed_at: None,
    };
    assert_eq!(
        evidence_input(&[unknown], &doc(StakePhase::Bonded, 5), 1_000, None),
        None
    );
}

#[test]
fn evidence_from_before_a_stake_was_created_is_not_slashed_on_it() {
    // E1 observed at 1000 and slashed on an earlier Stake; the provider bonds a new Stake
    // created at 2000 (or the name is a new provider's): E1 is not raised on it, E2
    // (observed at 2500) is.
    let ev = |n: u8, at: i64| EvidenceRef {
        kind: "failed-challenge".into(),
        hash: Hash32([n; 32]),
        observed_at: Some(at),
    };
    let d = doc(StakePhase::Bonded, 1_000);
    assert_eq!(evidence_input(&[ev(1, 1_000)], &d, 1_000, Some(2_000)), None);
    let Some(Input::Raise(r)) = evidence_input(&[ev(1, 1_000), ev(2, 2_500)], &d, 1_000, Some(2_000)) else {
        panic!("expected the later evidence");
    };
    assert_eq!(r.evidence, Hash32([2; 32]));
    // A Stake slashed before, still holding tokens, answers for new evidence.
    assert!(
        evidence_input(
            &[ev(4, 2_500)],
            &doc(StakePhase::Slashed, 900),
            1_000,
            Some(2_000)
        )
        .is_some()
    );
    assert_eq!(
        evidence_input(&[ev(4, 2_500)], &doc(StakePhase::Slashed, 0), 1_000, Some(2_000)),
        None
    );
    // Observed the second the Stake was created: it counts.
    assert!(evidence_input(&[ev(3, 2_000)], &d, 1_000, Some(2_000)).is_some());
}

#[test]
fn a_dismiss_annotation_left_at_true_dismisses_one_slash_not_every_later_one() {
    let mut d = doc(StakePhase::Bonded, 1_000);
    d.state.pending_slash = Some(PendingSlash {
        kind: "failed-challenge".into(),
        evidence: Hash32([7; 32]),
        amount: 1,
        dispute_until_ms: 10,
        tx: TxState::new(1),
    });
    let hex = Hash32([7; 32]).to_hex();
    let a = ann(&[(SLASH_DISMISS_ANNOTATION, "true")]);
    assert_eq!(inputs(false, &a, &d, 6).0, vec![Input::Dismiss(hex.clone())]);
    // Spent: the next slash raised while it is still there is not dismissed, and the
    // status says how to dismiss it.
    d.dismiss_true_spent = true;
    let (out, note) = inputs(false, &a, &d, 6);
    assert!(out.is_empty(), "{out:?}");
    assert!(note.as_deref().is_some_and(|n| n.contains(&hex)), "{note:?}");
    // Its evidence hash still dismisses it.
    let by_hash = ann(&[(SLASH_DISMISS_ANNOTATION, &hex)]);
    assert_eq!(inputs(false, &by_hash, &d, 6).0, vec![Input::Dismiss(hex)]);
}
