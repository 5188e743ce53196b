//! Pure: an agent's status of an Assignment as the job controller reads it (the attempt's
//! pods, or why there are none), and the agent's report of one pod (its inverse).

use gpufed_api::assignment::{APPLIED, AssignedPod, Assignment, AssignmentStatus, reasons};
use gpufed_api::common::ConditionStatus;
use gpufed_api::conditions;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::error::{Error, Result};
use crate::job::plan::{PodPhase, PodView};

/// Pure: what `provider`'s agent reported on `found`, the Assignment of attempt `attempt`
/// of the job `uid` (looked up by name), as the job controller reads it:
/// - none, or one of another job or attempt (a tenant namespace reused by a new job of
///   the same name): no pods, so the job controller writes it (again; over another job's
///   it is forbidden, [`super::taken_by`]);
/// - one whose current generation the agent has not acted on yet: [`Error::NotTakenUp`],
///   so the job waits as it would for a silent member, its start timeout running;
/// - one the agent refused (`Applied=False/Refused`: its own checks) or whose objects its
///   member's API server rejected (`Rejected`: 400/422) in that generation:
///   [`Error::Rejected`] with the message, and the job controller ends the attempt. A
///   refusal recorded for an earlier generation is not this one's;
/// - one whose objects its API server forbids (`Forbidden`: a 403 that does not pass, or
///   an older agent's `ApplyFailed` quoting one: [`crate::error::legacy_forbidden`]):
///   [`Error::Forbidden`], ended by the job controller past the grace period;
/// - otherwise the reported pods. Other reasons (`ApplyFailed`, `ObserveFailed`, one this
///   hub does not know) are read by the pods, as before: the agent retries them.
pub fn read_assignment(
    provider: &str,
    found: Option<&Assignment>,
    uid: &str,
    attempt: u32,
) -> Result<(Vec<PodView>, Vec<String>)> {
    let Some(a) = found.filter(|a| a.spec.job_uid == uid && a.spec.attempt == attempt) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let name = a.name_any();
    let generation = a.metadata.generation;
    let status = a.status.clone().unwrap_or_default();
    if generation.is_none() || status.observed_generation != generation {
        return Err(Error::NotTakenUp {
            provider: provider.to_owned(),
            message: format!("the agent has not acted on Assignment {name} yet"),
        });
    }
    let refusal = conditions::find(&status.conditions, APPLIED)
        .filter(|c| c.status == ConditionStatus::False)
        .filter(|c| c.observed_generation.is_none_or(|g| Some(g) == generation));
    let message = refusal.and_then(|c| match c.reason.as_str() {
        reasons::REFUSED => Some(format!("its agent refused Assignment {name}: {}", c.message)),
        reasons::REJECTED => Some(format!(
            "its API server rejected them (as its agent reports on Assignment {name}): {}",
            c.message
        )),
        _ => None,
    });
    if let Some(message) = message {
        return Err(Error::Rejected {
            provider: provider.to_owned(),
            message,
        });
    }
    let forbidden = refusal.and_then(|c| match c.reason.as_str() {
        reasons::FORBIDDEN => Some(c.message.as_str()),
        reasons::APPLY_FAILED => crate::error::legacy_forbidden(&c.message),
        _ => None,
    });
    if let Some(answer) = forbidden {
        return Err(Error::Forbidden {
            provider: provider.to_owned(),
            message: format!(
                "its API server forbids them (as its agent reports on Assignment {name}): {answer}"
            ),
        });
    }
    Ok(pod_views(&status))
}

/// The job controller's view of an agent's reported pods, and the not-Ready nodes.
pub fn pod_views(status: &AssignmentStatus) -> (Vec<PodView>, Vec<String>) {
    let views = status
        .pods
        .iter()
        .map(|p| PodView {
            rank: p.rank,
            phase: match p.phase.as_str() {
                "Running" => PodPhase::Running,
                "Succeeded" => PodPhase::Succeeded,
                "Failed" => PodPhase::Failed,
                _ => PodPhase::Pending,
            },
            started: p.started_at,
            finished: p.finished_at,
            node_lost: p.node_name.is_some() && !p.node_ready && !p.node_unreachable,
            node_unreachable: p.node_name.is_some() && !p.node_ready && p.node_unreachable,
            ready: p.ready,
            host_ip: p.host_ip.clone(),
            gpu_uuids: p.gpu_uuids.clone(),
            waiting: p.waiting.clone(),
        })
        .collect();
    let mut lost: Vec<String> = status
        .pods
        .iter()
        .filter(|p| !p.node_ready)
        .filter_map(|p| p.node_name.clone())
        .collect();
    lost.sort();
    lost.dedup();
    (views, lost)
}

/// An agent's report of one of its pods (the inverse of [`pod_views`]).
pub fn assigned_pod(pod: &Pod, ready_nodes: &crate::job::observe::ReadyNodes) -> Option<AssignedPod> {
    let view = crate::job::observe::pod_view(pod, ready_nodes)?;
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    Some(AssignedPod {
        name: pod.name_any(),
        rank: view.rank,
        phase: format!("{:?}", view.phase),
        node_ready: node_name.is_some() && !view.node_lost && !view.node_unreachable,
        node_unreachable: view.node_unreachable,
        node_name,
        started_at: view.started,
        finished_at: view.finished,
        ready: view.ready,
        host_ip: view.host_ip,
        gpu_uuids: view.gpu_uuids,
        waiting: view.waiting,
    })
}
