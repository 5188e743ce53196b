//! What the live attempt's pods say about it (pure): when the whole gang started running,
//! and how the attempt ended, if it did.

use gpufed_api::ComputeJob;
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
