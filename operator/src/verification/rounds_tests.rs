//! Challenge rounds through the verifier (`gpufed_trust::rounds`): the whole fleet at
//! once, late round challenges on the round's clock, no stepping out of a round.

use super::*;

/// The round after `cfg()`'s first (its interval is 10 minutes, its grace 5 s).
pub(super) const ROUND: u64 = 600_000;

pub(super) type Requests = BTreeMap<String, ChallengeRequest>;

/// Steps `provider`'s honest node `n1` (GPUs `uuids`, key `key`) `n` times, a second
/// apart from `t`, beginning from the requests the member holds; returns them and the
/// time after.
pub(super) fn steps(
    v: &Verifier,
    provider: &str,
    uuids: &[&str],
    key: u8,
    start: (Requests, u64),
    n: usize,
) -> (Requests, u64) {
    steps_as(v, (provider, uuids, key, true), start, n)
}

/// [`steps`] for a node that answers honestly or not: `(provider, uuids, key, honest)`.
pub(super) fn steps_as(
    v: &Verifier,
    (provider, uuids, key, honest): (&str, &[&str], u8, bool),
    start: (Requests, u64),
    n: usize,
) -> (Requests, u64) {
    let (mut member, mut t) = start;
    for _ in 0..n {
        let rep = report_signed(uuids, member.get("n1"), honest, key);
        if let Some(desired) = v.step(provider, &view(Some(rep), &member), t) {
            member = desired;
        }
        t += 1_000;
    }
    (member, t)
}

/// Whether `metrics` counted `n` challenges started for `why`.
pub(super) fn started(metrics: &crate::metrics::Metrics, why: &str, n: u32) -> bool {
    let line = format!("gpufed_challenges_started_total{{why=\"{why}\"}} {n}\n");
    metrics.encode().contains(&line)
}

#[test]
fn providers_that_joined_apart_are_challenged_again_together_at_the_round() {
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    // p joins at 1 s, q five minutes later: each is challenged at once, alone.
    steps(&v, "p", &["GPU-p"], 3, (Requests::new(), 1_000), 4);
    steps(&v, "q", &["GPU-q"], 4, (Requests::new(), 300_000), 4);
    assert_eq!(v.verdict("p", 310_000).0.verified, 1);
    assert_eq!(v.verdict("q", 310_000).0.verified, 1);
    // Their own intervals would put them ten minutes apart; the round puts them together.
    for (provider, uuid, key) in [("p", "GPU-p", 3), ("q", "GPU-q", 4)] {
        let idle = view(Some(report_signed(&[uuid], None, true, key)), &Requests::new());
        assert_eq!(
            v.step(provider, &idle, ROUND - 1),
            None,
            "{provider} before the round"
        );
        let asked = v
            .step(provider, &idle, ROUND + 40)
            .expect("challenged at the round");
        assert!(asked.contains_key("n1"), "{provider}: {asked:?}");
        // Both answer at once and pass: the round costs honest nodes nothing.
        let (left, _) = steps(&v, provider, &[uuid], key, (asked, ROUND + 1_000), 3);
        assert!(left.is_empty(), "{provider} judged: {left:?}");
    }
    assert_eq!(v.verdict("p", ROUND + 5_000).0.verified, 1);
    assert_eq!(v.verdict("q", ROUND + 5_000).0.verified, 1);
    assert!(started(&metrics, "join", 2), "{}", metrics.encode());
    assert!(started(&metrics, "round", 2), "{}", metrics.encode());
    // Both were issued 40 ms after the round's start.
    let text = metrics.encode();
    assert!(
        text.contains("gpufed_challenge_round_lag_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains("gpufed_challenge_round_lag_seconds_sum 0.08"),
        "{text}"
    );
}

#[test]
fn a_node_that_withholds_its_report_at_the_round_answers_on_the_rounds_clock() {
    let v = Verifier::new(cfg());
    let uuids = ["GPU-1"];
    steps(&v, "p", &uuids, 3, (Requests::new(), 1_000), 4);
    assert_eq!(v.verdict("p", 10_000).0.verified, 1);
    // At the round the node publishes nothing (its GPU answers for another identity
    // meanwhile): nothing to challenge it with yet.
    assert_eq!(v.step("p", &view(None, &Requests::new()), ROUND), None);
    // A minute later it reports and answers at once. Its challenge ran from 5 s (the
    // grace) after the round's start, not from when it chose to show up.
    let (member, t) = steps(&v, "p", &uuids, 3, (Requests::new(), ROUND + 60_000), 4);
    assert!(member.is_empty(), "judged: {member:?}");
    let (verdict, _) = v.verdict("p", t);
    assert_eq!((verdict.verified, verdict.failed), (0, 1), "{verdict:?}");
    let failure = verdict.failures[0].1.failure.clone().expect("a failure");
    assert_eq!(failure.reason(), "RoundTripTooSlow", "{failure}");
    assert!(failure.to_string().contains("56000 ms"), "{failure}");
    assert!(verdict.evidence_kinds().is_empty(), "late is not a lie");

    // Having failed, it cannot pick its own time: a new GPU in its report waits for the
    // next round, and so does a verifiedOnly job's wish.
    let more = ["GPU-1", "GPU-2"];
    let changed = view(Some(report_signed(&more, None, true, 3)), &Requests::new());
    assert_eq!(v.step("p", &changed, ROUND + 120_000), None);
    v.want_fresh(&[("p".into(), "n1".into())]);
    assert_eq!(v.step("p", &changed, ROUND + 121_000), None);
    // At the next round it is challenged with the rest, and passes.
    let asked = v.step("p", &changed, 2 * ROUND).expect("the next round");
    let (left, t) = steps(&v, "p", &more, 3, (asked, 2 * ROUND + 1_000), 3);
    assert!(left.is_empty());
    assert_eq!(v.verdict("p", t).0.verified, 2);
}

#[test]
fn a_node_that_lists_no_gpu_at_the_round_answers_on_the_rounds_clock_too() {
    let v = Verifier::new(cfg());
    let uuids = ["GPU-1"];
    steps(&v, "p", &uuids, 3, (Requests::new(), 1_000), 4);
    assert_eq!(v.verdict("p", 10_000).0.verified, 1);
    // At the round its signed report lists nothing: as good as no report.
    let empty = view(Some(report_signed(&[], None, true, 3)), &Requests::new());
    assert_eq!(v.step("p", &empty, ROUND), None);
    let (_, problems) = v.verdict("p", ROUND);
    assert!(format!("{problems:?}").contains("lists no GPU"), "{problems:?}");
    // A minute later the GPU is back and answers at once: late for the round.
    let (member, t) = steps(&v, "p", &uuids, 3, (Requests::new(), ROUND + 60_000), 4);
    assert!(member.is_empty(), "judged: {member:?}");
    let (verdict, _) = v.verdict("p", t);
    assert_eq!((verdict.verified, verdict.failed), (0, 1), "{verdict:?}");
    assert_eq!(
        verdict.failures[0]
            .1
            .failure
            .as_ref()
            .map(gpufed_trust::Failure::reason),
        Some("RoundTripTooSlow")
    );
}

#[test]
fn a_node_that_drops_its_gpus_while_challenged_is_judged_for_them() {
    let v = Verifier::new(cfg());
    // Joins with GPU-1 and is challenged; then its report lists nothing.
    let joined = view(Some(report_signed(&["GPU-1"], None, true, 3)), &Requests::new());
    let asked = v.step("p", &joined, 1_000).expect("challenged at join");
    let empty = view(Some(report_signed(&[], None, true, 3)), &asked);
    v.step("p", &empty, 2_000);
    // Past the timeout the challenged GPU has its verdict: not answered.
    v.step("p", &empty, 70_000);
    let (verdict, _) = v.verdict("p", 70_000);
    assert_eq!((verdict.verified, verdict.failed), (0, 1), "{verdict:?}");
    assert_eq!(verdict.failures[0].1.uuid, "GPU-1");
}

#[test]
fn a_challenge_opened_between_rounds_gives_way_to_the_round() {
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    let uuids = ["GPU-1"];
    // A node joins a second before the round and has not answered when it starts.
    let idle = view(Some(report_signed(&uuids, None, true, 3)), &Requests::new());
    let joined = v.step("p", &idle, ROUND - 1_000).expect("challenged at join");
    let pending = view(Some(report_signed(&uuids, None, true, 3)), &joined);
    let round = v
        .step("p", &pending, ROUND)
        .expect("the round's challenge replaces it");
    assert_ne!(joined["n1"].nonce, round["n1"].nonce);
    // The node answers the round's request and passes; the join's answer is never judged.
    let (left, t) = steps(&v, "p", &uuids, 3, (round, ROUND + 1_000), 3);
    assert!(left.is_empty());
    assert_eq!(v.verdict("p", t).0.verified, 1);
    assert!(started(&metrics, "join", 1), "{}", metrics.encode());
    assert!(started(&metrics, "round", 1), "{}", metrics.encode());
}

#[test]
fn a_verdict_lapses_when_its_node_skips_the_next_round() {
    let v = Verifier::new(cfg());
    // Verified at join, late in the first round: it counts until the next round's
    // challenge should have been judged (start + grace 5 s + timeout 60 s), no longer.
    steps(&v, "p", &["GPU-1"], 3, (Requests::new(), ROUND - 30_000), 4);
    assert_eq!(v.verdict("p", ROUND + 65_000).0.verified, 1);
    // The node is gone from its member at the round and after: no new verdict.
    assert_eq!(v.step("p", &view(None, &Requests::new()), ROUND), None);
    assert_eq!(v.verdict("p", ROUND + 65_001).0.verified, 0);
}

#[test]
fn a_node_that_listed_no_gpu_is_challenged_as_soon_as_it_lists_one() {
    let v = Verifier::new(cfg());
    // Its driver was not loaded yet: a report of no GPU, nothing to challenge.
    let empty = view(Some(report_signed(&[], None, true, 3)), &Requests::new());
    assert_eq!(v.step("p", &empty, 1_000), None);
    // It failed nothing, so its first GPU does not wait for the round.
    let one = view(Some(report_signed(&["GPU-1"], None, true, 3)), &Requests::new());
    let asked = v.step("p", &one, 2_000).expect("challenged at once");
    assert!(asked.contains_key("n1"));
}

#[test]
fn a_node_late_by_its_own_or_its_members_doing_is_not_the_hubs_lag() {
    let metrics = crate::metrics::Metrics::new();
    let v = Verifier::new(cfg()).with_metrics(metrics.clone());
    steps(&v, "p", &["GPU-p"], 3, (Requests::new(), 1_000), 4);
    steps(&v, "q", &["GPU-q"], 4, (Requests::new(), 2_000), 4);
    // At the round p's node publishes nothing and q's member cannot be reached.
    assert_eq!(v.step("p", &view(None, &Requests::new()), ROUND + 100), None);
    v.member_missed("q", ROUND + 100);
    // A minute later both are back and challenged, on the round's clock.
    let back = |uuid: &str, key| view(Some(report_signed(&[uuid], None, true, key)), &Requests::new());
    let asked_p = v
        .step("p", &back("GPU-p", 3), ROUND + 60_000)
        .expect("p challenged");
    let asked_q = v
        .step("q", &back("GPU-q", 4), ROUND + 60_000)
        .expect("q challenged");
    let text = metrics.encode();
    assert!(
        text.contains("gpufed_challenge_round_late_nodes_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("gpufed_challenge_round_lag_seconds_count 0\n"),
        "not the hub's spread: {text}"
    );
    // Judged (too late for the round's clock), then the next round finds them on time.
    steps(&v, "p", &["GPU-p"], 3, (asked_p, ROUND + 61_000), 3);
    steps(&v, "q", &["GPU-q"], 4, (asked_q, ROUND + 61_000), 3);
    assert!(v.step("p", &back("GPU-p", 3), 2 * ROUND + 50).is_some());
    let text = metrics.encode();
    assert!(
        text.contains("gpufed_challenge_round_lag_seconds_count 1\n"),
        "{text}"
    );
    assert!(
        text.contains("gpufed_challenge_round_late_nodes_total 2\n"),
        "{text}"
    );
}
