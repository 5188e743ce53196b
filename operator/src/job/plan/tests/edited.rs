//! A running job whose spec is edited into an invalid one (a pod-security violation, a
//! gang shape changed) stalls — no dispatch, no new placement — but its live attempt is
//! still observed and ends as it would with a valid spec: its pods' ends are recorded,
//! a lost provider or a preemption or drain ends it, `maxDuration` still holds.
use super::*;
use gpufed_api::job_status::Preemption;

fn privileged(mut j: ComputeJob) -> ComputeJob {
    j.spec.template.spec.containers[0]
        .0
        .insert("securityContext".into(), serde_json::json!({"privileged": true}));
    j
}

/// A running 2-worker gang (since T0) whose template was then made privileged.
fn edited() -> ComputeJob {
    let mut j = privileged(placed(job(2), 1, Some(T0)));
    j.status.as_mut().expect("status").phase = Some(JobPhase::Running);
    j
}

fn stalled_invalid(st: &ComputeJobStatus) -> bool {
    conditions::find(&st.conditions, types::STALLED)
        .is_some_and(|c| c.status == ConditionStatus::True && c.reason == "InvalidSpec")
}

fn drained(mut j: ComputeJob) -> ComputeJob {
    if let Some(p) = j.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(Preemption {
            by: format!("{}a", gpufed_api::job_status::DRAIN_BY_PREFIX),
            priority: 0,
            time: crate::time::format(T0 + 90),
        });
    }
    j
}

#[test]
fn pods_that_end_are_recorded() {
    let p = plan(
        &edited(),
        &pods(&[PodPhase::Succeeded, PodPhase::Succeeded]),
        T0 + 600,
    );
    let st = &p.status;
    assert_eq!(st.phase, Some(JobPhase::Succeeded));
    let a = &st.attempts[0];
    assert_eq!((a.outcome, a.gpu_seconds), (AttemptOutcome::Succeeded, 500 * 4));
    assert!(
        cond(st, types::STALLED).is_none(),
        "a job that succeeded is stuck no more"
    );
    assert!(!p.dispatch && !p.wants_placement);
    // A worker that failed ends the attempt too; the retry waits for a valid spec.
    let p = plan(&edited(), &pods(&[PodPhase::Failed, PodPhase::Running]), T0 + 600);
    assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::Failed);
    assert!(p.status.placement.is_none() && !p.wants_placement && !p.dispatch);
    assert!(stalled_invalid(&p.status));
}

#[test]
fn a_lost_provider_a_drain_and_the_deadline_still_end_the_attempt() {
    let lost = Member::ProviderLost {
        last_heartbeat: T0 + 100,
    };
    let p = plan(&edited(), &lost, T0 + 900);
    let a = &p.status.attempts[0];
    assert_eq!((a.outcome, a.gpu_seconds), (AttemptOutcome::ProviderLost, 400));
    assert!(p.status.placement.is_none(), "its GPUs are released");
    assert!(!p.wants_placement, "not placed again while the spec is invalid");
    assert!(stalled_invalid(&p.status));
    // A provider's drain (or a preemption) is not held by a tenant's edit.
    let running = pods(&[PodPhase::Running, PodPhase::Running]);
    let p = plan(&drained(edited()), &running, T0 + 100);
    assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::Preempted);
    assert!(p.status.placement.is_none() && !p.wants_placement);
    let mut late = edited();
    late.spec.max_duration = Some("1m".into());
    let p = plan(&late, &running, T0 + 61);
    assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::DeadlineExceeded);
    assert_eq!(p.status.phase, Some(JobPhase::Failed));
}

#[test]
fn a_running_attempt_runs_on_billed_and_dispatches_nothing() {
    let running = pods(&[PodPhase::Running, PodPhase::Running]);
    let p = plan(&edited(), &running, T0 + 100);
    assert!(p.status.attempts.is_empty() && p.status.placement.is_some());
    assert!(!p.dispatch && !p.wants_placement);
    assert_eq!(
        p.status.usage.as_ref().map(|u| u.gpu_seconds),
        Some(400),
        "usage moves on"
    );
    assert!(stalled_invalid(&p.status));
    assert_eq!(
        cond(&p.status, "Ready"),
        Some((ConditionStatus::False, "InvalidSpec".into()))
    );
}

#[test]
fn workers_still_to_create_are_not_built_from_the_invalid_spec() {
    let j = privileged(placed(job(2), 1, None));
    let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 30);
    assert!(!p.dispatch);
    let a = ended_unstarted_and_waiting(&p);
    assert!(a.message.contains("privileged"), "{}", a.message);
    assert_eq!(
        cond(&p.status, types::PLACED),
        Some((ConditionStatus::False, "InvalidSpec".into()))
    );
    assert!(stalled_invalid(&p.status));
}

#[test]
fn an_attempt_whose_shape_was_edited_is_read_by_its_placement() {
    // Placed as 2 workers; the spec now says 3 (or 1).
    for workers in [1, 3] {
        let mut j = placed(job(2), 1, Some(T0));
        j.spec.workers = workers;
        let done = pods(&[PodPhase::Succeeded, PodPhase::Succeeded]);
        let p = plan(&j, &done, T0 + 600);
        let a = &p.status.attempts[0];
        assert_eq!((a.outcome, a.gpu_seconds), (AttemptOutcome::Succeeded, 500 * 4));
        assert!(a.removed, "the placed gang, seen whole and ended");
        let p = plan(
            &drained(j),
            &pods(&[PodPhase::Running, PodPhase::Running]),
            T0 + 100,
        );
        assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::Preempted);
    }
}

/// kstatus reads the first of `Reconciling` and `Stalled` that is `True`: a job that was
/// queued or starting (`Reconciling=True`) and is then stalled must read `Failed`.
#[test]
fn a_job_stalled_after_reconciling_reads_failed_not_in_progress() {
    let health = |j: &ComputeJob, st: &ComputeJobStatus| {
        conditions::health(j.metadata.generation, st.observed_generation, &st.conditions)
    };
    // Queued, waiting for a provider; then its template is made privileged.
    let queued = plan(&job(2), &Member::NoAttempt, T0).status;
    assert!(conditions::is_true(&queued.conditions, types::RECONCILING));
    let j = privileged(ComputeJob {
        status: Some(queued.clone()),
        ..job(2)
    });
    let p = plan(&j, &Member::NoAttempt, T0 + 10);
    assert!(stalled_invalid(&p.status));
    assert!(cond(&p.status, types::RECONCILING).is_none());
    assert_eq!(health(&j, &p.status), conditions::Health::Failed);
    // Starting (1 of 2 workers); then edited invalid, its attempt runs on.
    let starting = plan(&placed(job(2), 1, None), &pods(&[PodPhase::Running]), T0).status;
    assert!(conditions::is_true(&starting.conditions, types::RECONCILING));
    let mut j = privileged(placed(job(2), 1, None));
    j.status = Some(starting);
    let running = pods(&[PodPhase::Running, PodPhase::Running]);
    let p = plan(&j, &running, T0 + 10);
    assert!(stalled_invalid(&p.status));
    assert_eq!(health(&j, &p.status), conditions::Health::Failed);
    // Checkpoint credentials that cannot be read stall a queued job the same way.
    let j = ComputeJob {
        status: Some(queued),
        ..job(2)
    };
    let mut p = plan(&j, &Member::NoAttempt, T0 + 10);
    await_credentials(&j, &mut p, "Secret team/s3 does not exist", T0 + 10);
    assert_eq!(health(&j, &p.status), conditions::Health::Failed);
}
