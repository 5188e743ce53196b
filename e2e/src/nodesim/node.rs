//! Node objects and node leases of the **simulated** GPU nodes.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::Result;
use crate::pools::GpuPool;

/// Label put on every simulated node.
pub const SIMULATED_LABEL: &str = "gpufed.io/simulated";
/// Label: GPU model.
pub const MODEL_LABEL: &str = "gpufed.io/gpu.model";
/// Label: GPU memory in MiB.
pub const MEMORY_LABEL: &str = "gpufed.io/gpu.memory-mib";
/// Label: CUDA compute capability.
pub const CC_LABEL: &str = "gpufed.io/gpu.compute-capability";
/// Label: number of GPUs on the node.
pub const COUNT_LABEL: &str = "gpufed.io/gpu.count";
/// Label: NVLink domain (`none` without NVLink).
pub const NVLINK_LABEL: &str = "gpufed.io/nvlink-domain";
/// Namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Lease duration, as kubelet's default.
pub const LEASE_SECONDS: i32 = 40;

pub(crate) fn now() -> Time {
    Time(Timestamp::now())
}

/// The node conditions of a simulated kubelet that is (or is not) ready.
pub(crate) fn conditions(ready: bool) -> Vec<NodeCondition> {
    let t = now();
    let ok = |type_: &str, reason: &str| NodeCondition {
        type_: type_.into(),
        status: "False".into(),
        reason: Some(reason.into()),
        message: Some("simulated by gpufed-e2e nodesim".into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t.clone()),
    };
    let ready = if ready {
        NodeCondition {
            status: "True".into(),
            ..ok("Ready", "KubeletReady")
        }
    } else {
        NodeCondition {
            status: "False".into(),
            message: Some("simulated: node made NotReady by the node simulator".into()),
            ..ok("Ready", "KubeletNotReady")
        }
    };
    vec![
        ok("MemoryPressure", "KubeletHasSufficientMemory"),
        ok("DiskPressure", "KubeletHasNoDiskPressure"),
        ok("PIDPressure", "KubeletHasSufficientPID"),
        ready,
    ]
}

/// Builds the Node object of node `index` of `pool`.
pub(crate) fn node_object(cluster: &str, pool: &GpuPool, name: &str, ip: &str, resource: &str) -> Node {
    let domain = if pool.nvlink {
        format!("{cluster}-{name}")
    } else {
        "none".to_owned()
    };
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        (SIMULATED_LABEL.to_owned(), "true".to_owned()),
        (MODEL_LABEL.to_owned(), pool.model.clone()),
        (MEMORY_LABEL.to_owned(), pool.memory_mib.to_string()),
        (CC_LABEL.to_owned(), pool.compute_capability.clone()),
        (COUNT_LABEL.to_owned(), pool.gpus_per_node.to_string()),
        (NVLINK_LABEL.to_owned(), domain),
    ]);
    let mut resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(pool.cpu.to_string())),
        ("memory".to_owned(), Quantity(format!("{}Gi", pool.memory_gib))),
        ("pods".to_owned(), Quantity("110".into())),
        ("ephemeral-storage".to_owned(), Quantity("1Ti".into())),
        (resource.to_owned(), Quantity(pool.gpus_per_node.to_string())),
    ]);
    for (name, amount) in &pool.extended {
        resources.insert(name.clone(), Quantity(amount.clone()));
    }
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "gpufed.io/simulation".to_owned(),
                "SIMULATED node: no kubelet, no GPU; played by gpufed-e2e nodesim".to_owned(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(conditions(true)),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.to_owned(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.to_owned(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: format!("sim-{name}"),
                container_runtime_version: "simulated://0".into(),
                kernel_version: "simulated".into(),
                kube_proxy_version: "v1.20.2".into(),
                kubelet_version: "v1.20.2".into(),
                machine_id: format!("sim-{name}"),
                operating_system: "linux".into(),
                os_image: "gpufed-e2e simulated GPU node".into(),
                system_uuid: format!("sim-{name}"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Sets capacity and allocatable of the GPU resource.
pub(crate) fn set_gpus(node: &mut Node, resource: &str, gpus: u32) {
    if let Some(st) = node.status.as_mut() {
        for map in [st.capacity.as_mut(), st.allocatable.as_mut()]
            .into_iter()
            .flatten()
        {
            map.insert(resource.to_owned(), Quantity(gpus.to_string()));
        }
    }
}

/// Creates (or re-creates the status of) a simulated node and removes the
/// `node.kubernetes.io/not-ready` taint the API server puts on new nodes.
pub(crate) async fn ensure_node(client: &Client, node: &Node) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.metadata.name.clone().unwrap_or_default();
    let created = match api.create(&PostParams::default(), node).await {
        Ok(n) => n,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let status = json!({ "status": node.status });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    let untaint = json!({ "spec": { "taints": null } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&untaint))
        .await?;
    Ok(created)
}

/// Writes the Ready condition (heartbeat) of a node.
pub(crate) async fn heartbeat(client: &Client, name: &str, ready: bool) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let status = json!({ "status": { "conditions": conditions(ready) } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Creates or renews the node's Lease in `kube-node-lease`.
pub(crate) async fn renew_lease(client: &Client, node: &Node) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = node.metadata.name.clone().unwrap_or_default();
    let renew = MicroTime(Timestamp::now());
    let patch = json!({ "spec": { "renewTime": renew } });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: node.metadata.uid.clone().map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.clone(),
                            uid,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(renew),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
