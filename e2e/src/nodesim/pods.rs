//! The pod side of the **simulated** kubelet: pods bound by the real scheduler to a simulated
//! node become Running, then Succeeded or Failed.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::node::now;
use super::readiness;
use crate::Result;

/// Annotation: the pod succeeds this many seconds after it started running.
pub const RUN_SECONDS_ANNOTATION: &str = "gpufed.io/sim-run-seconds";
/// Annotation: finish the (running) pod now with this container exit code
/// (0 → Succeeded, anything else → Failed). Works across processes, e.g. with
/// `kubectl annotate pod NAME gpufed.io/sim-exit-code=1`.
pub const EXIT_CODE_ANNOTATION: &str = "gpufed.io/sim-exit-code";

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Seconds after which the pod should succeed, from [`RUN_SECONDS_ANNOTATION`].
pub(crate) fn run_seconds(pod: &Pod) -> Option<u64> {
    annotation(pod, RUN_SECONDS_ANNOTATION)?.trim().parse().ok()
}

/// Requested exit code, from [`EXIT_CODE_ANNOTATION`].
pub(crate) fn requested_exit(pod: &Pod) -> Option<i32> {
    annotation(pod, EXIT_CODE_ANNOTATION)?.trim().parse().ok()
}

/// The pod's phase, `Pending` when unset.
pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn condition(type_: &str, status: bool, reason: Option<&str>) -> Value {
    let mut c = json!({
        "type": type_,
        "status": if status { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now(),
    });
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    c
}

fn containers(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// Moves a pod to Running: container statuses, pod IP, and the readiness
/// [`readiness::evaluate`] gives at its start (containers with a readiness probe start not
/// ready).
pub(crate) async fn mark_running(client: &Client, pod: &Pod, host_ip: &str, pod_ip: &str) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let started = now();
    let r = readiness::evaluate(pod, started.0);
    let statuses: Vec<Value> = containers(pod)
        .into_iter()
        .map(|(c, image)| {
            json!({
                "name": c, "image": image, "imageID": format!("simulated://{image}"),
                "containerID": format!("simulated://{uid}/{c}"),
                "ready": !r.unready.contains(&c), "started": true, "restartCount": 0,
                "state": { "running": { "startedAt": started } },
            })
        })
        .collect();
    let [containers_ready, ready] = readiness::initial_conditions(&r, &started);
    let patch = json!({ "status": {
        "phase": "Running",
        "hostIP": host_ip,
        "podIP": pod_ip,
        "podIPs": [{ "ip": pod_ip }],
        "startTime": started,
        "conditions": [
            condition("PodScheduled", true, None),
            condition("Initialized", true, None),
            containers_ready,
            ready,
        ],
        "containerStatuses": statuses,
    }});
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(%ns, %name, pod_ip, ready = r.ready(), "simulated pod is Running");
    Ok(())
}

/// Moves a pod to Succeeded (exit code 0) or Failed (any other exit code).
pub(crate) async fn mark_finished(client: &Client, pod: &Pod, exit_code: i32) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let finished = now();
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| finished.clone());
    let (phase, reason) = if exit_code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    let statuses: Vec<Value> = containers(pod)
        .into_iter()
        .map(|(c, image)| {
            json!({
                "name": c, "image": image, "imageID": format!("simulated://{image}"),
                "containerID": format!("simulated://{uid}/{c}"),
                "ready": false, "started": false, "restartCount": 0,
                "state": { "terminated": {
                    "exitCode": exit_code, "reason": reason,
                    "startedAt": started, "finishedAt": finished,
                    "containerID": format!("simulated://{uid}/{c}"),
                }},
            })
        })
        .collect();
    let patch = json!({ "status": {
        "phase": phase,
        "conditions": [
            condition("PodScheduled", true, None),
            condition("Initialized", true, None),
            condition("ContainersReady", false, Some("PodCompleted")),
            condition("Ready", false, Some("PodCompleted")),
        ],
        "containerStatuses": statuses,
    }});
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(%ns, %name, exit_code, phase, "simulated pod finished");
    Ok(())
}

/// Fails a pod that kubelet did not admit (phase Failed, reason `UnexpectedAdmissionError`,
/// no container ever started), as kubelet does when Allocate fails.
pub(crate) async fn reject(client: &Client, pod: &Pod, message: &str) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let patch = json!({ "status": {
        "phase": "Failed",
        "reason": "UnexpectedAdmissionError",
        "message": message,
    }});
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(%ns, %name, %message, "simulated kubelet rejected the pod");
    Ok(())
}

/// Writes the pod's readiness at `now` when it changed (see [`readiness`]) and returns when
/// to look again. A conflict (the pod changed meanwhile) or a gone pod is no error: the
/// watch brings the newer pod.
pub(crate) async fn sync_readiness(client: &Client, pod: &Pod) -> Result<Option<std::time::Duration>> {
    let t = now();
    let r = readiness::evaluate(pod, t.0);
    if let Some(patch) = readiness::status_patch(pod, &r, &t) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(%ns, %name, ready = r.ready(), unready = ?r.unready, "simulated pod readiness")
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(r.recheck_in)
}

/// Completes a graceful deletion as kubelet does once the containers are gone.
pub(crate) async fn finalize_deletion(client: &Client, pod: &Pod) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
