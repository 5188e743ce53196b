//! A provider whose cluster cannot start the gang it was given, on real API servers and
//! the real scheduler (GPU nodes SIMULATED): the job's template keeps its workers off any
//! node running a pod labelled `example.com/exclusive=true` (a required pod anti-affinity),
//! and such a pod runs on provider-a's only GPU node. The hub models neither other pods'
//! labels nor pod (anti-)affinity — node affinity and CPU or memory requests it would see:
//! the builder replaces the template's node affinity with the pin to the chosen node, and
//! placement counts the nodes' CPU and memory — so the cheaper provider-a wins the
//! placement; its worker stays Pending, `Unschedulable` (anti-affinity). After
//! `spec.startTimeout` the attempt ends `StartTimeout` saying so, its pod is removed, and
//! the job runs on provider-b.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::job_status::AttemptOutcome;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use opsupport::budgets::prio_job;
use opsupport::{cheap_and_dear, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

/// A pod (no GPUs, no requests) bound straight to `node`, labelled `example.com/exclusive`.
fn exclusive_pod(node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "exclusive", "labels": {"example.com/exclusive": "true"}},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "registry.example.com/exclusive:1"}]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_its_provider_cannot_start_runs_elsewhere_after_its_start_timeout() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some((env, hub, operator)) = cheap_and_dear("start", |b| b).await else {
        return;
    };
    let member_a = env.member_client("provider-a").await.expect("member client");
    Api::<Pod>::namespaced(member_a.clone(), "default")
        .create(&PostParams::default(), &exclusive_pod("a-a100-0"))
        .await
        .expect("the exclusive pod is created on provider-a's node");

    let ns = common::namespace(&hub, "team").await;
    let mut job = prio_job("train", 1, 100, false, 600);
    job["spec"]["startTimeout"] = "20s".into();
    job["spec"]["failurePolicy"]["maxAttempts"] = 2.into();
    job["spec"]["template"]["spec"]["affinity"] = serde_json::json!({"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"example.com/exclusive": "true"}},
            "namespaces": ["default"],
            "topologyKey": "kubernetes.io/hostname"}]}});
    submit(&hub, &ns, &job).await;
    let on = |j: &gpufed_api::ComputeJob, provider: &str| {
        j.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|p| p.provider == provider)
    };
    let first = job_until(&hub, &ns, "train", "train placed on provider-a", MINUTE, |j| {
        on(j, "provider-a")
    })
    .await;
    let uid = first.metadata.uid.clone().expect("uid");
    let j = job_until(
        &hub,
        &ns,
        "train",
        "train running on provider-b after a start timeout on provider-a",
        2 * MINUTE,
        |j| phase(j) == "Running" && on(j, "provider-b"),
    )
    .await;
    let st = j.status.expect("status");
    let a = &st.attempts[0];
    assert_eq!(
        (
            a.attempt,
            a.provider.as_str(),
            a.outcome,
            a.reason.as_deref(),
            a.gpu_seconds
        ),
        (1, "provider-a", AttemptOutcome::Failed, Some("StartTimeout"), 0),
        "{a:?}"
    );
    assert!(
        a.message.contains("0 of 1 workers running")
            && a.message.contains("worker 0: Unschedulable")
            && a.message.contains("anti-affinity"),
        "the record says what the worker waited for: {}",
        a.message
    );
    println!("START_TIMEOUT attempt 1: {}", a.message);
    assert_eq!(st.placement.as_ref().map(|p| p.attempt), Some(2));
    opsupport::pods_removed(&member_a, &uid, "attempt 1's pod removed from provider-a", MINUTE).await;
    drop(operator);
}
