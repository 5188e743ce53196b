use k8s_openapi::api::core::v1::{Node, PodSpec};
use serde_json::json;

use super::*;

const GPU: &str = "gpufed.io/gpu";

fn pod(spec: serde_json::Value) -> PodSpec {
    serde_json::from_value(spec).expect("pod spec")
}

fn ext(pairs: &[(&str, u64)]) -> Extended {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn a_node_has_its_extended_resources_but_not_cpu_memory_pods_or_gpus() {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n"},
        "status": {"allocatable": {
            "cpu": "64", "memory": "512Gi", "ephemeral-storage": "1Ti", "pods": "110",
            GPU: "8", "rdma/ib": "4", "hugepages-2Mi": "4Gi", "hugepages-1Gi": "0",
            "example.com/fpga": "1500m", "bad name!": "3", "example.com/junk": "x"}}
    }))
    .expect("node");
    assert_eq!(
        node_allocatable(&node, GPU),
        // Rounded down; nothing of what it has none of, nor of what does not parse.
        ext(&[("example.com/fpga", 1), ("hugepages-2Mi", 4096), ("rdma/ib", 4)])
    );
    assert_eq!(node_allocatable(&Node::default(), GPU), Extended::new());
}

#[test]
fn a_pod_asks_as_the_scheduler_counts_it() {
    let spec = pod(json!({
        "initContainers": [
            {"name": "setup", "resources": {"limits": {"rdma/ib": "3"}}},
            {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"hugepages-2Mi": "3Mi"}}}],
        "containers": [
            {"name": "a", "resources": {"limits": {"rdma/ib": "1", GPU: "1", "cpu": "4"}}},
            {"name": "b", "resources": {"requests": {"rdma/ib": "1"}}}],
        "overhead": {"example.com/vf": "1"}
    }));
    assert_eq!(
        pod_requests(&spec, GPU),
        // rdma: max(1 + 1, 3); hugepages: 3 MiB rounded up … as MiB; overhead added.
        ext(&[("example.com/vf", 1), ("hugepages-2Mi", 3), ("rdma/ib", 3)])
    );
    assert_eq!(
        pod_requests(&pod(json!({"containers": [{"name": "a"}]})), GPU),
        Extended::new()
    );
}

#[test]
fn hostile_amounts_and_names_are_bounded() {
    let many: serde_json::Map<String, serde_json::Value> = (0..100)
        .map(|i| (format!("example.com/r{i:03}"), json!("99999999999999999999999")))
        .collect();
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": many}}))
            .expect("node");
    let got = node_allocatable(&node, GPU);
    assert_eq!(got.len(), MAX_NAMES);
    assert!(got.values().all(|&n| n == MAX_AMOUNT));
    let mut sum = got.clone();
    add(&mut sum, &got);
    add(&mut sum, &ext(&[("example.com/r000", u64::MAX)]));
    assert_eq!(sum["example.com/r000"], u64::MAX, "sums saturate");
    assert!(!is_extended(&"a".repeat(400), GPU));
    assert!(!is_extended("", GPU));
    assert!(
        is_extended("nvidia.com/gpu", GPU),
        "another plugin's GPUs are its own"
    );
}
