//! What the live attempt's pods say about it (pure): when the whole gang started running,
//! and how the attempt ended, if it did.

use gpufed_api::ComputeJob;
use std::collections::BTreeSet;

use gpufed_api::ComputeJobStatus;
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

/// Whether every one of the gang's `workers` ranks was seen among `pods` and every pod
/// seen has ended: only then is nothing of the attempt left in the member to remove. A
/// rank not seen may still be created — a pull-mode agent that has not caught up, a
/// dispatch under way — beside the job's next attempt, unless the attempt is fenced.
pub(super) fn every_worker_ended(workers: u32, pods: &[PodView]) -> bool {
    (0..workers).all(|rank| pods.iter().any(|p| p.rank == rank))
        && pods
            .iter()
            .all(|p| matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
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

/// Keeps `placement.node_unreachable_since`: set (to `now`) when a worker that has not
/// finished is on an unreachable node and it is not set yet, kept while one is, cleared
/// when none is.
pub(super) fn track_unreachable(placement: &mut Placement, pods: &[PodView], now: i64) {
    if unreachable_worker(pods).is_none() {
        placement.node_unreachable_since = None;
    } else if placement.node_unreachable_since.is_none() {
        placement.node_unreachable_since = Some(crate::time::format(now));
    }
}

/// The first worker that has not finished and whose node is unreachable.
pub(super) fn unreachable_worker(pods: &[PodView]) -> Option<&PodView> {
    pods.iter()
        .find(|p| p.node_unreachable && p.phase != PodPhase::Succeeded)
}

/// Observation step's rule for unreachable nodes (pure): once the attempt's nodes have
/// been unreachable since `placement.node_unreachable_since` for longer than `grace`
/// seconds, the workers on them count lost (and stay marked unreachable, so the attempt is
/// billed up to the first sighting). Returns whether any did.
pub fn expire_unreachable(placement: &Placement, pods: &mut [PodView], grace: i64, now: i64) -> bool {
    let since = placement
        .node_unreachable_since
        .as_deref()
        .and_then(crate::time::parse);
    if since.is_none_or(|t| now - t <= grace) {
        return false;
    }
    let mut any = false;
    for p in pods.iter_mut().filter(|p| p.node_unreachable) {
        p.node_lost = true;
        any = true;
    }
    any
}

/// How the live attempt ended, if it did: all succeeded, one failed, or a node lost (at
/// `now`, or — a node lost by being unreachable past the grace period — when the attempt's
/// nodes were first seen unreachable, `unreachable_since`).
pub(super) fn attempt_outcome(
    job: &ComputeJob,
    pods: &[PodView],
    unreachable_since: Option<i64>,
    now: i64,
) -> Option<(AttemptOutcome, i64, String)> {
    // A worker's end as the member reports it is never later than now: a kubelet clock
    // running ahead, or a pull-mode agent's report (hostile input), would otherwise bill
    // time that has not passed — without bound.
    let finished = |p: &PodView| p.finished.map(|t| t.min(now));
    let last_end = pods.iter().filter_map(finished).max().unwrap_or(now);
    if let Some(p) = pods
        .iter()
        .find(|p| p.node_lost && p.phase != PodPhase::Succeeded)
    {
        let (at, how) = match unreachable_since.filter(|_| p.node_unreachable) {
            Some(t) => (t.min(now), "unreachable past the provider's grace period"),
            None => (now, "lost"),
        };
        return Some((
            AttemptOutcome::NodeLost,
            at,
            format!("node of worker {} {how}", p.rank),
        ));
    }
    if let Some(p) = pods.iter().find(|p| p.phase == PodPhase::Failed) {
        return Some((
            AttemptOutcome::Failed,
            finished(p).unwrap_or(now),
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

/// A gang that ran whole and has lost a worker's pod since (deleted: `kubectl delete pod`,
/// a forced drain, the pod garbage collector after its node object went): the attempt
/// ends, `NodeLost`, at `now`. Creating that worker again inside the same attempt would
/// start one rank beside peers that are mid-run — a gang runs whole or not at all — so
/// the job is retried as a whole instead.
pub(super) fn gang_broken(
    job: &ComputeJob,
    placement: &Placement,
    pods: &[PodView],
    now: i64,
) -> Option<(AttemptOutcome, i64, String)> {
    placement.running_time.as_ref()?;
    let missing: Vec<String> = (0..job.spec.workers)
        .filter(|r| pods.iter().all(|p| p.rank != *r))
        .map(|r| r.to_string())
        .collect();
    (!missing.is_empty()).then(|| {
        (
            AttemptOutcome::NodeLost,
            now,
            format!(
                "worker {} of the running gang is gone (its pod was deleted)",
                missing.join(", ")
            ),
        )
    })
}

/// Seconds the job has run over all its attempts: each ended attempt from its gang start
/// to its end, the live one from its gang start to `now`. Time queued, suspended or failing
/// over does not count against `spec.maxDuration` ("all attempts together").
pub(super) fn run_seconds(st: &ComputeJobStatus, now: i64) -> i64 {
    let span = |from: Option<&str>, to: i64| {
        from.and_then(crate::time::parse)
            .map_or(0, |f| to.saturating_sub(f).max(0))
    };
    let ended: i64 = st
        .attempts
        .iter()
        .map(|a| {
            let end = crate::time::parse(&a.end_time).unwrap_or(0);
            span(a.running_time.as_deref(), end)
        })
        .fold(0, i64::saturating_add);
    let live = st
        .placement
        .as_ref()
        .filter(|p| !st.attempts.iter().any(|a| a.attempt == p.attempt))
        .map_or(0, |p| span(p.running_time.as_deref(), now));
    ended.saturating_add(live)
}
