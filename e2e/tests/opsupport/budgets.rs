//! Priorities, services with disruption budgets and what preemption or a drain did to
//! them: the shared vocabulary of the preemption and drain tests.

use gpufed_api::{ComputeJob, ComputeService};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::job;

/// A 1-worker job of `gpus` GPUs at `priority`, one attempt allowed.
pub fn prio_job(name: &str, gpus: u32, priority: u32, preempt: bool, run_seconds: u32) -> serde_json::Value {
    let mut j = job(name, 1, gpus, serde_json::json!({}), "2.00", run_seconds);
    j["spec"]["priority"] = priority.into();
    j["spec"]["placement"]["preemptLowerPriority"] = preempt.into();
    j["spec"]["failurePolicy"] = serde_json::json!({"maxAttempts": 1, "onProviderLoss": "Failover"});
    j
}

/// The job's current attempt number (0 before its first placement).
pub fn attempt(j: &ComputeJob) -> u32 {
    j.status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map_or(0, |p| p.attempt)
}

/// `llm`, 2 replicas of 1 GPU at priority 100, with `budget` as its disruption budget
/// (e.g. `{"maxUnavailable": 1}`).
pub fn budgeted_service(spread: &str, budget: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm"},
        "spec": {"replicas": 2, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00", "priority": 100,
                 "spread": spread, "disruptionBudget": budget,
                 "port": {"port": 8000}, "placement": {"verifiedOnly": false},
                 "template": {"spec": {"containers": [{"name": "server", "image": "registry.example.com/vllm:1"}]}}}
    })
}

pub async fn apply_service(hub: &Client, ns: &str, service: &serde_json::Value) {
    Api::<ComputeService>::namespaced(hub.clone(), ns)
        .patch(
            "llm",
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(service),
        )
        .await
        .expect("service applies");
}

/// `(currentHealthy, desiredHealthy, disruptionsAllowed)`.
pub fn healthy(s: &ComputeService) -> Option<(u32, u32, u32)> {
    s.status
        .as_ref()
        .and_then(|st| st.disruption.as_ref())
        .map(|d| (d.current_healthy, d.desired_healthy, d.disruptions_allowed))
}

/// Each replica's provider and readiness, sorted.
pub fn ready_on(s: &ComputeService) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = s
        .status
        .as_ref()
        .map(|st| {
            st.replica_status
                .iter()
                .map(|r| (r.provider.clone().unwrap_or_default(), r.ready))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The replica jobs of service `llm` whose first attempt was preempted.
pub async fn preempted_replicas(hub: &Client, ns: &str) -> Vec<String> {
    let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), ns);
    let list = jobs
        .list(&ListParams::default().labels("gpufed.io/service=llm"))
        .await
        .expect("replicas");
    let mut out: Vec<String> = list
        .items
        .iter()
        .filter(|j| j.status.as_ref().is_some_and(|s| s.preemptions > 0))
        .map(ResourceExt::name_any)
        .collect();
    out.sort();
    out
}

/// The `Ready` condition's `(reason, message)` of provider `name`.
pub async fn provider_ready(hub: &Client, name: &str) -> Option<(String, String)> {
    let p = Api::<gpufed_api::GpuProvider>::all(hub.clone())
        .get(name)
        .await
        .ok()?;
    p.status
        .as_ref()
        .and_then(|s| gpufed_api::conditions::find(&s.conditions, "Ready"))
        .map(|c| (c.reason.clone(), c.message.clone()))
}
