//! Pure: `spec.rollout.progressDeadlineSeconds`, as a Deployment's progress deadline.
//!
//! While a service is short of its desired state (a rollout, a scale-up, a lost replica)
//! its status keeps the time of its last progress; a service that goes the deadline
//! without any is reported stuck (`Stalled=True`, reason `ProgressDeadlineExceeded`), so
//! GitOps tools that read kstatus (Flux, Argo CD) fail the sync instead of waiting
//! forever. Nothing is undone: the old replicas keep serving, and the next progress
//! clears it.

use gpufed_api::common::{Condition, ConditionStatus};
use gpufed_api::conditions::{self, types};
use gpufed_api::service::ServiceProgress;
use gpufed_api::{ComputeJob, ComputeService};
use kube::ResourceExt;

/// Condition reason for a service past its progress deadline.
pub const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// This round's progress record: `None` once the service is `complete`; otherwise the
/// last one, unless the service progressed (it was complete, its spec changed, or more
/// replicas of the current template are ready than last seen): then `now`.
pub fn track(svc: &ComputeService, complete: bool, updated_ready: u32, now: i64) -> Option<ServiceProgress> {
    if complete {
        return None;
    }
    let prev = svc.status.as_ref();
    let same_spec = prev.and_then(|s| s.observed_generation) == svc.metadata.generation;
    let since = prev
        .and_then(|s| s.progress.as_ref())
        .filter(|p| same_spec && updated_ready <= p.updated_ready_replicas)
        .and_then(|p| crate::time::parse(&p.last_progress_time).map(|_| p.last_progress_time.clone()));
    Some(ServiceProgress {
        updated_ready_replicas: updated_ready,
        last_progress_time: since.unwrap_or_else(|| crate::time::format(now)),
    })
}

/// The `Stalled` message when `progress` is past the service's deadline at `now`:
/// since when, and why the first replica of the current template that is not ready is
/// not (`stuck`, in replica order). `None` while within the deadline.
pub fn exceeded(
    svc: &ComputeService,
    progress: &ServiceProgress,
    stuck: Option<&ComputeJob>,
    now: i64,
) -> Option<String> {
    let deadline = svc.spec.rollout.progress_deadline_seconds;
    let since = crate::time::parse(&progress.last_progress_time)?;
    if now.saturating_sub(since) < i64::from(deadline) {
        return None;
    }
    let why = stuck.map_or_else(
        || "no replica of the current template is waiting".to_owned(),
        |j| format!("replica {}: {}", j.name_any(), cause(j)),
    );
    Some(format!(
        "no progress within spec.rollout.progressDeadlineSeconds ({deadline}s) since {}: {} of {} replicas of the current template ready; {why}",
        progress.last_progress_time, progress.updated_ready_replicas, svc.spec.replicas
    ))
}

/// Why a replica is not ready, in its job's own words: the first abnormal condition of
/// `Stalled`, `Placed`, `Ready`.
fn cause(j: &ComputeJob) -> String {
    let conds: &[Condition] = j.status.as_ref().map_or(&[], |s| &s.conditions);
    let abnormal = [
        (types::STALLED, ConditionStatus::True),
        (types::PLACED, ConditionStatus::False),
        (types::READY, ConditionStatus::False),
    ];
    abnormal
        .iter()
        .find_map(|(t, bad)| conditions::find(conds, t).filter(|c| c.status == *bad))
        .map_or_else(
            || "not yet reported by the job controller".to_owned(),
            |c| {
                let status = c.status;
                let msg = if c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.message)
                };
                format!("{}={status:?} {}{msg}", c.type_, c.reason)
            },
        )
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
