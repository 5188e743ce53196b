use super::*;
use crate::bands::Band;
use crate::protocol::{Computed, answer};
use crate::workload::Params;

const P: Params = Params::u32(16, 8, 8, 4);

fn bands() -> Bands {
    bands_for(P)
}

fn bands_for(params: Params) -> Bands {
    Bands {
        bands: vec![Band {
            model: "NVIDIA H100 80GB HBM3".into(),
            params,
            min_kernel_micros: 100,
            max_kernel_micros: 5_000,
            round_trip_slack_ms: 1_000,
        }],
    }
}

fn claims(uuids: &[&str]) -> Vec<GpuClaim> {
    uuids
        .iter()
        .map(|u| GpuClaim {
            uuid: (*u).into(),
            model: "NVIDIA-H100-80GB-HBM3".into(),
            serial: None,
        })
        .collect()
}

/// Runs a session against a node that answers with `node` (given the request it saw).
fn run(simulated: bool, node: impl Fn(&ChallengeRequest) -> ChallengeAnswer) -> Vec<GpuVerdict> {
    run_in(&bands(), simulated, node)
}

fn run_in(
    bands: &Bands,
    simulated: bool,
    node: impl Fn(&ChallengeRequest) -> ChallengeAnswer,
) -> Vec<GpuVerdict> {
    let bands = || bands;
    let cl = claims(&["GPU-1", "GPU-2"]);
    let mut s = start("n-1".into(), &cl, bands(), 1_000).unwrap();
    let view = |a| NodeView {
        claims: &cl,
        simulated,
        answer: a,
    };
    assert_eq!(s.advance(view(None), bands(), "seed", 1_500, 60_000), Step::Wait);
    let first = node(&s.request);
    let Step::Open(req) = s.advance(view(Some(&first)), bands(), "seed", 2_000, 60_000) else {
        panic!("expected the hub to open after the commitment");
    };
    assert_eq!(req.open_seed.as_deref(), Some("seed"));
    // The same commitment again (the node has not seen the seed yet): wait.
    assert_eq!(
        s.advance(view(Some(&first)), bands(), "other", 2_500, 60_000),
        Step::Wait
    );
    let second = node(&req);
    match s.advance(view(Some(&second)), bands(), "other", 3_000, 60_000) {
        Step::Done(v) => v,
        other => panic!("expected verdicts, got {other:?}"),
    }
}

fn honest(req: &ChallengeRequest) -> ChallengeAnswer {
    let gpus: Vec<Computed> = ["GPU-1", "GPU-2"]
        .iter()
        .map(|u| Computed::on_cpu(&req.nonce, u, &req.params, 1_000).unwrap())
        .collect();
    answer(req, &gpus)
}

#[test]
fn an_honest_node_verifies_every_gpu() {
    let v = run(false, honest);
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(GpuVerdict::passed), "{v:?}");
}

#[test]
fn a_simulated_node_is_checked_but_never_verified() {
    let v = run(true, honest);
    assert!(v.iter().all(|g| g.failure == Some(Failure::Simulated)), "{v:?}");
    // Its CPU timing is no evidence (found by the e2e test: a CPU can be "impossibly
    // fast" on a tiny workload), but a wrong result still is.
    let fast = run(true, |req| {
        let gpus: Vec<Computed> = ["GPU-1", "GPU-2"]
            .iter()
            .map(|u| Computed::on_cpu(&req.nonce, u, &req.params, 1).unwrap())
            .collect();
        answer(req, &gpus)
    });
    assert!(
        fast.iter().all(|g| g.failure == Some(Failure::Simulated)),
        "{fast:?}"
    );
    let wrong = run(true, |req| {
        let gpus: Vec<Computed> = ["GPU-1", "GPU-2"]
            .iter()
            .map(|u| Computed::on_cpu("old", u, &req.params, 1_000).unwrap())
            .collect();
        answer(req, &gpus)
    });
    assert!(
        wrong
            .iter()
            .all(|g| matches!(g.failure, Some(Failure::WrongDigest { .. }))),
        "{wrong:?}"
    );
}

#[test]
fn a_node_that_recommits_after_the_seed_is_judged_on_its_first_commitment() {
    // A cheater commits garbage, then, knowing the seed, recomputes honestly.
    let v = run(false, |req| {
        if req.open_seed.is_none() {
            let gpus: Vec<Computed> = ["GPU-1", "GPU-2"]
                .iter()
                .map(|u| Computed::new(u, vec![gpufed_settlement::Hash32([1; 32]); 16], 1_000).unwrap())
                .collect();
            answer(req, &gpus)
        } else {
            honest(req)
        }
    });
    assert!(
        v.iter()
            .all(|g| matches!(g.failure, Some(Failure::WrongDigest { .. }))),
        "{v:?}"
    );
}

#[test]
fn silence_times_out_and_no_band_means_no_challenge() {
    let cl = claims(&["GPU-1"]);
    let mut s = start("n".into(), &cl, &bands(), 0).unwrap();
    let view = NodeView {
        claims: &cl,
        simulated: false,
        answer: None,
    };
    let Step::Done(v) = s.advance(view, &bands(), "seed", 60_001, 60_000) else {
        panic!("expected a timeout");
    };
    assert_eq!(v[0].failure.as_ref().map(Failure::reason), Some("NotAnswered"));
    let other = vec![GpuClaim {
        uuid: "GPU-9".into(),
        model: "NVIDIA GeForce RTX 4090".into(),
        serial: None,
    }];
    let no_band = start("n".into(), &other, &bands(), 0).unwrap_err();
    assert_eq!(no_band[0].failure.as_ref().map(Failure::reason), Some("NoBand"));
}

#[test]
fn a_node_that_commits_an_impossible_time_and_never_opens_is_caught_anyway() {
    let cl = claims(&["GPU-1", "GPU-2"]);
    for simulated in [false, true] {
        let mut s = start("n-1".into(), &cl, &bands(), 1_000).unwrap();
        let view = |a| NodeView {
            claims: &cl,
            simulated,
            answer: a,
        };
        // GPU-1 claims 1 µs (the band's floor is 100), GPU-2 an honest time.
        let mut commit = honest(&s.request);
        commit.commits[0].kernel_micros = 1;
        let Step::Open(_) = s.advance(view(Some(&commit)), &bands(), "seed", 2_000, 60_000) else {
            panic!("expected the hub to open");
        };
        // It never opens.
        let Step::Done(v) = s.advance(view(Some(&commit)), &bands(), "seed", 62_000, 60_000) else {
            panic!("expected a timeout");
        };
        let reasons: Vec<_> = v
            .iter()
            .map(|g| g.failure.as_ref().map(Failure::reason))
            .collect();
        if simulated {
            // A CPU's time says nothing about the card it declares: no evidence.
            assert_eq!(reasons, [Some("NotAnswered"), Some("NotAnswered")]);
        } else {
            assert_eq!(reasons, [Some("ImpossiblyFast"), Some("NotAnswered")]);
            assert!(v[0].failure.as_ref().and_then(Failure::evidence_kind).is_some());
        }
    }
}

#[test]
fn an_f64_challenge_verifies_and_a_node_computing_u32_instead_is_not_answering() {
    let f64_bands = bands_for(Params {
        arith: crate::workload::Arith::F64,
        ..P
    });
    let v = run_in(&f64_bands, false, honest);
    assert!(v.iter().all(GpuVerdict::passed), "{v:?}");
    // A device plugin that predates f64 ignores the field: it computes u32 and says nothing
    // about arithmetic. Its digests are "wrong", but that is no lie: not answered.
    let cl = claims(&["GPU-1", "GPU-2"]);
    let mut s = start("n-1".into(), &cl, &f64_bands, 1_000).unwrap();
    let u32_req = ChallengeRequest {
        params: P,
        ..s.request.clone()
    };
    let stale = honest(&u32_req);
    let view = NodeView {
        claims: &cl,
        simulated: false,
        answer: Some(&stale),
    };
    let Step::Done(old) = s.advance(view, &f64_bands, "seed", 2_000, 60_000) else {
        panic!("expected verdicts at once");
    };
    assert_eq!(old.len(), 2);
    for g in &old {
        let Some(Failure::NotAnswered { detail }) = &g.failure else {
            panic!("expected NotAnswered, got {g:?}");
        };
        assert!(detail.contains("u32") && detail.contains("f64"), "{detail}");
        assert_eq!(g.failure.as_ref().and_then(Failure::evidence_kind), None);
    }
}

#[test]
fn a_node_cannot_escape_its_commitment_by_dropping_gpus_or_switching_arithmetic() {
    let cl = claims(&["GPU-1", "GPU-2"]);
    let none: Vec<GpuClaim> = Vec::new();
    // Drops every GPU from its report after committing GPU-1 at 1 µs.
    let mut s = start("n-1".into(), &cl, &bands(), 1_000).unwrap();
    let mut commit = honest(&s.request);
    commit.commits[0].kernel_micros = 1;
    let with = |claims, a| NodeView {
        claims,
        simulated: false,
        answer: a,
    };
    let Step::Open(_) = s.advance(with(&cl, Some(&commit)), &bands(), "seed", 2_000, 60_000) else {
        panic!("expected the hub to open");
    };
    let Step::Done(v) = s.advance(with(&none, None), &bands(), "seed", 62_000, 60_000) else {
        panic!("expected a timeout");
    };
    let reasons: Vec<_> = v
        .iter()
        .map(|g| (g.uuid.as_str(), g.failure.as_ref().map(Failure::reason)))
        .collect();
    assert_eq!(
        reasons,
        [("GPU-1", Some("ImpossiblyFast")), ("GPU-2", Some("NotAnswered"))],
        "judged for the GPUs challenged, not those listed now"
    );
    // Answers in the other arithmetic after committing: ignored, the timeout judges.
    let mut s = start("n-1".into(), &cl, &bands(), 1_000).unwrap();
    let Step::Open(_) = s.advance(with(&cl, Some(&commit)), &bands(), "seed", 2_000, 60_000) else {
        panic!("expected the hub to open");
    };
    let mut other = commit.clone();
    other.arith = crate::workload::Arith::F64;
    assert_eq!(
        s.advance(with(&cl, Some(&other)), &bands(), "seed", 3_000, 60_000),
        Step::Wait
    );
    let Step::Done(v) = s.advance(with(&cl, Some(&other)), &bands(), "seed", 62_000, 60_000) else {
        panic!("expected a timeout");
    };
    assert_eq!(v[0].failure.as_ref().map(Failure::reason), Some("ImpossiblyFast"));
}

#[test]
fn a_session_expired_unread_keeps_the_evidence_of_its_signed_commitment() {
    let cl = claims(&["GPU-1", "GPU-2"]);
    for simulated in [false, true] {
        let mut s = start("n-1".into(), &cl, &bands(), 1_000).unwrap();
        let mut commit = honest(&s.request);
        commit.commits[0].kernel_micros = 1;
        let view = NodeView {
            claims: &cl,
            simulated,
            answer: Some(&commit),
        };
        let Step::Open(_) = s.advance(view, &bands(), "seed", 2_000, 60_000) else {
            panic!("expected the hub to open");
        };
        // Then no report can be read (an unusable one, another key, the node gone).
        assert_eq!(s.expire(&bands(), 61_000, 60_000), None, "within the timeout");
        let v = s.expire(&bands(), 61_001, 60_000).expect("past the timeout");
        let reasons: Vec<_> = v
            .iter()
            .map(|g| (g.uuid.as_str(), g.failure.as_ref().map(Failure::reason)))
            .collect();
        let first = if simulated {
            "NotAnswered"
        } else {
            "ImpossiblyFast"
        };
        assert_eq!(
            reasons,
            [("GPU-1", Some(first)), ("GPU-2", Some("NotAnswered"))],
            "simulated: {simulated}"
        );
    }
    // Without a commitment: every GPU challenged, not answered.
    let s = start("n-2".into(), &cl, &bands(), 1_000).unwrap();
    let v = s.expire(&bands(), 70_000, 60_000).expect("past the timeout");
    assert_eq!(v.len(), 2);
    assert!(
        v.iter()
            .all(|g| g.failure.as_ref().map(Failure::reason) == Some("NotAnswered"))
    );
}

#[test]
fn turning_simulate_on_after_an_impossible_commitment_escapes_no_evidence() {
    // GPU-1 commits 1 µs (the band's floor is 100) from a report without `--simulate`;
    // every report after says `--simulate`.
    let cl = claims(&["GPU-1", "GPU-2"]);
    fn view<'a>(cl: &'a [GpuClaim], simulated: bool, a: Option<&'a ChallengeAnswer>) -> NodeView<'a> {
        NodeView {
            claims: cl,
            simulated,
            answer: a,
        }
    }
    let fast = |req: &ChallengeRequest| {
        let mut a = honest(req);
        a.commits[0].kernel_micros = 1;
        a
    };
    for opens in [false, true] {
        let mut s = start("n-1".into(), &cl, &bands(), 1_000).unwrap();
        let commit = fast(&s.request);
        let Step::Open(req) = s.advance(view(&cl, false, Some(&commit)), &bands(), "seed", 2_000, 60_000)
        else {
            panic!("expected the hub to open");
        };
        let later = if opens { fast(&req) } else { commit.clone() };
        let at = if opens { 3_000 } else { 62_000 };
        let Step::Done(v) = s.advance(view(&cl, true, Some(&later)), &bands(), "seed", at, 60_000) else {
            panic!("opens: {opens}: expected verdicts");
        };
        let reasons: Vec<_> = v
            .iter()
            .map(|g| g.failure.as_ref().map(Failure::reason))
            .collect();
        let second = if opens { "Simulated" } else { "NotAnswered" };
        assert_eq!(reasons, [Some("ImpossiblyFast"), Some(second)], "opens: {opens}");
    }
    // Committed under `--simulate`, opened without: a CPU's times, never verified.
    let mut s = start("n-2".into(), &cl, &bands(), 1_000).unwrap();
    let commit = honest(&s.request);
    let Step::Open(req) = s.advance(view(&cl, true, Some(&commit)), &bands(), "seed", 2_000, 60_000) else {
        panic!("expected the hub to open");
    };
    let Step::Done(v) = s.advance(
        view(&cl, false, Some(&honest(&req))),
        &bands(),
        "seed",
        3_000,
        60_000,
    ) else {
        panic!("expected verdicts");
    };
    assert!(v.iter().all(|g| g.failure == Some(Failure::Simulated)), "{v:?}");
}
