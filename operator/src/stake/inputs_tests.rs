//! Which slash requests count as handled after a round.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use gpufed_settlement::stake::{RejectReason, StakePhase, StakeState};
use gpufed_settlement::{Hash32, MachineConfig};

use super::*;
use crate::stake::plan::{SLASH_REQUEST_ANNOTATION, SlashRequest, inputs};

const SIG: &str = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";

fn doc(phase: StakePhase, bonded: u64) -> StakeDoc {
    let mut s = StakeState::new(
        "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH".into(),
        100,
        SIG.into(),
        1,
    );
    s.phase = phase;
    s.bonded = bonded;
    StakeDoc::new("uid", s)
}

fn cfg() -> StakeConfig {
    StakeConfig {
        stake_mint: "m".into(),
        vault: "v".into(),
        unbonding_period_ms: 1_000,
        dispute_window_ms: 1_000,
        deposit_not_found_grace_ms: 1_000,
    }
}

/// One round's inputs: what the annotations ask, fed to the machine.
fn round(d: &mut StakeDoc, annotations: &BTreeMap<String, String>) -> (Vec<Input>, Option<String>) {
    let (ins, note) = inputs(false, annotations, d, 6);
    let refused = apply_inputs(
        "s",
        d,
        ins.clone(),
        false,
        (10, &cfg(), &MachineConfig::default()),
    );
    (ins, refused.or(note))
}

fn request(hash: &str) -> BTreeMap<String, String> {
    let text = format!(r#"{{"kind": "duplicate-gpu", "evidenceHash": "{hash}", "amount": "1"}}"#);
    [(SLASH_REQUEST_ANNOTATION.to_string(), text)].into()
}

#[test]
fn a_slash_request_made_before_the_deposit_bonded_is_raised_once_it_has() {
    let hash = "ab".repeat(32);
    let a = request(&hash);
    let mut d = doc(StakePhase::Pending, 0);
    let (ins, note) = round(&mut d, &a);
    assert!(ins.is_empty(), "not raised on a Pending Stake");
    assert!(d.handled_slash_requests.is_empty(), "not marked handled");
    let note = note.unwrap();
    assert!(note.contains("waits until the stake is bonded"), "{note}");
    // The deposit bonds: the same annotation raises the slash now.
    d.state.phase = StakePhase::Bonded;
    d.state.bonded = 5_000_000;
    let (ins, _) = inputs(false, &a, &d, 6);
    assert_eq!(
        ins,
        vec![Input::Raise(SlashRequest {
            kind: "duplicate-gpu".into(),
            evidence: Hash32::from_hex(&hash).unwrap(),
            amount: 1_000_000,
        })]
    );
    round(&mut d, &a);
    assert!(d.state.pending_slash.is_some(), "raised");
    assert_eq!(d.handled_slash_requests, vec![hash]);
}

#[test]
fn a_refused_raise_is_kept_unless_the_stake_can_never_be_slashed() {
    let r = SlashRequest {
        kind: "failed-challenge".into(),
        evidence: Hash32([7; 32]),
        amount: 1,
    };
    let at = (10, &cfg(), &MachineConfig::default());
    // Refused by a Stake not bonded yet (the raise of recorded evidence, say): kept.
    let mut d = doc(StakePhase::Pending, 0);
    let note = apply_inputs("s", &mut d, vec![Input::Raise(r.clone())], false, at).unwrap();
    assert!(d.handled_slash_requests.is_empty(), "{note}");
    assert!(note.contains("waits"), "{note}");
    // Refused by one that never will be: handled, so it is not fed again every round.
    let rejected = StakePhase::Rejected {
        reason: RejectReason::DepositNotFound,
    };
    for (phase, bonded) in [(StakePhase::Released, 0), (rejected, 0), (StakePhase::Slashed, 0)] {
        let mut d = doc(phase.clone(), bonded);
        let note = apply_inputs("s", &mut d, vec![Input::Raise(r.clone())], false, at).unwrap();
        assert_eq!(d.handled_slash_requests, vec![r.evidence.to_hex()], "{phase:?}");
        assert!(note.contains("refused"), "{note}");
    }
}
