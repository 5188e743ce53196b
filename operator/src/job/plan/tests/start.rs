//! A placed attempt whose gang does not start within `spec.startTimeout` (default 15 min)
//! ends, saying what its workers wait for, and the job is placed again elsewhere.
use super::*;

fn waiting(phases: &[(PodPhase, Option<&str>)]) -> Member {
    let Member::Pods(mut views) = pods(&phases.iter().map(|(p, _)| *p).collect::<Vec<_>>()) else {
        unreachable!("pods() gives pods")
    };
    for (v, (_, why)) in views.iter_mut().zip(phases) {
        v.waiting = why.map(str::to_owned);
    }
    Member::Pods(views)
}

const UNSCHEDULABLE: &str = "Unschedulable: 0/3 nodes are available: 3 Insufficient gpufed.io/gpu.";
const LIMIT: i64 = gpufed_api::job::DEFAULT_START_TIMEOUT_SECS as i64;

#[test]
fn within_the_start_timeout_a_starting_gang_is_waited_for() {
    let j = placed(job(2), 1, None);
    let member = waiting(&[
        (PodPhase::Running, None),
        (PodPhase::Pending, Some(UNSCHEDULABLE)),
    ]);
    let p = plan(&j, &member, T0 + LIMIT - 1);
    let st = &p.status;
    assert!(st.attempts.is_empty() && st.placement.is_some());
    assert_eq!(st.phase, Some(JobPhase::Placed));
    assert_eq!(
        cond(st, "Ready"),
        Some((ConditionStatus::False, "Starting".into()))
    );
}

#[test]
fn past_it_the_attempt_ends_saying_why_and_the_provider_is_avoided() {
    let j = placed(job(2), 1, None);
    let member = waiting(&[
        (PodPhase::Running, None),
        (PodPhase::Pending, Some(UNSCHEDULABLE)),
    ]);
    let now = T0 + LIMIT;
    let p = plan(&j, &member, now);
    let st = &p.status;
    assert!(st.placement.is_none(), "its GPUs are released");
    assert_eq!(st.phase, Some(JobPhase::Recovering));
    let a = &st.attempts[0];
    assert_eq!(
        (a.outcome, a.reason.as_deref(), a.gpu_seconds, a.removed),
        (AttemptOutcome::Failed, Some(START_TIMEOUT), 0, false),
        "nothing billed (the gang never ran); its running worker is fenced"
    );
    assert!(
        a.message.contains("provider a within 900s")
            && a.message.contains("1 of 2 workers running")
            && a.message.contains(&format!("worker 1: {UNSCHEDULABLE}")),
        "{}",
        a.message
    );
    assert_eq!(
        cond(st, "Ready"),
        Some((ConditionStatus::False, "Recovering".into()))
    );
    assert_eq!(avoided_providers(Some(st), now), vec!["a".to_owned()]);
    assert!(
        avoided_providers(Some(st), now + AVOID_SECS).is_empty(),
        "not for ever"
    );
}

#[test]
fn a_gang_that_ran_is_never_timed_out_and_unanswered_providers_are_waited_for() {
    let ran = placed(job(2), 1, Some(T0 + 10));
    let p = plan(
        &ran,
        &pods(&[PodPhase::Running, PodPhase::Running]),
        T0 + 10 * LIMIT,
    );
    assert!(p.status.attempts.is_empty());
    assert_eq!(p.status.phase, Some(JobPhase::Running));
    // A provider that does not answer now is the heartbeat grace period's to judge.
    let silent = placed(job(2), 1, None);
    let p = plan(&silent, &Member::Unanswered, T0 + 2 * LIMIT);
    assert!(p.status.attempts.is_empty() && p.status.placement.is_some());
}

#[test]
fn an_agent_that_never_takes_the_attempt_up_times_it_out() {
    // The agent reports (its heartbeat is fresh) but never acts on the Assignment.
    let j = placed(job(2), 1, None);
    let p = plan(&j, &Member::NotTakenUp, T0 + LIMIT - 1);
    assert!(
        p.status.attempts.is_empty() && p.status.placement.is_some(),
        "waited for"
    );
    let p = plan(&j, &Member::NotTakenUp, T0 + LIMIT);
    let a = &p.status.attempts[0];
    assert_eq!(
        (a.outcome, a.reason.as_deref()),
        (AttemptOutcome::Failed, Some(START_TIMEOUT))
    );
    assert!(
        a.message.contains("0 of 2 workers running") && a.message.contains("never took the attempt up"),
        "{}",
        a.message
    );
    // A gang that ran is never timed out, whatever the agent does.
    let ran = placed(job(2), 1, Some(T0 + 10));
    let p = plan(&ran, &Member::NotTakenUp, T0 + 10 * LIMIT);
    assert!(p.status.attempts.is_empty());
}

#[test]
fn its_own_timeout_counts_and_workers_waiting_alike_are_named_together() {
    let mut j = placed(job(3), 1, None);
    j.spec.start_timeout = Some("30s".into());
    let pull = "ImagePullBackOff: Back-off pulling image \"busybox\"";
    let member = waiting(&[(PodPhase::Pending, Some(pull)), (PodPhase::Pending, Some(pull))]);
    assert!(plan(&j, &member, T0 + 29).status.attempts.is_empty());
    let a = plan(&j, &member, T0 + 30).status.attempts[0].clone();
    assert!(
        a.message.contains(&format!("workers 0, 1: {pull}")) && a.message.contains("1 not created"),
        "{}",
        a.message
    );
    // Nothing created at all (a pull-mode agent that never took the assignment).
    let none = plan(&j, &Member::Pods(Vec::new()), T0 + 30).status.attempts[0].clone();
    assert!(
        none.message.contains("0 of 3 workers running; 3 not created"),
        "{}",
        none.message
    );
}

#[test]
fn the_last_attempt_timing_out_fails_the_job_with_that_reason() {
    let j = placed(job(2), 2, None); // the second of two attempts
    let p = plan(&j, &Member::Pods(Vec::new()), T0 + LIMIT);
    let st = &p.status;
    assert_eq!(st.phase, Some(JobPhase::Failed));
    assert_eq!(
        cond(st, "Failed"),
        Some((ConditionStatus::True, START_TIMEOUT.into()))
    );
    assert_eq!(
        cond(st, "Stalled"),
        Some((ConditionStatus::True, START_TIMEOUT.into()))
    );
}

#[test]
fn suspending_a_job_that_never_started_stops_it_rather_than_timing_it_out() {
    let mut j = placed(job(2), 1, None);
    j.spec.suspend = true;
    let p = plan(&j, &Member::Pods(Vec::new()), T0 + LIMIT);
    let a = &p.status.attempts[0];
    assert_eq!((a.outcome, a.reason.as_deref()), (AttemptOutcome::Stopped, None));
}
