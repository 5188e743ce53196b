//! How an ended attempt is recorded: removed only when nothing of it can be left in the
//! member, its message within the CRD's bound, and a failed job's reason saying why.
use super::*;

#[test]
fn a_gang_not_seen_whole_is_left_to_fence() {
    // Worker 0 failed; worker 1 not created yet (a pull-mode agent behind, say): it could
    // still be created beside the next attempt unless the attempt is fenced.
    let p = plan(&placed(job(2), 1, None), &pods(&[PodPhase::Failed]), T0 + 100);
    let a = &p.status.attempts[0];
    assert_eq!(a.outcome, AttemptOutcome::Failed);
    assert!(!a.removed, "worker 1 may still come");
    // Worker 1 seen and ended too: nothing left.
    let p = plan(
        &placed(job(2), 1, None),
        &pods(&[PodPhase::Failed, PodPhase::Failed]),
        T0 + 100,
    );
    assert!(p.status.attempts[0].removed);
}

fn long_named(attempt: u32) -> ComputeJob {
    let mut j = placed(job(2), attempt, None);
    let p = j
        .status
        .as_mut()
        .and_then(|s| s.placement.as_mut())
        .expect("placement");
    p.provider = "d".repeat(253);
    j
}

#[test]
fn a_record_s_message_stays_within_the_crd_bound() {
    let max = gpufed_api::job_status::MAX_ATTEMPT_MESSAGE;
    let answer = "é".repeat(3000);
    // Push mode: the API server's refusal, and a forbidding answer past the grace period.
    let j = long_named(1);
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    reject_dispatch(&j, &mut p, &answer, T0 + 6);
    let mut messages = vec![p.status.attempts[0].message.clone()];
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    assert!(forbid_dispatch(&j, &mut p, &answer, T0 + FORBIDDEN_GRACE_SECS));
    messages.push(p.status.attempts[0].message.clone());
    // Pull mode: the agent's report of either.
    for member in [
        Member::Rejected(answer.clone()),
        Member::Forbidden(answer.clone()),
    ] {
        let p = plan(&j, &member, T0 + FORBIDDEN_GRACE_SECS);
        messages.push(p.status.attempts[0].message.clone());
    }
    for m in messages {
        assert!(m.chars().count() <= max, "{} characters", m.chars().count());
        assert!(m.ends_with('…') && m.contains(&"d".repeat(253)), "{m}");
    }
}

fn failed_reasons(p: &Plan) -> (String, String) {
    let reason = |t| {
        conditions::find(&p.status.conditions, t)
            .filter(|c| c.status == ConditionStatus::True)
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    };
    assert_eq!(p.status.phase, Some(JobPhase::Failed));
    (reason(types::FAILED), reason(types::STALLED))
}

#[test]
fn a_failed_job_says_whether_time_its_provider_or_its_attempts_ran_out() {
    let mut late = placed(job(1), 1, Some(T0));
    late.spec.max_duration = Some("1m".into());
    let p = plan(&late, &pods(&[PodPhase::Running]), T0 + 61);
    let deadline = ("DeadlineExceeded".to_owned(), "DeadlineExceeded".to_owned());
    assert_eq!(failed_reasons(&p), deadline);
    let lost = Member::ProviderLost {
        last_heartbeat: T0 + 10,
    };
    let mut fail = placed(job(1), 1, Some(T0));
    fail.spec.failure_policy.on_provider_loss = gpufed_api::job::ProviderLossAction::Fail;
    let p = plan(&fail, &lost, T0 + 500);
    assert_eq!(
        failed_reasons(&p),
        ("ProviderLost".to_owned(), "ProviderLost".to_owned())
    );
    // Failing over until no attempt is left is running out of attempts.
    let p = plan(&placed(job(1), 2, Some(T0)), &lost, T0 + 500);
    assert_eq!(
        failed_reasons(&p),
        ("AttemptsExhausted".to_owned(), "JobFailed".to_owned())
    );
}
