//! Billing starts when the whole gang runs, by the kubelets' clocks — also when the
//! operator was not looking (restarted, or away while a short attempt ran and ended).
use super::*;

/// Pods with (phase, reported start); a succeeded pod finished at `T0 + 500`.
fn pods_started(pods: &[(PodPhase, Option<i64>)]) -> Member {
    Member::Pods(
        pods.iter()
            .enumerate()
            .map(|(i, (phase, started))| PodView {
                rank: i as u32,
                phase: *phase,
                started: *started,
                finished: Some(T0 + 500).filter(|_| *phase != PodPhase::Running),
                node_lost: false,
                node_unreachable: false,
                ready: *phase == PodPhase::Running,
                host_ip: None,
                gpu_uuids: Vec::new(),
                waiting: None,
            })
            .collect(),
    )
}

fn running_time(p: &Plan) -> Option<String> {
    p.status.placement.as_ref()?.running_time.clone()
}

#[test]
fn a_gang_first_seen_running_bills_from_its_last_workers_start_not_from_the_look() {
    let gang = pods_started(&[
        (PodPhase::Running, Some(T0 + 10)),
        (PodPhase::Running, Some(T0 + 25)),
    ]);
    let p = plan(&placed(job(2), 1, None), &gang, T0 + 100);
    assert_eq!(running_time(&p), Some(crate::time::format(T0 + 25)));
    assert_eq!(p.status.start_time, Some(crate::time::format(T0 + 25)));
    assert_eq!(
        p.status.usage.as_ref().map(|u| u.gpu_seconds),
        Some(75 * 4),
        "75 s × 4 GPUs since the gang ran"
    );
}

#[test]
fn an_attempt_that_ran_and_ended_unseen_is_billed_in_full() {
    // The operator was away from before the start until after the end.
    let gang = pods_started(&[
        (PodPhase::Succeeded, Some(T0 + 20)),
        (PodPhase::Succeeded, Some(T0 + 40)),
    ]);
    let p = plan(&placed(job(2), 1, None), &gang, T0 + 900);
    assert_eq!(p.status.phase, Some(JobPhase::Succeeded));
    let a = &p.status.attempts[0];
    assert_eq!((a.outcome, a.gpu_seconds), (AttemptOutcome::Succeeded, 460 * 4));
    assert_eq!(a.running_time, Some(crate::time::format(T0 + 40)));
    // A failed gang whose workers all started ran until the failure.
    let failed = pods_started(&[
        (PodPhase::Failed, Some(T0 + 20)),
        (PodPhase::Succeeded, Some(T0 + 30)),
    ]);
    let p = plan(&placed(job(2), 1, None), &failed, T0 + 900);
    assert_eq!(p.status.attempts[0].gpu_seconds, 470 * 4);
}

#[test]
fn no_billing_before_every_worker_started() {
    let gang = pods_started(&[(PodPhase::Running, Some(T0 + 10)), (PodPhase::Pending, None)]);
    let p = plan(&placed(job(2), 1, None), &gang, T0 + 100);
    assert_eq!(running_time(&p), None);
    assert_eq!(p.status.usage.as_ref().map(|u| u.gpu_seconds), Some(0));
    // A worker that failed without ever starting: the gang never ran, nothing is billed.
    let never = pods_started(&[(PodPhase::Running, Some(T0 + 10)), (PodPhase::Failed, None)]);
    let p = plan(&placed(job(2), 1, None), &never, T0 + 100);
    assert_eq!(p.status.attempts[0].gpu_seconds, 0);
}

#[test]
fn reported_starts_are_clamped_to_placement_and_now_and_a_known_start_is_kept() {
    // Skewed kubelet clocks: before the placement, or in the future.
    let early = pods_started(&[
        (PodPhase::Running, Some(T0 - 50)),
        (PodPhase::Running, Some(T0 - 40)),
    ]);
    assert_eq!(
        running_time(&plan(&placed(job(2), 1, None), &early, T0 + 100)),
        Some(crate::time::format(T0)),
        "placed at T0"
    );
    let future = pods_started(&[
        (PodPhase::Running, Some(T0 + 10)),
        (PodPhase::Running, Some(T0 + 999)),
    ]);
    assert_eq!(
        running_time(&plan(&placed(job(2), 1, None), &future, T0 + 100)),
        Some(crate::time::format(T0 + 100))
    );
    // Once set, a restarted container's newer start does not move the billing start.
    let restarted = pods_started(&[
        (PodPhase::Running, Some(T0 + 80)),
        (PodPhase::Running, Some(T0 + 5)),
    ]);
    assert_eq!(
        running_time(&plan(&placed(job(2), 1, Some(T0 + 5)), &restarted, T0 + 100)),
        Some(crate::time::format(T0 + 5))
    );
}
