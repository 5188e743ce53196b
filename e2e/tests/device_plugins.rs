//! Our device plugin inside the e2e federation (issue #6): every simulated node runs it
//! (`--simulate` mode, the DaemonSet's own code) against the node simulator's fake kubelet.
//! ListAndWatch sets the Node's GPU capacity and follows its health; each job pod is
//! admitted through GetPreferredAllocation + Allocate; the plugin publishes which pod holds
//! which GPU, and the hub puts those UUIDs into the job's placement and attempt record.

mod common;
mod opsupport;

use std::collections::BTreeSet;
use std::time::Duration;

use gpufed_api::job_status::JobPhase;
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use opsupport::{Operator, job, job_until, submit};

const RESOURCE: &str = "gpufed.io/gpu";

fn allocatable(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .allocatable
        .as_ref()?
        .get(RESOURCE)
        .map(|q| q.0.clone())
}

async fn node_until(member: &Client, name: &str, what: &str, pred: impl Fn(&Node) -> bool) -> Node {
    let api: Api<Node> = Api::all(member.clone());
    gpufed_e2e::wait::until(what, Duration::from_secs(30), || async {
        let n = api.get(name).await?;
        Ok(pred(&n).then_some(n))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn worker_gpus(job: &ComputeJob) -> Vec<String> {
    job.status
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .and_then(|p| p.workers.first())
        .map(|w| w.gpu_uuids.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_on_the_gpus_our_device_plugin_allocates() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let pool = GpuPool::h100_nvlink("dp", 1);
    let spec = FederationSpec::new("devplug")
        .member("dp", vec![pool.clone()])
        .with_device_plugins();
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return;
    };
    let node = pool.node_names()[0].clone();
    let uuids = fed.simulator("dp").expect("simulator").gpu_uuids(&node);
    assert_eq!(uuids.len(), 8, "{uuids:?}");
    let member = fed
        .cluster("dp")
        .expect("dp")
        .client()
        .await
        .expect("member client");

    // ListAndWatch → the Node's GPUs; the plugin's publisher → labels and signed report.
    let n = node_until(
        &member,
        &node,
        "the plugin's labels and report on the Node",
        |n| {
            let a = n.metadata.annotations.clone().unwrap_or_default();
            let l = n.metadata.labels.clone().unwrap_or_default();
            a.contains_key("gpufed.io/inventory-report")
                && l.get("gpufed.io/nvlink-domain")
                    .is_some_and(|d| d.starts_with("nvl8-"))
        },
    )
    .await;
    assert_eq!(allocatable(&n).as_deref(), Some("8"));
    assert_eq!(
        n.metadata
            .labels
            .unwrap_or_default()
            .get("gpufed.io/simulated")
            .map(String::as_str),
        Some("true")
    );

    // A GPU fallen off the bus (XID 79): it leaves allocatable, and stays out past its
    // probation (5 s here) — silence is no reset — until the GPU is seen reset; then it
    // comes back after a clean probation.
    let sim = fed.simulator("dp").expect("simulator");
    let t = std::time::Instant::now();
    assert!(sim.inject_xid(&node, &uuids[7], 79));
    node_until(&member, &node, "allocatable 7 after XID 79", |n| {
        allocatable(n).as_deref() == Some("7")
    })
    .await;
    eprintln!("XID 79 → Node allocatable 7 after {:?}", t.elapsed());
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let n = Api::<Node>::all(member.clone()).get(&node).await.expect("node");
    assert_eq!(allocatable(&n).as_deref(), Some("7"), "no reset, no recovery");
    assert!(sim.inject_reset(&node, &uuids[7], "answers again"));
    let t = std::time::Instant::now();
    node_until(
        &member,
        &node,
        "allocatable 8 after the reset and probation",
        |n| allocatable(n).as_deref() == Some("8"),
    )
    .await;
    eprintln!("GPU reset, healthy again → allocatable 8 after {:?}", t.elapsed());

    // Two 4-GPU jobs share the node: each gets its own NUMA-local half, as the plugin prefers.
    let hub = env.hub_client().await.expect("hub");
    opsupport::setup(fed, &hub, &[]).await;
    let operator = Operator::start(hub.clone(), "op-dp");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "dp").await;
    for name in ["half-a", "half-b"] {
        submit(&hub, &ns, &job(name, 1, 4, serde_json::json!({}), "5.00", 30)).await;
    }
    let mut got = Vec::new();
    for name in ["half-a", "half-b"] {
        let j = job_until(
            &hub,
            &ns,
            name,
            "its worker's GPUs known",
            Duration::from_secs(90),
            |j| worker_gpus(j).len() == 4,
        )
        .await;
        got.push(worker_gpus(&j));
    }
    let halves: BTreeSet<Vec<String>> = [uuids[..4].to_vec(), uuids[4..].to_vec()].into();
    let seen: BTreeSet<Vec<String>> = got.iter().cloned().collect();
    assert_eq!(
        seen, halves,
        "each job one NUMA node's GPUs, never shared: {got:?}"
    );
    let n = Api::<Node>::all(member.clone()).get(&node).await.expect("node");
    let published = gpufed_trust::allocations::parse(
        n.metadata
            .annotations
            .unwrap_or_default()
            .get("gpufed.io/gpu-allocations")
            .expect("allocations published"),
    )
    .expect("valid allocations");
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(gpufed_trust::allocations::shared_gpus(&published).is_empty());

    // Finished: the attempt records the GPUs billed, and kubelet has them back.
    for (name, gpus) in ["half-a", "half-b"].iter().zip(&got) {
        let j = job_until(&hub, &ns, name, "Succeeded", Duration::from_secs(120), |j| {
            j.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Succeeded)
        })
        .await;
        let st = j.status.expect("status");
        assert_eq!(
            &st.attempts[0].gpu_uuids, gpus,
            "the attempt bills the GPUs it held"
        );
        assert!(st.usage.expect("usage").gpu_seconds > 0);
    }
    node_until(&member, &node, "no pod holds a GPU", |n| {
        n.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("gpufed.io/gpu-allocations"))
            .is_some_and(|t| gpufed_trust::allocations::parse(t).is_ok_and(|a| a.is_empty()))
    })
    .await;
    // All 8 free again: a whole-node job is admitted (Allocate would refuse a held GPU).
    submit(&hub, &ns, &job("whole", 1, 8, serde_json::json!({}), "5.00", 25)).await;
    let j = job_until(&hub, &ns, "whole", "Succeeded", Duration::from_secs(120), |j| {
        j.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Succeeded)
    })
    .await;
    let mut all = j.status.expect("status").attempts[0].gpu_uuids.clone();
    all.sort();
    let mut want = uuids.clone();
    want.sort();
    assert_eq!(all, want);

    // The provider's reputation counts the three completed jobs — also once they are
    // deleted (the outcomes are recorded in the hub, not read from the jobs alone).
    let providers: Api<GpuProvider> = Api::all(hub.clone());
    let completed = || async {
        let p = providers.get("dp").await?;
        Ok::<_, kube::Error>(p.status.and_then(|s| s.reputation).map(|r| r.jobs_completed))
    };
    gpufed_e2e::wait::until("3 completed jobs counted", Duration::from_secs(30), || async {
        Ok(completed().await?.filter(|n| *n == 3))
    })
    .await
    .expect("reputation counts the jobs");
    let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), &ns);
    jobs.delete_collection(&Default::default(), &Default::default())
        .await
        .expect("delete the jobs");
    gpufed_e2e::wait::until("jobs gone", Duration::from_secs(60), || async {
        Ok(jobs
            .list(&Default::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await
    .expect("jobs deleted");
    tokio::time::sleep(Duration::from_secs(3)).await; // a few provider rounds
    assert_eq!(
        completed().await.expect("provider"),
        Some(3),
        "deleted jobs still count"
    );
    operator.stop().await;
    drop(env);
}
