use super::*;
use gpufed_api::common::ConditionStatus;
use gpufed_api::job_status::{AttemptRecord, Placement, WorkerPlacement};

const T0: i64 = 1_800_000_000;

fn job(workers: u32) -> ComputeJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": "u1", "generation": 1},
        "spec": {"workers": workers, "gpusPerWorker": 2, "maxPricePerGpuHour": "3.60",
                 "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
                 "gpu": {"interconnect": "Any", "tier": "Any"},
                 "placement": {"minReputation": 0, "verifiedOnly": false, "preemptLowerPriority": false},
                 "failurePolicy": {"maxAttempts": 2, "onProviderLoss": "Failover"},
                 "priority": 100, "suspend": false}
    }))
    .expect("job")
}

fn placed(mut j: ComputeJob, attempt: u32, running_since: Option<i64>) -> ComputeJob {
    let st = j.status.get_or_insert_with(Default::default);
    st.placement = Some(Placement {
        attempt,
        provider: "a".into(),
        gpus: j.spec.workers * j.spec.gpus_per_worker,
        price_per_gpu_hour: "3.60".into(),
        workers: (0..j.spec.workers)
            .map(|r| WorkerPlacement {
                rank: r,
                node: "n1".into(),
                gpu_uuids: vec![],
            })
            .collect(),
        placed_time: crate::time::format(T0),
        running_time: running_since.map(crate::time::format),
        node_unreachable_since: None,
        preempted: None,
    });
    st.start_time = running_since.map(crate::time::format);
    j
}

fn pods(phases: &[PodPhase]) -> Member {
    Member::Pods(
        phases
            .iter()
            .enumerate()
            .map(|(i, p)| PodView {
                rank: i as u32,
                phase: *p,
                started: None,
                finished: Some(T0 + 500).filter(|_| *p == PodPhase::Succeeded),
                node_lost: false,
                node_unreachable: false,
                ready: *p == PodPhase::Running,
                host_ip: None,
                gpu_uuids: Vec::new(),
                waiting: None,
            })
            .collect(),
    )
}

fn cond(st: &ComputeJobStatus, t: &str) -> Option<(ConditionStatus, String)> {
    conditions::find(&st.conditions, t).map(|c| (c.status, c.reason.clone()))
}

/// The placed attempt 1 ended before its gang ran (outcome `Stopped`, nothing billed,
/// left to fence), its GPUs released, the job queued and asking for no placement; returns
/// the attempt's record.
fn ended_unstarted_and_waiting(p: &Plan) -> &AttemptRecord {
    let st = &p.status;
    assert!(!p.dispatch && !p.wants_placement);
    assert!(st.placement.is_none(), "its GPUs are released");
    assert_eq!(st.phase, Some(JobPhase::Queued));
    let a = &st.attempts[0];
    assert_eq!(
        (a.attempt, a.outcome, a.gpu_seconds, a.removed),
        (1, AttemptOutcome::Stopped, 0, false),
        "nothing ran; whatever was created is fenced"
    );
    a
}

fn stalled(st: &ComputeJobStatus) -> gpufed_api::common::Condition {
    conditions::find(&st.conditions, types::STALLED)
        .cloned()
        .expect("Stalled")
}

#[test]
fn a_new_job_queues_and_asks_for_placement() {
    let p = plan(&job(2), &Member::NoAttempt, T0);
    assert!(p.wants_placement && !p.dispatch);
    assert_eq!(p.status.phase, Some(JobPhase::Queued));
    assert_eq!(
        cond(&p.status, "Reconciling"),
        Some((ConditionStatus::True, "Queued".into()))
    );
    assert_eq!(
        cond(&p.status, "Ready").map(|c| c.0),
        Some(ConditionStatus::False)
    );
}

#[test]
fn a_placed_job_dispatches_until_all_pods_exist() {
    let j = placed(job(2), 1, None);
    assert!(plan(&j, &Member::Pods(vec![]), T0).dispatch);
    assert!(plan(&j, &pods(&[PodPhase::Pending]), T0).dispatch);
    let p = plan(&j, &pods(&[PodPhase::Pending, PodPhase::Running]), T0);
    assert!(!p.dispatch);
    assert_eq!(p.status.phase, Some(JobPhase::Placed));
}

#[test]
fn billing_starts_when_the_whole_gang_runs_and_accrues() {
    let p = plan(
        &placed(job(2), 1, None),
        &pods(&[PodPhase::Running, PodPhase::Running]),
        T0,
    );
    assert_eq!(p.status.phase, Some(JobPhase::Running));
    assert_eq!(
        p.status.placement.as_ref().and_then(|x| x.running_time.clone()),
        Some(crate::time::format(T0))
    );
    assert_eq!(
        cond(&p.status, "Ready"),
        Some((ConditionStatus::True, "Running".into()))
    );
    assert_eq!(
        cond(&p.status, "Reconciling"),
        None,
        "abnormal-true condition removed"
    );
    let later = plan(
        &placed(job(2), 1, Some(T0)),
        &pods(&[PodPhase::Running, PodPhase::Running]),
        T0 + 100,
    );
    let usage = later.status.usage.expect("usage");
    assert_eq!(usage.gpu_seconds, 400, "100 s × 4 GPUs");
    assert_eq!(usage.cost, "0.4", "400 GPU-s at 3.60/GPU-h");
}

#[test]
fn a_failed_gang_s_workers_still_running_are_left_to_fence() {
    for other in [PodPhase::Running, PodPhase::Pending] {
        let p = plan(
            &placed(job(2), 1, Some(T0)),
            &pods(&[PodPhase::Failed, other]),
            T0 + 100,
        );
        let a = &p.status.attempts[0];
        assert_eq!(a.outcome, AttemptOutcome::Failed);
        assert!(
            !a.removed,
            "worker 1 ({other:?}) still holds its GPUs beside the next attempt"
        );
    }
    let p = plan(
        &placed(job(2), 1, Some(T0)),
        &pods(&[PodPhase::Failed, PodPhase::Succeeded]),
        T0 + 100,
    );
    assert!(p.status.attempts[0].removed, "every pod ended: nothing to remove");
}

#[test]
fn success_records_the_attempt_and_final_usage() {
    let p = plan(
        &placed(job(2), 1, Some(T0)),
        &pods(&[PodPhase::Succeeded, PodPhase::Succeeded]),
        T0 + 900,
    );
    assert_eq!(p.status.phase, Some(JobPhase::Succeeded));
    let a = &p.status.attempts[0];
    assert_eq!(
        (a.outcome, a.gpu_seconds, a.removed),
        (AttemptOutcome::Succeeded, 2000, true),
        "billed to the last exit"
    );
    assert_eq!(p.status.usage.as_ref().map(|u| u.gpu_seconds), Some(2000));
    assert_eq!(
        cond(&p.status, "Complete"),
        Some((ConditionStatus::True, "Succeeded".into()))
    );
    let again = plan(
        &ComputeJob {
            status: Some(p.status.clone()),
            ..job(2)
        },
        &pods(&[]),
        T0 + 2000,
    );
    assert_eq!(again.status, p.status, "terminal jobs do not change");
}

#[test]
fn a_worker_deleted_from_a_running_gang_ends_the_attempt_instead_of_being_recreated() {
    // The gang ran whole; rank 1's pod is gone (kubectl delete pod, a forced drain).
    let p = plan(
        &placed(job(2), 1, Some(T0)),
        &pods(&[PodPhase::Running]),
        T0 + 100,
    );
    assert!(!p.dispatch, "no second rank 1 beside a rank 0 mid-run");
    let a = &p.status.attempts[0];
    assert_eq!(a.outcome, AttemptOutcome::NodeLost, "{a:?}");
    assert!(a.message.contains("worker 1"), "{}", a.message);
    assert_eq!(a.gpu_seconds, 100 * 4);
    assert_eq!(p.status.phase, Some(JobPhase::Recovering));
    // Before the gang ran, a missing pod is still being created: dispatch goes on.
    let p = plan(&placed(job(2), 1, None), &pods(&[PodPhase::Running]), T0 + 100);
    assert!(p.dispatch && p.status.attempts.is_empty());
}

#[test]
fn a_finish_time_in_the_future_bills_no_time_that_has_not_passed() {
    // The member says its workers ended in 2100 (a kubelet clock far ahead, or an agent
    // lying): the attempt ends and is billed at most up to now.
    for phases in [
        [PodPhase::Succeeded, PodPhase::Succeeded],
        [PodPhase::Failed, PodPhase::Running],
    ] {
        let Member::Pods(mut views) = pods(&phases) else {
            unreachable!()
        };
        for v in &mut views {
            v.finished = Some(4_102_444_800);
        }
        let p = plan(&placed(job(2), 1, Some(T0)), &Member::Pods(views), T0 + 600);
        let a = &p.status.attempts[0];
        assert_eq!(a.gpu_seconds, 600 * 4, "{phases:?}: {a:?}");
    }
}

#[test]
fn provider_loss_bills_to_the_last_heartbeat_and_fails_over_once() {
    let lost = Member::ProviderLost {
        last_heartbeat: T0 + 60,
    };
    let p = plan(&placed(job(1), 1, Some(T0)), &lost, T0 + 600);
    assert_eq!(p.status.phase, Some(JobPhase::Recovering));
    assert!(
        p.status.placement.is_none(),
        "no live attempt until the next placement"
    );
    let a = &p.status.attempts[0];
    assert_eq!(
        (a.outcome, a.gpu_seconds, a.removed),
        (AttemptOutcome::ProviderLost, 120, false)
    );
    // The second attempt is the last one allowed (maxAttempts 2): losing it fails the job.
    let mut second = placed(
        ComputeJob {
            status: Some(p.status),
            ..job(1)
        },
        2,
        Some(T0 + 700),
    );
    second.status.as_mut().expect("status").phase = Some(JobPhase::Running);
    let p2 = plan(
        &second,
        &Member::ProviderLost {
            last_heartbeat: T0 + 710,
        },
        T0 + 900,
    );
    assert_eq!(p2.status.phase, Some(JobPhase::Failed));
    assert_eq!(p2.status.usage.as_ref().map(|u| u.gpu_seconds), Some(120 + 20));
    assert_eq!(
        cond(&p2.status, "Stalled"),
        Some((ConditionStatus::True, "JobFailed".into()))
    );
}

#[test]
fn fail_policy_does_not_fail_over() {
    let mut j = placed(job(1), 1, Some(T0));
    j.spec.failure_policy.on_provider_loss = gpufed_api::job::ProviderLossAction::Fail;
    let p = plan(
        &j,
        &Member::ProviderLost {
            last_heartbeat: T0 + 10,
        },
        T0 + 500,
    );
    assert_eq!(p.status.phase, Some(JobPhase::Failed));
}

#[test]
fn a_silent_provider_within_grace_changes_nothing_but_usage() {
    let j = placed(job(1), 1, Some(T0));
    let p = plan(&j, &Member::Unanswered, T0 + 30);
    assert!(p.status.attempts.is_empty() && p.status.placement.is_some() && !p.dispatch);
}

#[test]
fn deadline_and_invalid_spec() {
    let mut j = placed(job(1), 1, Some(T0));
    j.spec.max_duration = Some("1m".into());
    let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 61);
    assert_eq!(p.status.attempts[0].outcome, AttemptOutcome::DeadlineExceeded);
    assert_eq!(p.status.phase, Some(JobPhase::Failed));
    // Time not running does not count: 40 s in attempt 1, then (after an hour suspended
    // or queued) attempt 2 running 15 s — 55 s of 60: not overdue; 21 s: overdue.
    let mut j = placed(job(1), 2, Some(T0 + 3600));
    j.spec.max_duration = Some("1m".into());
    let st = j.status.as_mut().expect("status");
    st.start_time = Some(crate::time::format(T0));
    st.attempts.push(AttemptRecord {
        attempt: 1,
        provider: "a".into(),
        outcome: AttemptOutcome::Stopped,
        message: String::new(),
        reason: None,
        gpu_seconds: 40,
        gpus: Some(1),
        gpu_uuids: Vec::new(),
        running_time: Some(crate::time::format(T0)),
        price_per_gpu_hour: "3.60".into(),
        end_time: crate::time::format(T0 + 40),
        removed: true,
        preempted_by: None,
    });
    let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 3615);
    assert!(
        p.status.attempts.len() == 1 && p.status.placement.is_some(),
        "{:?}",
        p.status.attempts
    );
    let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 3621);
    assert_eq!(p.status.attempts[1].outcome, AttemptOutcome::DeadlineExceeded);
    let mut bad = job(1);
    bad.spec.max_price_per_gpu_hour = "0".into();
    let p = plan(&bad, &Member::NoAttempt, T0);
    assert_eq!(
        cond(&p.status, "Stalled"),
        Some((ConditionStatus::True, "InvalidSpec".into()))
    );
    assert!(!p.wants_placement);
    // A privileged worker never reaches a provider: Stalled, naming the field.
    let mut escape = job(1);
    escape.spec.template.spec.containers[0]
        .0
        .insert("securityContext".into(), serde_json::json!({"privileged": true}));
    let p = plan(&escape, &Member::NoAttempt, T0);
    let stalled = conditions::find(&p.status.conditions, "Stalled").expect("Stalled");
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(
        stalled
            .message
            .contains("containers[0].securityContext.privileged"),
        "{}",
        stalled.message
    );
    assert!(!p.wants_placement && !p.dispatch);
}

#[test]
fn planning_twice_gives_the_same_status() {
    let j = placed(job(2), 1, Some(T0));
    let a = plan(&j, &pods(&[PodPhase::Running, PodPhase::Running]), T0 + 50);
    let b = plan(
        &ComputeJob {
            status: Some(a.status.clone()),
            ..j
        },
        &pods(&[PodPhase::Running, PodPhase::Running]),
        T0 + 50,
    );
    assert_eq!(a.status, b.status);
}

#[test]
fn suspending_a_running_job_stops_and_bills_its_attempt_then_resumes_with_the_next() {
    let mut j = placed(job(2), 1, Some(T0));
    j.spec.suspend = true;
    let p = plan(&j, &pods(&[PodPhase::Running, PodPhase::Running]), T0 + 600);
    assert_eq!(p.status.phase, Some(JobPhase::Suspended));
    assert_eq!(p.status.placement, None);
    let a = &p.status.attempts[0];
    assert_eq!(
        (a.outcome, a.gpu_seconds, a.removed),
        (AttemptOutcome::Stopped, 2400, false),
        "billed up to the suspension; the pods are still to be fenced"
    );
    assert!(!p.wants_placement);
    assert_eq!(
        cond(&p.status, "Ready"),
        Some((ConditionStatus::False, "Suspended".into()))
    );
    // Suspended and stable: planning again changes nothing but the time-free fields.
    let again = plan(
        &ComputeJob {
            status: Some(p.status.clone()),
            ..j.clone()
        },
        &Member::NoAttempt,
        T0 + 700,
    );
    assert_eq!(again.status.attempts, p.status.attempts);
    assert_eq!(again.status.phase, Some(JobPhase::Suspended));
    // Unsuspended: it queues for its next attempt.
    let mut resumed = j;
    resumed.spec.suspend = false;
    resumed.status = Some(p.status);
    let p = plan(&resumed, &Member::NoAttempt, T0 + 800);
    assert_eq!(p.status.phase, Some(JobPhase::Queued));
    assert!(p.wants_placement);
    assert_eq!(p.status.stops, 1);
    // Attempt 2 placed (maxAttempts 2): a worker failing is its first failure, retried —
    // the stopped attempt used up nothing.
    let mut second = placed(resumed.clone(), 2, Some(T0 + 900));
    second.status.as_mut().expect("status").stops = p.status.stops;
    second.status.as_mut().expect("status").attempts = p.status.attempts.clone();
    let p = plan(&second, &pods(&[PodPhase::Failed, PodPhase::Running]), T0 + 1000);
    assert_eq!(
        p.status.phase,
        Some(JobPhase::Recovering),
        "{:?}",
        p.status.conditions
    );
}

#[test]
fn deleting_a_running_job_stops_and_bills_its_attempt_up_to_the_deletion() {
    let mut j = placed(job(1), 1, Some(T0));
    j.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(T0 + 300).expect("time"),
    ));
    let p = plan(&j, &pods(&[PodPhase::Running]), T0 + 300);
    assert_eq!(p.status.placement, None, "the attempt ended");
    let a = &p.status.attempts[0];
    // Two GPUs for 300 s.
    assert_eq!((a.outcome, a.gpu_seconds), (AttemptOutcome::Stopped, 600));
    assert_eq!(a.message, "job deleted");
    assert_eq!(p.status.usage.as_ref().map(|u| u.gpu_seconds), Some(600));
    assert_eq!(
        cond(&p.status, "Ready"),
        Some((ConditionStatus::False, "Deleting".into()))
    );
    assert!(!p.wants_placement && !p.dispatch);
    // Not yet metered: the record must stay; metered in full: it may go.
    let mut stopped = j.clone();
    stopped.status = Some(p.status.clone());
    assert!(!crate::mapping::stopped_and_metered(&stopped, true));
    assert!(
        crate::mapping::stopped_and_metered(&stopped, false),
        "nothing meters without settlement"
    );
    stopped.status.as_mut().expect("status").billing = Some(gpufed_api::job_status::Billing {
        metered_gpu_seconds: 600,
        ..Default::default()
    });
    assert!(crate::mapping::stopped_and_metered(&stopped, true));
    // While it still runs, it never counts as stopped, metered or not.
    assert!(!crate::mapping::stopped_and_metered(&j, true));
}

#[test]
fn deleting_a_job_on_a_lost_provider_bills_to_the_last_heartbeat_not_the_deletion() {
    let mut j = placed(job(1), 1, Some(T0));
    j.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(T0 + 900).expect("time"),
    ));
    let p = plan(
        &j,
        &Member::ProviderLost {
            last_heartbeat: T0 + 100,
        },
        T0 + 900,
    );
    assert_eq!(p.status.attempts[0].gpu_seconds, 200, "2 GPUs × 100 s");
    assert!(!p.wants_placement, "a deleted job is not placed again");
}

mod credentials;
mod edited;
mod ending;
mod forbidden;
mod gpus;
mod preempted;
mod recovering;
mod rejected;
mod shape;
mod start;
mod started;
mod template;
mod unreachable;

#[test]
fn usage_at_the_highest_price_saturates_instead_of_overflowing() {
    let attempt = |n: u32| AttemptRecord {
        attempt: n,
        provider: "a".into(),
        outcome: AttemptOutcome::NodeLost,
        message: String::new(),
        reason: None,
        gpu_seconds: 64 * 3600,
        gpus: Some(64),
        gpu_uuids: Vec::new(),
        running_time: Some(crate::time::format(T0)),
        price_per_gpu_hour: "999999999999.999999".into(),
        end_time: crate::time::format(T0 + 3600),
        removed: true,
        preempted_by: None,
    };
    let st = ComputeJobStatus {
        attempts: vec![attempt(1), attempt(2)],
        ..Default::default()
    };
    let u = usage(&st, None);
    assert_eq!(u.gpu_seconds, 2 * 64 * 3600);
    assert_eq!(u.cost, format_decimal(u64::MAX), "saturated, not wrapped");
}
