//! An attempt a placement round evicted for a job of higher priority ends `Preempted`:
//! billed up to then, its pods fenced, the job queued again — without using up one of
//! its `maxAttempts`.
use super::*;
use gpufed_api::job_status::Preemption;

fn marked(j: ComputeJob) -> ComputeJob {
    let mut j = j;
    if let Some(p) = j.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(Preemption {
            by: "team/urgent".into(),
            priority: 900,
            time: crate::time::format(T0 + 90),
        });
    }
    j
}

fn fails(st: &ComputeJobStatus, attempt: u32) -> Plan {
    let mut j = job(1);
    j.status = Some(st.clone());
    let j = placed(j, attempt, Some(T0 + 1000 * i64::from(attempt)));
    plan(
        &j,
        &pods(&[PodPhase::Failed]),
        T0 + 1000 * i64::from(attempt) + 10,
    )
}

#[test]
fn a_marked_attempt_ends_preempted_billed_to_now_and_queues_again() {
    let j = marked(placed(job(2), 1, Some(T0)));
    let p = plan(&j, &pods(&[PodPhase::Running, PodPhase::Running]), T0 + 100);
    let st = &p.status;
    assert!(st.placement.is_none(), "its GPUs are released");
    assert_eq!(st.phase, Some(JobPhase::Recovering));
    assert_eq!(st.preemptions, 1);
    let a = &st.attempts[0];
    assert_eq!(a.outcome, AttemptOutcome::Preempted);
    assert_eq!(a.gpu_seconds, 100 * 4, "2 workers × 2 GPUs for 100 s");
    assert!(!a.removed, "its pods are still there: fenced and removed");
    assert!(
        a.message.contains("team/urgent") && a.message.contains("900"),
        "{}",
        a.message
    );
    for t in [types::PLACED, types::READY] {
        assert_eq!(
            cond(st, t),
            Some((ConditionStatus::False, "Preempted".into())),
            "{t}"
        );
    }
    assert_eq!(st.usage.as_ref().map(|u| u.gpu_seconds), Some(400));
}

#[test]
fn a_marked_attempt_ends_even_when_its_provider_does_not_answer() {
    let j = marked(placed(job(1), 1, Some(T0)));
    let p = plan(&j, &Member::Unanswered, T0 + 30);
    assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::Preempted);
    assert!(p.status.placement.is_none());
}

#[test]
fn work_that_finished_before_the_eviction_counts_as_finished() {
    let j = marked(placed(job(1), 1, Some(T0)));
    let p = plan(&j, &pods(&[PodPhase::Succeeded]), T0 + 600);
    assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(p.status.phase, Some(JobPhase::Succeeded));
    assert_eq!(p.status.preemptions, 0);
}

#[test]
fn preemptions_never_use_up_max_attempts() {
    // maxAttempts 2: attempt 1 and 2 evicted, attempt 3 fails (1 of 2), 4 fails (2 of 2).
    let mut st = ComputeJobStatus::default();
    for attempt in 1..=2 {
        let mut j = job(1);
        j.status = Some(st.clone());
        let j = marked(placed(j, attempt, Some(T0)));
        let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 50);
        assert_eq!(p.status.phase, Some(JobPhase::Recovering), "attempt {attempt}");
        st = p.status;
    }
    assert_eq!(st.preemptions, 2);
    let p = fails(&st, 3);
    assert_eq!(
        p.status.phase,
        Some(JobPhase::Recovering),
        "the first failure leaves a retry"
    );
    let p = fails(&p.status, 4);
    assert_eq!(
        p.status.phase,
        Some(JobPhase::Failed),
        "the second failure ends the job"
    );
    assert_eq!(p.status.attempts.len(), 4);
    assert_eq!(
        cond(&p.status, types::FAILED),
        Some((ConditionStatus::True, "AttemptsExhausted".into()))
    );
}

#[test]
fn an_attempt_evicted_by_its_providers_drain_ends_preempted_and_says_so() {
    let mut j = placed(job(1), 1, Some(T0));
    if let Some(p) = j.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(Preemption {
            by: format!("{}a", gpufed_api::job_status::DRAIN_BY_PREFIX),
            priority: 0,
            time: crate::time::format(T0 + 50),
        });
    }
    let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 60);
    let a = &p.status.attempts[0];
    assert_eq!(a.outcome, AttemptOutcome::Preempted);
    assert_eq!(a.message, "evicted: provider a drains (spec.drain)");
    assert_eq!(
        p.status.phase,
        Some(JobPhase::Recovering),
        "queued again elsewhere"
    );
    assert_eq!(p.status.preemptions, 1, "and it does not use up an attempt");
}

#[test]
fn an_attempt_evicted_by_its_providers_tenant_policy_ends_preempted_and_says_so() {
    let mut j = placed(job(1), 1, Some(T0));
    if let Some(p) = j.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(Preemption {
            by: format!("{}a", gpufed_api::job_status::TENANCY_BY_PREFIX),
            priority: 0,
            time: crate::time::format(T0 + 50),
        });
    }
    let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 60);
    let a = &p.status.attempts[0];
    assert_eq!(a.outcome, AttemptOutcome::Preempted);
    assert_eq!(
        a.message,
        "evicted: provider a no longer takes work from this namespace (spec.tenants.evictRunning)"
    );
    assert_eq!(p.status.phase, Some(JobPhase::Recovering));
    assert_eq!(p.status.preemptions, 1, "and it does not use up an attempt");
}

/// The room a job held while waiting for its evictions is the placement round's to keep:
/// the job controller leaves it while the job queues and drops it once it does not.
#[test]
fn room_held_for_a_preemptor_is_kept_while_it_queues_and_dropped_after() {
    let held = gpufed_api::job_status::HeldRoom {
        provider: "a".into(),
        nodes: vec![gpufed_api::job_status::HeldNode {
            node: "h1".into(),
            gpus: 4,
            ..Default::default()
        }],
    };
    let mut waiting = job(2);
    waiting.status = Some(ComputeJobStatus {
        held: Some(held.clone()),
        ..Default::default()
    });
    let p = plan(&waiting, &Member::NoAttempt, T0);
    assert_eq!(p.status.held, Some(held.clone()), "queued: still waiting");

    let mut suspended = waiting.clone();
    suspended.spec.suspend = true;
    let p = plan(&suspended, &Member::NoAttempt, T0);
    assert_eq!(p.status.held, None, "suspended: it holds nothing");

    // Placed by a write that left it (an older operator): the placement is the room now.
    let placed = placed(waiting, 1, None);
    assert!(placed.status.as_ref().is_some_and(|s| s.held.is_some()));
    let p = plan(&placed, &pods(&[]), T0);
    assert_eq!(p.status.held, None, "placed: its room is its placement");
}
