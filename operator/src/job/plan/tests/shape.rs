//! A placed job whose gang shape is edited (API servers before 1.25 drop the CEL rule
//! that forbids it): Stalled naming the field, its attempt left running as placed, until
//! the shape is set back or the user stops the attempt.
use super::*;

fn stalled_on(p: &Plan, field: &str) {
    let c = stalled(&p.status);
    assert_eq!(c.reason, "InvalidSpec");
    assert!(c.message.starts_with(field), "{}", c.message);
    assert_eq!(
        cond(&p.status, "Ready"),
        Some((ConditionStatus::False, "InvalidSpec".into()))
    );
}

#[test]
fn a_placed_gang_s_shape_edited_stalls_and_disturbs_nothing() {
    let running = pods(&[PodPhase::Running, PodPhase::Running]);
    let j = placed(job(2), 1, Some(T0));
    let before = plan(&j, &running, T0 + 60).status;
    // More workers: without the check, the third would be dispatched beside the running
    // two (and the gang would no longer count as running).
    let mut more = j.clone();
    more.spec.workers = 3;
    let p = plan(&more, &running, T0 + 60);
    stalled_on(&p, "spec.workers");
    assert!(!p.dispatch && !p.wants_placement);
    assert_eq!(
        p.status.placement,
        j.status.as_ref().and_then(|s| s.placement.clone())
    );
    assert!(p.status.attempts.is_empty(), "the attempt runs on");
    // Other GPUs per worker: pods would request 4 while 2 are billed.
    let mut wider = j.clone();
    wider.spec.gpus_per_worker = 4;
    let p = plan(&wider, &running, T0 + 60);
    stalled_on(&p, "spec.gpusPerWorker");
    assert!(c_mentions(&p, "2 GPUs per worker (4 in all)"));
    assert!(!p.dispatch && p.status.attempts.is_empty());
    // Set back: planned as before, the stall gone.
    let mut back = wider.clone();
    back.spec.gpus_per_worker = 2;
    back.status = Some(p.status.clone());
    let p = plan(&back, &running, T0 + 60);
    assert!(conditions::find(&p.status.conditions, types::STALLED).is_none());
    assert_eq!((p.status.phase, p.status.usage), (before.phase, before.usage));
    // A finished job's last placement is a record only: editing it stalls nothing.
    let mut done = more.clone();
    done.status.as_mut().expect("status").phase = Some(JobPhase::Succeeded);
    assert!(gpufed_api::check::job_placement(&done).is_empty());
}

fn c_mentions(p: &Plan, text: &str) -> bool {
    stalled(&p.status).message.contains(text)
}

#[test]
fn a_placed_gang_with_an_edited_shape_still_stops_when_suspended_or_deleted() {
    let running = pods(&[PodPhase::Running, PodPhase::Running]);
    // Suspending is how the shape is changed: the attempt stops, billed as placed (4 GPUs
    // for 100 s), whatever the pods say by the new shape.
    let mut j = placed(job(2), 1, Some(T0));
    j.spec.workers = 1;
    j.spec.suspend = true;
    let p = plan(&j, &running, T0 + 100);
    assert_eq!(p.status.placement, None, "the attempt ended");
    let a = &p.status.attempts[0];
    assert_eq!((a.outcome, a.gpu_seconds), (AttemptOutcome::Stopped, 400));
    // Unplaced now, the new shape is valid: it waits, suspended, to be placed as it is.
    let mut next = j.clone();
    next.status = Some(p.status.clone());
    assert!(gpufed_api::check::job_placement(&next).is_empty());
    // Deleting it ends the attempt too: the finalizer waits for that.
    let mut gone = placed(job(2), 1, Some(T0));
    gone.spec.workers = 1;
    gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(T0 + 100).expect("time"),
    ));
    let p = plan(&gone, &running, T0 + 100);
    assert_eq!(p.status.placement, None);
    assert_eq!(
        (p.status.attempts[0].outcome, p.status.attempts[0].gpu_seconds),
        (AttemptOutcome::Stopped, 400)
    );
}
