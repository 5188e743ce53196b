//! A new leader resumes from the verdicts kept in the hub (`super::verdicts`): what the
//! old leader judged still counts, and the rounds go on where they were.

use super::rounds::{ROUND, Requests, started, steps, steps_as};
use super::*;

/// Whether `metrics` counted `n` kept verdicts loaded with `outcome`.
fn restored(metrics: &crate::metrics::Metrics, outcome: &str, n: u32) -> bool {
    let line = format!("gpufed_challenge_verdicts_restored_total{{outcome=\"{outcome}\"}} {n}\n");
    metrics.encode().contains(&line)
}

/// The old leader: judges `p`'s node `n1` (one GPU, key 3) at join from `t`, honestly or
/// not, and returns the records it keeps in the hub.
fn old_leader(honest: bool, t: u64) -> BTreeMap<String, String> {
    let v = Verifier::new(cfg());
    assert!(
        v.verdicts_to_save("p").is_none(),
        "nothing to save before it loaded"
    );
    v.load_verdicts("p", BTreeMap::new(), t);
    let (left, _) = steps_as(&v, ("p", &["GPU-1"], 3, honest), (Requests::new(), t), 4);
    assert!(left.is_empty(), "judged: {left:?}");
    let records = v.verdicts_to_save("p").expect("a new verdict to keep");
    assert_eq!(records.len(), 1, "{records:?}");
    v.verdicts_saved("p", records.clone());
    assert!(v.verdicts_to_save("p").is_none(), "saved: nothing changed since");
    records
}

fn idle() -> crate::fleet::MemberView {
    view(Some(report_signed(&["GPU-1"], None, true, 3)), &Requests::new())
}

#[test]
fn a_new_leader_counts_the_old_ones_verdicts_and_waits_for_the_round() {
    let records = old_leader(true, 1_000);
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    assert!(!v.verdicts_loaded("p"));
    v.load_verdicts("p", records, 300_000);
    assert!(v.verdicts_loaded("p"));
    // Verified from its first heartbeat: no "no challenge answered yet", no gap in the
    // nodes that verifiedOnly jobs may use.
    let (verdict, _) = v.verdict("p", 300_000);
    assert_eq!((verdict.verified, verdict.failed), (1, 0), "{verdict:?}");
    assert!(verdict.verified_nodes.contains("n1"), "{verdict:?}");
    // The node is not new to this leader: no challenge until the round.
    assert_eq!(v.step("p", &idle(), 300_000), None);
    assert!(!v.challenging("p"));
    assert_eq!(v.step("p", &idle(), ROUND - 1), None);
    let asked = v.step("p", &idle(), ROUND + 40).expect("challenged at the round");
    assert!(asked.contains_key("n1"));
    assert!(started(&metrics, "round", 1), "{}", metrics.encode());
    assert!(!metrics.encode().contains("why=\"join\""), "{}", metrics.encode());
    assert!(restored(&metrics, "restored", 1), "{}", metrics.encode());
    assert!(
        v.verdicts_to_save("p").is_none(),
        "what it loaded is what the hub holds"
    );
}

#[test]
fn a_node_that_failed_cannot_use_a_new_leader_to_be_challenged_before_the_round() {
    let records = old_leader(false, 1_000);
    let v = Verifier::new(cfg());
    v.load_verdicts("p", records, 300_000);
    let (verdict, _) = v.verdict("p", 300_000);
    assert_eq!((verdict.verified, verdict.failed), (0, 1), "{verdict:?}");
    assert!(
        verdict
            .evidence_kinds()
            .contains(gpufed_trust::verify::EVIDENCE_FAILED_CHALLENGE),
        "still evidence of a lie: {verdict:?}"
    );
    // New to a fresh leader it would be challenged at once; resumed, it waits for the
    // round like under the old one — neither a new GPU nor a verifiedOnly wish helps.
    assert_eq!(v.step("p", &idle(), 300_000), None);
    let more = view(
        Some(report_signed(&["GPU-1", "GPU-2"], None, true, 3)),
        &Requests::new(),
    );
    assert_eq!(v.step("p", &more, 301_000), None);
    v.want_fresh(&[("p".into(), "n1".into())]);
    assert_eq!(v.step("p", &more, 302_000), None);
    assert!(v.step("p", &more, ROUND).is_some(), "the round challenges it");
}

#[test]
fn a_leader_that_takes_over_during_a_round_challenges_its_due_nodes_on_their_own_clock() {
    // Judged at join before the round; the old leader is gone when the round starts. The
    // new one takes over 50 s into it, after the round's grace (5 s) and past the band's
    // slack (30 s): on the round's clock an honest node would fail RoundTripTooSlow.
    let records = old_leader(true, 1_000);
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    let now = ROUND + 50_000;
    v.load_verdicts("p", records, now);
    assert!(restored(&metrics, "due", 1), "{}", metrics.encode());
    assert_eq!(v.verdict("p", now).0.verified, 1, "counts while it is challenged");
    let asked = v.step("p", &idle(), now).expect("challenged at once");
    let (left, t) = steps(&v, "p", &["GPU-1"], 3, (asked, now + 1_000), 3);
    assert!(left.is_empty());
    let (verdict, _) = v.verdict("p", t);
    assert_eq!((verdict.verified, verdict.failed), (1, 0), "{verdict:?}");
    // Counted as what it is: the round, resumed; not a node new to the hub.
    assert!(started(&metrics, "resumed", 1), "{}", metrics.encode());
    assert!(!metrics.encode().contains("why=\"join\""), "{}", metrics.encode());
    // Its new verdict is kept, replacing the old one.
    assert_eq!(v.verdicts_to_save("p").map(|r| r.len()), Some(1));
}

#[test]
fn verdicts_judged_under_other_bands_or_lapsed_are_dropped() {
    let records = old_leader(true, 1_000);
    // A Helm upgrade narrowed the band: what passed the old one says nothing here.
    let mut narrower = cfg();
    narrower.bands.bands[0].round_trip_slack_ms = 2_000;
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(narrower).with_metrics(metrics.clone());
    v.load_verdicts("p", records.clone(), 300_000);
    assert!(restored(&metrics, "bands_changed", 1), "{}", metrics.encode());
    assert_eq!(v.verdict("p", 300_000).0.verified, 0);
    assert!(v.step("p", &idle(), 300_000).is_some(), "a new node: at once");
    // The hub still holds the dropped record: saved over at the next chance.
    assert!(v.verdicts_to_save("p").is_some_and(|r| r.is_empty()));

    // Taken over after the verdict lapsed (next round + grace + timeout): dropped too.
    let v = Verifier::new(cfg());
    assert_eq!(
        v.load_verdicts("p", records, ROUND + 65_001),
        vec![verdicts::Outcome::Expired]
    );
    assert_eq!(v.verdict("p", ROUND + 65_001).0.verified, 0);
}

#[test]
fn a_node_that_leaves_or_speaks_with_another_key_is_no_longer_kept() {
    let records = old_leader(true, 1_000);
    let v = Verifier::new(cfg());
    v.load_verdicts("p", records.clone(), 300_000);
    v.load_pins("p", BTreeMap::new());
    // Another key speaks for n1: its verdicts are cleared, and so is its record.
    let other = view(Some(report_signed(&["GPU-1"], None, true, 9)), &Requests::new());
    v.step("p", &idle(), 300_000);
    v.step("p", &other, 301_000);
    assert_eq!(v.verdicts_to_save("p"), Some(BTreeMap::new()));
    // A node gone from its member is kept, record too, until its verdict lapses (the next
    // round's start + grace + timeout); then it is dropped with its record.
    let v = Verifier::new(cfg());
    v.load_verdicts("p", records, 300_000);
    let gone = crate::fleet::MemberView::default();
    v.step("p", &gone, 301_000);
    assert_eq!(v.verdict("p", 301_000).0.verified, 0, "absent: not counted");
    assert_eq!(v.verdicts_to_save("p"), None, "its record stays");
    v.step("p", &gone, ROUND + 65_001);
    assert_eq!(v.verdicts_to_save("p"), Some(BTreeMap::new()));
}

#[test]
fn a_process_that_leads_again_forgets_its_old_term_and_resumes_from_the_hub() {
    // Leader in term 1: the node joins and passes; its record is kept in the hub.
    let v = Verifier::new(cfg());
    v.enter_term(1);
    v.load_verdicts("p", BTreeMap::new(), 1_000);
    v.load_pins("p", BTreeMap::new());
    steps(&v, "p", &["GPU-1"], 3, (Requests::new(), 1_000), 4);
    let records = v.verdicts_to_save("p").expect("records");
    v.verdicts_saved("p", records.clone());
    v.enter_term(1);
    assert!(v.verdicts_loaded("p"), "the same term keeps what it knows");
    // Another replica led through the next round's start; this one leads again 50 s into
    // that round. Its own schedule from term 1 is stale: judged by it, the node's round
    // challenge would run on the round's clock and an honest node would fail.
    v.enter_term(2);
    assert!(
        !v.verdicts_loaded("p") && !v.pins_loaded("p"),
        "loaded again from the hub"
    );
    assert_eq!(
        v.verdict("p", ROUND + 50_000).0.verified,
        0,
        "nothing of term 1 counts"
    );
    let now = ROUND + 50_000;
    v.load_verdicts("p", records, now);
    v.load_pins("p", BTreeMap::new());
    let asked = v.step("p", &idle(), now).expect("due: challenged at once");
    let (_, t) = steps(&v, "p", &["GPU-1"], 3, (asked, now + 1_000), 3);
    let (verdict, _) = v.verdict("p", t);
    assert_eq!((verdict.verified, verdict.failed), (1, 0), "{verdict:?}");
}
