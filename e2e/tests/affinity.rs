//! A template's affinity rules, on real API servers and the real scheduler (GPU nodes
//! SIMULATED): provider-a (1.00) has one A100 node on Ethernet, the dearer provider-b
//! (1.50) two on InfiniBand; both expose `example.com/network`.
//!
//! Required node affinity: a job asking for InfiniBand or RoCE runs on provider-b, its
//! worker pod keeps the template's term with the pin to the chosen node added, and
//! provider-b's scheduler binds it. One asking for `NotIn [infiniband]` runs on the
//! cheaper provider-a. A template naming nodes by `matchFields` is refused, naming the
//! field.
//!
//! Required pod anti-affinity among the job's own workers on the hostname: two workers of
//! one GPU would fit provider-a's one node, where the member's scheduler would keep the
//! second Pending until `startTimeout`; they go to provider-b instead, one per node, both
//! bound by its scheduler. Three such workers fit no provider: the job waits, told so.
//!
//! Required pod affinity among them: two workers of 2 GPUs must share a node. While
//! provider-b has 3 and 2 GPUs free on its nodes the job waits, told why (placed one per
//! node, the second would never bind); once a node is free both run there, bound by
//! provider-b's scheduler.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::ComputeJob;
use kube::Api;
use kube::api::DeleteParams;
use opsupport::budgets::prio_job;
use opsupport::labels::{expose_label, label_nodes};
use opsupport::{cheap_and_dear, job_until, member_pods, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

fn provider_of(j: &ComputeJob) -> Option<String> {
    j.status.as_ref()?.placement.as_ref().map(|p| p.provider.clone())
}

fn condition(j: &ComputeJob, kind: &str) -> Option<(String, String)> {
    let c = gpufed_api::conditions::find(&j.status.as_ref()?.conditions, kind)?;
    Some((c.reason.clone(), c.message.clone()))
}

async fn running(hub: &kube::Client, ns: &str, name: &str) -> ComputeJob {
    job_until(hub, ns, name, &format!("{name} running"), MINUTE, |j| {
        phase(j) == "Running"
    })
    .await
}

/// `prio_job` of `workers` × 1 GPU, its template's affinity `affinity` and labels `app`.
fn with_affinity(name: &str, workers: u32, affinity: serde_json::Value) -> serde_json::Value {
    let mut job = prio_job(name, 1, 100, false, 600);
    job["spec"]["workers"] = workers.into();
    job["spec"]["template"]["metadata"]["labels"] = serde_json::json!({"app": name});
    job["spec"]["template"]["spec"]["affinity"] = affinity;
    job
}

fn network_affinity(operator: &str, values: &[&str]) -> serde_json::Value {
    serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "example.com/network", "operator": operator, "values": values}]}]}}})
}

fn apart(app: &str) -> serde_json::Value {
    serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}})
}

fn together(app: &str) -> serde_json::Value {
    serde_json::json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_affinity_and_workers_kept_apart_are_honoured_by_placement_and_the_member() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((env, hub, operator)) =
        cheap_and_dear("affinity", |b| gpufed_e2e::GpuPool { nodes: 2, ..b }).await
    else {
        return;
    };
    let nodes = [
        ("provider-a", "a-a100-0", "ethernet"),
        ("provider-b", "b-a100-0", "infiniband"),
        ("provider-b", "b-a100-1", "infiniband"),
    ];
    label_nodes(&env, "example.com/network", &nodes).await;
    expose_label(&hub, &["provider-a", "provider-b"], "example.com/network").await;
    let member_b = env.member_client("provider-b").await.expect("member client");
    let ns = common::namespace(&hub, "team").await;

    // Workers kept apart: not on provider-a's single node, one per node of provider-b.
    submit(&hub, &ns, &with_affinity("apart", 2, apart("apart"))).await;
    let j = running(&hub, &ns, "apart").await;
    assert_eq!(
        provider_of(&j).as_deref(),
        Some("provider-b"),
        "provider-a has one node"
    );
    let pods = member_pods(&member_b, j.metadata.uid.as_deref().expect("uid")).await;
    let mut bound: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        ["b-a100-0", "b-a100-1"],
        "one worker per node, bound by the scheduler"
    );

    // Three apart fit no provider: the job waits, told why, and holds nothing.
    submit(&hub, &ns, &with_affinity("three", 3, apart("three"))).await;
    let waiting = job_until(&hub, &ns, "three", "three waits for nodes", MINUTE, |j| {
        condition(j, "Placed").is_some_and(|(_, m)| m.contains("lack 3 suitable nodes for one worker each"))
    })
    .await;
    assert_eq!(provider_of(&waiting), None);
    println!("AFFINITY three apart: {:?}", condition(&waiting, "Placed"));

    // Node affinity: the InfiniBand node, though provider-a is cheaper.
    submit(
        &hub,
        &ns,
        &with_affinity("ib", 1, network_affinity("In", &["infiniband", "roce"])),
    )
    .await;
    let j = running(&hub, &ns, "ib").await;
    assert_eq!(provider_of(&j).as_deref(), Some("provider-b"));
    let pods = member_pods(&member_b, j.metadata.uid.as_deref().expect("uid")).await;
    let spec = pods
        .first()
        .and_then(|p| p.spec.as_ref())
        .expect("the worker pod");
    let node = spec.node_name.clone().expect("bound by provider-b's scheduler");
    let terms = serde_json::to_value(spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()))
        .expect("json")["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .clone();
    assert_eq!(
        terms,
        serde_json::json!([{"matchExpressions": [
            {"key": "example.com/network", "operator": "In", "values": ["infiniband", "roce"]},
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]),
        "the template's term, pinned"
    );

    // NotIn: the cheaper provider-a's Ethernet node.
    submit(
        &hub,
        &ns,
        &with_affinity("not-ib", 1, network_affinity("NotIn", &["infiniband"])),
    )
    .await;
    assert_eq!(
        provider_of(&running(&hub, &ns, "not-ib").await).as_deref(),
        Some("provider-a")
    );

    // Nodes named by field: refused, naming it; never placed.
    let by_name = serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a-a100-0"]}]}]}}});
    submit(&hub, &ns, &with_affinity("by-name", 1, by_name)).await;
    let refused = job_until(&hub, &ns, "by-name", "by-name refused", MINUTE, |j| {
        condition(j, "Stalled").is_some_and(|(_, m)| m.contains("matchFields: not supported"))
    })
    .await;
    assert_eq!(provider_of(&refused), None);
    println!("AFFINITY by name: {:?}", condition(&refused, "Stalled"));

    // Workers that must share a node: two of 2 GPUs, placed as one of 4. provider-b has
    // 3 + 2 free (two of them would fit, one per node, and the second never bind): wait.
    let mut pair = with_affinity("pair", 2, together("pair"));
    pair["spec"]["gpusPerWorker"] = 2.into();
    submit(&hub, &ns, &pair).await;
    let waiting = job_until(&hub, &ns, "pair", "pair waits for one node", MINUTE, |j| {
        condition(j, "Placed")
            .is_some_and(|(_, m)| m.contains("its 2 workers must share one node: 4 GPUs on it"))
    })
    .await;
    assert_eq!(provider_of(&waiting), None);
    println!("AFFINITY pair waiting: {:?}", condition(&waiting, "Placed"));
    // The workers kept apart go: a node of provider-b is free, both workers land on it.
    Api::<ComputeJob>::namespaced(hub.clone(), &ns)
        .delete("apart", &DeleteParams::default())
        .await
        .expect("delete apart");
    let j = job_until(&hub, &ns, "pair", "pair running", 2 * MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    assert_eq!(provider_of(&j).as_deref(), Some("provider-b"));
    let placed: Vec<String> = j
        .status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map(|p| p.workers.iter().map(|w| w.node.clone()).collect())
        .unwrap_or_default();
    assert_eq!(placed.len(), 2, "two workers written: {placed:?}");
    assert_eq!(placed[0], placed[1], "on one node: {placed:?}");
    let pods = member_pods(&member_b, j.metadata.uid.as_deref().expect("uid")).await;
    let bound: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(
        bound,
        [placed[0].clone(), placed[0].clone()],
        "both bound there by the scheduler"
    );
    drop(operator);
}
