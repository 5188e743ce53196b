use super::*;
use gpufed_api::common::ConditionStatus;
use gpufed_trust::session::GpuVerdict;

fn verdict(uuid: &str, failure: Option<Failure>) -> (String, GpuVerdict) {
    (
        "n1".into(),
        GpuVerdict {
            uuid: uuid.into(),
            model: "M".into(),
            serial: None,
            failure,
        },
    )
}

fn cond(st: &GpuProviderStatus) -> (ConditionStatus, String, String) {
    let c = conditions::find(&st.conditions, types::VERIFIED).unwrap();
    (c.status, c.reason.clone(), c.message.clone())
}

#[test]
fn verified_gpus_make_the_condition_true_and_lies_make_it_false() {
    let mut st = GpuProviderStatus::default();
    let ok = ProviderVerdict {
        verified: 2,
        failed: 1,
        failures: vec![verdict("GPU-3", Some(Failure::TooSlow { micros: 9, max: 5 }))],
        verified_nodes: ["n2".to_string()].into(),
        ..Default::default()
    };
    apply(&mut st, &ok, &[], &Inputs::default(), Some(1), ("t1", "t9"));
    assert_eq!(cond(&st).0, ConditionStatus::True, "{:?}", cond(&st));
    let ver = st.verification.clone().unwrap();
    assert_eq!(
        (ver.verified_gpus, ver.failed_gpus, ver.failures.len()),
        (2, 1, 1)
    );
    assert_eq!(ver.last_run_time.as_deref(), Some("t1"));
    assert_eq!(ver.verified_nodes, ["n2"], "placement reads which nodes verified");
    apply(&mut st, &ok, &[], &Inputs::default(), Some(1), ("t2", "t9"));
    assert_eq!(
        st.verification.as_ref().unwrap().last_run_time.as_deref(),
        Some("t1"),
        "unchanged results keep their time (no status churn)"
    );
    let liar = ProviderVerdict {
        verified: 1,
        failed: 1,
        failures: vec![verdict("GPU-9", Some(Failure::WrongDigest { row: 4 }))],
        ..Default::default()
    };
    apply(&mut st, &liar, &[], &Inputs::default(), Some(1), ("t3", "t9"));
    let (s, reason, msg) = cond(&st);
    assert_eq!(
        (s, reason.as_str()),
        (ConditionStatus::False, REASON_CHALLENGE_FAILED)
    );
    assert!(msg.contains("GPU-9") && msg.contains("row 4"), "{msg}");
}

#[test]
fn nothing_verified_says_why() {
    let mut st = GpuProviderStatus::default();
    let problems = vec![(
        "n7".to_owned(),
        Failure::BadReport {
            detail: "signature does not match".into(),
        },
    )];
    apply(
        &mut st,
        &ProviderVerdict::default(),
        &problems,
        &Inputs::default(),
        None,
        ("t", "t9"),
    );
    let (s, reason, msg) = cond(&st);
    assert_eq!((s, reason.as_str()), (ConditionStatus::False, "NotVerified"));
    assert!(msg.contains("n7") && msg.contains("signature"), "{msg}");
    assert_eq!(st.verification.unwrap().failures[0].reason, "BadReport");
    let dup = ProviderVerdict {
        failed: 1,
        failures: vec![verdict(
            "GPU-1",
            Some(Failure::DuplicateUuid {
                others: "p2/n".into(),
            }),
        )],
        ..Default::default()
    };
    let mut st = GpuProviderStatus::default();
    apply(&mut st, &dup, &[], &Inputs::default(), None, ("t", "t9"));
    assert_eq!(cond(&st).1, REASON_DUPLICATE);
}

#[test]
fn reputation_is_written_from_its_inputs() {
    let mut st = GpuProviderStatus::default();
    let inputs = Inputs {
        uptime: 0.987,
        jobs_completed: 3,
        jobs_failed_by_provider: 1,
        ..Default::default()
    };
    apply(
        &mut st,
        &ProviderVerdict::default(),
        &[],
        &inputs,
        None,
        ("t", "t9"),
    );
    let r = st.reputation.unwrap();
    assert_eq!(r.uptime_percent, Some(99));
    assert_eq!((r.jobs_completed, r.jobs_failed_by_provider), (3, 1));
    assert_eq!(r.score, reputation::format_score(reputation::score(&inputs)));
}

#[test]
fn staked_compares_bonded_with_what_verified_gpus_require() {
    use gpufed_settlement::stake::StakePolicy;
    let policy = Ok(Some(StakePolicy {
        base_per_gpu: 100,
        multipliers_bps: [("nvidia-h100-80gb-hbm3".to_owned(), 25_000)].into(),
        default_multiplier_bps: 10_000,
    }));
    let verified = std::collections::BTreeMap::from([
        ("NVIDIA H100 80GB HBM3".to_owned(), 8),
        ("NVIDIA-L4".to_owned(), 2),
    ]);
    // 8 × 250 + 2 × 100 = 2200.
    let mut st = GpuProviderStatus::default();
    staked(&mut st, Bonded::Known(2_199), &policy, &verified, None, "t");
    let c = conditions::find(&st.conditions, types::STAKED).unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "InsufficientStake")
    );
    assert!(c.message.contains("2200"), "{}", c.message);
    staked(&mut st, Bonded::Known(2_200), &policy, &verified, None, "t");
    assert_eq!(
        conditions::find(&st.conditions, types::STAKED).unwrap().status,
        ConditionStatus::True
    );
    // The Stake controller runs but has not read the stake (a new term, Solana down):
    // not covered — placement takes only True for covered.
    staked(&mut st, Bonded::Unknown, &policy, &verified, None, "t");
    let c = conditions::find(&st.conditions, types::STAKED).unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::Unknown, "StakeUnknown")
    );
    // Unless nothing is required of it.
    let free = Ok(Some(StakePolicy {
        base_per_gpu: 0,
        ..policy.clone().unwrap().unwrap()
    }));
    staked(&mut st, Bonded::Unknown, &free, &verified, None, "t");
    assert_eq!(
        conditions::find(&st.conditions, types::STAKED).unwrap().status,
        ConditionStatus::True
    );
    staked(&mut st, Bonded::NotRequired, &policy, &verified, None, "t");
    assert!(
        conditions::find(&st.conditions, types::STAKED).is_none(),
        "no Stake controller: no condition"
    );
}

/// The `Staked` condition of a provider with 8 verified GPUs under `--stake-per-gpu
/// per_gpu`, the mint's decimals `decimals` (`None`: not read yet), and `bonded`.
fn staked_with(per_gpu: &str, decimals: Option<u8>, bonded: Bonded) -> (ConditionStatus, String, String) {
    let verified = std::collections::BTreeMap::from([("NVIDIA-L4".to_owned(), 8)]);
    let policy = stake_policy(per_gpu, &Default::default(), decimals);
    let mut st = GpuProviderStatus::default();
    staked(&mut st, bonded, &policy, &verified, None, "t");
    let c = conditions::find(&st.conditions, types::STAKED).unwrap();
    (c.status, c.reason.clone(), c.message.clone())
}

#[test]
fn a_fractional_stake_per_gpu_is_never_taken_for_no_stake() {
    // The Stake controller has not read the mint's decimals yet (a new term, Solana down):
    // 0.5 per GPU is not "0 base units", so the provider is not covered.
    let (status, reason, _) = staked_with("0.5", None, Bonded::Unknown);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::Unknown, "StakeUnknown")
    );
    assert_eq!(stake_policy("0.5", &Default::default(), None), Ok(None));
    // Zero is zero in any mint: nothing required, known without the decimals.
    let (status, _, _) = staked_with("0", None, Bonded::Unknown);
    assert_eq!(status, ConditionStatus::True);
    // Finer than the mint (2 decimals): an error naming the flag, not 0.
    let err = stake_policy("0.125", &Default::default(), Some(2)).unwrap_err();
    assert!(err.contains("--stake-per-gpu") && err.contains("0.125"), "{err}");
    for bonded in [Bonded::Unknown, Bonded::Known(0), Bonded::Known(u64::MAX)] {
        let (status, reason, message) = staked_with("0.125", Some(2), bonded);
        assert_eq!(
            (status, reason.as_str()),
            (ConditionStatus::Unknown, REASON_INVALID_STAKE_POLICY),
            "{bonded:?}"
        );
        assert!(message.contains("--stake-per-gpu"), "{message}");
    }
    // More base units than a u64 holds (18 decimals): an error too.
    assert!(stake_policy("100000", &Default::default(), Some(18)).is_err());
    // Representable: the usual comparison (8 × 0.13 with 2 decimals = 104 base units).
    let (status, _, message) = staked_with("0.13", Some(2), Bonded::Known(103));
    assert_eq!(status, ConditionStatus::False, "{message}");
    let (status, _, _) = staked_with("0.13", Some(2), Bonded::Known(104));
    assert_eq!(status, ConditionStatus::True);
}

#[test]
fn reputation_inputs_count_judged_failures_only() {
    let v = ProviderVerdict {
        verified: 3,
        failed: 2,
        failures: vec![
            verdict("GPU-a", Some(Failure::NoBand { model: "M".into() })),
            verdict("GPU-b", Some(Failure::WrongDigest { row: 1 })),
        ],
        ..Default::default()
    };
    let i = reputation_inputs(&v, 0.9, (4, 1));
    assert_eq!(
        (i.gpus_verified, i.gpus_failed),
        (3, 1),
        "no band is no evidence either way"
    );
    assert_eq!((i.jobs_completed, i.jobs_failed_by_provider), (4, 1));
    assert!(i.evidence_open);
    assert_eq!(
        stake_policy("2.5", &Default::default(), Some(6))
            .unwrap()
            .unwrap()
            .base_per_gpu,
        2_500_000
    );
}

#[test]
fn a_provider_that_failed_is_told_when_the_next_round_challenges_it() {
    let mut st = GpuProviderStatus::default();
    let late = ProviderVerdict {
        failed: 1,
        failures: vec![verdict(
            "GPU-1",
            Some(Failure::RoundTripTooSlow {
                ms: 56_000,
                max: 30_010,
            }),
        )],
        ..Default::default()
    };
    let next = "2026-12-06T18:00:00Z";
    apply(&mut st, &late, &[], &Inputs::default(), Some(1), ("t", next));
    let (s, reason, msg) = cond(&st);
    assert_eq!((s, reason.as_str()), (ConditionStatus::False, "NotVerified"));
    assert!(
        msg.contains("56000 ms") && msg.ends_with("challenged again at the next round, 2026-12-06T18:00:00Z"),
        "{msg}"
    );
    assert_eq!(st.verification.unwrap().next_round_time.as_deref(), Some(next));
    // Nothing judged yet: a new node is challenged at once, not at the round.
    let mut fresh = GpuProviderStatus::default();
    apply(
        &mut fresh,
        &ProviderVerdict::default(),
        &[],
        &Inputs::default(),
        None,
        ("t", next),
    );
    assert!(!cond(&fresh).2.contains("next round"), "{:?}", cond(&fresh));
}

#[test]
fn gpus_on_probation_are_counted_apart_and_named_with_their_round() {
    let next = "2026-12-06T18:00:00Z";
    let mut st = GpuProviderStatus::default();
    let joined = ProviderVerdict {
        on_probation: 8,
        ..Default::default()
    };
    apply(&mut st, &joined, &[], &Inputs::default(), Some(1), ("t", next));
    let (s, reason, msg) = cond(&st);
    assert_eq!((s, reason.as_str()), (ConditionStatus::False, "OnProbation"));
    assert!(
        msg.starts_with("8 GPUs passed between rounds") && msg.ends_with(next),
        "{msg}"
    );
    let ver = st.verification.clone().unwrap();
    assert_eq!(
        (ver.verified_gpus, ver.failed_gpus, ver.probation_gpus),
        (0, 0, Some(8))
    );
    // Some proven, two new ones waiting: verified, and the message says the rest.
    let grown = ProviderVerdict {
        verified: 8,
        on_probation: 2,
        verified_by_model: [("M".to_owned(), 8)].into(),
        ..Default::default()
    };
    apply(&mut st, &grown, &[], &Inputs::default(), Some(1), ("t2", next));
    let (s, _, msg) = cond(&st);
    assert_eq!(s, ConditionStatus::True);
    assert_eq!(
        msg,
        format!("8 of 10 GPUs verified; 2 on probation until the round at {next}")
    );
    // None on probation: the field is left out.
    apply(
        &mut st,
        &ProviderVerdict {
            verified: 1,
            ..Default::default()
        },
        &[],
        &Inputs::default(),
        Some(1),
        ("t3", next),
    );
    assert_eq!(st.verification.unwrap().probation_gpus, None);
}
