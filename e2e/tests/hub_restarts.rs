//! The hub's API server restarted under the operator, and etcd compacted so the
//! operator's watches resume into `410 Gone` and must list again: jobs that ended during
//! the outage complete, running ones are not touched, new jobs are placed, deletions
//! finish their finalizer — converged within a minute of each restart. Real API
//! servers; GPU nodes SIMULATED.

mod common;
mod opsupport;

use std::time::Duration;

use gpufed_api::ComputeJob;
use gpufed_e2e::{Federation, FederationSpec, GpuPool};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use opsupport::{Operator, job, job_until, phase, submit};

const MINUTE: Duration = Duration::from_secs(60);

fn attempt(j: &ComputeJob) -> Option<u32> {
    Some(j.status.as_ref()?.placement.as_ref()?.attempt)
}

/// Writes `n` ConfigMaps, so the revision moves well past what any watch last saw.
async fn churn(hub: &Client, ns: &str, round: u32, n: u32) {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), ns);
    for i in 0..n {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("churn-{round}-{i}")}, "data": {"i": i.to_string()}
        }))
        .expect("ConfigMap");
        api.create(&PostParams::default(), &cm).await.expect("churn");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_converges_after_hub_api_restarts_and_compaction() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("hub-restarts").member("provider-a", vec![GpuPool::rtx4090("a-rtx", 3)]);
    let mut fed = Federation::start(spec).await.expect("federation");
    let hub = fed.hub().client().await.expect("hub");
    let member = fed
        .cluster("provider-a")
        .expect("member")
        .client()
        .await
        .expect("member client");
    opsupport::setup(&fed, &hub, &[("provider-a", "0.50")]).await;
    let operator = Operator::start(hub.clone(), "op-1");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "restarts").await;
    let scratch = common::namespace(&hub, "churn").await;
    submit(
        &hub,
        &ns,
        &job("ends-during-outage", 1, 1, serde_json::json!({}), "1.00", 25),
    )
    .await;
    submit(
        &hub,
        &ns,
        &job("keeps-running", 1, 1, serde_json::json!({}), "1.00", 900),
    )
    .await;
    for name in ["ends-during-outage", "keeps-running"] {
        job_until(&hub, &ns, name, "Running", 2 * MINUTE, |j| phase(j) == "Running").await;
    }

    // Restart 1: the API server is down for 20 s, while a job's pod ends in the member.
    let hub_cluster = fed.cluster_mut("hub").expect("hub cluster");
    hub_cluster
        .restart_apiserver(Duration::from_secs(20))
        .await
        .expect("restart 1");
    // The operator's watches resumed from resourceVersions now compacted away.
    churn(&hub, &scratch, 1, 50).await;
    let compacted = fed.compact_etcd().await.expect("compact");
    assert!(compacted > 0);
    // Restart 2: every watch resumes from before the compaction → 410 Gone → list again.
    let hub_cluster = fed.cluster_mut("hub").expect("hub cluster");
    hub_cluster
        .restart_apiserver(Duration::from_secs(5))
        .await
        .expect("restart 2");
    let back = std::time::Instant::now();

    let done = job_until(
        &hub,
        &ns,
        "ends-during-outage",
        "Succeeded after the restarts",
        MINUTE,
        |j| phase(j) == "Succeeded",
    )
    .await;
    let st = done.status.expect("status");
    assert!(
        st.attempts.iter().all(|a| a.attempt == 1),
        "no second attempt: {:?}",
        st.attempts
    );
    let used = st.usage.map(|u| u.gpu_seconds).unwrap_or(0);
    assert!(
        (10..=40).contains(&used),
        "metered to the pod's real end (25 s run): {used} GPU-s"
    );
    let running = Api::<ComputeJob>::namespaced(hub.clone(), &ns)
        .get("keeps-running")
        .await
        .expect("job");
    assert_eq!(
        (phase(&running).as_str(), attempt(&running)),
        ("Running", Some(1)),
        "untouched"
    );

    // New work is placed and runs; a deletion completes its member cleanup.
    submit(&hub, &ns, &job("after", 1, 1, serde_json::json!({}), "1.00", 900)).await;
    job_until(&hub, &ns, "after", "new job Running", MINUTE, |j| {
        phase(j) == "Running"
    })
    .await;
    Api::<ComputeJob>::namespaced(hub.clone(), &ns)
        .delete("keeps-running", &DeleteParams::default())
        .await
        .expect("delete");
    let tenant = gpufed_operator::job::names::tenant_namespace(&ns, "keeps-running");
    let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), &ns);
    gpufed_e2e::wait::until("finalizer done and tenant namespace gone", MINUTE, || async {
        let gone = jobs.get_opt("keeps-running").await?.is_none();
        let ns_left = Api::<Namespace>::all(member.clone())
            .get_opt(&tenant)
            .await?
            .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
        Ok((gone && !ns_left).then_some(()))
    })
    .await
    .expect("deletion converges");
    assert!(back.elapsed() < 3 * MINUTE, "converged in {:?}", back.elapsed());
    operator.stop().await;
}
