//! A dispatch the member forbids (403 for a permission the provider has not granted) is
//! retried through a grace period, then ends the attempt and keeps the job off that
//! provider for a while, so it fails over instead of holding GPUs through endless retries.
use super::*;

const FORBIDDEN: &str = "secrets \"gpufed-checkpoint\" is forbidden: User \"system:serviceaccount:gpufed:hub\" \
                         cannot patch resource \"secrets\" in API group \"\" in the namespace \"t-train\"";

fn dispatching() -> (ComputeJob, Plan) {
    let j = placed(job(3), 1, None);
    let p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    assert!(p.dispatch, "nothing created yet: the plan dispatches");
    (j, p)
}

#[test]
fn within_the_grace_period_nothing_changes_and_the_dispatch_is_retried() {
    let (j, mut p) = dispatching();
    let before = p.clone();
    let now = T0 + FORBIDDEN_GRACE_SECS - 1;
    assert!(!forbid_dispatch(&j, &mut p, FORBIDDEN, now));
    assert_eq!(p, before);
}

#[test]
fn past_the_grace_period_the_attempt_ends_and_the_provider_is_avoided_for_a_while() {
    let (j, mut p) = dispatching();
    let now = T0 + FORBIDDEN_GRACE_SECS;
    assert!(forbid_dispatch(&j, &mut p, FORBIDDEN, now));
    let st = &p.status;
    assert!(!p.dispatch && p.wants_placement, "attempt 2 is placed elsewhere");
    assert!(st.placement.is_none(), "its GPUs are released");
    assert_eq!(st.phase, Some(JobPhase::Recovering));
    let a = &st.attempts[0];
    assert_eq!(
        (a.outcome, a.reason.as_deref(), a.gpu_seconds, a.removed),
        (AttemptOutcome::Failed, Some(DISPATCH_FORBIDDEN), 0, false),
        "nothing billed; whatever it created is fenced"
    );
    assert!(
        a.message.contains(FORBIDDEN) && a.message.contains("provider a"),
        "{}",
        a.message
    );
    assert_eq!(avoided_providers(Some(st), now), vec!["a".to_owned()]);
    assert_eq!(
        avoided_providers(Some(st), now + AVOID_SECS - 1),
        vec!["a".to_owned()]
    );
    assert!(
        avoided_providers(Some(st), now + AVOID_SECS).is_empty(),
        "not for ever"
    );
}

#[test]
fn only_forbidden_attempts_keep_a_job_off_a_provider() {
    let mut j = placed(job(3), 1, None);
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    reject_dispatch(&j, &mut p, "Pod \"w0\" is invalid", T0 + 6);
    assert_eq!(
        p.status.attempts[0].reason.as_deref(),
        Some("DispatchRejected"),
        "an invalid spec is the job's own fault, wherever it goes"
    );
    assert!(avoided_providers(Some(&p.status), T0 + 7).is_empty());
    j.status = None;
    assert!(avoided_providers(j.status.as_ref(), T0).is_empty());
}

#[test]
fn a_forbidden_last_attempt_fails_the_job_saying_why() {
    let j = placed(job(1), 2, None); // the second of two attempts
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    assert!(forbid_dispatch(
        &j,
        &mut p,
        FORBIDDEN,
        T0 + FORBIDDEN_GRACE_SECS + 1
    ));
    let st = &p.status;
    assert_eq!(st.phase, Some(JobPhase::Failed));
    for t in [types::STALLED, types::FAILED] {
        let c = conditions::find(&st.conditions, t).expect(t);
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::True, DISPATCH_FORBIDDEN),
            "{t}"
        );
        assert!(c.message.contains(FORBIDDEN), "{}", c.message);
    }
}

// Pull mode: the agent's report of its API server's 403 reaches the plan as
// `Member::Forbidden`, ended by the same rule.
#[test]
fn an_agent_reporting_forbidden_ends_the_attempt_only_past_the_grace_period() {
    let j = placed(job(3), 1, None);
    let member = Member::Forbidden(FORBIDDEN.into());
    let early = plan(&j, &member, T0 + FORBIDDEN_GRACE_SECS - 1);
    assert!(early.status.attempts.is_empty(), "retried by the agent meanwhile");
    assert!(early.status.placement.is_some());
    let late = plan(&j, &member, T0 + FORBIDDEN_GRACE_SECS);
    let a = late.status.attempts.first().expect("attempt 1 ended");
    assert_eq!(
        (a.outcome, a.reason.as_deref()),
        (AttemptOutcome::Failed, Some(DISPATCH_FORBIDDEN))
    );
    assert!(late.status.placement.is_none(), "its GPUs are released");
    assert_eq!(late.status.phase, Some(JobPhase::Recovering));
}
