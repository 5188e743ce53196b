//! The round's note in every phase, and status that always fits the CRD's schema.
#![allow(clippy::unwrap_used)]

use gpufed_settlement::stake::{ExecutedSlash, PendingSlash, RejectReason, StakeState};
use gpufed_settlement::{Hash32, TxState};

use super::*;

const SIG: &str = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
const WALLET: &str = "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH";
const NOW: &str = "2026-01-01T00:00:00Z";

fn doc(phase: StakePhase, bonded: u64) -> StakeDoc {
    let mut s = StakeState::new(WALLET.into(), 100, SIG.into(), 1);
    s.phase = phase;
    s.bonded = bonded;
    StakeDoc::new("uid", s)
}

fn view<'a>(doc: &'a StakeDoc, decimals: u8, note: Option<&'a str>) -> StatusView<'a> {
    StatusView {
        doc,
        generation: Some(1),
        decimals,
        held_by: None,
        note,
        grace_ms: 1_000,
    }
}

#[test]
fn the_rounds_note_shows_in_every_phase() {
    let note = "stake transactions wait: the RPC node keeps no transaction history";
    let rejected = StakePhase::Rejected {
        reason: RejectReason::DepositNotFound,
    };
    for phase in [
        StakePhase::Pending,
        StakePhase::Bonded,
        StakePhase::Unbonding { ends_at_ms: 1 },
        StakePhase::Released,
        StakePhase::Slashed,
        rejected,
    ] {
        let d = doc(phase.clone(), 5);
        let st = status(None, &view(&d, 6, Some(note)), NOW);
        let ready = conditions::find(&st.conditions, types::READY).unwrap();
        assert!(ready.message.contains(note), "{phase:?}: {}", ready.message);
    }
    // A Pending Stake whose deposit another Stake claimed.
    let d = doc(StakePhase::Pending, 0);
    let mut held = view(&d, 6, Some(note));
    held.held_by = Some("team/other");
    let st = status(None, &held, NOW);
    let ready = conditions::find(&st.conditions, types::READY).unwrap();
    assert!(ready.message.contains(note), "held: {}", ready.message);
    // A Bonded Stake with nothing in progress: Reconciling is removed, the note stays.
    let d = doc(StakePhase::Bonded, 5);
    let st = status(None, &view(&d, 6, Some(note)), NOW);
    assert!(conditions::find(&st.conditions, types::RECONCILING).is_none());
    // Without a note, the message is as before.
    let st = status(None, &view(&d, 6, None), NOW);
    let ready = conditions::find(&st.conditions, types::READY).unwrap();
    assert_eq!(ready.message, "0.000005 bonded");
    // A note quoting a huge annotation is cut, so the message still fits the schema.
    let long = "x".repeat(100_000);
    let st = status(None, &view(&d, 6, Some(&long)), NOW);
    let ready = conditions::find(&st.conditions, types::READY).unwrap();
    assert!(
        ready.message.chars().count() < 2 * MAX_NOTE,
        "{}",
        ready.message.len()
    );
}

/// The schema errors the API server would answer a status write of `st` with, from the
/// generated Stake CRD (so this fails if the Rust side and the schema diverge).
fn schema_errors(st: &StakeStatus) -> Vec<String> {
    let crd = gpufed_api::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "Stake")
        .unwrap();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    let object = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Stake",
        "metadata": {"name": "a"},
        "spec": {"provider": "p", "amount": "1", "depositSignature": SIG, "stakerWallet": WALLET},
        "status": serde_json::to_value(st).unwrap(),
    });
    gpufed_api::schema_check::check(&serde_json::to_value(schema).unwrap(), &object)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn any_bonded_or_slashed_amount_fits_the_schema() {
    // A deposit bonds what it moved, which may be far more than the 12 whole digits a
    // spec's amount has: a status the schema refuses would be refused on every write.
    for decimals in 0..=9 {
        for amount in [
            u64::MAX,
            10u64.pow(12).saturating_mul(10u64.pow(u32::from(decimals))),
            1,
        ] {
            let mut d = doc(StakePhase::Bonded, amount);
            d.state.slashes.push(ExecutedSlash {
                kind: "failed-challenge".into(),
                evidence: Hash32([1; 32]),
                amount,
                signature: SIG.into(),
            });
            d.state.pending_slash = Some(PendingSlash {
                kind: "abandoned-job".into(),
                evidence: Hash32([2; 32]),
                amount,
                dispute_until_ms: 10,
                tx: TxState::new(1),
            });
            let st = status(None, &view(&d, decimals, None), NOW);
            assert_eq!(
                st.bonded_amount.as_deref(),
                Some(display_amount(amount, decimals).as_str())
            );
            let errors = schema_errors(&st);
            assert!(errors.is_empty(), "{amount} with {decimals} decimals: {errors:?}");
        }
    }
}
