#![allow(clippy::unwrap_used)]

use super::*;
use crate::stake::plan::{EvidenceRef, Input, evidence_input};
use gpufed_settlement::Hash32;
use gpufed_settlement::TxState;
use gpufed_settlement::stake::PendingSlash;

const WALLET: &str = "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH";
const SIG: &str = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
const OTHER_SIG: &str =
    "4VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
const DOC: &str = "gpufed-stake-a";

fn spec(amount: u64, signature: &str) -> SpecView {
    SpecView {
        staker: WALLET.into(),
        amount,
        signature: signature.into(),
        provider: "dc1.example.com".into(),
    }
}

/// The state of an earlier object `uid-1` that bonded 250 of `SIG`, in `phase`.
fn old(phase: StakePhase, bonded: u64) -> StakeDoc {
    let mut s = StakeState::new(WALLET.into(), 250, SIG.into(), 1);
    s.phase = phase;
    s.bonded = bonded;
    StakeDoc::new("uid-1", s)
}

fn refused(o: &Open) -> Option<&'static str> {
    match o {
        Open::Refuse(reason, _) => Some(reason),
        _ => None,
    }
}

#[test]
fn a_released_or_fully_slashed_deposit_is_not_bonded_again_under_the_same_name() {
    // Stake A bonded SIG, unbonded and was released (or was slashed to nothing); A is
    // deleted and created again naming SIG with another amount. A fresh Pending state
    // would verify SIG again (still finalized on chain) and pay it out a second time.
    for spent in [old(StakePhase::Released, 0), old(StakePhase::Slashed, 0)] {
        let o = open(Some(spent), "uid-2", &spec(249, SIG), Some(2_000), DOC);
        assert_eq!(refused(&o), Some("DepositSpent"), "{o:?}");
        let Open::Refuse(_, msg) = o else { unreachable!() };
        assert!(
            msg.contains(SIG) && msg.contains("spec.depositSignature"),
            "{msg}"
        );
    }
    // Re-created with the same spec, the state goes on (Released stays Released).
    let o = open(
        Some(old(StakePhase::Released, 0)),
        "uid-2",
        &spec(250, SIG),
        Some(2_000),
        DOC,
    );
    let Open::Continue(d) = o else { panic!("{o:?}") };
    assert_eq!((d.uid.as_str(), &d.state.phase), ("uid-2", &StakePhase::Released));
    // Still holding tokens: StateConflict, as before.
    let o = open(
        Some(old(StakePhase::Bonded, 250)),
        "uid-2",
        &spec(249, SIG),
        None,
        DOC,
    );
    assert_eq!(refused(&o), Some("StateConflict"));
    // A deposit that never bonded may be named again by a fresh state.
    for phase in [
        StakePhase::Pending,
        StakePhase::Rejected {
            reason: gpufed_settlement::stake::RejectReason::DepositNotFound,
        },
    ] {
        let o = open(Some(old(phase, 0)), "uid-2", &spec(249, SIG), Some(2_000), DOC);
        let Open::Fresh { doc, retire } = o else {
            panic!("{o:?}")
        };
        assert_eq!(
            (doc.state.phase, doc.uid.as_str(), retire),
            (StakePhase::Pending, "uid-2", None)
        );
    }
}

#[test]
fn a_fresh_state_over_a_bonded_one_marks_its_deposit_spent_first() {
    let o = open(
        Some(old(StakePhase::Released, 0)),
        "uid-2",
        &spec(10, OTHER_SIG),
        Some(2_000),
        DOC,
    );
    let Open::Fresh { doc, retire } = o else {
        panic!("{o:?}")
    };
    assert_eq!(doc.state.deposit_signature, OTHER_SIG);
    assert_eq!(doc.since, Some(2_000));
    assert_eq!(retire, Some((SIG.to_string(), "uid-1".to_string())));
    // Already marked: nothing to retire.
    let mut marked = old(StakePhase::Released, 0);
    marked.deposit_spent = true;
    let o = open(Some(marked), "uid-2", &spec(10, OTHER_SIG), None, DOC);
    assert!(matches!(o, Open::Fresh { retire: None, .. }), "{o:?}");
    // Same object, changed spec: SpecChanged.
    let o = open(
        Some(old(StakePhase::Released, 0)),
        "uid-1",
        &spec(10, OTHER_SIG),
        None,
        DOC,
    );
    assert_eq!(refused(&o), Some("SpecChanged"));
}

fn holder(stake: &str, uid: &str, spent: bool) -> Holder {
    Holder {
        stake: stake.into(),
        uid: uid.into(),
        spent,
    }
}

#[test]
fn a_spent_claim_never_passes_to_another_object() {
    let spent = holder("a", "uid-1", true);
    assert_eq!(claim_verdict(&spent, None, SIG, "a", "uid-1"), Some(Claim::Ours));
    // The same name re-created, or another Stake, whatever state is under the holder's
    // name now (a fresh one naming another deposit, or none).
    let mut other = StakeDoc::new("uid-2", StakeState::new(WALLET.into(), 10, OTHER_SIG.into(), 1));
    other.state.phase = StakePhase::Pending;
    for (stake, uid) in [("a", "uid-3"), ("b", "uid-b")] {
        for doc in [None, Some(&other)] {
            assert_eq!(
                claim_verdict(&spent, doc, SIG, stake, uid),
                Some(Claim::Spent("a".into()))
            );
        }
    }
    // Not marked yet (claims written before the marker, or a crash before it), but the
    // holder's state shows the deposit bonded, though under a re-created object's uid.
    let unmarked = holder("a", "uid-1", false);
    let mut went_on = old(StakePhase::Released, 0);
    went_on.uid = "uid-2".into();
    assert_eq!(
        claim_verdict(&unmarked, Some(&went_on), SIG, "b", "uid-b"),
        Some(Claim::Spent("a".into()))
    );
    // A live holder that has not bonded yet holds it; a Rejected or replaced one lets it go.
    let mut pending = old(StakePhase::Pending, 0);
    assert_eq!(
        claim_verdict(&unmarked, Some(&pending), SIG, "b", "uid-b"),
        Some(Claim::HeldBy("a".into()))
    );
    pending.state.phase = StakePhase::Rejected {
        reason: gpufed_settlement::stake::RejectReason::DepositNotFound,
    };
    assert_eq!(claim_verdict(&unmarked, Some(&pending), SIG, "b", "uid-b"), None);
    assert_eq!(claim_verdict(&unmarked, Some(&other), SIG, "b", "uid-b"), None);
    assert_eq!(claim_verdict(&unmarked, Some(&other), SIG, "a", "uid-2"), None);
}

#[test]
fn claims_written_before_the_spent_marker_still_load() {
    let h: Holder = serde_json::from_str(r#"{"stake":"a","uid":"u"}"#).unwrap();
    assert_eq!(h, holder("a", "u", false));
    let d: StakeDoc =
        serde_json::from_value(serde_json::json!({"uid": "u", "state": old(StakePhase::Bonded, 1).state}))
            .unwrap();
    assert_eq!((d.since, d.deposit_spent), (None, false));
}

#[test]
fn a_re_created_stake_answers_for_evidence_observed_since_its_first_object() {
    // Created at T0 = 1000 and bonded; evidence observed at T1 = 1500; the Stake is deleted
    // and created again with the same spec at T2 = 2000: the state goes on, and so does
    // the evidence against it.
    let mut first = old(StakePhase::Bonded, 1_000);
    first.since = Some(1_000);
    let Open::Continue(d) = open(Some(first), "uid-2", &spec(250, SIG), Some(2_000), DOC) else {
        panic!("the state goes on");
    };
    assert_eq!(d.since, Some(1_000));
    let evidence = [EvidenceRef {
        kind: "failed-challenge".into(),
        hash: Hash32([1; 32]),
        observed_at: Some(1_500),
    }];
    let raised = evidence_input(&evidence, &d, 1_000, Some(2_000));
    assert!(matches!(raised, Some(Input::Raise(_))), "{raised:?}");
    // A document from before `since` was kept counts from the object that continues it.
    let Open::Continue(d) = open(
        Some(old(StakePhase::Bonded, 1_000)),
        "uid-2",
        &spec(250, SIG),
        Some(2_000),
        DOC,
    ) else {
        panic!("the state goes on");
    };
    assert_eq!(d.since, Some(2_000));
    assert_eq!(evidence_input(&evidence, &d, 1_000, Some(2_000)), None);
}

#[test]
fn only_the_objects_own_bonded_state_counts_for_eligibility() {
    let d = old(StakePhase::Bonded, 250);
    assert_eq!(credits(&d, "uid-1", "a"), Some(("a", 250)));
    // The cached state of an earlier object, while this one is Stalled.
    assert_eq!(credits(&d, "uid-2", "a"), None);
    let mut slashing = old(StakePhase::Unbonding { ends_at_ms: 5 }, 250);
    slashing.state.pending_slash = Some(PendingSlash {
        kind: "failed-challenge".into(),
        evidence: Hash32([2; 32]),
        amount: 1,
        dispute_until_ms: 1,
        tx: TxState::new(1),
    });
    assert_eq!(credits(&slashing, "uid-1", "a"), None);
}

#[test]
fn a_bonded_stake_s_provider_cannot_be_changed_under_it() {
    // Bonded for dc1.example.com; spec.provider edited to another provider (API servers
    // before 1.25 drop the CEL rule that forbids it): Stalled, naming the field, and the
    // collateral keeps counting for the provider recorded, not the new one.
    let Open::Continue(bonded) = open(
        Some(old(StakePhase::Bonded, 250)),
        "uid-1",
        &spec(250, SIG),
        None,
        DOC,
    ) else {
        panic!("the state goes on");
    };
    assert_eq!(
        bonded.provider.as_deref(),
        Some("dc1.example.com"),
        "recorded when first seen"
    );
    let mut moved = spec(250, SIG);
    moved.provider = "elsewhere".into();
    let o = open(Some(bonded.clone()), "uid-1", &moved, None, DOC);
    assert_eq!(refused(&o), Some("SpecChanged"), "{o:?}");
    let Open::Refuse(_, msg) = o else { unreachable!() };
    assert!(
        msg.contains("spec.provider") && msg.contains("dc1.example.com"),
        "{msg}"
    );
    assert!(!msg.contains("spec.amount"), "{msg}");
    assert_eq!(
        credits(&bonded, "uid-1", "elsewhere"),
        Some(("dc1.example.com", 250))
    );
    // Re-created under the same name for another provider: not the same claim, so the
    // bonded state is not taken over (it still holds tokens).
    assert_eq!(
        refused(&open(Some(bonded.clone()), "uid-2", &moved, None, DOC)),
        Some("StateConflict")
    );
    // Set back, it goes on; a fresh state records its provider from the start.
    assert!(matches!(
        open(Some(bonded), "uid-1", &spec(250, SIG), None, DOC),
        Open::Continue(_)
    ));
    let Open::Fresh { doc, .. } = open(None, "uid-3", &moved, None, DOC) else {
        panic!("a fresh state");
    };
    assert_eq!(doc.provider.as_deref(), Some("elsewhere"));
    // Documents written before the provider was kept load without one.
    let d: StakeDoc =
        serde_json::from_value(serde_json::json!({"uid": "u", "state": old(StakePhase::Bonded, 1).state}))
            .unwrap();
    assert_eq!(d.provider, None);
}
