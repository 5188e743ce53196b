//! The plugin against a fake kubelet: real gRPC over Unix sockets in a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use gpufed_device_plugin::health::{Fault, FaultKind};
use gpufed_device_plugin::proto::{ContainerPreferredAllocationRequest, Empty, PreferredAllocationRequest};
use tonic::Code;

#[tokio::test]
async fn registers_with_kubelet_and_advertises_every_gpu_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    let reg = &r.kubelet.registrations()[0];
    assert_eq!(reg.version, "v1beta1");
    assert_eq!(reg.resource_name, "gpufed.io/gpu");
    assert_eq!(reg.endpoint, "gpufed-gpu.sock");
    assert!(reg.options.as_ref().unwrap().get_preferred_allocation_available);
    let opts = r
        .client
        .client
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(opts.get_preferred_allocation_available && !opts.pre_start_required);
    let mut s = watch(&mut r.client).await;
    let devices = next(&mut s).await;
    assert_eq!(devices.len(), 8);
    assert!(devices.iter().all(|d| d.health == "Healthy"));
    assert_eq!(
        devices[5].topology.as_ref().unwrap().nodes[0].id,
        1,
        "NUMA node of GPU 5"
    );
    let sock = dir.path().join("gpufed-gpu.sock");
    assert!(sock.exists());
    shutdown(r).await;
    assert!(!sock.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn list_and_watch_streams_unhealthy_then_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_millis(300)).await;
    let mut s = watch(&mut r.client).await;
    assert_eq!(health_of(&next(&mut s).await, &gpu(3)), "Healthy");
    // An application XID (13) changes nothing; the critical one after it (79: fell off the
    // bus) does, so the next message must show GPU 3 unhealthy and GPU 2 still healthy.
    assert!(r.faults.inject(Fault {
        uuid: gpu(2),
        kind: FaultKind::Xid(13)
    }));
    assert!(r.faults.inject(Fault {
        uuid: gpu(3),
        kind: FaultKind::Xid(79)
    }));
    let d = next(&mut s).await;
    assert_eq!(health_of(&d, &gpu(3)), "Unhealthy");
    assert_eq!(health_of(&d, &gpu(2)), "Healthy");
    // Allocate refuses it while unhealthy, and preferred allocation avoids it.
    let err = r.client.allocate("p", "c", &[gpu(3)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("unhealthy"));
    // XID 79 needs a reset: three probation periods of silence change nothing.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(health_of(&r.state.devices(), &gpu(3)), "Unhealthy");
    // The source sees the reset; after the clean probation it is pushed healthy again.
    assert!(r.faults.inject(Fault {
        uuid: gpu(3),
        kind: FaultKind::Reset("the lost GPU answers NVML again".into())
    }));
    let d = next(&mut s).await;
    assert_eq!(health_of(&d, &gpu(3)), "Healthy");
    assert!(r.client.allocate("p", "c", &[gpu(3)]).await.is_ok());
    shutdown(r).await;
}

#[tokio::test]
async fn a_time_recoverable_fault_clears_after_the_probation_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_millis(300)).await;
    let mut s = watch(&mut r.client).await;
    next(&mut s).await;
    // 74: an NVLink error; the GPU goes on. (Not 94, a contained ECC error: it also
    // raises the volatile uncorrected ECC count, which holds the GPU until a reset.)
    assert!(r.faults.inject(Fault {
        uuid: gpu(1),
        kind: FaultKind::Xid(74)
    }));
    assert_eq!(health_of(&next(&mut s).await, &gpu(1)), "Unhealthy");
    assert_eq!(health_of(&next(&mut s).await, &gpu(1)), "Healthy");
    shutdown(r).await;
}

#[tokio::test]
async fn allocate_never_hands_one_gpu_to_two_containers() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    let resp = r.client.allocate("a", "main", &[gpu(0), gpu(1)]).await.unwrap();
    let c = &resp.container_responses[0];
    let want = format!("{},{}", gpu(0), gpu(1));
    assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], want);
    assert_eq!(c.envs["GPUFED_GPU_UUIDS"], want);
    assert_eq!(c.envs["GPUFED_SIMULATED"], "true");
    assert_eq!(c.cdi_devices[0].name, format!("nvidia.com/gpu={}", gpu(0)));
    let err = r
        .client
        .allocate("b", "main", &[gpu(1), gpu(2)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = r
        .client
        .allocate("b", "main", &["GPU-nope".to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Many concurrent callers, each asking for 2 of the 6 free GPUs: no GPU in two grants.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut c = r.client.clone();
        let ids = vec![gpu(2 + i % 6), gpu(2 + (i * 5 + 1) % 6)];
        tasks.push(tokio::spawn(async move {
            c.allocate(&format!("pod{i}"), "main", &ids).await.map(|_| ids)
        }));
    }
    let mut granted = BTreeSet::new();
    let mut grants = 0;
    for t in tasks {
        if let Ok(ids) = t.await.unwrap() {
            grants += 1;
            for id in ids {
                assert!(granted.insert(id.clone()), "{id} granted twice");
            }
        }
    }
    assert!(grants >= 1);
    assert_eq!(r.state.allocated().len(), 2 + granted.len());
    // The refusals were confirmed by PodResources, which lists pod "a" (and the grants).
    assert!(r.client.in_use().contains(&gpu(1)));
    // Pod "a" ends: PodResources no longer lists it, so its GPUs can be allocated again.
    r.client.remove_pod("a");
    assert!(
        r.client.allocate("c", "main", &[gpu(1)]).await.is_ok(),
        "freed through PodResources"
    );
    shutdown(r).await;
}

#[tokio::test]
async fn re_registers_after_kubelet_sock_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    // kubelet.sock deleted and recreated (new inode): plugin must register again.
    r.kubelet.restart(false).await.unwrap();
    let reg = r.kubelet.next_registration(PATIENCE).await.unwrap();
    assert_eq!(reg.resource_name, "gpufed.io/gpu");
    // A restart that also wipes plugin sockets, as kubelet does: plugin re-serves and re-registers.
    r.kubelet.restart(true).await.unwrap();
    let reg = r.kubelet.next_registration(PATIENCE).await.unwrap();
    assert_eq!(r.kubelet.registrations().len(), 3);
    let mut client = r.kubelet.plugin_client(&reg).await.unwrap();
    let mut s = watch(&mut client).await;
    assert_eq!(next(&mut s).await.len(), 8, "the new socket serves");
    shutdown(r).await;
}

#[tokio::test]
async fn preferred_allocation_over_grpc_keeps_numa_and_nvlink_locality() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    // All 8 share NVSwitch; with 0,1,5,6,7 available a 3-GPU set is NUMA-local on node 1.
    let req = PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: [0, 1, 5, 6, 7].map(gpu).to_vec(),
            must_include_device_i_ds: vec![],
            allocation_size: 3,
        }],
    };
    let resp = r
        .client
        .client
        .get_preferred_allocation(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.container_responses[0].device_i_ds,
        [5, 6, 7].map(gpu).to_vec()
    );
    shutdown(r).await;
}

#[tokio::test]
async fn kubelet_style_allocation_uses_the_plugins_preferred_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    let mut s = watch(&mut r.client).await;
    let healthy: Vec<String> = next(&mut s)
        .await
        .into_iter()
        .filter(|d| d.health == "Healthy")
        .map(|d| d.id)
        .collect();
    let (first, resp) = r
        .client
        .allocate_preferred("job-0", "worker", 4, &healthy)
        .await
        .unwrap();
    assert_eq!(first, [0, 1, 2, 3].map(gpu).to_vec(), "one NUMA node's worth");
    assert_eq!(
        resp.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        first.join(",")
    );
    let (second, _) = r
        .client
        .allocate_preferred("job-1", "worker", 4, &healthy)
        .await
        .unwrap();
    assert_eq!(second, [4, 5, 6, 7].map(gpu).to_vec());
    let full = r
        .client
        .allocate_preferred("job-2", "worker", 1, &healthy)
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    shutdown(r).await;
}

/// What the node publisher puts on the Node comes from kubelet's PodResources: per pod (by
/// namespace), the GPUs kubelet handed it, and nothing once the pod is gone.
#[tokio::test]
async fn pod_resources_say_which_pod_holds_which_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    let mut s = watch(&mut r.client).await;
    let healthy: Vec<String> = next(&mut s).await.into_iter().map(|d| d.id).collect();
    let (a, _) = r
        .client
        .allocate_preferred_in("team-a", "w-0", "worker", 2, &healthy)
        .await
        .unwrap();
    let (b, _) = r
        .client
        .allocate_preferred_in("team-b", "w-0", "worker", 1, &healthy)
        .await
        .unwrap();
    let socket = r.kubelet.pod_resources_socket();
    let read = gpufed_device_plugin::kubelet::allocations(&socket, "gpufed.io/gpu")
        .await
        .unwrap();
    let mut want_a = a.clone();
    want_a.sort();
    assert_eq!(read["team-a/w-0"], want_a);
    assert_eq!(read["team-b/w-0"], b);
    assert_eq!(read.len(), 2);
    assert!(gpufed_trust::allocations::shared_gpus(&read).is_empty());
    let other = gpufed_device_plugin::kubelet::allocations(&socket, "example.com/other")
        .await
        .unwrap();
    assert!(other.is_empty(), "only our resource: {other:?}");
    r.client.remove_pod_in("team-a", "w-0");
    let read = gpufed_device_plugin::kubelet::allocations(&socket, "gpufed.io/gpu")
        .await
        .unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), ["team-b/w-0"]);
    shutdown(r).await;
}

#[tokio::test]
async fn a_peer_that_never_closes_its_connection_does_not_block_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), Duration::from_secs(300)).await;
    let _silent = std::os::unix::net::UnixStream::connect(dir.path().join("gpufed-gpu.sock")).unwrap();
    tokio::time::timeout(PATIENCE, shutdown(r))
        .await
        .expect("shutdown finished despite the open connection");
    assert!(!dir.path().join("gpufed-gpu.sock").exists());
}

/// Without a PodResources socket nothing can free the ledger's entries of ended pods: the
/// ledger's claim is then unconfirmed and kubelet, the authority, decides. Before, each GPU
/// could be allocated once per plugin lifetime.
#[tokio::test]
async fn without_pod_resources_a_gpu_of_an_ended_pod_is_allocated_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start_with(dir.path(), Duration::from_secs(300), |cfg| {
        cfg.pod_resources_socket = None;
    })
    .await;
    r.client.allocate("a", "main", &[gpu(0)]).await.unwrap();
    r.client.remove_pod("a");
    r.client
        .allocate("b", "main", &[gpu(0)])
        .await
        .expect("kubelet gave the GPU of an ended pod to a new one");
    // Still refused, whatever PodResources: an unknown or unhealthy GPU.
    let err = r
        .client
        .allocate("c", "main", &["GPU-nope".to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    shutdown(r).await;
}

/// kubelet calls Allocate again with the same IDs for an app container that reuses its
/// init container's GPUs, at the pod's admission. With PodResources unreadable (its socket
/// missing) that is granted, not refused as a double allocation.
#[tokio::test]
async fn with_pod_resources_unreadable_an_init_containers_gpus_go_to_the_app_container() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-pod-resources.sock");
    let mut r = start_with(dir.path(), Duration::from_secs(300), move |cfg| {
        cfg.pod_resources_socket = Some(missing);
    })
    .await;
    let ids = [gpu(2), gpu(3)];
    r.client.allocate("p", "init", &ids).await.unwrap();
    let resp = r
        .client
        .allocate("p", "main", &ids)
        .await
        .expect("the app container reuses its init container's GPUs");
    assert_eq!(
        resp.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        ids.join(",")
    );
    shutdown(r).await;
}
