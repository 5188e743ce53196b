//! I/O: probe a member cluster — its GPU nodes and the pods that hold GPUs.

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use gpufed_api::tolerations::{NodeTaint, TaintEffect};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::reports::{node_list, report_of};
use crate::fleet::extended;
use crate::fleet::requests::{self, Requests};
use crate::fleet::{CpuMemory, GpuNode, GpuPod, MemberView, NodeCpuMemory, NodeExtended, labels};

/// Most taints of one node kept in a report (Kubernetes itself sets a handful).
const MAX_TAINTS: usize = 32;

/// Node annotation where the device plugin publishes its signed inventory report.
pub const REPORT_ANNOTATION: &str = gpufed_trust::report::ANNOTATION;
use crate::job::names;

/// Lists the member's GPU nodes (matching the provider's node selector) and the
/// non-terminal pods that request its GPU resource.
pub async fn probe(client: Client, provider: &GpuProvider) -> Result<MemberView, kube::Error> {
    probe_with(
        client,
        &provider.spec.resource_name,
        &provider.spec.node_selector,
        &provider.spec.exposed_node_labels,
    )
    .await
}

/// [`probe`] from the facts of the provider's spec it needs (a pull-mode agent cannot
/// read its GpuProvider; the hub tells it these).
pub async fn probe_with(
    client: Client,
    resource: &str,
    node_selector: &BTreeMap<String, String>,
    exposed_labels: &[String],
) -> Result<MemberView, kube::Error> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&node_list(node_selector))
        .await?;
    let pods = Api::<Pod>::all(client.clone())
        .list(
            &ListParams::default()
                .fields("status.phase!=Succeeded,status.phase!=Failed")
                .match_any(),
        )
        .await?;
    let mut gpu_nodes: Vec<GpuNode> = nodes
        .items
        .iter()
        .filter_map(|n| gpu_node(n, resource, exposed_labels))
        .collect();
    let gpu_pods = count_pods(&mut gpu_nodes, &pods.items, resource);
    let reports = nodes
        .items
        .iter()
        .filter(|n| {
            gpu_nodes
                .iter()
                .any(|g| Some(&g.name) == n.metadata.name.as_ref())
        })
        .filter_map(|n| report_of(&n.metadata))
        .collect();
    Ok(MemberView {
        nodes: gpu_nodes,
        pods: gpu_pods,
        reports,
        challenges: crate::verification::read_challenges(&client).await?,
    })
}

/// The GPU pods among `pods` (the member's non-terminal pods); adds the CPU and memory
/// requests of every other pod — not a gpufed worker — bound to one of `nodes` to that
/// node's `requested` ([`crate::fleet::NodeCpuMemory`]). gpufed's workers are left to
/// the hub, which counts a live attempt's by its job and the others by their
/// [`GpuPod::requests`].
pub fn count_pods(nodes: &mut [GpuNode], pods: &[Pod], resource: &str) -> Vec<GpuPod> {
    let mut foreign: BTreeMap<&str, Requests> = BTreeMap::new();
    let mut foreign_ext: BTreeMap<&str, extended::Extended> = BTreeMap::new();
    let mut gpu_pods = Vec::new();
    for pod in pods {
        let gpu = gpu_pod(pod, resource);
        let worker = gpu.as_ref().is_some_and(|g| g.attempt_key.is_some());
        gpu_pods.extend(gpu);
        let Some(spec) = pod.spec.as_ref().filter(|_| !worker) else {
            continue;
        };
        if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
            let sum = foreign.entry(node).or_default();
            *sum = Requests::sum([*sum, requests::pod_requests(spec)]);
            extended::add(
                foreign_ext.entry(node).or_default(),
                &extended::pod_requests(spec, resource),
            );
        }
    }
    for n in nodes {
        let Some(r) = n.resources.as_mut() else {
            continue;
        };
        if let Some(sum) = foreign.get(n.name.as_str()) {
            r.requested = sum.rounded_up();
        }
        if let (Some(ext), Some(sum)) = (r.extended.as_mut(), foreign_ext.get(n.name.as_str())) {
            // Only what the node has: a request of anything else never bound a pod there,
            // and the report stays bounded.
            ext.requested = sum
                .iter()
                .filter(|(name, _)| ext.allocatable.contains_key(*name))
                .map(|(name, n)| (name.clone(), *n))
                .collect();
        }
    }
    gpu_pods
}

/// A node's GPU facts, or `None` when it offers no GPUs under `resource`. Of its labels,
/// only those jobs may select on ([`crate::fleet::selectable`]: the well-known ones and
/// `exposed_labels`) are kept. Its CPU and memory carry the allocatable only (`requested`
/// is zero: [`count_pods`] adds the pods').
pub fn gpu_node(node: &Node, resource: &str, exposed_labels: &[String]) -> Option<GpuNode> {
    let status = node.status.as_ref()?;
    let allocatable = quantity(status.allocatable.as_ref()?.get(resource)?.0.as_str())?;
    if allocatable == 0 {
        return None;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
        && !node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let compute = labels
        .get(labels::COMPUTE_CAPABILITY)
        .and_then(|c| gpufed_api::formats::parse_compute_capability(c).ok())
        .unwrap_or((0, 0));
    Some(GpuNode {
        name: node.metadata.name.clone()?,
        model: labels
            .get(labels::MODEL)
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned()),
        memory_mib: labels
            .get(labels::MEMORY_MIB)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0),
        compute,
        nvlink_domain: nvlink_domain(&labels),
        allocatable: u32::try_from(allocatable).unwrap_or(u32::MAX),
        ready,
        taints: hard_taints(node),
        labels: crate::fleet::selectable(&labels, exposed_labels),
        resources: requests::allocatable(node).map(|allocatable| NodeCpuMemory {
            allocatable,
            requested: CpuMemory::default(),
            extended: Some(NodeExtended {
                allocatable: extended::node_allocatable(node, resource),
                requested: extended::Extended::new(),
            }),
        }),
    })
}

/// The node's NVLink domain, if it has one ([`labels::is_nvlink_domain`]).
fn nvlink_domain(labels: &BTreeMap<String, String>) -> Option<String> {
    let domain = labels.get(labels::NVLINK_DOMAIN)?.trim();
    labels::is_nvlink_domain(domain).then(|| domain.to_owned())
}

/// The node's `NoSchedule` and `NoExecute` taints (a `PreferNoSchedule` one never keeps a
/// worker off; an effect this version does not know is left to the scheduler).
fn hard_taints(node: &Node) -> Vec<NodeTaint> {
    let mut taints: Vec<NodeTaint> = node
        .spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter_map(|t| {
            let effect = TaintEffect::parse(&t.effect).filter(|e| e.is_hard())?;
            Some(NodeTaint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect,
            })
        })
        .collect();
    // A member may report anything: a bounded, ordered list.
    taints.sort();
    taints.dedup();
    taints.truncate(MAX_TAINTS);
    taints
}

/// A pod's GPU use, or `None` when it requests none of `resource`.
pub fn gpu_pod(pod: &Pod, resource: &str) -> Option<GpuPod> {
    let spec = pod.spec.as_ref()?;
    // As the scheduler counts it: init containers and sidecars hold GPUs too. A member may
    // report anything: huge amounts saturate, never overflow.
    let gpus = u64::try_from(requests::pod_amount(spec, resource)).unwrap_or(u64::MAX);
    if gpus == 0 {
        return None;
    }
    let labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
    let attempt_key = match (labels.get(names::LABEL_JOB_UID), labels.get(names::LABEL_ATTEMPT)) {
        (Some(uid), Some(attempt)) => Some(format!("{uid}/{attempt}")),
        _ => None,
    };
    // A worker's CPU and memory, for the hub to count once its attempt is over; any
    // other pod's are in its node's `requested`.
    let (requests, extended) = if attempt_key.is_some() {
        (
            requests::pod_requests(spec).rounded_up(),
            extended::pod_requests(spec, resource),
        )
    } else {
        Default::default()
    };
    Some(GpuPod {
        node: spec.node_name.clone().unwrap_or_default(),
        gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
        attempt_key,
        requests,
        extended,
    })
}

/// Extended resources are whole numbers.
fn quantity(q: &str) -> Option<u64> {
    q.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_requested_counts_every_bound_pod_but_gpufeds_workers() {
        let node = |name: &str, allocatable: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .expect("node")
        };
        let mut nodes: Vec<GpuNode> = [
            node(
                "n1",
                serde_json::json!({"gpufed.io/gpu": "4", "cpu": "64", "memory": "512Gi", "rdma/ib": "2"}),
            ),
            node("n2", serde_json::json!({"gpufed.io/gpu": "4"})),
        ]
        .iter()
        .filter_map(|n| gpu_node(n, "gpufed.io/gpu", &[]))
        .collect();
        let worker_labels = serde_json::json!({names::LABEL_JOB_UID: "u1", names::LABEL_ATTEMPT: "2"});
        let pod = |node: Option<&str>, labels: &serde_json::Value, requests: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "labels": labels},
                "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": requests.clone(), "limits": requests}}]}
            }))
            .expect("pod")
        };
        let none = serde_json::json!({});
        let pods = [
            pod(
                Some("n1"),
                &none,
                serde_json::json!({"cpu": "1", "memory": "1.5Gi", "rdma/ib": "1", "example.com/vf": "1"}),
            ),
            pod(
                Some("n1"),
                &none,
                serde_json::json!({"cpu": "2", "gpufed.io/gpu": "1"}),
            ),
            pod(
                Some("n1"),
                &worker_labels,
                serde_json::json!({"cpu": "40", "memory": "1Gi", "gpufed.io/gpu": "1", "rdma/ib": "1"}),
            ),
            // gpufed's labels without GPUs: not a worker, counted as any other pod.
            pod(Some("n1"), &worker_labels, serde_json::json!({"cpu": "500m"})),
            pod(None, &none, serde_json::json!({"cpu": "8"})),
            pod(Some("cpu-only"), &none, serde_json::json!({"cpu": "8"})),
            pod(Some("n2"), &none, serde_json::json!({"cpu": "8"})),
        ];
        let gpu_pods = count_pods(&mut nodes, &pods, "gpufed.io/gpu");
        assert_eq!(
            nodes[0].resources,
            Some(NodeCpuMemory {
                allocatable: CpuMemory {
                    cpu_millis: 64_000,
                    memory_mib: 512 * 1024,
                    ephemeral_mib: None,
                },
                requested: CpuMemory {
                    cpu_millis: 3500,
                    memory_mib: 1536,
                    ephemeral_mib: None,
                },
                // Of what the node has only; gpufed's worker counted by the hub.
                extended: Some(NodeExtended {
                    allocatable: [("rdma/ib".to_owned(), 2)].into(),
                    requested: [("rdma/ib".to_owned(), 1)].into(),
                }),
            })
        );
        let worker = gpu_pods.iter().find(|p| p.attempt_key.is_some()).expect("worker");
        assert_eq!(worker.extended, [("rdma/ib".to_owned(), 1)].into());
        assert_eq!(nodes[1].resources, None, "no CPU or memory reported: not limited");
        let requests: Vec<(Option<&str>, CpuMemory)> = gpu_pods
            .iter()
            .map(|p| (p.attempt_key.as_deref(), p.requests))
            .collect();
        assert_eq!(
            requests,
            [
                (None, CpuMemory::default()),
                (
                    Some("u1/2"),
                    CpuMemory {
                        cpu_millis: 40_000,
                        memory_mib: 1024,
                        ephemeral_mib: None,
                    }
                )
            ],
            "a worker carries its own requests, for the hub to count once its attempt is over"
        );
    }

    #[test]
    fn a_node_labelled_without_nvlink_has_no_domain() {
        let node = |domain: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1", "labels": {labels::NVLINK_DOMAIN: domain}},
                "status": {"allocatable": {"gpufed.io/gpu": "4"},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .expect("node")
        };
        let domain = |d: &str| gpu_node(&node(d), "gpufed.io/gpu", &[]).and_then(|g| g.nvlink_domain);
        assert_eq!(domain("none"), None, "the device plugin's label for no NVLink");
        assert_eq!(domain(""), None);
        assert_eq!(domain("nvl4-1a2b").as_deref(), Some("nvl4-1a2b"));
    }

    #[test]
    fn gpus_held_by_init_containers_count() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1",
                     "initContainers": [{"name": "i", "resources": {"limits": {"gpufed.io/gpu": "8"}}}],
                     "containers": [{"name": "c", "resources": {"limits": {"gpufed.io/gpu": "2"}}}]}
        }))
        .expect("pod");
        assert_eq!(gpu_pod(&pod, "gpufed.io/gpu").map(|p| p.gpus), Some(8));
    }

    #[test]
    fn a_gpu_node_keeps_its_hard_taints_and_its_selectable_labels() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"kubernetes.io/arch": "amd64", "example.com/disk": "nvme",
                                                  "example.com/secret-rack": "r7"}},
            "spec": {"taints": [
                {"key": "z", "effect": "NoExecute"},
                {"key": "spot", "value": "true", "effect": "PreferNoSchedule"},
                {"key": "a", "value": "1", "effect": "NoSchedule"},
                {"key": "z", "effect": "NoExecute"},
                {"key": "future", "effect": "SomeNewEffect"}]},
            "status": {"allocatable": {"gpufed.io/gpu": "4"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node");
        let g = gpu_node(&node, "gpufed.io/gpu", &[]).expect("a GPU node");
        let taints: Vec<String> = g.taints.iter().map(ToString::to_string).collect();
        assert_eq!(taints, ["a=1:NoSchedule", "z:NoExecute"]);
        assert!(
            g.ready,
            "a taint is judged by the provider's tolerations, not here"
        );
        let keys: Vec<&str> = g.labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["kubernetes.io/arch"],
            "only the well-known labels by default"
        );
        let g = gpu_node(&node, "gpufed.io/gpu", &["example.com/disk".to_owned()]).expect("a GPU node");
        let keys: Vec<&str> = g.labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["example.com/disk", "kubernetes.io/arch"],
            "and those the provider exposes"
        );
    }
}
