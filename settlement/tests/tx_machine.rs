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
    // A failed broadcast is retried after a height check shows the blockhash valid.
    assert!(matches!(a[0], Action::QueryBlockHeight { .. }), "{a:?}");
    let (s, a) = step(
        &s,
        1_000,
        Observation::BlockHeight {
            query: query(&a),
            height: 50,
            slot: 60,
        },
        &cfg,
    )
    .unwrap();
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

/// Signs "s1" (valid through height 100) and fails its first broadcast.
fn signed_then_broadcast_failed(cfg: &MachineConfig) -> TxState {
    let (s, a) = step(&TxState::new(3), 0, Observation::Tick, cfg).unwrap();
    let (s, a) = step(
        &s,
        0,
        Observation::Signed {
            query: query(&a),
            intent: intent("s1", 100),
        },
        cfg,
    )
    .unwrap();
    assert!(matches!(a[0], Action::Broadcast { .. }));
    let (s, _) = step(
        &s,
        0,
        Observation::RpcError {
            query: query(&a),
            message: "blockhash not found".into(),
        },
        cfg,
    )
    .unwrap();
    s
}

#[test]
fn a_broadcast_that_keeps_failing_learns_its_expiry_and_resigns_only_with_proof() {
    let cfg = MachineConfig::default();
    let s = signed_then_broadcast_failed(&cfg);
    // Not another blind broadcast: the height decides.
    let (s, a) = step(&s, 1_000, Observation::Tick, &cfg).unwrap();
    assert!(matches!(&a[..], [Action::QueryBlockHeight { .. }]), "{a:?}");
    // Still valid: the same bytes again, and the failure count is kept, so the next
    // refusal waits longer.
    let (s, a) = step(
        &s,
        1_000,
        Observation::BlockHeight {
            query: query(&a),
            height: 90,
            slot: 120,
        },
        &cfg,
    )
    .unwrap();
    assert!(matches!(&a[..], [Action::Broadcast { signature, .. }] if signature == "s1"));
    assert_eq!(s.failures, 1);
    let (s, _) = step(
        &s,
        1_000,
        Observation::RpcError {
            query: query(&a),
            message: "blockhash not found".into(),
        },
        &cfg,
    )
    .unwrap();
    assert_eq!(s.failures, 2);
    assert!(s.wake_at_ms >= 1_000 + 1_600, "backoff grows: {}", s.wake_at_ms);
    // A restart asks the height too (a broadcast may have been refused before it).
    let (_, r) = step(&s, 9_000, Observation::Restarted, &cfg).unwrap();
    assert!(matches!(&r[..], [Action::QueryBlockHeight { .. }]), "{r:?}");
    let (s, a) = step(&s, 9_000, Observation::Tick, &cfg).unwrap();
    assert!(matches!(&a[..], [Action::QueryBlockHeight { .. }]), "{a:?}");
    // Expired: no re-sign yet, a status query at the slot the height was read at.
    let (s, a) = step(
        &s,
        9_000,
        Observation::BlockHeight {
            query: query(&a),
            height: 101,
            slot: 150,
        },
        &cfg,
    )
    .unwrap();
    assert!(
        matches!(&a[..], [Action::QuerySignatureStatus { signature, min_context_slot: Some(150), .. }] if signature == "s1"),
        "{a:?}"
    );
    assert_eq!(s.resigns, 0);
    // It landed after all (a refused broadcast is no proof it was never sent): no re-sign.
    let landed = SigStatus {
        slot: 130,
        commitment: Commitment::Confirmed,
        error: None,
    };
    let (l, la) = step(
        &s,
        9_000,
        Observation::SignatureStatus {
            query: query(&a),
            status: Some(landed),
        },
        &cfg,
    )
    .unwrap();
    assert!(la.is_empty() && matches!(l.phase, TxPhase::Landed { .. }) && l.resigns == 0);
    // Unknown at that slot: proven dead, signed afresh.
    let (d, da) = step(
        &s,
        9_000,
        Observation::SignatureStatus {
            query: query(&a),
            status: None,
        },
        &cfg,
    )
    .unwrap();
    assert!(matches!(&da[..], [Action::SignAndPersistIntent { .. }]), "{da:?}");
    assert_eq!(
        (d.resigns, d.expired_signatures.clone()),
        (1, vec!["s1".to_string()])
    );
}

#[test]
fn a_failed_height_query_retries_the_height_not_the_broadcast() {
    let cfg = MachineConfig::default();
    let s = signed_then_broadcast_failed(&cfg);
    let (s, a) = step(&s, 1_000, Observation::Tick, &cfg).unwrap();
    let (s, _) = step(
        &s,
        1_000,
        Observation::RpcError {
            query: query(&a),
            message: "down".into(),
        },
        &cfg,
    )
    .unwrap();
    let (_, a) = step(&s, 60_000, Observation::Tick, &cfg).unwrap();
    assert!(matches!(&a[..], [Action::QueryBlockHeight { .. }]), "{a:?}");
}
