//! GPU pods against the real kube-scheduler and SIMULATED GPU nodes.

mod common;

use std::time::Duration;

use common::gpu_pod;
use gpufed_e2e::nodesim::{EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION};
use gpufed_e2e::wait::{self, pod_phase, pod_unschedulable};
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

const MEMBER: &str = "provider-a";
// Two minutes, not one: kube-scheduler 1.20 parks a pod whose scheduling or binding failed
// (e.g. an API request timing out on a loaded machine) in its unschedulable queue, and only
// its leftover flush (every 30 s, for pods parked 60 s) retries it when no node changes.
const T: Duration = Duration::from_secs(120);

fn spec(name: &str) -> FederationSpec {
    FederationSpec::new(name).member(MEMBER, vec![GpuPool::h100_nvlink("h100", 2)])
}

fn exit_code(pod: &Pod) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    Some(statuses.first()?.state.as_ref()?.terminated.as_ref()?.exit_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_pod_is_bound_by_the_real_scheduler_runs_and_finishes() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = TestEnv::start(spec("run")).await.expect("federation starts");
    let Some(sim) = env.simulator("gpu_pod_is_bound_by_the_real_scheduler_runs_and_finishes", MEMBER) else {
        return;
    };
    let client = env.member_client(MEMBER).await.expect("client");
    let ns = common::namespace(&client, "run").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    pods.create(&PostParams::default(), &gpu_pod("train", 4, &[]))
        .await
        .expect("create pod");
    let running = pod_phase(&pods, "train", "Running", T).await.expect("pod runs");
    let node = running
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("bound");
    assert!(
        sim.node_names().contains(&node),
        "bound to {node}, not a simulated node"
    );
    let status = running.status.clone().expect("status");
    assert!(status.pod_ip.is_some_and(|ip| ip.starts_with("10.200.")));
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");

    sim.finish_pod(&ns, "train", 3).await.expect("finish");
    let failed = pod_phase(&pods, "train", "Failed", T).await.expect("pod fails");
    assert_eq!(exit_code(&failed), Some(3));

    // Policy: succeed after N seconds.
    pods.create(
        &PostParams::default(),
        &gpu_pod("short", 8, &[(RUN_SECONDS_ANNOTATION, "1")]),
    )
    .await
    .expect("create");
    let done = pod_phase(&pods, "short", "Succeeded", T)
        .await
        .expect("pod succeeds by itself");
    assert_eq!(exit_code(&done), Some(0));

    // Any process can finish a pod through the exit-code annotation.
    pods.create(&PostParams::default(), &gpu_pod("annotated", 1, &[]))
        .await
        .expect("create");
    pod_phase(&pods, "annotated", "Running", T).await.expect("runs");
    let patch = serde_json::json!({ "metadata": { "annotations": { EXIT_CODE_ANNOTATION: "0" } } });
    pods.patch("annotated", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    pod_phase(&pods, "annotated", "Succeeded", T)
        .await
        .expect("succeeds on command");

    // A deleted pod goes away (the simulated kubelet confirms the deletion).
    pods.create(&PostParams::default(), &gpu_pod("doomed", 1, &[]))
        .await
        .expect("create");
    pod_phase(&pods, "doomed", "Running", T).await.expect("runs");
    pods.delete("doomed", &Default::default()).await.expect("delete");
    wait::until("pod doomed to be gone", T, || async {
        Ok(pods.get_opt("doomed").await?.is_none().then_some(()))
    })
    .await
    .expect("deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_gpu_pod_stays_pending_with_the_schedulers_reason() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = TestEnv::start(spec("pending")).await.expect("federation starts");
    let client = env.member_client(MEMBER).await.expect("client");
    let ns = common::namespace(&client, "pending").await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    pods.create(&PostParams::default(), &gpu_pod("huge", 9, &[]))
        .await
        .expect("create pod");
    let message = pod_unschedulable(&pods, "huge", T)
        .await
        .expect("scheduler reports Unschedulable");
    assert!(
        message.contains("Insufficient gpufed.io/gpu"),
        "scheduler said: {message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = pods.get("huge").await.expect("get");
    assert_eq!(wait::phase(&pod), "Pending");
    assert!(
        pod.spec.and_then(|s| s.node_name).is_none(),
        "an oversized pod was bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_and_deleted_nodes_get_no_new_pods() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let env = TestEnv::start(spec("nodes")).await.expect("federation starts");
    let Some(sim) = env.simulator("not_ready_and_deleted_nodes_get_no_new_pods", MEMBER) else {
        return;
    };
    let client = env.member_client(MEMBER).await.expect("client");
    let nodes: Api<Node> = Api::all(client.clone());
    sim.set_node_ready("h100-0", false).await.expect("NotReady");
    // The real node lifecycle controller taints the NotReady node.
    wait::until("h100-0 to be tainted not-ready", T, || async {
        let node = nodes.get("h100-0").await?;
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        Ok(taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/not-ready" && t.effect == "NoSchedule")
            .then_some(()))
    })
    .await
    .expect("taint");

    let ns = common::namespace(&client, "nodes").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &gpu_pod("one", 1, &[]))
        .await
        .expect("create");
    let pod = pod_phase(&pods, "one", "Running", T).await.expect("runs");
    assert_eq!(pod.spec.and_then(|s| s.node_name).as_deref(), Some("h100-1"));

    sim.delete_node("h100-1").await.expect("delete node");
    assert!(nodes.get_opt("h100-1").await.expect("get").is_none());
    pods.create(&PostParams::default(), &gpu_pod("two", 1, &[]))
        .await
        .expect("create");
    let message = pod_unschedulable(&pods, "two", T).await.expect("unschedulable");
    assert!(
        message.contains("not-ready") || message.contains("taint"),
        "scheduler said: {message}"
    );
}
