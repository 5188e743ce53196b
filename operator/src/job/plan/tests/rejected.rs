//! A dispatch the member's API server refuses (400/422) ends the attempt at once and
//! says why, instead of holding its GPUs through endless retries.
use super::*;

const REFUSAL: &str = "Pod \"train-a1-w0\" is invalid: spec.containers[0].env[0].name: Invalid value: \"1X\"";

fn refused(attempt: u32) -> Plan {
    let j = placed(job(2), attempt, None);
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    assert!(p.dispatch, "nothing created yet: the plan dispatches");
    reject_dispatch(&j, &mut p, REFUSAL, T0 + 6);
    p
}

fn cond<'a>(st: &'a ComputeJobStatus, t: &str) -> Option<&'a gpufed_api::common::Condition> {
    conditions::find(&st.conditions, t)
}

#[test]
fn a_refused_dispatch_ends_the_attempt_and_places_a_new_one() {
    let p = refused(1);
    let st = &p.status;
    assert!(!p.dispatch);
    assert!(p.wants_placement, "attempt 2 of 2 is placed");
    assert!(st.placement.is_none(), "its GPUs are released");
    assert_eq!(st.phase, Some(JobPhase::Recovering));
    let a = &st.attempts[0];
    assert_eq!(
        (a.attempt, a.outcome, a.gpu_seconds),
        (1, AttemptOutcome::Failed, 0)
    );
    assert!(a.message.contains(REFUSAL), "{}", a.message);
    assert!(!a.removed, "whatever the refused dispatch created is fenced");
    let ready = cond(st, types::READY).expect("Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "Recovering")
    );
    assert!(ready.message.contains(REFUSAL), "{}", ready.message);
    assert!(cond(st, types::STALLED).is_none(), "it still makes progress");
}

#[test]
fn a_refused_last_attempt_fails_the_job_saying_why() {
    let p = refused(2);
    let st = &p.status;
    assert!(!p.wants_placement && !p.dispatch);
    assert_eq!(st.phase, Some(JobPhase::Failed));
    for t in [types::STALLED, types::FAILED] {
        let c = cond(st, t).expect(t);
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::True, "DispatchRejected"),
            "{t}"
        );
        assert!(c.message.contains(REFUSAL), "{}", c.message);
        assert_eq!(c.observed_generation, Some(1));
    }
    assert_eq!(
        cond(st, types::READY).map(|c| c.status),
        Some(ConditionStatus::False)
    );
    assert!(cond(st, types::RECONCILING).is_none());
    assert_eq!(
        st.usage.as_ref().map(|u| u.gpu_seconds),
        Some(0),
        "the gang never ran"
    );
}

#[test]
fn a_long_refusal_fits_the_attempt_record() {
    let j = placed(job(1), 1, None);
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    reject_dispatch(&j, &mut p, &"é".repeat(5_000), T0 + 6);
    let message = &p.status.attempts[0].message;
    assert!(
        message.chars().count() <= 1024 && message.ends_with('…'),
        "{}",
        message.len()
    );
}

#[test]
fn without_a_live_attempt_there_is_nothing_to_end() {
    let j = job(1);
    let mut p = plan(&j, &Member::NoAttempt, T0);
    let before = p.clone();
    reject_dispatch(&j, &mut p, REFUSAL, T0);
    assert_eq!(p, before);
}

// Pull mode: the agent's report of a refusal reaches the plan as `Member::Rejected`.
const AGENT: &str = "its agent refused Assignment gf-team-train-a1: spec.pods[0]: violates the restricted pod-security profile";

#[test]
fn a_refusal_the_agent_reports_ends_the_attempt_as_a_refused_dispatch() {
    let j = placed(job(2), 1, None);
    let p = plan(&j, &Member::Rejected(AGENT.into()), T0 + 5);
    let st = &p.status;
    assert!(!p.dispatch);
    assert!(st.placement.is_none(), "its GPUs are released");
    assert_eq!(st.phase, Some(JobPhase::Recovering));
    let a = &st.attempts[0];
    assert_eq!(
        (a.attempt, a.outcome, a.gpu_seconds, a.removed),
        (1, AttemptOutcome::Failed, 0, false)
    );
    assert!(
        a.message.contains("provider a refused") && a.message.contains(AGENT),
        "{}",
        a.message
    );
    // The last attempt fails the job, as a refused push-mode dispatch does.
    let p = plan(&placed(job(2), 2, None), &Member::Rejected(AGENT.into()), T0 + 5);
    assert_eq!(p.status.phase, Some(JobPhase::Failed));
    for t in [types::STALLED, types::FAILED] {
        let c = cond(&p.status, t).expect(t);
        assert_eq!(c.reason, "DispatchRejected", "{t}");
        assert!(c.message.contains(AGENT), "{}", c.message);
    }
}

#[test]
fn a_refusal_after_the_gang_ran_bills_what_ran_and_a_long_one_is_cut() {
    let j = placed(job(1), 1, Some(T0));
    let p = plan(&j, &Member::Rejected("é".repeat(5_000)), T0 + 100);
    let a = &p.status.attempts[0];
    assert_eq!(a.gpu_seconds, 200, "2 GPUs for 100 s");
    assert!(
        a.message.chars().count() <= 1024 && a.message.ends_with('…'),
        "{}",
        a.message.len()
    );
}

#[test]
fn a_refusal_does_not_override_what_the_user_asked() {
    let mut j = placed(job(2), 1, None);
    j.spec.suspend = true;
    let p = plan(&j, &Member::Rejected(AGENT.into()), T0 + 5);
    assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::Stopped);
    assert_eq!(p.status.phase, Some(JobPhase::Suspended));
    // Without a live attempt there is nothing to end.
    let p = plan(&job(1), &Member::Rejected(AGENT.into()), T0);
    assert!(p.status.attempts.is_empty() && p.wants_placement);
}
