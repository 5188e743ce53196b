//! A node whose member lost contact with it (`Ready` `Unknown`) is waited for over the
//! provider's grace period — a restart of the member's API server marks every node so —
//! and counted lost only after it, billed up to when it was first seen unreachable.
use super::*;

const GRACE: i64 = 90;

/// A running two-worker gang; worker 1's node is unreachable when `unreachable`.
fn gang(unreachable: bool, worker_1: PodPhase) -> Vec<PodView> {
    let Member::Pods(mut v) = pods(&[PodPhase::Running, worker_1]) else {
        unreachable!("pods() returns pods")
    };
    v[1].node_unreachable = unreachable;
    v
}

fn since(p: &Plan) -> Option<String> {
    p.status.placement.as_ref()?.node_unreachable_since.clone()
}

fn with_status(p: &Plan) -> ComputeJob {
    ComputeJob {
        status: Some(p.status.clone()),
        ..job(2)
    }
}

/// One round as the reconcile runs it: the observation's grace rule, then the plan.
fn round(j: &ComputeJob, mut seen: Vec<PodView>, now: i64) -> Plan {
    if let Some(p) = j.status.as_ref().and_then(|s| s.placement.as_ref()) {
        expire_unreachable(p, &mut seen, GRACE, now);
    }
    plan(j, &Member::Pods(seen), now)
}

#[test]
fn an_unreachable_node_is_waited_for_then_lost_and_billed_to_when_first_seen() {
    let first = round(
        &placed(job(2), 1, Some(T0)),
        gang(true, PodPhase::Running),
        T0 + 100,
    );
    assert!(first.status.attempts.is_empty(), "{:?}", first.status.attempts);
    assert_eq!(first.status.phase, Some(JobPhase::Running));
    assert_eq!(since(&first), Some(crate::time::format(T0 + 100)));
    assert_eq!(
        cond(&first.status, types::READY),
        Some((ConditionStatus::False, "NodeUnreachable".into()))
    );
    // Within the grace period: the mark stays where it was first seen (idempotent).
    let within = round(
        &with_status(&first),
        gang(true, PodPhase::Running),
        T0 + 100 + GRACE,
    );
    assert!(within.status.attempts.is_empty());
    assert_eq!(since(&within), since(&first));
    assert_eq!(
        within.status.usage.as_ref().map(|u| u.gpu_seconds),
        Some(4 * (100 + 90))
    );
    // Past it: node lost, billed to the first sighting, failed over.
    let past = round(
        &with_status(&within),
        gang(true, PodPhase::Running),
        T0 + 101 + GRACE,
    );
    let a = &past.status.attempts[0];
    assert_eq!(a.outcome, AttemptOutcome::NodeLost);
    assert_eq!(a.end_time, crate::time::format(T0 + 100));
    assert_eq!(a.gpu_seconds, 4 * 100);
    assert!(a.message.contains("worker 1"), "{}", a.message);
    assert_eq!(past.status.phase, Some(JobPhase::Recovering));
    assert!(past.status.placement.is_none());
}

#[test]
fn a_node_that_answers_again_within_the_grace_period_leaves_the_attempt_running() {
    let first = round(
        &placed(job(2), 1, Some(T0)),
        gang(true, PodPhase::Running),
        T0 + 100,
    );
    let back = round(&with_status(&first), gang(false, PodPhase::Running), T0 + 150);
    assert!(back.status.attempts.is_empty());
    assert_eq!(since(&back), None);
    assert_eq!(
        cond(&back.status, types::READY),
        Some((ConditionStatus::True, "Running".into()))
    );
    // A second outage is timed from its own first sighting, not the first one's.
    let again = round(&with_status(&back), gang(true, PodPhase::Running), T0 + 300);
    let late = round(
        &with_status(&again),
        gang(true, PodPhase::Running),
        T0 + 300 + GRACE,
    );
    assert!(late.status.attempts.is_empty(), "{:?}", late.status.attempts);
}

#[test]
fn a_worker_that_finished_is_not_waited_for_on_its_unreachable_node() {
    let p = round(
        &placed(job(2), 1, Some(T0)),
        gang(true, PodPhase::Succeeded),
        T0 + 100,
    );
    assert_eq!(since(&p), None);
    assert!(p.status.attempts.is_empty());
}

#[test]
fn a_node_reported_not_ready_is_lost_at_once() {
    let mut seen = gang(false, PodPhase::Running);
    seen[1].node_lost = true;
    let p = round(&placed(job(2), 1, Some(T0)), seen, T0 + 100);
    let a = &p.status.attempts[0];
    assert_eq!((a.outcome, a.gpu_seconds), (AttemptOutcome::NodeLost, 4 * 100));
    assert_eq!(a.end_time, crate::time::format(T0 + 100));
}

#[test]
fn a_node_reported_not_ready_beside_an_unreachable_one_is_billed_to_now() {
    let first = round(
        &placed(job(2), 1, Some(T0)),
        gang(true, PodPhase::Running),
        T0 + 100,
    );
    let mut seen = gang(true, PodPhase::Running);
    seen[0].node_lost = true;
    let p = round(&with_status(&first), seen, T0 + 130);
    let a = &p.status.attempts[0];
    assert_eq!(a.end_time, crate::time::format(T0 + 130));
    assert_eq!(a.message, "node of worker 0 lost");
}
