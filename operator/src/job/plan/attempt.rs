//! What the live attempt's pods say about it (pure): when the whole gang started running,
//! and how the attempt ended, if it did.

use gpufed_api::ComputeJob;
use std::collections::BTreeSet;

use gpufed_api::job_status::{AttemptOutcome, Placement};

use super::{PodPhase, PodView};

/// When every worker of the attempt was running: the last worker's start as its kubelet
/// reported it (within placement … now), or `now` when a running worker's start is not
/// reported. `None` while a worker has not started (a failed worker counts as started
/// only with a reported start).
pub(super) fn gang_started(
    job: &ComputeJob,
    placement: &Placement,
    pods: &[PodView],
    now: i64,
) -> Option<i64> {
    if pods.len() != job.spec.workers as usize || pods.is_empty() {
        return None;
    }
    let mut last = i64::MIN;
    for p in pods {
        last = last.max(match (p.phase, p.started) {
            (PodPhase::Running | PodPhase::Succeeded | PodPhase::Failed, Some(t)) => t,
            (PodPhase::Running | PodPhase::Succeeded, None) => now,
            _ => return None,
        });
    }
    let placed = crate::time::parse(&placement.placed_time).unwrap_or(i64::MIN);
    Some(last.clamp(placed.min(now), now))
}

/// Most GPU UUIDs kept for one worker (the CRD's bound).
const MAX_WORKER_GPUS: usize = 16;
/// Most GPU UUIDs kept in an attempt's record (the CRD's bound).
const MAX_ATTEMPT_GPUS: usize = 64;

/// Records, per worker, the GPUs its node's device plugin says its pod holds. The first
/// report stays: a pod that ended holds no GPU any more, but it held these while billed.
pub(super) fn record_gpus(placement: &mut Placement, pods: &[PodView]) {
    for pod in pods.iter().filter(|p| !p.gpu_uuids.is_empty()) {
        if let Some(w) = placement
            .workers
            .iter_mut()
            .find(|w| w.rank == pod.rank && w.gpu_uuids.is_empty())
        {
            w.gpu_uuids = pod.gpu_uuids.iter().take(MAX_WORKER_GPUS).cloned().collect();
        }
    }
}

/// The GPUs of all workers of an attempt, for its record (sorted, distinct, bounded).
pub(super) fn attempt_gpus(placement: &Placement) -> Vec<String> {
    let all: BTreeSet<&String> = placement.workers.iter().flat_map(|w| &w.gpu_uuids).collect();
    all.into_iter().take(MAX_ATTEMPT_GPUS).cloned().collect()
}

/// How the live attempt ended, if it did: all succeeded, one failed, or a node lost.
pub(super) fn attempt_outcome(
    job: &ComputeJob,
    pods: &[PodView],
    now: i64,
) -> Option<(AttemptOutcome, i64, String)> {
    let last_end = pods.iter().filter_map(|p| p.finished).max().unwrap_or(now);
    if let Some(p) = pods
        .iter()
        .find(|p| p.node_lost && p.phase != PodPhase::Succeeded)
    {
        return Some((
            AttemptOutcome::NodeLost,
            now,
            format!("node of worker {} lost", p.rank),
        ));
    }
    if let Some(p) = pods.iter().find(|p| p.phase == PodPhase::Failed) {
        return Some((
            AttemptOutcome::Failed,
            p.finished.unwrap_or(now),
            format!("worker {} failed", p.rank),
        ));
    }
    let all_done =
        pods.len() == job.spec.workers as usize && pods.iter().all(|p| p.phase == PodPhase::Succeeded);
    all_done.then(|| {
        (
            AttemptOutcome::Succeeded,
            last_end,
            "all workers succeeded".to_owned(),
        )
    })
}
