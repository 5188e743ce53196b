//! What a member's scheduler asks of a node beyond free GPUs, on real API servers and the
//! real scheduler (GPU nodes SIMULATED).
//!
//! Taints: provider-a keeps its only GPU node apart with a dedicated-pool taint and the GPU
//! resource's own taint. Until `spec.workerTolerations` tolerates the first, provider-a
//! offers no GPUs (`Ready=False UntoleratedTaints`, naming node and taint) and jobs run
//! on the dearer provider-b or wait; once it does, the next job is placed on provider-a
//! and its worker, carrying both tolerations, is bound there by the member's scheduler.
//!
//! Node selectors: a job whose template selects `example.com/network=infiniband` waits,
//! told which label no offered node carries, until the providers expose that label
//! (`spec.exposedNodeLabels`); then it runs on the dearer provider whose node has it.
//!
//! CPU and memory: both nodes have 64 CPU. A worker asking for 40 runs on the cheaper
//! provider-a; a second one goes to provider-b although provider-a still has 3 free
//! GPUs (its node has only 24 CPU left), each bound by its member's scheduler; a worker
//! asking for 100 CPU, more than any node has, waits (`InsufficientNodeResources`).
//!
//! Extended resources: only provider-b's node has 2 RDMA devices (`rdma/ib`). A worker
//! asking for one runs there, bound by provider-b's scheduler, though provider-a is
//! cheaper; one asking for 2 waits for them, one asking for 4 is told no node has them.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use opsupport::budgets::{prio_job, provider_ready};
use opsupport::labels::{expose_label, label_nodes};
use opsupport::{cheap_and_dear, events_until, job_until, member_pods, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

/// Waits until provider `name`'s `Ready` reason is `reason`; returns its message.
async fn ready_reason(hub: &kube::Client, name: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + MINUTE;
    loop {
        let ready = provider_ready(hub, name).await;
        if let Some((r, message)) = &ready
            && r == reason
        {
            return message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: Ready reason {reason} within a minute; last {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn placed_condition(j: &gpufed_api::ComputeJob) -> Option<(String, String)> {
    let c = gpufed_api::conditions::find(&j.status.as_ref()?.conditions, "Placed")?;
    Some((c.reason.clone(), c.message.clone()))
}

fn provider_of(j: &gpufed_api::ComputeJob) -> Option<String> {
    j.status.as_ref()?.placement.as_ref().map(|p| p.provider.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tainted_node_is_offered_only_once_the_workers_tolerate_its_taints() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((env, hub, operator)) = cheap_and_dear("taints", |b| b).await else {
        return;
    };
    let member_a = env.member_client("provider-a").await.expect("member client");
    let taints = serde_json::json!({"spec": {"taints": [
        {"key": "example.com/dedicated", "value": "gpufed", "effect": "NoSchedule"},
        {"key": gpufed_api::DEFAULT_GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]}});
    Api::<Node>::all(member_a.clone())
        .patch("a-a100-0", &PatchParams::default(), &Patch::Merge(&taints))
        .await
        .expect("node tainted");
    let message = ready_reason(&hub, "provider-a", "UntoleratedTaints").await;
    assert!(
        message.contains("a-a100-0 (example.com/dedicated=gpufed:NoSchedule)"),
        "names the node and the one taint not tolerated: {message}"
    );
    println!("TAINTS provider-a Ready=False UntoleratedTaints: {message}");

    // The cheaper provider offers nothing: the first job runs on provider-b straight away
    // (no attempt wasted waiting on a node its workers could never use).
    let ns = common::namespace(&hub, "team").await;
    submit(&hub, &ns, &prio_job("first", 4, 100, false, 600)).await;
    let first = job_until(&hub, &ns, "first", "first running on provider-b", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    assert_eq!(provider_of(&first).as_deref(), Some("provider-b"));
    let attempt = first
        .status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map(|p| p.attempt);
    assert_eq!(attempt, Some(1), "its first attempt");

    // provider-b is full (4 of 4 GPUs) and provider-a still offers nothing: the second job waits.
    submit(&hub, &ns, &prio_job("second", 4, 100, false, 600)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiting = Api::<gpufed_api::ComputeJob>::namespaced(hub.clone(), &ns)
        .get("second")
        .await
        .expect("second");
    assert_eq!(
        provider_of(&waiting),
        None,
        "second is not placed on a tainted node"
    );

    let tolerate = serde_json::json!({"spec": {"workerTolerations": [
        {"key": "example.com/dedicated", "operator": "Equal", "value": "gpufed", "effect": "NoSchedule"}]}});
    Api::<GpuProvider>::all(hub.clone())
        .patch("provider-a", &PatchParams::default(), &Patch::Merge(&tolerate))
        .await
        .expect("tolerations set");
    let message = ready_reason(&hub, "provider-a", "Serving").await;
    assert!(!message.contains("not offered"), "{message}");
    let second = job_until(&hub, &ns, "second", "second running on provider-a", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    assert_eq!(provider_of(&second).as_deref(), Some("provider-a"));
    let uid = second.metadata.uid.clone().expect("uid");
    let pods = member_pods(&member_a, &uid).await;
    let pod = pods.first().expect("the worker pod on provider-a");
    let spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(
        spec.node_name.as_deref(),
        Some("a-a100-0"),
        "bound by the scheduler"
    );
    let keys: Vec<&str> = spec
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.as_deref())
        .collect();
    assert!(
        keys.contains(&"example.com/dedicated") && keys.contains(&gpufed_api::DEFAULT_GPU_RESOURCE),
        "the worker tolerates both taints: {keys:?}"
    );
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_selecting_node_labels_runs_only_where_an_exposed_label_matches() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((env, hub, operator)) = cheap_and_dear("labels", |b| b).await else {
        return;
    };
    let nodes = [
        ("provider-a", "a-a100-0", "ethernet"),
        ("provider-b", "b-a100-0", "infiniband"),
    ];
    label_nodes(&env, "example.com/network", &nodes).await;

    // No provider exposes the label yet: the job waits, told which label is missing.
    let ns = common::namespace(&hub, "team").await;
    let mut job = prio_job("ib", 4, 100, false, 600);
    job["spec"]["template"]["spec"]["nodeSelector"] =
        serde_json::json!({"example.com/network": "infiniband"});
    submit(&hub, &ns, &job).await;
    let waiting = job_until(
        &hub,
        &ns,
        "ib",
        "ib waits for a node with its label",
        MINUTE,
        |j| {
            placed_condition(j).is_some_and(|(r, m)| {
                r == "NodeSelectorUnmatched"
                    && m.contains("lack a suitable node labelled example.com/network=infiniband")
            })
        },
    )
    .await;
    assert_eq!(provider_of(&waiting), None);
    println!("LABELS waiting: {:?}", placed_condition(&waiting));

    expose_label(&hub, &["provider-a", "provider-b"], "example.com/network").await;
    let running = job_until(
        &hub,
        &ns,
        "ib",
        "ib running on the InfiniBand node",
        MINUTE,
        |j| phase(j) == "Running",
    )
    .await;
    assert_eq!(
        provider_of(&running).as_deref(),
        Some("provider-b"),
        "the cheaper provider lacks the label"
    );
    let member_b = env.member_client("provider-b").await.expect("member client");
    let uid = running.metadata.uid.clone().expect("uid");
    let pods = member_pods(&member_b, &uid).await;
    let spec = pods
        .first()
        .and_then(|p| p.spec.as_ref())
        .expect("the worker pod");
    assert_eq!(
        spec.node_name.as_deref(),
        Some("b-a100-0"),
        "bound by the member's scheduler"
    );
    drop(operator);
}

/// A one-worker, one-GPU job whose worker container has `resources`.
fn asking(name: &str, resources: serde_json::Value) -> serde_json::Value {
    let mut job = prio_job(name, 1, 100, false, 600);
    job["spec"]["template"]["spec"]["containers"][0]["resources"] = resources;
    job
}

/// Waits until job `name` is unplaced for lack of node resources, its message naming `what`.
async fn waits_for(hub: &kube::Client, ns: &str, name: &str, what: &str) -> gpufed_api::ComputeJob {
    job_until(hub, ns, name, &format!("{name} waits for {what}"), MINUTE, |j| {
        placed_condition(j).is_some_and(|(r, m)| r == "InsufficientNodeResources" && m.contains(what))
    })
    .await
}

/// Waits until job `name` runs; returns it.
async fn running(hub: &kube::Client, ns: &str, name: &str) -> gpufed_api::ComputeJob {
    job_until(hub, ns, name, &format!("{name} running"), MINUTE, |j| {
        phase(j) == "Running"
    })
    .await
}

/// The node the first worker pod of `job` is bound to in `member`.
async fn bound_node(env: &gpufed_e2e::TestEnv, member: &str, job: &gpufed_api::ComputeJob) -> Option<String> {
    let client = env.member_client(member).await.expect("member client");
    let pods = member_pods(&client, job.metadata.uid.as_deref().expect("uid")).await;
    pods.first()?.spec.as_ref()?.node_name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_go_where_their_cpu_is_free_and_wait_when_no_node_is_large_enough() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((env, hub, operator)) = cheap_and_dear("cpu", |b| b).await else {
        return;
    };
    let ns = common::namespace(&hub, "team").await;
    let cpu_job = |name: &str, cpu: &str| asking(name, serde_json::json!({"requests": {"cpu": cpu}}));

    // Submits a 40-CPU job and waits until it runs.
    let runs = async |name: &str| {
        submit(&hub, &ns, &cpu_job(name, "40")).await;
        running(&hub, &ns, name).await
    };
    let first = runs("first").await;
    assert_eq!(
        provider_of(&first).as_deref(),
        Some("provider-a"),
        "the cheaper one"
    );
    // provider-a's node has 3 free GPUs but only 24 of its 64 CPU.
    let second = runs("second").await;
    assert_eq!(
        provider_of(&second).as_deref(),
        Some("provider-b"),
        "provider-a's free GPUs lack the CPU beside them"
    );
    for (job, member, node) in [
        (&first, "provider-a", "a-a100-0"),
        (&second, "provider-b", "b-a100-0"),
    ] {
        assert_eq!(
            bound_node(&env, member, job).await.as_deref(),
            Some(node),
            "bound by {member}'s scheduler"
        );
    }

    // No node has 100 CPU: the job waits, told so, instead of burning a start timeout.
    submit(&hub, &ns, &cpu_job("huge", "100")).await;
    let waiting = waits_for(&hub, &ns, "huge", "lack a suitable node with 100 CPU").await;
    assert_eq!(provider_of(&waiting), None);
    println!("CPU waiting: {:?}", placed_condition(&waiting));
    let events = events_until(&hub, &ns, "huge", &["InsufficientNodeResources"]).await;
    assert!(
        events.iter().any(|(t, r, note)| t == "Warning"
            && r == "InsufficientNodeResources"
            && note.contains("100 CPU")),
        "{events:?}"
    );

    // Local storage counts too: the simulated nodes have 1 TiB allocatable.
    let disk = asking(
        "disk",
        serde_json::json!({"requests": {"ephemeral-storage": "2Ti"}}),
    );
    submit(&hub, &ns, &disk).await;
    waits_for(
        &hub,
        &ns,
        "disk",
        "with 2048 GiB ephemeral storage for one worker",
    )
    .await;
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_asking_for_rdma_devices_run_where_the_devices_are() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    // Only the dearer provider-b's node has RDMA devices (another device plugin's).
    let Some((env, hub, operator)) = cheap_and_dear("rdma", |b| b.with_extended("rdma/ib", "2")).await else {
        return;
    };
    let ns = common::namespace(&hub, "team").await;
    let rdma = |name: &str, n: &str| asking(name, serde_json::json!({"limits": {"rdma/ib": n}}));

    submit(&hub, &ns, &rdma("rdma", "1")).await;
    let job = running(&hub, &ns, "rdma").await;
    assert_eq!(
        provider_of(&job).as_deref(),
        Some("provider-b"),
        "provider-a is cheaper but has no RDMA devices"
    );
    assert_eq!(
        bound_node(&env, "provider-b", &job).await.as_deref(),
        Some("b-a100-0"),
        "bound by provider-b's scheduler, which counts the devices too"
    );
    // A job asking for none still goes to the cheaper provider.
    submit(&hub, &ns, &asking("plain", serde_json::json!({}))).await;
    let plain = running(&hub, &ns, "plain").await;
    assert_eq!(provider_of(&plain).as_deref(), Some("provider-a"));

    // One device is left beside 3 free GPUs: a worker asking for 2 waits, told why.
    submit(&hub, &ns, &rdma("two", "2")).await;
    let two = waits_for(&hub, &ns, "two", "lack 2 rdma/ib free per worker").await;
    println!("RDMA waiting: {:?}", placed_condition(&two));
    // More than any node has: told so.
    submit(&hub, &ns, &rdma("four", "4")).await;
    waits_for(
        &hub,
        &ns,
        "four",
        "lack a suitable node with 4 rdma/ib for one worker",
    )
    .await;
    drop(operator);
}
