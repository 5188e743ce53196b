//! Pure: a placed attempt whose gang does not get running in time (`spec.startTimeout`).
//! A provider may advertise GPUs its cluster cannot start work on (its scheduler finds no
//! room, a taint, an image that does not pull there): waiting for ever would hold the
//! job and the GPUs the placement counts for it. Kueue's `waitForPodsReady` does the
//! same for one cluster; here the retry goes to another provider.

use std::collections::BTreeMap;

use gpufed_api::ComputeJob;
use gpufed_api::job_status::Placement;

use super::{PodPhase, PodView};

/// Condition reason (`Failed`, `Stalled`) of a job, and reason of its attempt's record,
/// when the attempt's gang did not start within `spec.startTimeout`.
pub const START_TIMEOUT: &str = "StartTimeout";

/// Most distinct waiting reasons named in the record.
const MAX_REASONS: usize = 2;

/// Why the live attempt ends for not starting: `None` while its gang has run (billing
/// started) or it is within the job's start timeout since its placement; else what its
/// record says — how many workers run, and what the others wait for, as their scheduler
/// or kubelet says (workers with the same reason named together).
pub(super) fn timed_out(
    job: &ComputeJob,
    placement: &Placement,
    pods: &[PodView],
    now: i64,
) -> Option<String> {
    if placement.running_time.is_some() {
        return None;
    }
    let placed = crate::time::parse(&placement.placed_time)?;
    let limit = job.spec.start_timeout_secs();
    if now.saturating_sub(placed) < i64::try_from(limit).unwrap_or(i64::MAX) {
        return None;
    }
    let workers = job.spec.workers as usize;
    let running = pods
        .iter()
        .filter(|p| matches!(p.phase, PodPhase::Running | PodPhase::Succeeded))
        .count();
    let mut by_reason: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for p in pods.iter().filter(|p| p.phase == PodPhase::Pending) {
        let why = p.waiting.as_deref().unwrap_or("Pending");
        by_reason.entry(why).or_default().push(p.rank);
    }
    let mut waits: Vec<String> = by_reason
        .iter()
        .take(MAX_REASONS)
        .map(|(why, ranks)| {
            let ranks: Vec<String> = ranks.iter().map(u32::to_string).collect();
            let noun = if ranks.len() == 1 { "worker" } else { "workers" };
            format!("{noun} {}: {why}", ranks.join(", "))
        })
        .collect();
    if by_reason.len() > MAX_REASONS {
        waits.push(format!("{} more reasons", by_reason.len() - MAX_REASONS));
    }
    let missing = workers.saturating_sub(pods.len());
    if missing > 0 {
        waits.push(format!("{missing} not created"));
    }
    let message = format!(
        "the gang did not start on provider {} within {}s of its placement (spec.startTimeout): \
         {running} of {workers} workers running{}{}",
        placement.provider,
        limit,
        if waits.is_empty() { "" } else { "; " },
        waits.join("; ")
    );
    Some(super::end::refusal(&message))
}
