//! The federation comes up (real API servers, schedulers and controller-managers) and
//! leaves no process behind.

mod common;

use std::time::Duration;

use gpufed_e2e::nodesim::{MODEL_LABEL, SIMULATED_LABEL};
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::ListParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_three_members_become_ready_with_their_gpu_pools() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::demo("ready");
    let env = TestEnv::start(spec.clone()).await.expect("federation starts");
    let hub = env.hub_client().await.expect("hub client");
    let namespaces = Api::<Namespace>::all(hub)
        .list(&ListParams::default())
        .await
        .expect("list namespaces");
    assert!(
        namespaces
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("kube-system"))
    );

    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED the member and pool checks: they need the harness' own federation");
        return;
    };
    let seconds = fed.ready_after().as_secs_f64();
    eprintln!("hub + {} members ready in {seconds:.1} s", fed.members().len());
    assert!(seconds < 60.0, "hub + 3 members took {seconds:.1} s (limit 60 s)");
    assert_eq!(fed.members().len(), 3);
    for p in fed.processes() {
        assert!(p.is_alive(), "{} is not running", p.name);
    }
    for member in &spec.members {
        let client = env.member_client(&member.name).await.expect("member client");
        let nodes = Api::<Node>::all(client)
            .list(&ListParams::default().labels(&format!("{SIMULATED_LABEL}=true")))
            .await
            .expect("list nodes");
        let pool: &GpuPool = &member.pools[0];
        assert_eq!(nodes.items.len(), pool.nodes as usize, "{}", member.name);
        for node in &nodes.items {
            let labels = node.metadata.labels.clone().unwrap_or_default();
            assert_eq!(labels.get(MODEL_LABEL), Some(&pool.model));
            let allocatable = node
                .status
                .as_ref()
                .and_then(|s| s.allocatable.clone())
                .unwrap_or_default();
            let gpus = allocatable.get(&spec.resource_name).map(|q| q.0.clone());
            assert_eq!(
                gpus,
                Some(pool.gpus_per_node.to_string()),
                "{:?}",
                node.metadata.name
            );
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            assert!(taints.is_empty(), "simulated node keeps taints {taints:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_outlives_the_federation() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("hygiene").member("provider-a", vec![GpuPool::rtx4090("c", 1)]);
    let env = TestEnv::start(spec).await.expect("federation starts");
    let TestEnv::Local(fed) = env else {
        eprintln!("SKIPPED no_process_outlives_the_federation: the external cluster is not ours to stop");
        return;
    };
    let records = fed.processes();
    let run_dir = fed.run_dir().to_owned();
    assert_eq!(
        records.len(),
        1 + 2 * 3,
        "etcd + 2 × (apiserver, scheduler, controller-manager)"
    );
    assert!(records.iter().all(|r| r.is_alive()));
    drop(fed);
    for r in &records {
        assert!(
            !r.is_alive(),
            "{} (pid {}) outlived the federation",
            r.name,
            r.pid
        );
    }
    // No process anywhere still refers to the run directory (e.g. a child we lost track of).
    let needle = run_dir.display().to_string();
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            std::fs::read(e.path().join("cmdline"))
                .ok()
                .map(|c| (e.file_name(), c))
        })
        .map(|(pid, c)| (pid, String::from_utf8_lossy(&c).replace('\0', " ")))
        .filter(|(_, c)| c.contains(&needle))
        .map(|(pid, c)| format!("{}: {c}", pid.to_string_lossy()))
        .collect();
    assert!(survivors.is_empty(), "processes survived: {survivors:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !run_dir.exists(),
        "run dir {} was not cleaned up",
        run_dir.display()
    );
}

/// A scheduler or controller-manager that dies (1.20's controller-manager exits when the
/// API server goes away while it is still creating its controllers' service accounts) is
/// started again once the API server is back, as the kubelet restarts a static pod — and
/// both work afterwards: a Deployment gets its ReplicaSet and Pod, and the Pod is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_control_plane_components_are_restarted_with_the_api_server() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;

    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let spec = FederationSpec::new("revive").member("provider-a", vec![GpuPool::rtx4090("r", 1)]);
    let mut fed = gpufed_e2e::Federation::start(spec).await.expect("federation");
    let cluster = fed.cluster_mut("provider-a").expect("member");
    let before = cluster.processes();
    let controllers: Vec<_> = before
        .iter()
        .filter(|r| !r.name.ends_with("/kube-apiserver"))
        .cloned()
        .collect();
    assert_eq!(
        controllers.len(),
        2,
        "scheduler and controller-manager: {before:?}"
    );
    for r in &controllers {
        assert!(r.signal(rustix::process::Signal::KILL), "killing {}", r.name);
    }
    gpufed_e2e::wait::until("both killed", Duration::from_secs(10), || async {
        Ok(controllers.iter().all(|r| !r.is_alive()).then_some(()))
    })
    .await
    .expect("killed");
    cluster
        .restart_apiserver(Duration::from_secs(2))
        .await
        .expect("restart with two exited components");
    let after = cluster.processes();
    assert_eq!(after.len(), before.len());
    for r in &after {
        assert!(r.is_alive(), "{} is running again", r.name);
        assert!(!before.contains(r), "{} is a new process", r.name);
    }

    let client = cluster.client().await.expect("member client");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "revived"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "revived"}},
            "template": {
                "metadata": {"labels": {"app": "revived"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    }))
    .expect("Deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create Deployment");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let bound = gpufed_e2e::wait::until(
        "the Deployment's Pod created (controller-manager) and bound (scheduler)",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&ListParams::default().labels("app=revived")).await?;
            Ok(list
                .items
                .into_iter()
                .find_map(|p| p.spec.and_then(|s| s.node_name)))
        },
    )
    .await
    .expect("the restarted controllers work");
    assert!(!bound.is_empty());
}
