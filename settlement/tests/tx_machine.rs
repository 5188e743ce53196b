//! The settlement transaction machine alone (`machine::step`, no journal, no chain model):
//! a stale or unknown signature status never re-signs too early, and a batch counts
//! settled only at the configured commitment while RPC errors back off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use gpufed_settlement::machine::{self, SigStatus, step};
use gpufed_settlement::{Action, Commitment, MachineConfig, Observation, TxPhase, TxState};

use common::{intent, query};

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
            slot: 140,
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
            slot: 141,
        },
        &cfg,
    )
    .unwrap();
    // The status query after the expiry names the slot the expiry was read at: an
    // "unknown" from a node behind it is no answer (the driver feeds an error instead).
    assert!(
        matches!(
            &a3[0],
            Action::QuerySignatureStatus {
                min_context_slot: Some(141),
                ..
            }
        ),
        "{a3:?}"
    );
    // So does the query a restarted driver issues for that state.
    let (_, again) = step(&s3, 6_000, Observation::Restarted, &cfg).unwrap();
    assert!(
        matches!(
            &again[..],
            [Action::QuerySignatureStatus {
                min_context_slot: Some(141),
                ..
            }]
        ),
        "{again:?}"
    );
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
