//! Hostile nodes: whatever a node puts in its answer (random roots, proofs of any shape,
//! wrong indices, huge leaf counts, extra or missing GPUs), the hub's session neither
//! panics nor verifies a GPU whose rows were not computed.
#![allow(clippy::unwrap_used)]

use gpufed_settlement::Hash32;
use gpufed_settlement::merkle::MerkleProof;
use gpufed_trust::protocol::{ChallengeAnswer, GpuCommit, GpuOpening};
use gpufed_trust::session::{self, GpuClaim, NodeView, Step};
use gpufed_trust::{Band, Bands, Params};
use proptest::prelude::*;

const P: Params = Params::u32(16, 4, 4, 6);

fn bands() -> Bands {
    Bands {
        bands: vec![Band {
            model: "M".into(),
            params: P,
            min_kernel_micros: 1,
            max_kernel_micros: u64::MAX / 4,
            round_trip_slack_ms: u64::MAX / 4,
        }],
    }
}

fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

fn proof() -> impl Strategy<Value = MerkleProof> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(hash(), 0..80),
    )
        .prop_map(|(index, leaf_count, siblings)| MerkleProof {
            index: index % 40,
            leaf_count: if leaf_count % 3 == 0 { leaf_count } else { 16 },
            siblings,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_answers_never_verify_and_never_panic(
        roots in proptest::collection::vec(hash(), 0..4),
        micros in any::<u64>(),
        proofs in proptest::collection::vec(proptest::collection::vec(proof(), 0..8), 0..4),
        uuids in proptest::collection::vec("GPU-[a-c]", 0..4),
    ) {
        let claims = vec![
            GpuClaim { uuid: "GPU-a".into(), model: "M".into(), serial: None },
            GpuClaim { uuid: "GPU-b".into(), model: "M".into(), serial: None },
        ];
        let mut s = session::start("nonce".into(), &claims, &bands(), 0).unwrap();
        let commits: Vec<GpuCommit> = roots
            .iter()
            .zip(uuids.iter().cycle())
            .map(|(root, uuid)| GpuCommit { uuid: uuid.clone(), root: *root, kernel_micros: micros })
            .collect();
        let first = ChallengeAnswer { nonce: "nonce".into(), commits: commits.clone(), open_seed: None, openings: vec![], ..Default::default() };
        let view = |a| NodeView { claims: &claims, simulated: false, answer: a };
        let step = s.advance(view(Some(&first)), &bands(), "seed", 10, 1_000);
        if commits.is_empty() {
            prop_assert_eq!(step, Step::Wait);
            return Ok(());
        }
        prop_assert!(matches!(step, Step::Open(_)));
        let openings: Vec<GpuOpening> = proofs
            .into_iter()
            .zip(uuids.iter().cycle())
            .map(|(proofs, uuid)| GpuOpening { uuid: uuid.clone(), proofs })
            .collect();
        let second = ChallengeAnswer { nonce: "nonce".into(), commits, open_seed: Some("seed".into()), openings, ..Default::default() };
        match s.advance(view(Some(&second)), &bands(), "x", 20, 1_000) {
            Step::Done(verdicts) => {
                prop_assert_eq!(verdicts.len(), 2);
                prop_assert!(verdicts.iter().all(|v| !v.passed()), "{:?}", verdicts);
            }
            other => prop_assert!(false, "expected verdicts, got {:?}", other),
        }
    }

    #[test]
    fn any_text_as_a_report_is_refused_cleanly(text in ".{0,400}") {
        let parsed: Result<gpufed_trust::report::SignedReport, _> = serde_json::from_str(&text);
        if let Ok(signed) = parsed {
            prop_assert!(gpufed_trust::report::verify(&signed, &signed.report.nonce, None).is_err());
        }
    }
}
