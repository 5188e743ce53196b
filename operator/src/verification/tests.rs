use super::*;
use crate::fleet::GpuNode;
use crate::fleet::MemberView;
use ed25519_dalek::SigningKey;
use gpufed_trust::protocol::{Computed, answer};
use gpufed_trust::report::{InventoryReport, ReportGpu, sign};
use gpufed_trust::{Band, ChallengeRequest, Params};

const P: Params = Params::u32(16, 4, 4, 8);

fn cfg() -> VerifyConfig {
    VerifyConfig {
        bands: Bands {
            bands: vec![Band {
                model: "NVIDIA H100 80GB HBM3".into(),
                params: P,
                min_kernel_micros: 100,
                max_kernel_micros: 10_000,
                round_trip_slack_ms: 30_000,
            }],
        },
        interval: Duration::from_secs(600),
        timeout: Duration::from_secs(60),
        ..VerifyConfig::default()
    }
}

/// The node: signs a report answering `req` (if any), computing honestly or not.
fn report(uuids: &[&str], req: Option<&ChallengeRequest>, honest: bool) -> String {
    report_signed(uuids, req, honest, 3)
}

/// Like [`report`], signed by the key of seed `[key; 32]`.
fn report_signed(uuids: &[&str], req: Option<&ChallengeRequest>, honest: bool, key: u8) -> String {
    report_with_serials(uuids, &[], req, honest, key)
}

/// Like [`report_signed`], GPU `i` on the board `serials[i]` (none past the list).
fn report_with_serials(
    uuids: &[&str],
    serials: &[&str],
    req: Option<&ChallengeRequest>,
    honest: bool,
    key: u8,
) -> String {
    let challenge = req.map(|r| {
        let gpus: Vec<Computed> = uuids
            .iter()
            .map(|u| {
                let nonce = if honest { r.nonce.clone() } else { "stale".into() };
                Computed::on_cpu(&nonce, u, &r.params, 1_000).unwrap()
            })
            .collect();
        answer(r, &gpus)
    });
    let rep = InventoryReport {
        node: "n1".into(),
        nonce: String::new(),
        issued_at: 1,
        driver_version: "580".into(),
        cuda_version: "13.0".into(),
        simulated: false,
        gpus: uuids
            .iter()
            .enumerate()
            .map(|(i, u)| ReportGpu {
                uuid: (*u).into(),
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_mib: 81559,
                compute_capability: "9.0".into(),
                serial: serials.get(i).map(|s| (*s).to_owned()),
            })
            .collect(),
        challenge,
    };
    serde_json::to_string(&sign(rep, &SigningKey::from_bytes(&[key; 32])).unwrap()).unwrap()
}

fn view(report: Option<String>, challenges: &BTreeMap<String, ChallengeRequest>) -> MemberView {
    MemberView {
        nodes: vec![GpuNode {
            name: "n1".into(),
            model: "NVIDIA-H100-80GB-HBM3".into(),
            memory_mib: 81559,
            compute: (9, 0),
            nvlink_domain: None,
            allocatable: 2,
            ready: true,
            taints: Vec::new(),
            labels: Default::default(),
            resources: None,
        }],
        reports: report.into_iter().map(|r| ("n1".to_owned(), r)).collect(),
        challenges: challenges
            .iter()
            .map(|(n, r)| (n.clone(), serde_json::to_string(r).unwrap()))
            .collect(),
        ..MemberView::default()
    }
}

/// Drives the hub and an (honest or lying) node through one whole challenge.
fn run(honest: bool) -> ProviderVerdict {
    run_with(honest).1
}

/// [`run`], with the verifier.
fn run_with(honest: bool) -> (Verifier, ProviderVerdict) {
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    let uuids = ["GPU-1", "GPU-2"];
    let mut member = BTreeMap::new();
    let mut t = 1_000;
    // The node publishes its report before any challenge.
    let mut rep = report(&uuids, None, honest);
    assert!(!v.challenging("p"));
    for _ in 0..4 {
        if let Some(desired) = v.step("p", &view(Some(rep.clone()), &member), t) {
            member = desired;
        }
        // The provider is probed fast exactly while a request is out.
        assert_eq!(v.challenging("p"), !member.is_empty(), "at {t}");
        assert!(!v.challenging("other"));
        rep = report(&uuids, member.get("n1"), honest);
        t += 1_000;
    }
    assert!(
        member.is_empty(),
        "a finished challenge leaves no request behind: {member:?}"
    );
    assert!(!v.challenging("p"), "judged: back to the heartbeat");
    assert_eq!(
        v.step("p", &view(Some(rep), &member), t),
        None,
        "nothing to write"
    );
    let result = if honest { "passed" } else { "WrongDigest" };
    let text = metrics.encode();
    assert!(
        text.contains(&format!("gpufed_challenges_total{{result=\"{result}\"}} 2")),
        "{text}"
    );
    // Issued at 1000 ms, the commitment seen by the next step at 2000 ms: one node, one
    // round trip of 1 s, under the band's model (honest or not, it arrived then).
    let model = r#"{model="NVIDIA H100 80GB HBM3"}"#;
    for line in [
        format!("gpufed_challenge_round_trip_seconds_count{model} 1"),
        format!("gpufed_challenge_round_trip_seconds_sum{model} 1.0"),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    let pv = v.verdict("p", t).0;
    (v, pv)
}

#[test]
fn an_honest_node_is_verified_through_the_configmap_round_trip() {
    let pv = run(true);
    assert_eq!((pv.verified, pv.failed), (2, 0), "{pv:?}");
}

#[test]
fn a_node_replaying_old_work_is_caught() {
    let (v, pv) = run_with(false);
    assert_eq!(pv.verified, 0);
    assert!(pv.evidence_kinds().contains("failed-challenge"), "{pv:?}");
    // One standing verdict is one evidence, whenever it is looked at (a second document
    // after the cooldown would slash the same lie twice).
    let early = v
        .failed_challenge_evidence("p", &pv, "2026-01-01T00:00:00Z")
        .unwrap();
    let late = v
        .failed_challenge_evidence("p", &pv, "2026-01-09T00:00:00Z")
        .unwrap();
    assert_eq!(early.hash(), late.hash());
    // Issued at 1000 ms, committed at 2000, opened and judged at 3000.
    assert_eq!(early.observed_at, crate::time::format(3), "the verdict's time");
}

#[test]
fn missing_and_forged_reports_are_problems_not_panics() {
    let v = Verifier::new(cfg());
    assert_eq!(v.step("p", &view(None, &BTreeMap::new()), 0), None);
    let (_, problems) = v.verdict("p", 0);
    assert_eq!(problems[0].1.reason(), "NotAnswered");
    let mut forged: serde_json::Value = serde_json::from_str(&report(&["GPU-1"], None, true)).unwrap();
    forged["report"]["gpus"][0]["uuid"] = "GPU-other".into();
    v.step("p", &view(Some(forged.to_string()), &BTreeMap::new()), 0);
    assert_eq!(v.verdict("p", 0).1[0].1.reason(), "BadReport");
    v.step("p", &view(Some("{not json".into()), &BTreeMap::new()), 0);
    assert_eq!(v.verdict("p", 0).1[0].1.reason(), "BadReport");
    // One GPU listed twice (in any case): it would pass twice on one answer.
    v.step(
        "p",
        &view(Some(report(&["GPU-1", "gpu-1"], None, true)), &BTreeMap::new()),
        0,
    );
    let (_, problems) = v.verdict("p", 0);
    assert_eq!(problems[0].1.reason(), "BadReport");
    assert!(
        format!("{:?}", problems[0].1).contains("more than once"),
        "{problems:?}"
    );
}

#[test]
fn evidence_is_looked_up_again_only_after_the_cooldown() {
    let v = Verifier::new(cfg());
    assert!(v.evidence_due("p", "failed-challenge", 0));
    v.evidence_settled("p", "failed-challenge", 1_000);
    let cooldown = ms(v.config().evidence_cooldown);
    assert!(!v.evidence_due("p", "failed-challenge", 1_000 + cooldown - 1));
    assert!(v.evidence_due("p", "failed-challenge", 1_000 + cooldown));
    assert!(v.evidence_due("q", "failed-challenge", 2_000), "per provider");
}

/// Drives one honest challenge to its verdict with reports signed by `key`.
fn verify_with(v: &Verifier, key: u8, t: u64) -> u64 {
    verify_gpus(v, "p", &["GPU-1", "GPU-2"], &[], key, t)
}

/// Drives one honest challenge of `provider`'s node `n1`, its GPUs `uuids` on the boards
/// `serials`, to its verdict.
fn verify_gpus(v: &Verifier, provider: &str, uuids: &[&str], serials: &[&str], key: u8, mut t: u64) -> u64 {
    let mut member = BTreeMap::new();
    for _ in 0..4 {
        let rep = report_with_serials(uuids, serials, member.get("n1"), true, key);
        if let Some(desired) = v.step(provider, &view(Some(rep), &member), t) {
            member = desired;
        }
        t += 1_000;
    }
    t
}

#[test]
fn one_board_reported_by_two_providers_verifies_for_neither() {
    let v = Verifier::new(cfg());
    // Each computes honestly, with UUIDs of its own; "slicer" reports a virtual GPU of
    // the card behind "honest"'s GPU-1 (its board serial).
    let t = verify_gpus(
        &v,
        "honest",
        &["GPU-1", "GPU-2"],
        &["1650123456789", "1650123456790"],
        3,
        1_000,
    );
    assert_eq!(v.verdict("honest", t).0.verified, 2, "unique so far");
    let t = verify_gpus(&v, "slicer", &["GPU-v1"], &["1650123456789"], 4, t);
    let (honest, _) = v.verdict("honest", t);
    let (slicer, _) = v.verdict("slicer", t);
    assert_eq!((honest.verified, slicer.verified), (1, 0));
    let failure = |pv: &ProviderVerdict| pv.failures[0].1.failure.as_ref().map(ToString::to_string);
    assert_eq!(
        failure(&slicer).as_deref(),
        Some("board serial 1650123456789 also reported by honest/n1")
    );
    assert_eq!(
        failure(&honest).as_deref(),
        Some("board serial 1650123456789 also reported by slicer/n1")
    );
    assert!(slicer.evidence_kinds().contains("duplicate-gpu"));
}

#[test]
fn the_first_key_is_pinned_and_a_node_speaking_with_another_loses_its_verified_gpus() {
    let v = Verifier::new(cfg());
    v.load_pins("p", BTreeMap::new());
    let t = verify_with(&v, 3, 1_000);
    assert_eq!(v.verdict("p", t).0.verified, 2);
    let pinned = v.pins_to_save("p").expect("a new pin to save");
    assert_eq!(pinned.len(), 1);
    v.pins_saved("p", &pinned);
    assert_eq!(v.pins_to_save("p"), None, "saved");

    // Another machine answers for n1: at once nothing of n1 counts, and it says why.
    let forged = report_signed(&["GPU-1", "GPU-2"], None, true, 9);
    v.step("p", &view(Some(forged), &BTreeMap::new()), t);
    let (verdict, problems) = v.verdict("p", t);
    assert_eq!(verdict.verified, 0, "{verdict:?}");
    assert_eq!(problems[0].1.reason(), "BadReport");
    assert!(
        problems[0].1.to_string().contains("node key changed"),
        "{}",
        problems[0].1
    );
    assert_eq!(v.pins_to_save("p"), None, "the refused key is not pinned");
}

#[test]
fn pins_loaded_from_the_hub_hold_a_restarted_operator_to_the_first_key() {
    let first = Verifier::new(cfg());
    first.load_pins("p", BTreeMap::new());
    verify_with(&first, 3, 1_000);
    let saved = first.pins_to_save("p").expect("pinned");

    // A new leader loads the pins before its first step: key 9 never verifies n1.
    let next = Verifier::new(cfg());
    assert!(!next.pins_loaded("p"));
    next.load_pins("p", saved);
    assert!(next.pins_loaded("p"));
    let t = verify_with(&next, 9, 1_000);
    assert_eq!(next.verdict("p", t).0.verified, 0);
    assert!(
        next.verdict("p", t).1[0]
            .1
            .to_string()
            .contains("node key changed")
    );
}

#[test]
fn outcomes_wait_for_the_ledger_then_survive_their_jobs_and_a_new_leader() {
    let job: gpufed_api::ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "j", "namespace": "t", "uid": "u1"},
        "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}},
        "status": {"attempts": [{"attempt": 1, "provider": "p", "outcome": "ProviderLost", "gpuSeconds": 1,
                   "pricePerGpuHour": "1.00", "endTime": "2026-12-01T00:00:00Z"}]},
    }))
    .unwrap();
    let v = Verifier::new(cfg());
    assert_eq!(
        v.record_outcomes("p", [&job]),
        None,
        "not before the ledger is read"
    );
    v.load_outcomes("p", outcomes::Ledger::default());
    assert_eq!(v.record_outcomes("p", [&job]), Some((0, 1)));
    let saved = v.outcomes_to_save("p").expect("new entries to save");
    v.outcomes_saved("p", &saved);
    assert_eq!(v.outcomes_to_save("p"), None);
    // The job is deleted and a new leader starts: the abandoned attempt still counts.
    let next = Verifier::new(cfg());
    next.load_outcomes("p", saved);
    assert_eq!(next.record_outcomes("p", []), Some((0, 1)));
}

#[test]
fn a_job_deleted_between_heartbeats_still_counts() {
    let job = |uid: &str, outcome: &str| -> gpufed_api::ComputeJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": uid, "namespace": "t", "uid": uid},
            "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                     "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}},
            "status": {"attempts": [{"attempt": 1, "provider": "p", "outcome": outcome, "gpuSeconds": 1,
                       "pricePerGpuHour": "1.00", "endTime": "2026-12-01T00:00:00Z"}]},
        }))
        .unwrap()
    };
    // Deleted before this leader read the provider's ledger: kept until it does.
    let v = Verifier::new(cfg());
    v.record_deleted("p", &job("gone", "ProviderLost"));
    assert!(!v.outcomes_loaded("p"), "the hub's ledger is still read first");
    let hub = {
        let mut l = outcomes::Ledger::default();
        l.record([&job("old", "Succeeded")], "p");
        l
    };
    v.load_outcomes("p", hub);
    assert_eq!(
        v.record_outcomes("p", []),
        Some((1, 1)),
        "the hub's and the deleted job's"
    );
    let saved = v
        .outcomes_to_save("p")
        .expect("the deleted job's outcome is saved");
    v.outcomes_saved("p", &saved);
    // Deleted once the ledger is loaded: recorded, to be saved with the next heartbeat.
    v.record_deleted("p", &job("gone-too", "Succeeded"));
    assert!(v.outcomes_to_save("p").is_some());
    assert_eq!(v.record_outcomes("p", []), Some((2, 1)));
    // Recording the same job again changes nothing.
    let saved = v.outcomes_to_save("p").expect("unsaved");
    v.outcomes_saved("p", &saved);
    v.record_deleted("p", &job("gone-too", "Succeeded"));
    assert_eq!(v.outcomes_to_save("p"), None);
}

/// Steps the hub and an honest node from `t` until the node's challenge is judged;
/// returns the time after it.
fn challenge_until_judged(v: &Verifier, uuids: &[&str], mut t: u64) -> u64 {
    let mut member = BTreeMap::new();
    let mut rep = report(uuids, None, true);
    for _ in 0..4 {
        if let Some(desired) = v.step("p", &view(Some(rep.clone()), &member), t) {
            member = desired;
        }
        rep = report(uuids, member.get("n1"), true);
        t += 1_000;
    }
    assert!(member.is_empty(), "judged: {member:?}");
    t
}

#[test]
fn a_node_wanted_fresh_is_challenged_before_it_is_due_and_its_pass_is_dated() {
    let v = Verifier::new(cfg());
    let uuids = ["GPU-1", "GPU-2"];
    assert_eq!(v.passed_at("p", "n1"), None, "never challenged");
    let t = challenge_until_judged(&v, &uuids, 1_000);
    let first = v.passed_at("p", "n1").expect("passed");
    assert!((1_000..t).contains(&first), "{first}");
    // Not due for ten minutes: a heartbeat later starts nothing.
    let idle = view(Some(report(&uuids, None, true)), &BTreeMap::new());
    assert_eq!(v.step("p", &idle, t + 60_000), None);
    // A verifiedOnly job wants a fresher verdict: the next heartbeat challenges.
    v.want_fresh(&[("p".into(), "n1".into()), ("p".into(), "gone".into())]);
    let desired = v.step("p", &idle, t + 61_000).expect("a request at once");
    assert!(desired.contains_key("n1"), "{desired:?}");
    // Finish that challenge (its request is already out, so begin from it).
    let mut member = desired;
    let mut now = t + 62_000;
    for _ in 0..3 {
        let rep = report(&uuids, member.get("n1"), true);
        if let Some(d) = v.step("p", &view(Some(rep), &member), now) {
            member = d;
        }
        now += 1_000;
    }
    assert!(member.is_empty(), "judged: {member:?}");
    let second = v.passed_at("p", "n1").expect("passed again");
    assert!(second > t + 61_000, "{second}");
    // The wish was met: the heartbeat after starts nothing.
    assert_eq!(v.step("p", &idle, now), None);
}

#[test]
fn a_failed_latest_challenge_has_no_pass_date() {
    let v = Verifier::new(cfg());
    let uuids = ["GPU-1"];
    let mut member = BTreeMap::new();
    let mut rep = report(&uuids, None, false);
    let mut t = 1_000;
    for _ in 0..4 {
        if let Some(desired) = v.step("p", &view(Some(rep.clone()), &member), t) {
            member = desired;
        }
        rep = report(&uuids, member.get("n1"), false);
        t += 1_000;
    }
    assert!(member.is_empty());
    assert_eq!(v.passed_at("p", "n1"), None);
    assert_eq!(v.verdict("p", t).0.failed, 1);
}

#[test]
fn the_clock_note_says_what_a_band_proves_and_warns_when_it_is_little() {
    let band = |max_kernel_micros, round_trip_slack_ms| gpufed_trust::Band {
        model: "NVIDIA H100 80GB HBM3".into(),
        params: gpufed_trust::Params::u32(4096, 1024, 4096, 24),
        min_kernel_micros: 1,
        max_kernel_micros,
        round_trip_slack_ms,
    };
    let poll = std::time::Duration::from_secs(1);
    // A 5 ms kernel with 30 s of slack: the hub's clock proves next to nothing.
    let (note, weak) = clock_note(&band(5_000, 30_000), poll);
    assert!(weak, "{note}");
    assert!(
        note.contains("within 30005 ms") && note.contains("raise params.rows"),
        "{note}"
    );
    // Kernel 6 s, slack 2 s: 75% of the claimed rate.
    let (note, weak) = clock_note(&band(6_000_000, 2_000), poll);
    assert!(!weak, "{note}");
    assert!(note.contains("75%") && !note.contains("raise"), "{note}");
    // A slack shorter than the hub's probe period while challenging.
    let (note, weak) = clock_note(&band(6_000_000, 500), poll);
    assert!(
        weak && note.contains("below --challenge-poll (1000 ms)"),
        "{note}"
    );
}

#[path = "rounds_tests.rs"]
mod rounds;

#[path = "resume_tests.rs"]
mod resume;

#[path = "probation_tests.rs"]
mod probation;

#[path = "owners_tests.rs"]
mod owners;

#[path = "absent_tests.rs"]
mod absent;

#[test]
fn a_challenge_open_when_the_node_stops_reporting_times_out_instead_of_staying_open() {
    for member_down in [false, true] {
        let v = Verifier::new(cfg());
        let uuids = ["GPU-1", "GPU-2"];
        let t = challenge_until_judged(&v, &uuids, 1_000);
        let idle = view(Some(report(&uuids, None, true)), &BTreeMap::new());
        v.want_fresh(&[("p".into(), "n1".into())]);
        assert!(v.step("p", &idle, t + 1_000).is_some(), "a challenge opens");
        assert!(v.challenging("p"));
        // Then the node's report is gone (its plugin died), or its member unreachable.
        let silent = |now: u64| {
            if member_down {
                v.member_missed("p", now);
            } else {
                v.step("p", &view(None, &BTreeMap::new()), now);
            }
        };
        silent(t + 30_000);
        assert!(v.challenging("p"), "within the timeout it may still answer");
        silent(t + 62_000);
        assert!(
            !v.challenging("p"),
            "past the timeout: back to the heartbeat ({member_down})"
        );
        let (pv, _) = v.verdict("p", t + 62_000);
        assert_eq!(pv.verified, 0, "{pv:?}");
        assert_eq!(pv.failures.len(), 2, "{pv:?}");
        assert!(
            pv.failures
                .iter()
                .all(|(_, g)| g.failure.as_ref().map(Failure::reason) == Some("NotAnswered")),
            "{pv:?}"
        );
    }
}

#[test]
fn a_node_whose_kubelet_sells_more_gpus_than_its_report_verified_is_not_a_verified_node() {
    // `view` sells 2 GPUs on n1; the report lists one real card, which passes.
    let v = Verifier::new(cfg());
    let t = challenge_until_judged(&v, &["GPU-1"], 0);
    let (pv, _) = v.verdict("p", t);
    assert_eq!(pv.verified, 1);
    assert!(pv.verified_nodes.is_empty(), "{pv:?}");
    // Both of its GPUs in the report and passed: a verified node.
    let v = Verifier::new(cfg());
    let t = challenge_until_judged(&v, &["GPU-1", "GPU-2"], 0);
    let (pv, _) = v.verdict("p", t);
    assert!(pv.verified_nodes.contains("n1"), "{pv:?}");
}
