//! Hostile member clusters: what a provider's API server returns (nodes, pods, Services,
//! an agent's reports) is read by the operator without panicking, whatever the labels,
//! quantities, conditions or sizes. Garbage is read as "no GPUs" / "not ready", never as
//! more than the object says.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::assignment::{AssignedPod, AssignmentStatus};
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_operator::fleet::{CpuMemory, GpuNode, GpuPod, MemberView, NodeCpuMemory, NodeExtended, extended};
use gpufed_operator::fleet::{MAX_CPU_MILLIS, MAX_MEMORY_MIB};
use gpufed_operator::job::serving::exposure_of;
use gpufed_operator::mapping::snapshot_checked;
use gpufed_operator::member::ops::{ReadyNode, ReadyNodes, pod_view, ready_node};
use gpufed_operator::member::pull::{pod_views, read_assignment};
use gpufed_operator::provider::plan::inventory;
use gpufed_operator::provider::{count_pods, gpu_node, gpu_pod};
use gpufed_placement as pl;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use proptest::prelude::*;
use serde_json::{Value, json};

const RESOURCE: &str = "gpufed.io/gpu";

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,30}",
        "[0-9]{1,25}",
        "-?[0-9]{1,3}(\\.[0-9]{1,3})?[a-zA-Z]{0,3}",
        (1usize..20_000).prop_map(|n| "9".repeat(n)),
        Just(String::new()),
        Just(u64::MAX.to_string()),
    ]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        Just("gpufed.io/gpu-model".to_owned()),
        Just("gpufed.io/gpu-memory-mib".to_owned()),
        Just("gpufed.io/compute-capability".to_owned()),
        Just("gpufed.io/nvlink-domain".to_owned()),
        Just("gpufed.io/job-uid".to_owned()),
        Just("gpufed.io/attempt".to_owned()),
        Just("gpufed.io/rank".to_owned()),
        "[a-z./-]{1,40}",
    ];
    prop::collection::btree_map(key, text(), 0..12)
}

fn condition() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("Ready"), Just("ContainersReady"), Just("Bogus")],
        prop_oneof![
            Just("True".to_owned()),
            Just("False".to_owned()),
            Just("Unknown".to_owned()),
            text()
        ],
    )
        .prop_map(|(t, s)| json!({"type": t, "status": s}))
}

/// The device plugin's GPU-allocations annotation, as a hostile member might write it.
fn allocations_annotation() -> impl Strategy<Value = Option<String>> {
    let uuids = prop::collection::vec(text(), 0..24);
    let key = prop_oneof![Just("t-1/w-0".to_owned()), "[a-z/-]{0,12}", text()];
    prop::option::of(prop_oneof![
        text(),
        prop::collection::btree_map(key, uuids, 0..6)
            .prop_map(|m| serde_json::to_string(&m).unwrap_or_default()),
        (1usize..100_000).prop_map(|n| format!("{{\"a/b\": [\"{}\"]}}", "x".repeat(n))),
    ])
}

/// A resource name of a node's allocatable or a container's limits.
fn resource_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(RESOURCE.to_owned()),
        Just("cpu".to_owned()),
        Just("memory".to_owned()),
        Just("rdma/ib".to_owned()),
        "[a-z./]{1,12}"
    ]
}

fn node() -> impl Strategy<Value = Value> {
    (
        (prop::option::of("[a-z0-9-]{1,60}"), allocations_annotation()),
        labels(),
        prop::collection::btree_map(resource_name(), text(), 0..5),
        prop::collection::vec(condition(), 0..4),
        any::<Option<bool>>(),
        prop::collection::vec((prop_oneof![Just("ExternalIP"), Just("InternalIP")], text()), 0..3),
    )
        .prop_map(|((name, allocations), labels, alloc, conds, unsched, addrs)| {
            json!({
                "metadata": {"name": name, "labels": labels,
                             "annotations": {"gpufed.io/gpu-allocations": allocations}},
                "spec": {"unschedulable": unsched},
                "status": {"allocatable": alloc, "conditions": conds,
                           "addresses": addrs.into_iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>()},
            })
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        labels(),
        prop::collection::vec(prop::collection::btree_map(resource_name(), text(), 0..3), 0..4),
        prop::option::of(text()),
        prop::option::of(
            prop_oneof![
                Just("Running"),
                Just("Succeeded"),
                Just("Failed"),
                Just("Pending")
            ]
            .prop_map(str::to_owned),
        ),
        prop::collection::vec(condition(), 0..4),
        prop::option::of(text()),
    )
        .prop_map(|(labels, limits, node, phase, conds, host)| {
            let containers: Vec<Value> = limits
                .into_iter()
                .enumerate()
                .map(|(i, l)| json!({"name": format!("c{i}"), "resources": {"limits": l}}))
                .collect();
            json!({
                "metadata": {"name": "p", "labels": labels},
                "spec": {"containers": containers, "nodeName": node},
                "status": {"phase": phase, "conditions": conds, "hostIP": host},
            })
        })
}

fn service() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            Just("NodePort".to_owned()),
            Just("LoadBalancer".to_owned()),
            Just("ExternalName".to_owned()),
            "[A-Za-z]{0,12}",
        ]),
        prop::collection::vec(prop::option::of(any::<i32>()), 0..4),
        prop::collection::vec((prop::option::of(text()), prop::option::of(text())), 0..3),
    )
        .prop_map(|(t, ports, ingress)| {
            json!({
                "metadata": {"name": "serve"},
                "spec": {"type": t, "ports": ports.into_iter().map(|p| json!({"port": 8000, "nodePort": p})).collect::<Vec<_>>()},
                "status": {"loadBalancer": {"ingress": ingress.into_iter().map(|(ip, h)| json!({"ip": ip, "hostname": h})).collect::<Vec<_>>()}},
            })
        })
}

/// A count as a lying agent sends it: 0, small, huge or anything.
fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        1u32..=64,
        Just(u32::MAX),
        u32::MAX - 64..,
        any::<u32>()
    ]
}

/// CPU, memory and storage as a lying agent sends them: 0, small, huge or anything.
fn cpu_memory() -> impl Strategy<Value = CpuMemory> {
    let n = prop_oneof![Just(0u64), 1u64..=1_000_000, Just(u64::MAX), any::<u64>()];
    (n.clone(), n.clone(), prop::option::of(n)).prop_map(|(cpu_millis, memory_mib, ephemeral_mib)| {
        CpuMemory {
            cpu_millis,
            memory_mib,
            ephemeral_mib,
        }
    })
}

/// Extended resources as a lying agent sends them: the one the job asks for, or others.
fn extended() -> impl Strategy<Value = BTreeMap<String, u64>> {
    let n = prop_oneof![Just(0u64), 1u64..=8, Just(u64::MAX), any::<u64>()];
    prop::collection::btree_map(prop_oneof![Just("rdma/ib".to_owned()), "[a-z./]{1,12}"], n, 0..4)
}

/// A whole agent report (pull mode: deserialized and used as sent): several nodes from a
/// few names (so names repeat), counts up to `u32::MAX`, many pods on them.
fn agent_report() -> impl Strategy<Value = MemberView> {
    let name = prop_oneof![Just("n0"), Just("n1"), Just("n2"), Just("n3")].prop_map(str::to_owned);
    let node = (
        name.clone(),
        count(),
        any::<bool>(),
        prop::option::of(Just("d".to_owned())),
        prop::option::of((
            cpu_memory(),
            cpu_memory(),
            prop::option::of((extended(), extended())),
        )),
    )
        .prop_map(|(name, allocatable, ready, nvlink_domain, resources)| GpuNode {
            name,
            model: "H100".into(),
            memory_mib: 81920,
            compute: (9, 0),
            nvlink_domain,
            allocatable,
            ready,
            taints: Vec::new(),
            labels: Default::default(),
            resources: resources.map(|(allocatable, requested, ext)| NodeCpuMemory {
                allocatable,
                requested,
                extended: ext.map(|(allocatable, requested)| NodeExtended {
                    allocatable,
                    requested,
                }),
            }),
        });
    let pod = (name, count(), cpu_memory(), any::<bool>(), extended()).prop_map(
        |(node, gpus, requests, ours, extended)| GpuPod {
            node,
            gpus,
            attempt_key: ours.then(|| "uid-old/1".to_owned()),
            requests,
            extended,
        },
    );
    (
        prop::collection::vec(node, 0..8),
        prop::collection::vec(pod, 0..40),
    )
        .prop_map(|(nodes, pods)| MemberView {
            nodes,
            pods,
            ..MemberView::default()
        })
}

fn ready_provider(name: &str) -> Arc<GpuProvider> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"mode": "Pull", "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP",
                     "region": "eu", "prices": [{"model": "H100", "pricePerGpuHour": "2"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                                       "message": "", "lastTransitionTime": "2026-11-25T12:00:00Z"}]}
        }))
        .expect("provider"),
    )
}

fn queued_job() -> Arc<ComputeJob> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
            "metadata": {"name": "j", "namespace": "team", "uid": "uid-j"},
            "spec": {"workers": 1, "gpusPerWorker": 4, "maxPricePerGpuHour": "3",
                     "gpu": {"tier": "Any", "interconnect": "Any"}, "placement": {"verifiedOnly": false},
                     "template": {"spec": {"containers": [{"name": "main", "image": "x",
                                  "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"rdma/ib": "1"}}}]}}}
        }))
        .expect("job"),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn lying_inventories_saturate_and_block_no_other_provider(report in agent_report()) {
        // The status inventory: sums saturate at u32::MAX, never overflow.
        let inv = inventory(&report);
        let ready: u64 = report.nodes.iter().filter(|n| n.ready).map(|n| u64::from(n.allocatable)).sum();
        prop_assert_eq!(u64::from(inv.gpus), ready.min(u64::from(u32::MAX)));
        prop_assert!(inv.allocatable <= inv.gpus);
        // Placement: the liar's report never stops an honest provider's round.
        let honest = MemberView {
            nodes: vec![GpuNode {
                name: "h1".into(), model: "H100".into(), memory_mib: 81920, compute: (9, 0),
                nvlink_domain: None, allocatable: 8, ready: true, taints: Vec::new(), labels: Default::default(), resources: None,
            }],
            ..MemberView::default()
        };
        let fleet = BTreeMap::from([("honest".to_owned(), honest), ("liar".to_owned(), report)]);
        let (snap, _) = snapshot_checked(&[queued_job()], &[ready_provider("liar"), ready_provider("honest")], &fleet);
        let offered = snap.providers.iter().find(|p| p.id == "honest").map(|p| p.nodes.len());
        prop_assert_eq!(offered, Some(1));
        let decisions = pl::place(&snap, &pl::Config::default());
        prop_assert!(decisions.as_ref().is_ok_and(|d| d.placements.len() == 1), "{:?}", decisions);
    }

    #[test]
    fn garbage_nodes_never_panic_nor_invent_gpus(v in node()) {
        let Ok(node) = serde_json::from_value::<Node>(v) else { return Ok(()) };
        if let Some(g) = gpu_node(&node, RESOURCE, &[]) {
            let declared = node.status.as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(RESOURCE))
                .and_then(|q| q.0.parse::<u64>().ok())
                .unwrap_or(0);
            prop_assert!(declared > 0, "GPUs from a node that declares none");
            prop_assert!(u64::from(g.allocatable) <= declared);
        }
    }

    #[test]
    fn a_node_is_read_exactly_when_its_ready_condition_is_true_or_unknown(v in node()) {
        let Ok(node) = serde_json::from_value::<Node>(v) else { return Ok(()) };
        let ready = node.status.as_ref().and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        let read = ready_node(&node);
        prop_assert_eq!(read.is_some(), matches!(ready.as_deref(), Some("True" | "Unknown")));
        prop_assert_eq!(read.is_some_and(|r| r.unreachable), ready.as_deref() == Some("Unknown"));
    }

    #[test]
    fn garbage_gpu_allocations_never_panic_and_only_bounded_uuids_are_read(v in node()) {
        let Ok(node) = serde_json::from_value::<Node>(v) else { return Ok(()) };
        if let Some(r) = ready_node(&node) {
            prop_assert!(r.allocations.len() <= 256);
            for (pod, ids) in &r.allocations {
                prop_assert!(pod.split_once('/').is_some_and(|(ns, p)| !ns.is_empty() && !p.is_empty()), "{pod}");
                prop_assert!(ids.len() <= 16);
                prop_assert!(ids.iter().all(|u| !u.is_empty() && u.len() <= 64 && !u.contains(',')), "{ids:?}");
            }
        }
    }

    #[test]
    fn garbage_cpu_and_memory_never_panic_and_stay_bounded(
        nodes in prop::collection::vec(node(), 0..3),
        pods in prop::collection::vec(pod(), 0..8),
    ) {
        let mut gpu_nodes: Vec<GpuNode> = nodes
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Node>(v).ok())
            .filter_map(|n| gpu_node(&n, RESOURCE, &[]))
            .collect();
        let pods: Vec<Pod> = pods.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect();
        let gpu_pods = count_pods(&mut gpu_nodes, &pods, RESOURCE);
        let bounded = |e: &BTreeMap<String, u64>| e.len() <= extended::MAX_NAMES && e.values().all(|&n| n <= extended::MAX_AMOUNT);
        for r in gpu_nodes.iter().filter_map(|n| n.resources.as_ref()) {
            for c in [r.allocatable, r.requested] {
                prop_assert!(c.cpu_millis <= MAX_CPU_MILLIS && c.memory_mib <= MAX_MEMORY_MIB, "{:?}", r);
            }
            let ext = r.extended.as_ref().expect("this version reports extended resources");
            prop_assert!(bounded(&ext.allocatable) && bounded(&ext.requested), "{:?}", ext);
            prop_assert!(ext.requested.keys().all(|k| ext.allocatable.contains_key(k)), "{:?}", ext);
        }
        for p in &gpu_pods {
            prop_assert!(p.requests.cpu_millis <= MAX_CPU_MILLIS && p.requests.memory_mib <= MAX_MEMORY_MIB);
            prop_assert!(bounded(&p.extended), "{:?}", p.extended);
        }
    }

    #[test]
    fn garbage_pods_never_panic(v in pod(), known in any::<bool>(), unreachable in any::<bool>()) {
        let Ok(pod) = serde_json::from_value::<Pod>(v) else { return Ok(()) };
        let _ = gpu_pod(&pod, RESOURCE);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let entry = ReadyNode { unreachable, ..ReadyNode::default() };
        let nodes: ReadyNodes = if known { BTreeMap::from([(node, entry)]) } else { BTreeMap::new() };
        if let Some(view) = pod_view(&pod, &nodes) {
            // A bound pod is lost exactly when its node is gone or NotReady, and waited
            // for exactly when its node is unreachable.
            let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            prop_assert_eq!(view.node_lost, bound && !known);
            prop_assert_eq!(view.node_unreachable, bound && known && unreachable);
        }
    }

    #[test]
    fn garbage_services_never_panic(v in service()) {
        let Ok(svc) = serde_json::from_value::<Service>(v) else { return Ok(()) };
        let e = exposure_of(&svc);
        // The node port read is one the Service declares, never invented.
        let declared: Vec<i32> = svc.spec.iter().flat_map(|s| s.ports.iter().flatten()).filter_map(|p| p.node_port).collect();
        prop_assert!(e.node_port.is_none_or(|p| declared.contains(&p)));
    }

    #[test]
    fn lying_agent_reports_never_panic(
        pods in prop::collection::vec(
            (any::<u32>(), text(), prop::option::of(text()), any::<(bool, bool)>(), prop::option::of(any::<i64>()), any::<bool>()),
            0..20,
        ),
    ) {
        let status = AssignmentStatus {
            pods: pods
                .into_iter()
                .map(|(rank, phase, node, (node_ready, node_unreachable), finished, ready)| AssignedPod {
                    name: "p".into(),
                    rank,
                    phase,
                    node_name: node,
                    node_ready,
                    node_unreachable,
                    started_at: finished.map(|f| f.saturating_sub(1)),
                    finished_at: finished,
                    ready,
                    host_ip: None,
                    gpu_uuids: Vec::new(),
                    waiting: None,
                })
                .collect(),
            ..Default::default()
        };
        let (views, lost) = pod_views(&status);
        prop_assert_eq!(views.len(), status.pods.len());
        // A worker is never both lost and waited for, and one on a Ready node is neither.
        for (v, p) in views.iter().zip(&status.pods) {
            prop_assert!(!(v.node_lost && v.node_unreachable));
            prop_assert!(!p.node_ready || !(v.node_lost || v.node_unreachable));
        }
        // Every lost node is one the agent reported as not Ready.
        for n in lost {
            prop_assert!(status.pods.iter().any(|p| p.node_name.as_ref() == Some(&n) && !p.node_ready));
        }
    }

    #[test]
    fn lying_agent_conditions_end_only_the_attempt_they_name(
        reason in prop_oneof![Just("Refused".to_owned()), Just("Rejected".to_owned()), text()],
        message in text(),
        applied in any::<bool>(),
        (generation, observed, cond_gen) in (1i64..4, prop::option::of(0i64..4), prop::option::of(0i64..4)),
    ) {
        let a: gpufed_api::Assignment = serde_json::from_value(json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "Assignment",
            "metadata": {"name": "gf-t-a1", "generation": generation},
            "spec": {"jobUid": "u", "attempt": 1, "tenantNamespace": "gf-t", "namespace": {}},
            "status": {"observedGeneration": observed, "conditions": [{
                "type": "Applied", "status": if applied { "True" } else { "False" }, "reason": reason,
                "message": message, "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": cond_gen}]},
        })).expect("assignment");
        let current = observed == Some(generation) && cond_gen.is_none_or(|g| g == generation);
        let refused = !applied && (reason == "Refused" || reason == "Rejected");
        match read_assignment("p", Some(&a), "u", 1) {
            Err(gpufed_operator::error::Error::Rejected { message: m, .. }) => {
                prop_assert!(current && refused);
                prop_assert!(m.contains(&message));
            }
            Err(_) => prop_assert!(observed != Some(generation)),
            Ok(_) => prop_assert!(observed == Some(generation) && !(current && refused)),
        }
    }
}

#[test]
fn huge_gpu_limits_saturate_instead_of_overflowing() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [
            {"name": "a", "resources": {"limits": {RESOURCE: u64::MAX.to_string()}}},
            {"name": "b", "resources": {"limits": {RESOURCE: u64::MAX.to_string()}}},
        ]},
    }))
    .expect("pod");
    assert_eq!(gpu_pod(&pod, RESOURCE).map(|p| p.gpus), Some(u32::MAX));
}
