use super::*;
use crate::protocol::{Computed, answer};
use crate::workload::Params;
use gpufed_settlement::hash::Hash32;

const P: Params = Params::u32(32, 8, 8, 6);

fn band() -> Band {
    Band {
        model: "M".into(),
        params: P,
        min_kernel_micros: 100,
        max_kernel_micros: 10_000,
        round_trip_slack_ms: 500,
    }
}

fn req(seed: Option<&str>) -> ChallengeRequest {
    ChallengeRequest {
        nonce: "nonce-1".into(),
        params: P,
        open_seed: seed.map(str::to_owned),
    }
}

#[test]
fn an_honest_answer_verifies() {
    let c = Computed::on_cpu("nonce-1", "GPU-x", &P, 500).unwrap();
    let a = answer(&req(Some("seed")), std::slice::from_ref(&c));
    assert_eq!(
        check_opening(&req(Some("seed")), "seed", &a.commits[0], &a.openings[0]),
        Ok(())
    );
    assert_eq!(check_timing(&a.commits[0], &band(), 400), Ok(()));
}

#[test]
fn a_workload_for_another_gpu_or_nonce_fails() {
    // Computed for another UUID (one card answering for two) or a replayed old nonce.
    for (nonce, uuid) in [("nonce-1", "GPU-other"), ("nonce-0", "GPU-x")] {
        let c = Computed::on_cpu(nonce, uuid, &P, 500).unwrap();
        let mut commit = c.commit();
        commit.uuid = "GPU-x".into();
        let mut opening = c.open(&req(Some("seed")), "seed");
        opening.uuid = "GPU-x".into();
        let got = check_opening(&req(Some("seed")), "seed", &commit, &opening);
        assert!(
            matches!(got, Err(Failure::WrongDigest { .. } | Failure::BadOpening { .. })),
            "{nonce}/{uuid}: {got:?}"
        );
        assert_eq!(got.unwrap_err().evidence_kind(), Some(EVIDENCE_FAILED_CHALLENGE));
    }
}

#[test]
fn partial_work_is_caught_when_a_skipped_row_is_sampled() {
    // The node computed every row but one, and committed garbage for that one.
    let s = crate::workload::seeds("nonce-1", "GPU-x");
    let mut leaves = crate::workload::all_leaves(&P, &s);
    let rows = sample_rows("seed", "nonce-1", "GPU-x", &P);
    leaves[rows[2] as usize] = Hash32([9; 32]);
    let c = Computed::new("GPU-x", leaves, 500).unwrap();
    let got = check_opening(
        &req(Some("seed")),
        "seed",
        &c.commit(),
        &c.open(&req(Some("seed")), "seed"),
    );
    assert_eq!(got, Err(Failure::WrongDigest { row: rows[2] }));
}

#[test]
fn openings_for_other_rows_are_refused() {
    let c = Computed::on_cpu("nonce-1", "GPU-x", &P, 500).unwrap();
    // Opened with a seed of the node's choosing instead of the hub's.
    let opening = c.open(&req(Some("mine")), "mine");
    let got = check_opening(&req(Some("seed")), "seed", &c.commit(), &opening);
    assert!(matches!(got, Err(Failure::BadOpening { .. })), "{got:?}");
    let mut short = c.open(&req(Some("seed")), "seed");
    short.proofs.pop();
    assert!(matches!(
        check_opening(&req(Some("seed")), "seed", &c.commit(), &short),
        Err(Failure::BadOpening { .. })
    ));
}

#[test]
fn timing_outside_the_band() {
    let mut commit = Computed::on_cpu("nonce-1", "GPU-x", &P, 50).unwrap().commit();
    let fast = check_timing(&commit, &band(), 10).unwrap_err();
    assert_eq!(fast, Failure::ImpossiblyFast { micros: 50, min: 100 });
    assert_eq!(fast.evidence_kind(), Some(EVIDENCE_FAILED_CHALLENGE));
    commit.kernel_micros = 20_000;
    let slow = check_timing(&commit, &band(), 10).unwrap_err();
    assert_eq!(slow.reason(), "TooSlow");
    assert_eq!(slow.evidence_kind(), None, "slowness can be honest");
    commit.kernel_micros = 5_000;
    // In band by the node's own account (5 ms), but the hub saw the commitment after 11 s.
    let late = check_timing(&commit, &band(), 11_000).unwrap_err();
    assert_eq!(late, Failure::RoundTripTooSlow { ms: 11_000, max: 510 });
    assert_eq!(check_timing(&commit, &band(), 510), Ok(()));
}

#[test]
fn an_f64_answer_from_a_shortcut_fails_and_the_honest_one_verifies() {
    use crate::workload::{self, Arith, leaf};
    let p = Params {
        arith: Arith::F64,
        depth: 64,
        ..P
    };
    let req = ChallengeRequest {
        params: p,
        ..req(Some("seed"))
    };
    let honest = Computed::on_cpu("nonce-1", "GPU-x", &p, 500).unwrap();
    let a = answer(&req, std::slice::from_ref(&honest));
    assert_eq!(check_opening(&req, "seed", &a.commits[0], &a.openings[0]), Ok(()));
    // What a card without fast binary64 might try: the same sums with the product rounded
    // before the add (FP64 emulation, or tensor cores that accumulate differently).
    let s = workload::seeds("nonce-1", "GPU-x");
    let leaves = (0..p.rows)
        .map(|i| {
            let row: Vec<u64> = (0..p.cols)
                .map(|c| {
                    (0..p.depth)
                        .map(|j| {
                            workload::elem_f64(s.a, u64::from(i * p.depth + j))
                                * workload::elem_f64(s.b, u64::from(j * p.cols + c))
                        })
                        .fold(0.0f64, |acc, x| acc + x)
                        .to_bits()
                })
                .collect();
            leaf(i, workload::RowRef::F64(&row))
        })
        .collect();
    let shortcut = Computed::new("GPU-x", leaves, 500).unwrap();
    let got = check_opening(&req, "seed", &shortcut.commit(), &shortcut.open(&req, "seed"));
    assert!(matches!(got, Err(Failure::WrongDigest { .. })), "{got:?}");
    assert_eq!(got.unwrap_err().evidence_kind(), Some(EVIDENCE_FAILED_CHALLENGE));
}

#[test]
fn every_proofs_shape_is_checked_before_any_row_is_recomputed() {
    let c = Computed::on_cpu("nonce-1", "GPU-x", &P, 500).unwrap();
    // The first proof has its shape but leads elsewhere (recomputed, its row would be
    // `WrongDigest`); a later one has no sibling at all: refused on its shape, before the
    // hub recomputes any row.
    let mut opening = c.open(&req(Some("seed")), "seed");
    let len = opening.proofs[0].siblings.len();
    opening.proofs[0].siblings = vec![Hash32([7; 32]); len];
    opening.proofs[5].siblings.clear();
    let got = check_opening(&req(Some("seed")), "seed", &c.commit(), &opening);
    assert!(
        matches!(&got, Err(Failure::BadOpening { detail }) if detail.contains("sibling hashes")),
        "{got:?}"
    );
    // At the largest shape a band may have, recomputing the sampled rows would cost the
    // hub 6 × 24 × 2³² multiply-adds; empty proofs are refused without any.
    let huge = ChallengeRequest {
        params: Params {
            depth: crate::workload::MAX_DIM,
            cols: crate::workload::MAX_DIM,
            ..P
        },
        ..req(Some("seed"))
    };
    let proofs = sample_rows("seed", "nonce-1", "GPU-x", &huge.params)
        .into_iter()
        .map(|row| gpufed_settlement::merkle::MerkleProof {
            index: u64::from(row),
            leaf_count: u64::from(P.rows),
            siblings: Vec::new(),
        })
        .collect();
    let empty = GpuOpening {
        uuid: "GPU-x".into(),
        proofs,
    };
    let started = std::time::Instant::now();
    let got = check_opening(&huge, "seed", &c.commit(), &empty);
    assert!(matches!(got, Err(Failure::BadOpening { .. })), "{got:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn a_proofs_expected_length_is_the_trees() {
    for n in 1..=40usize {
        let leaves: Vec<Hash32> = (0..n).map(|i| Hash32([i as u8; 32])).collect();
        let tree = gpufed_settlement::merkle::MerkleTree::from_leaves(leaves).unwrap();
        for i in 0..n {
            let p = tree.proof(i).unwrap();
            assert_eq!(proof_len(p.index, p.leaf_count), p.siblings.len(), "{i} of {n}");
        }
    }
}
