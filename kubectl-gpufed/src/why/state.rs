//! The job's own state: whether it waits at all, and for what (its phase and conditions).

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::JobPhase;

use crate::jobs::outcome_message;

/// A one-line account of the job's state, and whether it is waiting for placement.
pub(super) fn state(job: &ComputeJob, spec_errors: &[String]) -> (String, bool) {
    let st = job.status.as_ref();
    let conds = st.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() {
        return ("being deleted: nothing to wait for".into(), false);
    }
    match st.and_then(|s| s.phase) {
        Some(JobPhase::Succeeded) => return ("finished: Succeeded, nothing to wait for".into(), false),
        Some(JobPhase::Failed) => {
            return (
                format!("finished: Failed ({}), nothing to wait for", outcome_message(job)),
                false,
            );
        }
        _ => {}
    }
    if let Some(first) = spec_errors.first() {
        return (format!("not placed: the spec is invalid ({first})"), false);
    }
    if let Some(p) = st.and_then(|s| s.placement.as_ref()) {
        if let Some(by) = &p.preempted {
            let text = match (by.drained_by(), by.refused_by()) {
                (Some(provider), _) => format!(
                    "being evicted from {provider} (attempt {}): the provider drains (spec.drain); queued again once stopped",
                    p.attempt
                ),
                (_, Some(provider)) => format!(
                    "being evicted from {provider} (attempt {}): the provider no longer takes work from this namespace (spec.tenants); queued again once stopped",
                    p.attempt
                ),
                _ => format!(
                    "being evicted from {} (attempt {}) for {} (priority {}): queued again once stopped",
                    p.provider, p.attempt, by.by, by.priority
                ),
            };
            return (text, false);
        }
        let ready = conditions::find(conds, types::READY);
        if ready.is_some_and(|c| c.status == ConditionStatus::True) {
            let text = format!("not waiting: runs on {} (attempt {})", p.provider, p.attempt);
            return (text, false);
        }
        let detail = ready.map_or("workers not reported yet", |c| c.message.as_str());
        let text = format!(
            "placed on {} (attempt {}), waiting for its workers: {detail}",
            p.provider, p.attempt
        );
        return (text, false);
    }
    if job.spec.suspend {
        let text =
            "suspended (spec.suspend is true): not placed until resumed; where it would fit if resumed:";
        return (text.into(), true);
    }
    let stalled = conditions::find(conds, types::STALLED)
        .filter(|c| c.reason == gpufed_operator::job::plan::CREDENTIALS_UNAVAILABLE);
    if let Some(c) = stalled {
        return (
            format!(
                "not placed: its checkpoint credentials cannot be read ({})",
                c.message
            ),
            false,
        );
    }
    let placed = conditions::find(conds, types::PLACED);
    if let Some(c) = placed.filter(|c| c.reason == gpufed_operator::placement::PREEMPTING) {
        let held = st.and_then(|s| s.held.as_ref()).map(held).unwrap_or_default();
        return (
            format!("waiting for the work it evicts to stop: {}{held}", c.message),
            false,
        );
    }
    let awaiting = gpufed_operator::verification::fresh::AWAITING_VERIFICATION;
    if let Some(c) = placed.filter(|c| c.reason == awaiting) {
        return (
            format!("waiting for its nodes to pass a new GPU challenge: {}", c.message),
            false,
        );
    }
    if let Some(c) = placed.filter(|c| c.reason == gpufed_operator::placement::DISRUPTION_BUDGET) {
        let text = format!(
            "queued: evicting lower-priority work would break a service's disruption budget, \
             so it waits for room ({})",
            c.message
        );
        return (text, true);
    }
    if let Some(c) = placed.filter(|c| c.reason == gpufed_operator::quota::plan::QUOTA_EXCEEDED) {
        let text = format!(
            "queued: its namespace's ComputeQuota holds it until the namespace's other work \
             ends or the quota is raised ({}); where it would fit otherwise:",
            c.message
        );
        return (text, true);
    }
    let text = match (st, st.and_then(|s| s.phase)) {
        (None, _) => "new: not yet seen by the operator; waiting for a provider",
        (_, Some(JobPhase::Recovering)) => "recovering: the next attempt waits for a provider",
        _ => "queued: waiting for a provider",
    };
    (text.into(), true)
}

/// `; its room is held: 4 GPUs on a (h1: 3, h2: 1)`, as the job's status keeps it.
fn held(h: &gpufed_api::job_status::HeldRoom) -> String {
    let gpus: u64 = h.nodes.iter().map(|n| u64::from(n.gpus)).sum();
    let nodes: Vec<String> = h
        .nodes
        .iter()
        .map(|n| format!("{}: {}", n.node, n.gpus))
        .collect();
    format!(
        "; its room is held: {gpus} GPUs on {} ({})",
        h.provider,
        nodes.join(", ")
    )
}
