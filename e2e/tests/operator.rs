//! The gpufed operator end to end on real API servers and the real scheduler (GPU nodes
//! SIMULATED): placement by fit, dispatch, completion with metered usage, explanations,
//! deletion, and failover when a provider is cut off.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::job_status::{AttemptOutcome, JobPhase};
use gpufed_e2e::{FederationSpec, GpuPool};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::DeleteParams;
use opsupport::{Operator, federation_with_providers, job, job_until, lease_holder, phase, submit};
use rustix::process::Signal;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_land_where_they_fit_run_to_completion_and_are_cleaned_up() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("op-fit")
        .member("provider-a", vec![GpuPool::h100_nvlink("a-h100", 1)])
        .member("provider-b", vec![GpuPool::a100_40gb("b-a100", 2)])
        .member("provider-c", vec![GpuPool::rtx4090("c-rtx", 2)]);
    let Some((env, hub)) = federation_with_providers(
        spec,
        &[
            ("provider-a", "2.10"),
            ("provider-b", "1.10"),
            ("provider-c", "0.35"),
        ],
    )
    .await
    else {
        return;
    };
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 3).await;
    let ns = common::namespace(&hub, "fit").await;

    let nvlink = serde_json::json!({"minMemory": "80G", "interconnect": "NVLinkDomain"});
    submit(&hub, &ns, &job("gang", 2, 4, nvlink, "3.00", 4)).await;
    submit(
        &hub,
        &ns,
        &job(
            "a100",
            2,
            2,
            serde_json::json!({"minMemory": "40G", "tier": "Datacenter"}),
            "1.50",
            4,
        ),
    )
    .await;
    submit(
        &hub,
        &ns,
        &job(
            "consumer",
            1,
            1,
            serde_json::json!({"tier": "Consumer"}),
            "0.50",
            4,
        ),
    )
    .await;
    submit(
        &hub,
        &ns,
        &job(
            "too-cheap",
            1,
            8,
            serde_json::json!({"minMemory": "80G"}),
            "0.10",
            4,
        ),
    )
    .await;

    for (name, provider) in [
        ("gang", "provider-a"),
        ("a100", "provider-b"),
        ("consumer", "provider-c"),
    ] {
        let done = job_until(&hub, &ns, name, "Succeeded", 2 * MINUTE, |j| {
            phase(j) == "Succeeded"
        })
        .await;
        let st = done.status.clone().expect("status");
        assert_eq!(
            st.placement.as_ref().map(|p| p.provider.as_str()),
            Some(provider),
            "{name}"
        );
        let usage = st.usage.clone().expect("usage");
        let gpus = u64::from(done.spec.workers * done.spec.gpus_per_worker);
        assert!(usage.gpu_seconds >= 3 * gpus, "{name}: {usage:?}");
        assert_eq!(st.attempts.len(), 1, "{name}: one attempt");
        // The pods exist on the member, bound by the real scheduler to a planned node.
        let member = env.member_client(provider).await.expect("member");
        let pods = opsupport::member_pods(&member, &done.metadata.uid.clone().unwrap_or_default()).await;
        assert_eq!(pods.len(), done.spec.workers as usize, "{name}");
        let planned: Vec<String> = st
            .placement
            .iter()
            .flat_map(|p| p.workers.iter().map(|w| w.node.clone()))
            .collect();
        for pod in &pods {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .expect("bound");
            assert!(
                planned.contains(&node),
                "{name}: bound to {node}, planned {planned:?}"
            );
        }
    }
    // Waited for with all three providers counted: on a loaded machine a member's API may
    // miss a heartbeat (`--member-timeout 3s`), and a round meanwhile counts two.
    let queued = job_until(&hub, &ns, "too-cheap", "an explanation", MINUTE, |j| {
        j.status
            .as_ref()
            .and_then(|s| gpufed_api::conditions::find(&s.conditions, "Placed"))
            .is_some_and(|c| c.reason == "NoProviderFits" && c.message.starts_with("0/3 "))
    })
    .await;
    let why = gpufed_api::conditions::find(&queued.status.as_ref().expect("st").conditions, "Placed")
        .expect("Placed")
        .message
        .clone();
    assert!(why.starts_with("0/3 providers fit"), "{why}");
    assert_eq!(phase(&queued), "Queued");

    // A finished job with spec.ttlSecondsAfterFinished deletes itself once the TTL has
    // passed since its completion (the finalizer's cleanup included), not before.
    let mut short = job(
        "short-lived",
        1,
        1,
        serde_json::json!({"tier": "Consumer"}),
        "0.50",
        2,
    );
    short["spec"]["ttlSecondsAfterFinished"] = 6.into();
    submit(&hub, &ns, &short).await;
    let done = job_until(&hub, &ns, "short-lived", "Succeeded", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let completed = done
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_deref())
        .and_then(gpufed_operator::time::parse)
        .expect("completionTime");
    let jobs: Api<gpufed_api::ComputeJob> = Api::namespaced(hub.clone(), &ns);
    gpufed_e2e::wait::until("the finished job deleted after its TTL", MINUTE, || async {
        Ok(jobs.get_opt("short-lived").await?.is_none().then_some(()))
    })
    .await
    .expect("deleted after its TTL");
    let gone = gpufed_operator::time::now();
    // completionTime has whole seconds: the deletion came at least 5 s after it.
    assert!(
        gone - completed >= 5,
        "deleted {}s after completion",
        gone - completed
    );
    let member = env.member_client("provider-c").await.expect("member c");
    let tenant = gpufed_operator::job::names::tenant_namespace(&ns, "short-lived");
    let left = Api::<Namespace>::all(member.clone())
        .get_opt(&tenant)
        .await
        .expect("member");
    assert!(
        left.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "its member namespace goes with it"
    );

    // Deleting a job removes its tenant namespace in the member.
    let gang = jobs.get("gang").await.expect("gang");
    jobs.delete("gang", &DeleteParams::default())
        .await
        .expect("delete");
    let member = env.member_client("provider-a").await.expect("member a");
    let tenant = gpufed_operator::job::names::tenant_namespace(&ns, "gang");
    gpufed_e2e::wait::until("tenant namespace deleted", MINUTE, || async {
        let ns = Api::<Namespace>::all(member.clone()).get_opt(&tenant).await?;
        Ok(ns
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await
    .expect("member namespace removed");
    gpufed_e2e::wait::until("job gone from the hub", MINUTE, || async {
        Ok(jobs.get_opt("gang").await?.is_none().then_some(()))
    })
    .await
    .expect("finalizer completes");
    assert!(
        gang.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "gpufed.io/member-cleanup")
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fails_over_when_its_provider_is_cut_off_and_is_billed_once() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("op-failover")
        .member("provider-a", vec![GpuPool::rtx4090("a-rtx", 2)])
        .member("provider-b", vec![GpuPool::rtx4090("b-rtx", 2)]);
    // provider-a is cheaper, so the first attempt goes there.
    let Some((env, hub)) =
        federation_with_providers(spec, &[("provider-a", "0.30"), ("provider-b", "0.40")]).await
    else {
        return;
    };
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 2).await;
    let ns = common::namespace(&hub, "failover").await;
    submit(&hub, &ns, &job("train", 1, 1, serde_json::json!({}), "1.00", 25)).await;
    let running = job_until(&hub, &ns, "train", "Running on provider-a", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    assert_eq!(
        running
            .status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .map(|p| p.provider.clone())
            .as_deref(),
        Some("provider-a")
    );
    let uid = running.metadata.uid.clone().expect("uid");

    // Cut provider-a off: freeze its API server.
    let fed = env.federation().expect("the harness' own federation");
    let apiserver = fed
        .cluster("provider-a")
        .expect("provider-a")
        .processes()
        .into_iter()
        .find(|p| p.name.ends_with("kube-apiserver"))
        .expect("apiserver process");
    assert!(apiserver.signal(Signal::STOP), "freeze provider-a");
    let recovered = job_until(&hub, &ns, "train", "attempt 2 on provider-b", MINUTE, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|p| p.attempt == 2 && p.provider == "provider-b")
    })
    .await;
    let first = recovered.status.as_ref().expect("status").attempts[0].clone();
    assert_eq!(
        (first.attempt, first.outcome, first.removed),
        (1, AttemptOutcome::ProviderLost, false)
    );
    let done = job_until(&hub, &ns, "train", "Succeeded on provider-b", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let st = done.status.clone().expect("status");
    assert_eq!(st.phase, Some(JobPhase::Succeeded));

    // provider-a comes back: the fenced first attempt's pods are removed.
    assert!(apiserver.signal(Signal::CONT), "thaw provider-a");
    let member_a = env.member_client("provider-a").await.expect("member a");
    opsupport::pods_removed(&member_a, &uid, "attempt 1 removed from provider-a", 2 * MINUTE).await;
    let cleaned = job_until(&hub, &ns, "train", "attempt 1 marked removed", MINUTE, |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.attempts.first().is_some_and(|a| a.removed))
    })
    .await;
    // Billed once: the total is the sum of the attempts, the lost one only up to its last
    // heartbeat (it ran on for a while on the frozen provider, unbilled).
    let st = cleaned.status.expect("status");
    let sum: u64 = st.attempts.iter().map(|a| a.gpu_seconds).sum();
    assert_eq!(st.usage.as_ref().map(|u| u.gpu_seconds), Some(sum));
    assert!(
        st.attempts[1].gpu_seconds >= 20,
        "second attempt ran its 25 s: {:?}",
        st.attempts
    );
    assert!(
        st.attempts[0].gpu_seconds <= 30,
        "first attempt billed to its last heartbeat: {:?}",
        st.attempts
    );
    // `kubectl describe` tells the story: placed, provider lost, placed again, done.
    let told = opsupport::events_until(&hub, &ns, "train", &["Placed", "ProviderLost", "Succeeded"]).await;
    let placed: Vec<&String> = told
        .iter()
        .filter(|(_, r, _)| r == "Placed")
        .map(|(_, _, m)| m)
        .collect();
    assert!(
        placed
            .iter()
            .any(|m| m.contains("attempt 1 on provider provider-a"))
            && placed
                .iter()
                .any(|m| m.contains("attempt 2 on provider provider-b")),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|(t, r, m)| t == "Warning" && r == "ProviderLost" && m.contains("attempt 1")),
        "{told:?}"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader_without_duplicating_work() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("op-ha").member("provider-a", vec![GpuPool::rtx4090("a-rtx", 4)]);
    let Some((env, hub)) = federation_with_providers(spec, &[("provider-a", "0.30")]).await else {
        return;
    };
    let leader = Operator::start(hub.clone(), "op-a");
    opsupport::providers_ready(&hub, 1).await;
    let standby = Operator::start(hub.clone(), "op-b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lease_holder(&hub).await.as_deref(),
        Some("op-a"),
        "the first replica leads"
    );

    // A burst bigger than the provider (4 GPUs): jobs queue and run in waves.
    let ns = common::namespace(&hub, "ha").await;
    let names: Vec<String> = (0..10).map(|i| format!("burst-{i}")).collect();
    for name in &names {
        submit(&hub, &ns, &job(name, 1, 1, serde_json::json!({}), "1.00", 3)).await;
    }
    job_until(&hub, &ns, "burst-0", "first wave running", MINUTE, |j| {
        !phase(j).is_empty() && phase(j) != "Queued"
    })
    .await;
    leader.kill(); // no graceful shutdown, no Lease release: a crash
    for name in &names {
        job_until(&hub, &ns, name, "Succeeded after the takeover", 3 * MINUTE, |j| {
            phase(j) == "Succeeded"
        })
        .await;
    }
    assert_eq!(
        lease_holder(&hub).await.as_deref(),
        Some("op-b"),
        "the standby took over"
    );

    // Each job ran exactly one attempt with exactly one pod: nothing dispatched twice.
    let member = env.member_client("provider-a").await.expect("member");
    let jobs: Api<gpufed_api::ComputeJob> = Api::namespaced(hub.clone(), &ns);
    for name in &names {
        let job = jobs.get(name).await.expect("job");
        let st = job.status.clone().expect("status");
        assert_eq!(st.attempts.len(), 1, "{name}: {:?}", st.attempts);
        let pods = opsupport::member_pods(&member, &job.metadata.uid.clone().unwrap_or_default()).await;
        assert_eq!(pods.len(), 1, "{name}: {} pods", pods.len());
    }
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_node_fails_is_restarted_elsewhere_and_a_failed_job_says_so() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("op-node").member("provider-a", vec![GpuPool::rtx4090("a-rtx", 2)]);
    let Some((env, hub)) = federation_with_providers(spec, &[("provider-a", "0.30")]).await else {
        return;
    };
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "node").await;
    submit(&hub, &ns, &job("train", 1, 1, serde_json::json!({}), "1.00", 15)).await;
    let running = job_until(&hub, &ns, "train", "Running", MINUTE, |j| phase(j) == "Running").await;
    let node = running
        .status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map(|p| p.workers[0].node.clone())
        .expect("node");
    let fed = env.federation().expect("the harness' own federation");
    let sim = fed.simulator("provider-a").expect("simulator");
    sim.set_node_ready(&node, false).await.expect("node NotReady");
    let moved = job_until(&hub, &ns, "train", "attempt 2 on the other node", MINUTE, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|p| p.attempt == 2)
    })
    .await;
    let st = moved.status.expect("status");
    assert_eq!(st.attempts[0].outcome, AttemptOutcome::NodeLost);
    assert_ne!(
        st.placement.as_ref().map(|p| p.workers[0].node.clone()),
        Some(node.clone())
    );
    job_until(&hub, &ns, "train", "Succeeded", MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;

    // A worker that exits non-zero on every attempt fails the job after maxAttempts (3),
    // and the job says so in its conditions.
    let mut failing = job("crash", 1, 1, serde_json::json!({}), "1.00", 60);
    failing["spec"]["template"]["metadata"]["annotations"]["gpufed.io/sim-exit-code"] = "1".into();
    submit(&hub, &ns, &failing).await;
    let failed = job_until(&hub, &ns, "crash", "Failed", 2 * MINUTE, |j| phase(j) == "Failed").await;
    let st = failed.status.expect("status");
    assert_eq!(st.attempts.len(), 3, "{:?}", st.attempts);
    assert!(st.attempts.iter().all(|a| a.outcome == AttemptOutcome::Failed));
    let stalled = gpufed_api::conditions::find(&st.conditions, "Stalled").expect("Stalled");
    assert_eq!(stalled.reason, "JobFailed");
    operator.stop().await;
}
