//! Nodes the hub cannot read: gone from their member's view for a while (the provider
//! controls it: a node whose kubelet sells no GPU is not listed), or reporting nothing
//! usable while a challenge is open.

use super::rounds::{ROUND, Requests, started, steps, steps_as};
use super::*;

/// The member's view when it lists no GPU node.
fn gone() -> MemberView {
    MemberView::default()
}

/// `n1`'s report (GPUs `uuids`, key 3), answering nothing.
fn idle(uuids: &[&str]) -> MemberView {
    view(Some(report_signed(uuids, None, true, 3)), &Requests::new())
}

#[test]
fn a_node_that_failed_its_round_and_hides_for_a_heartbeat_still_waits_for_the_next_round() {
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    let uuids = ["GPU-1"];
    steps(&v, "p", &uuids, 3, (Requests::new(), 1_000), 4);
    // At the round its one real card answers for another identity: n1 fails.
    let asked = v.step("p", &idle(&uuids), ROUND + 40).expect("the round");
    let (left, _) = steps_as(&v, ("p", &uuids, 3, false), (asked, ROUND + 1_000), 3);
    assert!(left.is_empty(), "judged: {left:?}");
    assert_eq!(v.verdict("p", ROUND + 5_000).0.failed, 1);
    // The provider hides n1 for one heartbeat and lists it again: it is no new node.
    assert_eq!(v.step("p", &gone(), ROUND + 10_000), None);
    assert_eq!(
        v.step("p", &idle(&uuids), ROUND + 20_000),
        None,
        "no challenge before the next round"
    );
    let (verdict, _) = v.verdict("p", ROUND + 20_000);
    assert_eq!((verdict.verified, verdict.failed), (0, 1), "{verdict:?}");
    assert!(started(&metrics, "join", 1), "{}", metrics.encode());
    // The next round challenges it with the rest.
    let asked = v
        .step("p", &idle(&uuids), 2 * ROUND + 40)
        .expect("the next round");
    assert!(asked.contains_key("n1"));
    assert!(started(&metrics, "round", 2), "{}", metrics.encode());
}

#[test]
fn an_absent_node_counts_for_nothing_until_back_and_is_forgotten_once_its_verdict_lapses() {
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    let uuids = ["GPU-1"];
    v.load_verdicts("p", BTreeMap::new(), 1_000);
    steps(&v, "p", &uuids, 3, (Requests::new(), 1_000), 4);
    let records = v.verdicts_to_save("p").expect("a record");
    v.verdicts_saved("p", records);
    // Gone: its pass counts for nothing meanwhile, and it is no problem of the provider.
    assert_eq!(v.step("p", &gone(), 10_000), None);
    let (verdict, problems) = v.verdict("p", 10_000);
    assert_eq!((verdict.verified, verdict.failed), (0, 0), "{verdict:?}");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(v.passed_at("p", "n1"), None, "no verifiedOnly work for it");
    assert_eq!(v.verdicts_to_save("p"), None, "its record is kept");
    // Back before the round: its pass counts again, without a new challenge.
    assert_eq!(v.step("p", &idle(&uuids), 20_000), None);
    assert_eq!(v.verdict("p", 20_000).0.verified, 1);
    // Gone through the next round until its verdict lapses: forgotten, record too; back
    // later it is as new as a node of a new name.
    assert_eq!(v.step("p", &gone(), ROUND + 100), None);
    assert_eq!(v.step("p", &gone(), ROUND + 65_001), None);
    assert_eq!(v.verdicts_to_save("p"), Some(BTreeMap::new()));
    let asked = v.step("p", &idle(&uuids), ROUND + 70_000).expect("challenged");
    assert!(asked.contains_key("n1"));
    assert!(started(&metrics, "join", 2), "{}", metrics.encode());
}

/// `n1` (GPUs `uuids`, key 3) answers `req` with a commitment: GPU `i`'s kernel time is
/// `micros[i]`.
fn committed(uuids: &[&str], req: &ChallengeRequest, micros: &[u64]) -> String {
    let gpus: Vec<Computed> = uuids
        .iter()
        .zip(micros)
        .map(|(u, m)| Computed::on_cpu(&req.nonce, u, &req.params, *m).unwrap())
        .collect();
    let signed: gpufed_trust::report::SignedReport =
        serde_json::from_str(&report_signed(uuids, None, true, 3)).unwrap();
    let mut rep = signed.report;
    rep.challenge = Some(answer(req, &gpus));
    serde_json::to_string(&sign(rep, &SigningKey::from_bytes(&[3; 32])).unwrap()).unwrap()
}

#[test]
fn a_signed_impossible_time_is_evidence_however_the_node_stops_answering() {
    let uuids = ["GPU-1", "GPU-2"];
    type Silence<'a> = Box<dyn Fn(&Requests) -> MemberView + 'a>;
    let silences: [(&str, Silence<'_>); 4] = [
        ("no report", Box::new(|m| view(None, m))),
        (
            "a GPU listed twice",
            Box::new(|m| view(Some(report_signed(&["GPU-1", "GPU-1"], None, true, 3)), m)),
        ),
        (
            "another key",
            Box::new(|m| view(Some(report_signed(&uuids, None, true, 9)), m)),
        ),
        ("gone from its member", Box::new(|_| gone())),
    ];
    for (how, silent) in silences {
        let v = Verifier::new(cfg());
        v.load_pins("p", BTreeMap::new());
        let asked = v.step("p", &idle(&uuids), 1_000).expect("challenged at join");
        // GPU-1 signs 1 µs (the band's floor is 100), GPU-2 an honest time; the hub opens.
        let rep = committed(&uuids, &asked["n1"], &[1, 1_000]);
        let opened = v.step("p", &view(Some(rep), &asked), 2_000).expect("opened");
        assert!(opened["n1"].open_seed.is_some(), "{how}");
        // The node never opens: its reports stop being usable.
        v.step("p", &silent(&opened), 3_000);
        assert!(v.challenging("p"), "{how}: within the timeout");
        v.step("p", &silent(&opened), 62_000);
        assert!(!v.challenging("p"), "{how}: past the timeout");
        let (verdict, _) = v.verdict("p", 62_000);
        let reasons: Vec<(&str, Option<&str>)> = verdict
            .failures
            .iter()
            .map(|(_, g)| (g.uuid.as_str(), g.failure.as_ref().map(Failure::reason)))
            .collect();
        assert!(
            reasons.contains(&("GPU-1", Some("ImpossiblyFast"))),
            "{how}: {reasons:?}"
        );
        let evidence = v.failed_challenge_evidence("p", &verdict, "now");
        assert!(
            evidence.is_some_and(|e| e.gpus.iter().any(|g| g.uuid == "GPU-1")),
            "{how}"
        );
        // It stands at the next heartbeats too (a key that stays wrong clears passes only).
        v.step("p", &silent(&Requests::new()), 63_000);
        assert_eq!(v.verdict("p", 63_000).0.evidence_kinds().len(), 1, "{how}");
    }
}

#[test]
fn an_absent_node_keeps_its_pin_past_the_bound_so_another_machine_gets_none_of_its_passes() {
    let v = Verifier::new(cfg());
    let uuids = ["GPU-1"];
    v.load_pins("p", BTreeMap::new());
    steps(&v, "p", &uuids, 3, (Requests::new(), 1_000), 4);
    assert_eq!(v.verdict("p", 5_000).0.verified, 1);
    // n1 leaves; meanwhile the provider's pins pass their bound (nodes that came and went).
    assert_eq!(v.step("p", &gone(), 10_000), None);
    let churn: BTreeMap<String, String> = (0..pins::MAX_PINS)
        .map(|i| (format!("spot-{i:05}"), "a-key".to_owned()))
        .collect();
    v.load_pins("p", churn);
    v.step("p", &gone(), 11_000);
    let kept = v.pins_to_save("p").expect("the churned pins dropped");
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["n1"], "n1 is kept, its pin too");
    // Another machine reports as n1 before n1's verdict lapses: refused, no pass of n1's.
    let other = view(Some(report_signed(&uuids, None, true, 9)), &Requests::new());
    v.step("p", &other, 20_000);
    let (verdict, problems) = v.verdict("p", 20_000);
    assert_eq!(verdict.verified, 0, "{verdict:?}");
    assert!(problems.iter().any(|(n, _)| n == "n1"), "{problems:?}");
}
