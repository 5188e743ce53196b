//! CPU and memory reach the engine: node free counted once per holder, worker requests
//! from the template, live allocations' share, and bounded reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_placement as pl;
use serde_json::json;

use crate::fleet::{
    CpuMemory, GpuNode, GpuPod, MAX_CPU_MILLIS, MAX_MEMORY_MIB, MemberView, NodeCpuMemory, NodeExtended,
};
use crate::mapping::{snapshot, snapshot_checked};

fn provider(name: &str, price: &str) -> Arc<GpuProvider> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc"},
                     "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu",
                     "prices": [{"model": "A100", "pricePerGpuHour": price}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "",
                                       "lastTransitionTime": "2026-11-25T12:00:00Z"}]}
        }))
        .expect("provider"),
    )
}

/// A job of `workers` × 1 GPU whose worker container asks `resources`, placed on
/// `nodes` of provider `on` when given.
fn job(name: &str, resources: serde_json::Value, on: Option<(&str, &[&str])>) -> Arc<ComputeJob> {
    let workers = on.map_or(1, |(_, nodes)| nodes.len());
    let mut j: ComputeJob = serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
        "spec": {"workers": workers, "gpusPerWorker": 1, "maxPricePerGpuHour": "3",
                 "gpu": {"tier": "Any", "interconnect": "Any"}, "placement": {"verifiedOnly": false},
                 "template": {"spec": {"containers": [{"name": "main", "image": "x", "resources": resources}]}}}
    }))
    .expect("job");
    if let Some((provider, nodes)) = on {
        let gpus = u32::try_from(nodes.len()).expect("few");
        j.status = Some(crate::mapping::tests::placed(provider, "1", gpus, nodes));
    }
    Arc::new(j)
}

fn cm(cpu: u64, memory_gib: u64) -> CpuMemory {
    CpuMemory {
        cpu_millis: cpu * 1000,
        memory_mib: memory_gib * 1024,
        ephemeral_mib: None,
    }
}

fn res(cpu: u64, memory_gib: u64) -> pl::Resources {
    cm(cpu, memory_gib).request()
}

fn node(name: &str, resources: Option<(CpuMemory, CpuMemory)>) -> GpuNode {
    GpuNode {
        name: name.into(),
        model: "A100".into(),
        memory_mib: 40_960,
        compute: (8, 0),
        nvlink_domain: None,
        allocatable: 4,
        ready: true,
        taints: Vec::new(),
        labels: Default::default(),
        resources: resources.map(|(allocatable, requested)| NodeCpuMemory {
            allocatable,
            requested,
            extended: None,
        }),
    }
}

fn pod(node: &str, attempt: Option<&str>, requests: CpuMemory) -> GpuPod {
    GpuPod {
        node: node.into(),
        gpus: 1,
        attempt_key: attempt.map(Into::into),
        requests,
        extended: Default::default(),
    }
}

/// Provider `a` at 1.00, its node `a1` reporting `cheap` (allocatable, requested), and
/// provider `b` at 1.50, its node `b1` with 64 CPU and 512 GiB, nothing requested.
fn cheap_and_dear(cheap: (CpuMemory, CpuMemory)) -> (BTreeMap<String, MemberView>, [Arc<GpuProvider>; 2]) {
    let view = |n: GpuNode| MemberView {
        nodes: vec![n],
        ..MemberView::default()
    };
    let fleet = BTreeMap::from([
        ("a".to_owned(), view(node("a1", Some(cheap)))),
        (
            "b".to_owned(),
            view(node("b1", Some((cm(64, 512), CpuMemory::default())))),
        ),
    ]);
    (fleet, [provider("a", "1"), provider("b", "1.5")])
}

fn find<'a>(snap: &'a pl::Snapshot, provider: &str, node: &str) -> &'a pl::Node {
    snap.providers
        .iter()
        .find(|p| p.id == provider)
        .and_then(|p| p.nodes.iter().find(|n| n.name == node))
        .expect("node")
}

#[test]
fn free_is_allocatable_less_other_pods_ended_workers_and_live_placements() {
    let view = MemberView {
        nodes: vec![node("n1", Some((cm(64, 512), cm(4, 8)))), node("n2", None)],
        pods: vec![
            // The live attempt's own pod: counted by its placement, not again here.
            pod("n1", Some("uid-live/1"), cm(10, 20)),
            // A worker of an attempt that is over, still terminating: it holds its share.
            pod("n1", Some("uid-old/3"), cm(6, 4)),
            // Another pod holding GPUs: its CPU is in the node's `requested` already.
            pod("n1", None, CpuMemory::default()),
        ],
        ..MemberView::default()
    };
    let live = job(
        "live",
        json!({"requests": {"cpu": "10", "memory": "20Gi"}}),
        Some(("a", &["n1", "n1", "n2"])),
    );
    let queued = job("new", json!({"limits": {"cpu": "40", "memory": "1Gi"}}), None);
    let fleet = BTreeMap::from([("a".to_owned(), view)]);
    let snap = snapshot(&[live, queued], &[provider("a", "1")], &fleet);

    let n1 = find(&snap, "a", "n1");
    assert_eq!(
        n1.resources,
        Some(pl::NodeResources {
            // No storage reported: no limit.
            allocatable: cm(64, 512).capacity(),
            // 64 − 4 (other pods) − 6 (ended worker) − 2 × 10 (live workers).
            free: cm(34, 512 - 8 - 4 - 40).capacity(),
        })
    );
    assert_eq!(
        find(&snap, "a", "n2").resources,
        None,
        "not reported: not limited"
    );
    assert_eq!(snap.running.len(), 1);
    assert_eq!(
        snap.running[0].resources,
        BTreeMap::from([("n1".to_owned(), res(20, 40))]),
        "what it gives back if evicted, on the nodes whose CPU and memory count"
    );
    assert_eq!(
        snap.jobs[0].worker_resources,
        res(40, 1),
        "a limit without a request is the request"
    );
}

#[test]
fn a_worker_goes_where_its_cpu_is_free_and_waits_when_no_node_has_it() {
    // The cheaper provider's node has 24 CPU left beside its free GPUs; the dearer one 64.
    let (fleet, providers) = cheap_and_dear((cm(64, 512), cm(40, 0)));
    let place = |cpu: &str| {
        let j = job("j", json!({"requests": {"cpu": cpu}}), None);
        pl::place(&snapshot(&[j], &providers, &fleet), &pl::Config::default()).expect("placed")
    };
    let small = place("20");
    assert_eq!(small.placements[0].provider, "a", "fits the cheaper one");
    let forty = place("40");
    assert_eq!(
        forty.placements[0].provider, "b",
        "the cheaper one has GPUs but not the CPU"
    );
    let huge = place("100");
    assert!(huge.placements.is_empty());
    let why = &huge.unplaced[0].explanation;
    assert!(
        matches!(why.primary(), Some(pl::Reason::WorkerTooLarge { .. })),
        "{why}"
    );
    assert!(why.to_string().contains("100 CPU"), "{why}");
}

#[test]
fn any_reported_numbers_are_bounded_and_leave_nothing_free() {
    let huge = CpuMemory {
        cpu_millis: u64::MAX,
        memory_mib: u64::MAX,
        ephemeral_mib: Some(u64::MAX),
    };
    let view = MemberView {
        nodes: vec![
            node("n1", Some((huge, CpuMemory::default()))),
            node("n2", Some((huge, huge))),
        ],
        pods: vec![pod("n1", Some("uid-old/1"), huge); 5],
        ..MemberView::default()
    };
    let fleet = BTreeMap::from([("a".to_owned(), view)]);
    let (snap, findings) = snapshot_checked(
        &[job("j", json!({"requests": {"cpu": "1"}}), None)],
        &[provider("a", "1")],
        &fleet,
    );
    assert_eq!(findings, [], "no node is left out for its CPU or memory");
    let bound = pl::Resources {
        ephemeral_mib: MAX_MEMORY_MIB,
        ..pl::Resources::cpu_memory(MAX_CPU_MILLIS, MAX_MEMORY_MIB)
    };
    for name in ["n1", "n2"] {
        let r = find(&snap, "a", name).resources.expect("reported");
        assert_eq!(r.allocatable, bound, "{name}");
        assert!(r.free.is_zero(), "{name}: held beyond its size: nothing free");
    }
    let decisions = pl::place(&snap, &pl::Config::default()).expect("accepted");
    assert!(decisions.placements.is_empty());
}

#[test]
fn local_storage_limits_where_a_node_reports_it_and_live_workers_hold_theirs() {
    let disk = |gib: u64| CpuMemory {
        ephemeral_mib: Some(gib * 1024),
        ..cm(64, 512)
    };
    // The cheaper provider's node has 500 GiB of local storage; the dearer one's agent is
    // older and reports none (no limit).
    let (fleet, providers) = cheap_and_dear((disk(500), CpuMemory::default()));
    let storage = |gib: &str| json!({"requests": {"ephemeral-storage": format!("{gib}Gi")}});
    let live = job("live", storage("300"), Some(("a", &["a1"])));
    let queued = job("new", storage("300"), None);
    let snap = snapshot(&[live, queued], &providers, &fleet);
    let a1 = find(&snap, "a", "a1").resources.expect("reported");
    assert_eq!(
        a1.free.ephemeral_mib,
        200 * 1024,
        "500 less the live worker's 300"
    );
    assert_eq!(
        find(&snap, "b", "b1")
            .resources
            .expect("reported")
            .free
            .ephemeral_mib,
        u64::MAX
    );
    let d = pl::place(&snap, &pl::Config::default()).expect("placed");
    assert_eq!(
        d.placements[0].provider, "b",
        "a1 has GPUs but not the storage left"
    );
}

/// `name`'s node of provider `provider` in `fleet`, reporting `ext`.
fn set_extended(fleet: &mut BTreeMap<String, MemberView>, provider: &str, ext: Option<NodeExtended>) {
    let node = &mut fleet.get_mut(provider).expect("provider").nodes[0];
    node.resources.as_mut().expect("reported").extended = ext;
}

fn names(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn extended_resources_reach_the_engine_slot_by_slot() {
    let (mut fleet, providers) = cheap_and_dear((cm(64, 512), CpuMemory::default()));
    // a1 has none; b1 has 4 RDMA devices, 1 held by another pod, 1 by an ended worker.
    set_extended(&mut fleet, "a", Some(NodeExtended::default()));
    set_extended(
        &mut fleet,
        "b",
        Some(NodeExtended {
            allocatable: names(&[("rdma/ib", 4), ("hugepages-2Mi", 4096)]),
            requested: names(&[("rdma/ib", 1)]),
        }),
    );
    let mut ended = pod("b1", Some("uid-old/1"), CpuMemory::default());
    ended.extended = names(&[("rdma/ib", 1)]);
    fleet.get_mut("b").expect("b").pods.push(ended);
    let jobs = [
        job("rdma", json!({"limits": {"rdma/ib": "1"}}), None),
        job("fpga", json!({"limits": {"example.com/fpga": "1"}}), None),
        // The provider's GPU resource in a template is not an extended resource.
        job("plain", json!({"limits": {"gpufed.io/gpu": "1"}}), None),
    ];
    let snap = snapshot(&jobs, &providers, &fleet);
    assert_eq!(snap.extended_resources, ["example.com/fpga", "rdma/ib"]);
    let b1 = find(&snap, "b", "b1").resources.expect("reported");
    assert_eq!(b1.allocatable.extended, [0, 4, 0, 0]);
    assert_eq!(
        b1.free.extended,
        [0, 2, 0, 0],
        "4 − another pod's − the ended worker's"
    );
    assert_eq!(
        find(&snap, "a", "a1").resources.expect("reported").free.extended,
        [0; 4]
    );

    let d = pl::place(&snap, &pl::Config::default()).expect("placed");
    let on: BTreeMap<&str, &str> = d
        .placements
        .iter()
        .map(|p| (p.job.as_str(), p.provider.as_str()))
        .collect();
    assert_eq!(on.get("team/rdma"), Some(&"b"), "{d:?}");
    assert_eq!(on.get("team/plain"), Some(&"a"), "{d:?}");
    let why = &d.unplaced[0].explanation;
    assert!(
        why.to_string()
            .contains("lack a suitable node with 1 example.com/fpga for one worker"),
        "{why}"
    );
}

#[test]
fn an_older_agent_without_extended_resources_limits_none_and_slots_are_the_most_asked() {
    let (fleet, providers) = cheap_and_dear((cm(64, 512), CpuMemory::default()));
    // Six resources asked for, `r5` by three jobs and `r4` by two: those come first.
    let mut jobs: Vec<Arc<ComputeJob>> = (0..6)
        .map(|i| {
            job(
                &format!("j{i}"),
                json!({"limits": {format!("example.com/r{i}"): "1"}}),
                None,
            )
        })
        .collect();
    jobs.push(job("k1", json!({"limits": {"example.com/r5": "1"}}), None));
    jobs.push(job("k2", json!({"limits": {"example.com/r5": "1"}}), None));
    jobs.push(job("k3", json!({"limits": {"example.com/r4": "1"}}), None));
    let snap = snapshot(&jobs, &providers, &fleet);
    assert_eq!(
        snap.extended_resources,
        [
            "example.com/r5",
            "example.com/r4",
            "example.com/r0",
            "example.com/r1"
        ]
    );
    let a1 = find(&snap, "a", "a1").resources.expect("reported");
    assert_eq!(a1.allocatable.extended, [u64::MAX; 4], "not reported: no limit");
    let d = pl::place(&snap, &pl::Config::default()).expect("placed");
    assert_eq!(d.placements.len(), 8, "two nodes of 4 GPUs: {d:?}");
}
