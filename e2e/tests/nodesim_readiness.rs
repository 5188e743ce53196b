//! The SIMULATED kubelet reports pod readiness as kubelet does: a container with a
//! readinessProbe starts not ready and becomes ready after its initial delay; the
//! `gpufed.io/sim-ready` annotation, set by another process (kubectl), fails the probe.
//! A node whose kubelet is down (silent) finishes none of its pods until it is back.

mod common;

use std::process::Command;
use std::time::Duration;

use gpufed_e2e::nodesim::{READY_ANNOTATION, RUN_SECONDS_ANNOTATION};
use gpufed_e2e::wait::{self, pod_phase};
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::core::v1::{Pod, PodCondition, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

const HUB: &str = "hub";
const T: Duration = Duration::from_secs(60);
const INITIAL_DELAY: i32 = 3;

fn ready_condition(pod: &Pod) -> Option<PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

fn container_ready(pod: &Pod) -> Option<bool> {
    Some(pod.status.as_ref()?.container_statuses.as_ref()?.first()?.ready)
}

/// Waits until the pod's Ready condition has status `want` (`"True"`/`"False"`).
async fn ready_is(pods: &Api<Pod>, name: &str, want: &str) -> Pod {
    wait::until(&format!("pod {name} Ready={want}"), T, || async {
        let pod = pods.get(name).await?;
        Ok(ready_condition(&pod)
            .is_some_and(|c| c.status == want)
            .then_some(pod))
    })
    .await
    .expect("readiness reported")
}

/// Sets the annotation from another process, as a test driver or a person would.
fn kubectl_annotate(kubeconfig: &std::path::Path, ns: &str, pod: &str, value: &str) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns, "annotate", "--overwrite", "pod", pod])
        .arg(format!("{READY_ANNOTATION}={value}"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl annotate failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_not_ready(pod: &Pod) {
    let ready = ready_condition(pod).expect("Ready condition");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [trainer]")
    );
    assert_eq!(container_ready(pod), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probe_delays_ready_and_the_annotation_fails_it() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let mut spec = FederationSpec::new("readiness");
    spec.hub_pools = vec![GpuPool::h100_nvlink("h100", 1)];
    let env = TestEnv::start(spec).await.expect("cluster starts");
    let Some(_sim) = env.simulator("readiness_probe_delays_ready_and_the_annotation_fails_it", HUB) else {
        return;
    };
    let kubeconfig = env
        .federation()
        .expect("local federation")
        .hub()
        .kubeconfig()
        .to_owned();
    let client = env.hub_client().await.expect("client");
    let ns = common::namespace(&client, "ready").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let mut pod = common::gpu_pod("serve", 1, &[]);
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(8080),
                ..Default::default()
            }),
            initial_delay_seconds: Some(INITIAL_DELAY),
            ..Default::default()
        });
    }
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    // Running at once, but not ready until the (simulated) probe first succeeds.
    let running = pod_phase(&pods, "serve", "Running", T).await.expect("pod runs");
    assert_not_ready(&running);
    let started = running
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .expect("start time");
    let ready = ready_is(&pods, "serve", "True").await;
    let since = ready_condition(&ready)
        .and_then(|c| c.last_transition_time)
        .expect("transition time");
    let waited = since.0.duration_since(started.0).as_secs();
    assert!(
        waited >= i64::from(INITIAL_DELAY),
        "ready {waited} s after the start, before the initial delay"
    );
    assert_eq!(container_ready(&ready), Some(true));
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );

    // Another process fails the probe.
    kubectl_annotate(&kubeconfig, &ns, "serve", "false");
    let failing = ready_is(&pods, "serve", "False").await;
    assert_not_ready(&failing);
    // ... and nothing rewrites the pod while nothing changes (no write loop).
    tokio::time::sleep(gpufed_e2e::nodesim::PERIOD_CAP + Duration::from_millis(500)).await;
    let still = pods.get("serve").await.expect("get");
    assert_eq!(
        still.metadata.resource_version, failing.metadata.resource_version,
        "the simulated kubelet rewrote an unchanged pod"
    );

    kubectl_annotate(&kubeconfig, &ns, "serve", "true");
    let back = ready_is(&pods, "serve", "True").await;
    assert_eq!(container_ready(&back), Some(true));

    // Through the API too, and removing the annotation means ready.
    let set = |v: Option<&str>| serde_json::json!({ "metadata": { "annotations": { READY_ANNOTATION: v } } });
    pods.patch(
        "serve",
        &PatchParams::default(),
        &Patch::Merge(&set(Some("false"))),
    )
    .await
    .expect("annotate");
    ready_is(&pods, "serve", "False").await;
    pods.patch("serve", &PatchParams::default(), &Patch::Merge(&set(None)))
        .await
        .expect("remove annotation");
    let last = ready_is(&pods, "serve", "True").await;
    assert_eq!(
        last.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_nodes_pod_does_not_finish_until_the_node_is_back() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let mut spec = FederationSpec::new("silent-finish");
    spec.hub_pools = vec![GpuPool::h100_nvlink("h100", 1)];
    let env = TestEnv::start(spec).await.expect("cluster starts");
    let Some(sim) = env.simulator("a_silent_nodes_pod_does_not_finish_until_the_node_is_back", HUB) else {
        return;
    };
    let client = env.hub_client().await.expect("client");
    let ns = common::namespace(&client, "silent").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &common::gpu_pod("job", 1, &[(RUN_SECONDS_ANNOTATION, "5")]),
    )
    .await
    .expect("create pod");
    let running = pod_phase(&pods, "job", "Running", T).await.expect("pod runs");
    let started = std::time::Instant::now();
    let node = running.spec.and_then(|s| s.node_name).expect("bound");

    // The kubelet dies a second into the 5 s run: nobody is left to report the end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.silence_node(&node).expect("silence");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    let later = pods.get("job").await.expect("get");
    assert_eq!(
        wait::phase(&later),
        "Running",
        "a pod finished on a node whose kubelet is down"
    );
    assert!(
        sim.finish_pod(&ns, "job", 0).await.is_err(),
        "finish_pod wrote for a down kubelet"
    );

    // Back, its kubelet reports the run that ended meanwhile.
    sim.set_node_ready(&node, true).await.expect("Ready again");
    pod_phase(&pods, "job", "Succeeded", T)
        .await
        .expect("finished once the node is back");
}
