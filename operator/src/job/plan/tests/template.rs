//! A pod template that cannot be built into worker pods is refused before placement, like
//! an invalid spec: the job waits unplaced, `Stalled=InvalidTemplate`, holding no GPUs,
//! until its spec changes. One placed before its template became invalid ends its attempt.
use super::*;

/// A job whose first container's `ports` is not a list: valid to the CRD (containers are
/// open objects), but no member could be sent such a pod.
fn unbuildable(mut j: ComputeJob) -> ComputeJob {
    j.spec.template.spec.containers[0]
        .0
        .insert("ports".into(), serde_json::json!("eighty"));
    j
}

#[test]
fn an_unbuildable_template_is_stalled_before_placement_and_never_queued() {
    let j = unbuildable(job(2));
    assert!(
        crate::mapping::is_queued(&job(2)) && !crate::mapping::is_queued(&j),
        "the placement round passes it over"
    );
    let p = plan(&j, &Member::NoAttempt, T0);
    assert!(!p.wants_placement && !p.dispatch);
    assert!(p.status.placement.is_none() && p.status.attempts.is_empty());
    let c = stalled(&p.status);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::True, "InvalidTemplate")
    );
    assert!(c.message.starts_with("spec.template.spec"), "{}", c.message);
    assert_eq!(
        cond(&p.status, "Ready"),
        Some((ConditionStatus::False, "InvalidTemplate".into()))
    );
    // Planned again unchanged: the same status (no write, no Event, every round).
    let again = plan(
        &ComputeJob {
            status: Some(p.status.clone()),
            ..j.clone()
        },
        &Member::NoAttempt,
        T0 + 60,
    );
    assert_eq!(again.status, p.status);
    // A fixed spec (a new generation) is queued again and Stalled goes.
    let mut fixed = job(2);
    fixed.metadata.generation = Some(2);
    fixed.status = Some(p.status);
    let p = plan(&fixed, &Member::NoAttempt, T0 + 90);
    assert!(p.wants_placement);
    assert!(cond(&p.status, "Stalled").is_none());
}

#[test]
fn a_serving_job_with_an_unreadable_probe_is_stalled_too() {
    let mut j = job(1);
    j.spec.serving = serde_json::from_value(serde_json::json!({
        "port": {"port": 8080, "name": "http", "type": "ClusterIP"},
        "readinessProbe": {"httpGet": "not an action"}
    }))
    .expect("serving");
    let p = plan(&j, &Member::NoAttempt, T0);
    let c = stalled(&p.status);
    assert_eq!(c.reason, "InvalidTemplate");
    assert!(c.message.contains("readinessProbe"), "{}", c.message);
    assert!(!crate::mapping::is_queued(&j));
}

#[test]
fn a_placed_job_whose_template_became_invalid_ends_its_attempt_and_waits_unplaced() {
    let j = unbuildable(placed(job(2), 1, None));
    // The plan observes the placed attempt as usual; the gang is still to be created.
    let mut p = plan(&j, &Member::Pods(Vec::new()), T0 + 5);
    assert!(p.dispatch);
    let error = crate::job::build::template_error(&j.spec).expect("invalid");
    invalid_template(&j, &mut p, &error, T0 + 6);
    let st = &p.status;
    let a = ended_unstarted_and_waiting(&p);
    assert!(a.message.contains(&error), "{}", a.message);
    let c = stalled(st);
    assert_eq!(
        (c.reason.as_str(), c.message.as_str()),
        ("InvalidTemplate", error.as_str())
    );
    assert_eq!(
        cond(st, "Placed"),
        Some((ConditionStatus::False, "InvalidTemplate".into()))
    );
    assert!(cond(st, "Reconciling").is_none(), "nothing is in progress");
    assert_eq!(st.usage.as_ref().map(|u| u.gpu_seconds), Some(0));
    // The next round keeps it there, unchanged, without asking for a placement.
    let next = plan(
        &ComputeJob {
            status: Some(p.status.clone()),
            ..j
        },
        &Member::NoAttempt,
        T0 + 7,
    );
    assert!(!next.wants_placement);
    assert_eq!(next.status, p.status);
}

#[test]
fn a_running_attempt_is_not_ended_by_an_edit_of_its_template() {
    // Its pods exist and run: the edit does not touch them, and nothing is to be built.
    let j = unbuildable(placed(job(2), 1, Some(T0)));
    let p = plan(&j, &pods(&[PodPhase::Running, PodPhase::Running]), T0 + 50);
    assert!(!p.dispatch);
    assert_eq!(p.status.phase, Some(JobPhase::Running));
    assert!(p.status.placement.is_some() && cond(&p.status, "Stalled").is_none());
}
