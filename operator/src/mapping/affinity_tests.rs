//! A template's placement rules as the engine gets them: node selector, node affinity,
//! workers kept apart or together.

use super::tests::{job, provider, view};
use super::*;
use crate::fleet::{GpuNode, GpuPod};

/// Provider `a`'s [`view`], every node labelled with its network and zone.
fn labelled_fleet() -> BTreeMap<String, MemberView> {
    let mut v = view();
    for n in &mut v.nodes {
        n.labels = BTreeMap::from([
            ("example.com/network".into(), "infiniband".into()),
            ("topology.kubernetes.io/zone".into(), "z1".into()),
        ]);
    }
    BTreeMap::from([("a".to_owned(), v)])
}

#[test]
fn a_templates_node_selector_reaches_the_engine_with_only_the_labels_it_selects() {
    let fleet = labelled_fleet();
    let plain = snapshot(&[job("plain", "Any", None)], &[provider("a", true)], &fleet);
    assert!(plain.jobs[0].node_selector.is_empty());
    assert!(
        plain.providers[0].nodes.iter().all(|n| n.labels.is_empty()),
        "no job selects: no label splits the pools"
    );
    let mut j = (*job("ib", "Any", None)).clone();
    j.spec.template.spec.rest.insert(
        "nodeSelector".into(),
        serde_json::json!({"example.com/network": "infiniband"}),
    );
    let snap = snapshot(&[Arc::new(j)], &[provider("a", true)], &fleet);
    let want = BTreeMap::from([("example.com/network".to_owned(), "infiniband".to_owned())]);
    assert_eq!(snap.jobs[0].node_selector, want);
    assert!(
        snap.providers[0].nodes.iter().all(|n| n.labels == want),
        "only the selected key"
    );
}

#[test]
fn a_templates_node_affinity_and_anti_affinity_among_its_workers_reach_the_engine() {
    let fleet = labelled_fleet();
    let mut j = (*job("ib", "Any", None)).clone();
    j.spec.workers = 2;
    j.spec.template.metadata =
        Some(serde_json::from_value(serde_json::json!({"labels": {"app": "trainer"}})).expect("meta"));
    j.spec.template.spec.rest.insert(
        "affinity".into(),
        serde_json::json!({
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "example.com/network", "operator": "NotIn", "values": ["ethernet"]}]}]}},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "trainer"}}, "topologyKey": "kubernetes.io/hostname"}]}
        }),
    );
    let snap = snapshot(&[Arc::new(j.clone())], &[provider("a", true)], &fleet);
    let engine_job = &snap.jobs[0];
    assert_eq!(
        pl::describe_affinity(&engine_job.node_affinity),
        "example.com/network notin (ethernet)"
    );
    assert_eq!(engine_job.max_workers_per_node, 1);
    let want = BTreeMap::from([("example.com/network".to_owned(), "infiniband".to_owned())]);
    assert!(
        snap.providers[0].nodes.iter().all(|n| n.labels == want),
        "the nodes carry the key the affinity names, and only it"
    );
    // An affinity placement cannot honour leaves the job out of the round (its `Valid`
    // condition says why).
    j.spec.template.spec.rest.insert(
        "affinity".into(),
        serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["g1"]}]}]}}}),
    );
    let snap = snapshot(&[Arc::new(j)], &[provider("a", true)], &fleet);
    assert!(snap.jobs.is_empty(), "{:?}", snap.jobs);
}

/// Provider `a`: two H100 nodes, `h1` with 3 GPUs free and `h2` with `h2_free`.
fn two_nodes(h2_free: u32) -> BTreeMap<String, MemberView> {
    let mut v = view();
    v.nodes.truncate(1);
    v.nodes.push(GpuNode {
        name: "h2".into(),
        ..v.nodes[0].clone()
    });
    v.pods = ["h1", "h2"]
        .iter()
        .zip([5, 8 - h2_free])
        .map(|(node, gpus)| GpuPod {
            node: (*node).into(),
            gpus,
            attempt_key: None,
            requests: Default::default(),
            extended: Default::default(),
        })
        .collect();
    BTreeMap::from([("a".to_owned(), v)])
}

#[test]
fn workers_that_must_share_a_node_are_placed_as_one_and_written_back_as_all() {
    let mut j = (*job("together", "Any", None)).clone();
    j.spec.workers = 2;
    j.spec.placement.verified_only = false;
    j.spec.max_price_per_gpu_hour = "100".into(); // the busy nodes' market price is high
    j.spec.template.spec.rest.insert(
        "containers".into(),
        serde_json::json!([{"name": "main", "image": "x", "resources": {"requests": {"cpu": "4"}}}]),
    );
    let plain = Arc::new(j.clone());
    j.spec.template.metadata =
        Some(serde_json::from_value(serde_json::json!({"labels": {"app": "trainer"}})).expect("meta"));
    j.spec.template.spec.rest.insert(
        "affinity".into(),
        serde_json::json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "trainer"}}, "topologyKey": "kubernetes.io/hostname"}]}}),
    );
    let together = Arc::new(j);
    let p = [provider("a", true)];
    // 3 and 2 GPUs free: two workers of 2 fit, one per node; all four on one node do not.
    let split = two_nodes(2);
    let snap = snapshot(std::slice::from_ref(&plain), &p, &split);
    let d = pl::place(&snap, &pl::Config::default()).expect("placed");
    assert!(
        d.unplaced.is_empty(),
        "{}",
        d.unplaced
            .first()
            .map(|u| u.explanation.to_string())
            .unwrap_or_default()
    );
    let nodes: Vec<&str> = d.placements[0].workers.iter().map(|w| w.node.as_str()).collect();
    assert_eq!(
        nodes.len(),
        2,
        "without the affinity the gang may split: {nodes:?}"
    );
    let plain_ask = snap.jobs[0].worker_resources;

    let snap = snapshot(std::slice::from_ref(&together), &p, &split);
    let engine_job = &snap.jobs[0];
    assert_eq!((engine_job.workers, engine_job.gpus_per_worker), (1, 4));
    assert_eq!(engine_job.worker_resources, plain_ask.times(2));
    let d = pl::place(&snap, &pl::Config::default()).expect("round");
    assert!(d.placements.is_empty(), "no node has 4 GPUs free: {d:?}");
    assert_eq!(
        crate::placement::unplaced_message(&together, &d.unplaced[0].explanation),
        "0/1 providers fit: 1 lack 4 free suitable GPUs now (its 2 workers must share one node: 4 GPUs on it)"
    );

    // h2 all free: both workers there, written back as two workers on h2.
    let snap = snapshot(std::slice::from_ref(&together), &p, &two_nodes(8));
    let d = pl::place(&snap, &pl::Config::default()).expect("placed");
    let placed = &d.placements[0];
    assert_eq!(placed.workers.len(), 1);
    assert_eq!(
        crate::placement::write::worker_nodes(&together, placed).collect::<Vec<_>>(),
        ["h2", "h2"]
    );
    // A gang without the affinity is written as the engine placed it.
    let snap = snapshot(std::slice::from_ref(&plain), &p, &split);
    let d = pl::place(&snap, &pl::Config::default()).expect("placed");
    assert_eq!(
        crate::placement::write::worker_nodes(&plain, &d.placements[0]).count(),
        2
    );
}
