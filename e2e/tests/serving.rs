//! Serving end to end on real API servers and the real scheduler (GPU nodes SIMULATED,
//! pod readiness reported by the simulated kubelet from the readiness probe): a
//! ComputeService's replicas spread over two providers, their endpoints and readiness in
//! status and behind one hub Service, a provider cut off and its replica replaced
//! elsewhere, `kubectl scale` up and down, usage per replica, a rollout of a new image
//! held to one extra replica (`rollout.maxSurge: 1`), a rollout that never gets ready
//! reported stuck after `progressDeadlineSeconds` while the old image serves, rolled back
//! with `rollout undo`'s patch (the revision history renumbered and pruned), a template
//! change held by `spec.paused` and rolled once resumed (under `minReadySeconds`), and
//! deletion.

mod common;
mod opsupport;
mod servingsupport;

use std::time::Duration;

use gpufed_api::ComputeService;
use gpufed_api::serving::LABEL_SERVICE;
use gpufed_e2e::nodesim::READY_ANNOTATION;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use opsupport::Operator;
use rustix::process::Signal;
use servingsupport::{
    hub_endpoints, kubectl_scale, manifest, ready_addresses, ready_on, serving_pod, status, until,
};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_serve_fail_over_scale_and_are_metered() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("serving")
        .member("provider-a", vec![GpuPool::rtx4090("a-rtx", 3)])
        .member("provider-b", vec![GpuPool::rtx4090("b-rtx", 3)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED: needs the harness' own control planes and simulated GPU nodes");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    // Equal prices: only the spread preference splits the replicas.
    opsupport::setup(fed, &hub, &[("provider-a", "0.40"), ("provider-b", "0.40")]).await;
    let admin = opsupport::free_admin_addr();
    let operator = Operator::start_with(hub.clone(), "op-1", &["--admin-addr".into(), admin.to_string()]);
    opsupport::providers_ready(&hub, 2).await;
    let ns = common::namespace(&hub, "serve").await;
    let services: Api<ComputeService> = Api::namespaced(hub.clone(), &ns);
    services
        .patch(
            "llm",
            &PatchParams::apply("gpufed-e2e").force(),
            &Patch::Apply(manifest(3)),
        )
        .await
        .expect("service applies");

    // 3 replicas, spread 2 + 1, ready only once the probe passes; endpoints in status and
    // behind the hub Service.
    let up = until(&hub, &ns, "3 replicas ready", 2 * MINUTE, |s| {
        status(s).ready_replicas == 3
    })
    .await;
    let spread: Vec<usize> = ready_on(&up).iter().map(|(_, n)| *n).collect();
    assert_eq!(spread.len(), 2, "both providers serve: {:?}", ready_on(&up));
    assert_eq!(spread.iter().sum::<usize>(), 3);
    let st = status(&up);
    assert_eq!(st.address.as_deref(), Some(format!("llm.{ns}.svc:8000").as_str()));
    assert!(gpufed_api::conditions::is_true(&st.conditions, "Ready"));
    for r in &st.replica_status {
        let addr = r.address.as_deref().expect("address");
        let port: u16 = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("host:port");
        assert!(
            (30000..=32767).contains(&port),
            "a node port the member allocated: {addr}"
        );
    }
    let want = ready_addresses(&up);
    gpufed_e2e::wait::until("hub Endpoints list the 3 ready replicas", MINUTE, || async {
        Ok((hub_endpoints(&hub, &ns).await == want).then_some(()))
    })
    .await
    .expect("hub endpoints");
    let routed = until(&hub, &ns, "Routed", MINUTE, |s| {
        gpufed_api::conditions::is_true(&status(s).conditions, "Routed")
    })
    .await;
    let routed = status(&routed);
    let c = gpufed_api::conditions::find(&routed.conditions, "Routed").expect("Routed");
    assert_eq!(c.reason, "Routed");
    let hub_svc = Api::<Service>::namespaced(hub.clone(), &ns)
        .get("llm")
        .await
        .expect("hub Service");
    assert!(
        hub_svc.spec.and_then(|s| s.selector).is_none(),
        "endpoints are ours"
    );

    // Readiness is the pod's: its probe failing (as the kubelet reports it) takes the
    // replica out of the hub's endpoints; passing again brings it back.
    let lone = ready_on(&up)
        .into_iter()
        .find(|(_, n)| *n == 1)
        .expect("the provider with one")
        .0;
    let other = if lone == "provider-a" {
        "provider-b"
    } else {
        "provider-a"
    };
    let lone_replica = st
        .replica_status
        .iter()
        .find(|r| r.provider.as_deref() == Some(lone.as_str()))
        .expect("replica")
        .clone();
    let member = env.member_client(&lone).await.expect("member");
    let pod = serving_pod(&member, &lone_replica.name).await;
    let pods: Api<Pod> = Api::namespaced(member.clone(), pod.metadata.namespace.as_deref().expect("ns"));
    let set_ready = |v: &str| serde_json::json!({"metadata": {"annotations": {READY_ANNOTATION: v}}});
    let pod_name = pod.metadata.name.clone().expect("name");
    pods.patch(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(set_ready("false")),
    )
    .await
    .expect("annotate");
    let down = until(&hub, &ns, "the probed-out replica not ready", MINUTE, |s| {
        status(s).ready_replicas == 2
    })
    .await;
    assert!(!gpufed_api::conditions::is_true(
        &status(&down).conditions,
        "Ready"
    ));
    let addr = lone_replica.address.clone().expect("address");
    gpufed_e2e::wait::until("hub Endpoints drop it", MINUTE, || async {
        Ok((!hub_endpoints(&hub, &ns).await.contains(&addr)).then_some(()))
    })
    .await
    .expect("dropped from endpoints");
    pods.patch(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(set_ready("true")),
    )
    .await
    .expect("annotate");
    until(&hub, &ns, "ready again", MINUTE, |s| {
        status(s).ready_replicas == 3
    })
    .await;

    // The lone replica's provider is cut off: its replica fails over to the other one.
    let apiserver = fed
        .cluster(&lone)
        .expect("cluster")
        .processes()
        .into_iter()
        .find(|p| p.name.ends_with("kube-apiserver"))
        .expect("apiserver process");
    assert!(apiserver.signal(Signal::STOP), "freeze {lone}");
    let moved = until(
        &hub,
        &ns,
        "replica replaced on the other provider",
        2 * MINUTE,
        |s| status(s).ready_replicas == 3 && ready_on(s) == [(other.to_owned(), 3)],
    )
    .await;
    let replaced = status(&moved)
        .replica_status
        .into_iter()
        .find(|r| r.name == lone_replica.name)
        .expect("same replica, new attempt");
    assert_eq!(
        replaced.provider.as_deref(),
        Some(other),
        "status shows the new provider"
    );
    assert!(replaced.address.is_some(), "and its new endpoint");
    assert!(apiserver.signal(Signal::CONT), "thaw {lone}");

    // kubectl scale through the scale subresource: up to 5, then down to 2.
    let kubeconfig = fed.hub().kubeconfig().to_path_buf();
    kubectl_scale(&kubeconfig, &ns, 5);
    let five = until(&hub, &ns, "5 replicas ready", 2 * MINUTE, |s| {
        status(s).ready_replicas == 5 && status(s).replicas == 5
    })
    .await;
    // 3 GPUs each: the 3 replicas moved to `other` stay, the 2 new ones go to `lone`.
    let mut on = ready_on(&five);
    on.sort_by_key(|(_, n)| *n);
    assert_eq!(on, [(lone.clone(), 2), (other.to_owned(), 3)]);
    kubectl_scale(&kubeconfig, &ns, 2);
    let two = until(
        &hub,
        &ns,
        "scaled down to 2, retired replicas gone",
        2 * MINUTE,
        |s| {
            let st = status(s);
            st.ready_replicas == 2 && st.replicas == 2 && st.replica_status.len() == 2
        },
    )
    .await;
    // Retired from the most crowded provider first: one replica on each stays (retiring
    // the newest three — both on `lone`, one on `other` — would have left two on `other`).
    let on: Vec<usize> = ready_on(&two).iter().map(|(_, n)| *n).collect();
    assert_eq!(on, [1, 1], "{:?}", ready_on(&two));
    let jobs: Api<gpufed_api::ComputeJob> = Api::namespaced(hub.clone(), &ns);
    let left = jobs
        .list(&ListParams::default().labels(&format!("{LABEL_SERVICE}=llm")))
        .await
        .expect("replica jobs");
    assert_eq!(left.items.len(), 2, "retired replica jobs deleted");

    // Usage per replica: each replica's own job meters its serving time; the service
    // sums them.
    let st = status(&two);
    for r in &st.replica_status {
        assert!(r.gpu_seconds > 0, "replica {} metered: {r:?}", r.name);
    }
    let per_job: u64 = left
        .items
        .iter()
        .map(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.usage.as_ref())
                .map_or(0, |u| u.gpu_seconds)
        })
        .sum();
    assert!(per_job > 0);
    assert!(st.usage.as_ref().is_some_and(|u| u.gpu_seconds > 0));
    gpufed_e2e::wait::until("hub Endpoints follow the scale", MINUTE, || async {
        Ok((hub_endpoints(&hub, &ns).await.len() == 2).then_some(()))
    })
    .await
    .expect("2 endpoints");

    let served = servingsupport::rollouts::surge_then_stall(&hub, &ns, admin).await;
    servingsupport::rollouts::undo_then_pause(&hub, &ns, &served).await;

    // Down to zero and back: the status must still be written once the last replica is
    // gone (a server-side apply that left the emptied replica list out had the API server
    // store `null`, which its schema then refused on every status write).
    kubectl_scale(&kubeconfig, &ns, 0);
    until(&hub, &ns, "scaled to 0, status written", 2 * MINUTE, |s| {
        let st = status(s);
        st.replicas == 0 && st.replica_status.is_empty() && st.observed_generation == s.metadata.generation
    })
    .await;
    kubectl_scale(&kubeconfig, &ns, 1);
    until(&hub, &ns, "back to 1 ready replica", 2 * MINUTE, |s| {
        status(s).ready_replicas == 1 && status(s).replica_status.len() == 1
    })
    .await;

    // Deletion: replicas stop, the service and its hub Service go.
    services
        .delete("llm", &DeleteParams::default())
        .await
        .expect("delete");
    gpufed_e2e::wait::until("service and replicas gone", 2 * MINUTE, || async {
        let svc = services.get_opt("llm").await?;
        let jobs = jobs.list(&ListParams::default()).await?;
        Ok((svc.is_none() && jobs.items.is_empty()).then_some(()))
    })
    .await
    .expect("deleted");
    operator.stop().await;
}
