//! Pure: a service's `spec.disruptionBudget` — which replicas count as healthy, the
//! budget's status, and the budgets handed to the placement engine, whose preemption
//! never takes a service below its minimum ([`gpufed_placement::Snapshot::budgets`]).
//!
//! Healthy is what still serves and is not already leaving: ready, not retiring (scaled
//! away or rolled), not marked for eviction. A replica that is not ready counts toward
//! nothing and may always be evicted (Kubernetes' `unhealthyPodEvictionPolicy:
//! AlwaysAllow`): a broken replica never holds its service's GPUs against a job that
//! outranks it, and never hides that the healthy ones are at the minimum.

use std::collections::BTreeMap;

use gpufed_api::service::DisruptionStatus;
use gpufed_api::serving::LABEL_SERVICE;
use gpufed_api::{ComputeJob, ComputeService};
use gpufed_placement as pl;
use kube::ResourceExt;

use crate::mapping::job_id;

/// Whether replica `j` counts toward its service's budget.
pub fn healthy(j: &ComputeJob) -> bool {
    let st = j.status.as_ref();
    let placement = st.and_then(|s| s.placement.as_ref());
    !j.spec.suspend
        && j.metadata.deletion_timestamp.is_none()
        && !crate::mapping::is_finished(j)
        && placement.is_some_and(|p| p.preempted.is_none())
        && st.and_then(|s| s.endpoint.as_ref()).is_some_and(|e| e.ready)
}

/// The budget's key in the placement snapshot: `namespace/name` of the service.
pub fn key(svc: &ComputeService) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// The fewest healthy replicas `svc` must keep, when it has a valid budget.
pub fn min_healthy(svc: &ComputeService) -> Option<u32> {
    svc.spec
        .disruption_budget
        .as_ref()?
        .min_healthy(svc.spec.replicas)
        .ok()
}

/// The budget's status for `svc` with replica jobs `replicas`; `None` without a budget.
pub fn status(svc: &ComputeService, replicas: &[&ComputeJob]) -> Option<DisruptionStatus> {
    let desired_healthy = min_healthy(svc)?;
    let current_healthy = u32::try_from(replicas.iter().filter(|j| healthy(j)).count()).unwrap_or(u32::MAX);
    Some(DisruptionStatus {
        current_healthy,
        desired_healthy,
        disruptions_allowed: current_healthy.saturating_sub(desired_healthy),
    })
}

/// The budgets of `services` (key → fewest healthy), and the key of every healthy
/// replica among `jobs` (job id → key). A replica is its service's when it carries the
/// service's label, lives in its namespace and names it as controlling owner.
pub fn keys(
    jobs: &[std::sync::Arc<ComputeJob>],
    services: &[std::sync::Arc<ComputeService>],
) -> (BTreeMap<String, u32>, BTreeMap<String, String>) {
    let mut budgets = BTreeMap::new();
    let mut owned: BTreeMap<(String, String), String> = BTreeMap::new();
    for svc in services {
        let Some(min) = min_healthy(svc) else { continue };
        let k = key(svc);
        budgets.insert(k.clone(), min);
        owned.insert(
            (svc.namespace().unwrap_or_default(), svc.uid().unwrap_or_default()),
            k,
        );
    }
    if owned.is_empty() {
        return (budgets, BTreeMap::new());
    }
    let replicas = jobs
        .iter()
        .filter(|j| healthy(j) && j.labels().contains_key(LABEL_SERVICE))
        .filter_map(|j| {
            let owner = j.owner_references().iter().find(|o| o.controller == Some(true))?;
            (owner.kind == "ComputeService").then_some(())?;
            let k = owned.get(&(j.namespace().unwrap_or_default(), owner.uid.clone()))?;
            Some((job_id(j), k.clone()))
        })
        .collect();
    (budgets, replicas)
}

/// Sets `budgets` in `snap` and on each running allocation of a healthy replica its
/// budget's key ([`keys`]). Healthy replicas the snapshot leaves out (on a provider
/// placement does not use now: paused, draining, not ready) still serve: each lowers
/// its budget's minimum in the snapshot by one, so the engine counts them too.
pub fn apply(snap: &mut pl::Snapshot, budgets: &BTreeMap<String, u32>, replicas: &BTreeMap<String, String>) {
    let mut min = budgets.clone();
    let mut outside: BTreeMap<&str, u32> = BTreeMap::new();
    for k in replicas.values() {
        *outside.entry(k.as_str()).or_default() += 1;
    }
    for alloc in &mut snap.running {
        alloc.budget = replicas.get(&alloc.job).cloned();
        if let Some(n) = alloc.budget.as_deref().and_then(|k| outside.get_mut(k)) {
            *n -= 1;
        }
    }
    for (k, m) in &mut min {
        *m = m.saturating_sub(outside.get(k.as_str()).copied().unwrap_or(0));
    }
    snap.budgets = min;
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
