//! Kubernetes Events for a ComputeJob, from what changed between two of its statuses.
//!
//! Pure: the job's status is the record; Events are what `kubectl describe` and event
//! exporters show of its history (placed where, lost which provider, why it waits).
//! Every status write goes through [`super::write_status`], which publishes these for the
//! step it wrote, so each transition is told once, by the writer that made it.

use gpufed_api::common::{Condition, ConditionStatus};
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::{AttemptOutcome, ComputeJobStatus, JobPhase};

/// One Event to publish on the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Warning` (else `Normal`).
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// What the operator did (the Event's `action`).
    pub action: &'static str,
    /// For humans.
    pub message: String,
}

/// A note (an Event to publish).
pub fn note(warning: bool, reason: &str, action: &'static str, message: String) -> Note {
    Note {
        warning,
        reason: reason.to_string(),
        action,
        message,
    }
}

/// Placement reasons that need someone's attention (the others mean "waiting its turn").
const PLACEMENT_WARNINGS: [&str; 5] = [
    "NoProviderFits",
    "EscrowShortfall",
    "TenantNotAdmitted",
    "NodeSelectorUnmatched",
    "InsufficientNodeResources",
];

/// The Events for the step from `before` to `after`, in the order they happened.
pub fn transitions(before: Option<&ComputeJobStatus>, after: &ComputeJobStatus) -> Vec<Note> {
    let empty = ComputeJobStatus::default();
    let before = before.unwrap_or(&empty);
    let mut out = Vec::new();
    // Attempts that ended in this step.
    for a in after
        .attempts
        .iter()
        .filter(|a| !before.attempts.iter().any(|b| b.attempt == a.attempt))
    {
        let (warning, reason) = match a.outcome {
            AttemptOutcome::Succeeded => continue, // told by the phase below
            AttemptOutcome::Failed => (true, "AttemptFailed"),
            AttemptOutcome::ProviderLost => (true, "ProviderLost"),
            AttemptOutcome::NodeLost => (true, "NodeLost"),
            AttemptOutcome::Preempted => (true, "Preempted"),
            AttemptOutcome::Stopped => (false, "AttemptStopped"),
            AttemptOutcome::DeadlineExceeded => (true, "DeadlineExceeded"),
        };
        let msg = format!(
            "attempt {} on provider {} ended after {} GPU-seconds: {}",
            a.attempt, a.provider, a.gpu_seconds, a.message
        );
        out.push(note(warning, reason, "EndAttempt", msg));
    }
    // A new placement.
    if let Some(p) = after.placement.as_ref()
        && before.placement.as_ref().map(|b| b.attempt) != Some(p.attempt)
    {
        let nodes: Vec<&str> = p.workers.iter().map(|w| w.node.as_str()).collect();
        let msg = format!(
            "attempt {} on provider {}: {} GPUs at {} per GPU-hour, nodes {}",
            p.attempt,
            p.provider,
            p.gpus,
            p.price_per_gpu_hour,
            nodes.join(", ")
        );
        out.push(note(false, "Placed", "Place", msg));
    }
    // The live attempt's nodes lost contact with their member, or answer again.
    let unreachable = |s: &ComputeJobStatus| {
        s.placement
            .as_ref()
            .map(|p| (p.attempt, p.node_unreachable_since.is_some()))
    };
    match (unreachable(before), unreachable(after)) {
        (Some((b, false)), Some((a, true))) if a == b => {
            let ready = conditions::find(&after.conditions, types::READY)
                .map_or_else(String::new, |c| c.message.clone());
            out.push(note(true, "NodeUnreachable", "Observe", ready));
        }
        (Some((b, true)), Some((a, false))) if a == b => {
            let msg = format!("the nodes of attempt {a} answer again; it runs on");
            out.push(note(false, "NodeReachable", "Observe", msg));
        }
        _ => {}
    }
    // Why it is not placed, when that changes and matters.
    let placed = |s: &ComputeJobStatus| conditions::find(&s.conditions, types::PLACED).cloned();
    if let Some(c) = placed(after)
        && c.status == ConditionStatus::False
        && PLACEMENT_WARNINGS.contains(&c.reason.as_str())
        && placed(before).is_none_or(|b| b.status != c.status || b.reason != c.reason)
    {
        out.push(note(true, &c.reason, "Place", c.message));
    }
    // The phase.
    if after.phase != before.phase {
        let usage = after.usage.as_ref();
        let used = || {
            usage.map_or_else(String::new, |u| {
                format!("{} GPU-seconds, cost {}", u.gpu_seconds, u.cost)
            })
        };
        let ready =
            conditions::find(&after.conditions, types::READY).map_or_else(String::new, |c| c.message.clone());
        match after.phase {
            Some(JobPhase::Running) => out.push(note(false, "Running", "Run", ready)),
            Some(JobPhase::Succeeded) => out.push(note(false, "Succeeded", "Complete", used())),
            Some(JobPhase::Failed) => {
                out.push(note(true, "Failed", "Complete", format!("{ready} ({})", used())))
            }
            Some(JobPhase::Suspended) => out.push(note(false, "Suspended", "Suspend", used())),
            _ => {}
        }
    }
    // Stalled: something needs a human.
    let just_failed = after.phase == Some(JobPhase::Failed) && before.phase != after.phase;
    if !just_failed {
        // (A job that just failed is told by its phase: `JobFailed`, `DispatchRejected`.)
        out.extend(newly_stalled(&before.conditions, &after.conditions));
    }
    out
}

/// A Warning named after the `Stalled` reason when an object became stalled in this step,
/// or stalled for another reason (any object with kstatus conditions).
pub fn newly_stalled(before: &[Condition], after: &[Condition]) -> Option<Note> {
    let c = conditions::find(after, types::STALLED).filter(|c| c.status == ConditionStatus::True)?;
    let b = conditions::find(before, types::STALLED);
    b.is_none_or(|b| b.status != c.status || b.reason != c.reason)
        .then(|| note(true, &c.reason, "Reconcile", c.message.clone()))
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
