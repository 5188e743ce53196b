//! The GPUs each worker holds, from its node's device plugin: recorded with the placement
//! once known, never lost when the pod ends, and carried into the attempt's record.
use super::*;

fn with_gpus(member: Member, gpus: &[&[&str]]) -> Member {
    let Member::Pods(mut pods) = member else {
        return member;
    };
    for (p, ids) in pods.iter_mut().zip(gpus) {
        p.gpu_uuids = ids.iter().map(|s| (*s).to_owned()).collect();
    }
    Member::Pods(pods)
}

fn worker_gpus(st: &ComputeJobStatus) -> Vec<Vec<String>> {
    st.placement
        .as_ref()
        .map(|p| p.workers.iter().map(|w| w.gpu_uuids.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn each_worker_keeps_the_gpus_first_reported_and_the_attempt_bills_them_all() {
    let running = with_gpus(
        pods(&[PodPhase::Running, PodPhase::Running]),
        &[&["GPU-a", "GPU-b"], &[]],
    );
    let p = plan(&placed(job(2), 1, Some(T0)), &running, T0 + 60);
    assert_eq!(worker_gpus(&p.status), vec![vec!["GPU-a", "GPU-b"], vec![]]);

    // Worker 1's GPUs arrive later; worker 0's report disappears (its node republished):
    // what was learned stays.
    let later = with_gpus(
        pods(&[PodPhase::Running, PodPhase::Running]),
        &[&[], &["GPU-c", "GPU-d"]],
    );
    let j = ComputeJob {
        status: Some(p.status.clone()),
        ..job(2)
    };
    let p = plan(&j, &later, T0 + 120);
    assert_eq!(
        worker_gpus(&p.status),
        vec![vec!["GPU-a", "GPU-b"], vec!["GPU-c", "GPU-d"]]
    );

    // Both succeed (their GPUs are no longer allocated): the record lists all four.
    let j = ComputeJob {
        status: Some(p.status.clone()),
        ..job(2)
    };
    let done = plan(&j, &pods(&[PodPhase::Succeeded, PodPhase::Succeeded]), T0 + 900);
    assert_eq!(done.status.phase, Some(JobPhase::Succeeded));
    assert_eq!(
        done.status.attempts[0].gpu_uuids,
        vec!["GPU-a", "GPU-b", "GPU-c", "GPU-d"]
    );
}

#[test]
fn reports_are_bounded_and_unknown_ranks_ignored() {
    let many: Vec<String> = (0..40).map(|i| format!("GPU-{i:02}")).collect();
    let Member::Pods(mut views) = pods(&[PodPhase::Running]) else {
        unreachable!()
    };
    views[0].gpu_uuids.clone_from(&many);
    let mut stray = views[0].clone();
    stray.rank = 7;
    stray.gpu_uuids = vec!["GPU-stray".into()];
    views.push(stray);
    let p = plan(&placed(job(1), 1, Some(T0)), &Member::Pods(views), T0 + 60);
    let gpus = worker_gpus(&p.status);
    assert_eq!(gpus.len(), 1);
    assert_eq!(
        gpus[0],
        many[..16].to_vec(),
        "at most 16 per worker (the CRD's bound)"
    );
}
