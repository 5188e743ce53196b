//! Which evidence slashes by itself, and dismissals across a provider's Stakes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use gpufed_settlement::stake::{PendingSlash, StakeState};
use gpufed_settlement::{Hash32, TxState};

use super::*;

fn bonded(bonded: u64) -> StakeDoc {
    let sig = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
    let mut s = StakeState::new(
        "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH".into(),
        100,
        sig.into(),
        1,
    );
    s.phase = StakePhase::Bonded;
    s.bonded = bonded;
    StakeDoc::new("uid", s)
}

fn ev(kind: &str, n: u8) -> EvidenceRef {
    EvidenceRef {
        kind: kind.into(),
        hash: Hash32([n; 32]),
        observed_at: None,
    }
}

#[test]
fn duplicate_gpu_evidence_raises_no_slash_by_itself() {
    let d = bonded(1_000);
    assert_eq!(evidence_input(&[ev("duplicate-gpu", 1)], &d, 1_000, None), None);
    // The next evidence that does slash by itself is raised instead.
    let Some(Input::Raise(r)) =
        evidence_input(&[ev("duplicate-gpu", 1), ev("abandoned-job", 2)], &d, 1_000, None)
    else {
        panic!("abandoned-job slashes");
    };
    assert_eq!((r.kind.as_str(), r.evidence), ("abandoned-job", Hash32([2; 32])));
    assert!(slashed_automatically("failed-challenge"));
    assert!(!slashed_automatically("duplicate-gpu"));
    assert!(!slashed_automatically("bad-vibes"));
}

#[test]
fn a_dismissal_on_one_stake_holds_for_every_stake_of_the_provider() {
    let mut a = bonded(1_000);
    a.dismissed_slashes.push(Hash32([7; 32]).to_hex());
    let b = bonded(1_000);
    let other = bonded(1_000);
    let by = dismissed_by_provider([("p", &a), ("p", &b), ("q", &other)]);
    assert_eq!(by.get("p"), Some(&BTreeSet::from([Hash32([7; 32]).to_hex()])));
    assert_eq!(by.get("q"), None, "nothing dismissed for q");
    // B has E pending: dismissed too.
    let mut pending = b.clone();
    pending.state.pending_slash = Some(PendingSlash {
        kind: "failed-challenge".into(),
        evidence: Hash32([7; 32]),
        amount: 100,
        dispute_until_ms: 10,
        tx: TxState::new(1),
    });
    assert_eq!(
        dismissed_elsewhere(&pending, &by["p"]),
        Some(Input::Dismiss(Hash32([7; 32]).to_hex()))
    );
    assert_eq!(dismissed_elsewhere(&b, &by["p"]), None, "nothing pending");
    assert_eq!(dismissed_elsewhere(&pending, &BTreeSet::new()), None);
}
