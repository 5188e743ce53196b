use serde_json::json;

use super::*;

fn pod(spec: serde_json::Value) -> PodSpec {
    serde_json::from_value(spec).expect("pod spec")
}

fn cm(cpu_millis: u64, memory_mib: u64) -> CpuMemory {
    CpuMemory {
        cpu_millis,
        memory_mib,
        ephemeral_mib: None,
    }
}

#[test]
fn a_container_requests_its_request_else_its_limit() {
    let spec = pod(json!({"containers": [
        {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2"}}},
        {"name": "b", "resources": {"limits": {"cpu": "1.5", "memory": "512Mi"}}},
        {"name": "c"},
        {"name": "d", "resources": {"requests": {"gpufed.io/gpu": "1", "ephemeral-storage": "1Ti"}}},
    ]}));
    let got = pod_requests(&spec).rounded_up();
    assert_eq!((got.cpu_millis, got.memory_mib), (2000, 1536));
    assert_eq!(got.ephemeral_mib, Some(1024 * 1024), "storage counts too");
}

#[test]
fn init_containers_count_at_their_peak_and_sidecars_throughout() {
    // Regular 1 CPU; the init container alone 4 CPU: the pod needs 4 at its peak.
    let spec = pod(json!({
        "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "4", "memory": "100Mi"}}}],
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
    assert_eq!(pod_requests(&spec).rounded_up(), cm(4000, 1024));
    // A sidecar (restartPolicy Always) runs beside the regular containers and beside the
    // init containers after it, not the ones before it.
    let spec = pod(json!({
        "initContainers": [
            {"name": "before", "resources": {"requests": {"cpu": "3"}}},
            {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}},
            {"name": "after", "resources": {"requests": {"cpu": "3"}}}],
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}));
    assert_eq!(
        pod_requests(&spec).rounded_up(),
        cm(3500, 64),
        "max(1 + 0.5, 3, 0.5 + 3)"
    );
}

#[test]
fn overhead_adds_and_pod_level_requests_replace_the_containers() {
    let spec = pod(json!({
        "overhead": {"cpu": "250m", "memory": "120Mi"},
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
    assert_eq!(pod_requests(&spec).rounded_up(), cm(1250, 1144));
    let spec = pod(json!({
        "resources": {"requests": {"cpu": "8"}, "limits": {"memory": "16Gi"}},
        "overhead": {"cpu": "250m"},
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
    assert_eq!(pod_requests(&spec).rounded_up(), cm(8250, 16 * 1024));
}

#[test]
fn requests_round_up_and_bad_or_huge_ones_neither_panic_nor_overflow() {
    let spec = pod(json!({"containers": [
        {"name": "a", "resources": {"requests": {"cpu": "1n", "memory": "1"}}}]}));
    assert_eq!(pod_requests(&spec).rounded_up(), cm(1, 1), "never understated");
    let spec = pod(json!({"containers": [
        {"name": "a", "resources": {"requests": {"cpu": "lots", "memory": "-1Gi"}}},
        {"name": "b", "resources": {"requests": {"cpu": "1e1000", "memory": "1e1000"}}},
        {"name": "c", "resources": {"requests": {"cpu": "1e1000", "memory": "1e1000"}}}]}));
    assert_eq!(
        pod_requests(&spec).rounded_up(),
        cm(crate::fleet::MAX_CPU_MILLIS, crate::fleet::MAX_MEMORY_MIB)
    );
}

#[test]
fn a_template_is_read_as_the_whole_pod_spec_would_be() {
    let template = json!({
        "containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}],
             "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "3Gi"}}},
            {"name": "b", "image": "y", "resources": "not an object"}],
        "initContainers": [{"name": "i", "image": "z", "resources": {"requests": {"cpu": "6"}}},
                           {"name": "s", "image": "z", "restartPolicy": "Always",
                            "resources": {"requests": {"memory": "1Gi"}}}],
        "overhead": {"cpu": "100m"},
        "nodeSelector": {"k": "v"}});
    let containers: Vec<serde_json::Map<String, serde_json::Value>> = template["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c.as_object().cloned())
        .collect();
    let rest: BTreeMap<String, serde_json::Value> = template
        .as_object()
        .expect("template")
        .iter()
        .filter(|(k, _)| *k != "containers")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let read = pod_requests(&template_pod(&containers, &rest));
    assert_eq!(read.rounded_up(), cm(6100, 4096), "max(2, 6) + 0.1; 3 + 1 GiB");
    let mut valid = template.clone();
    valid["containers"][1]["resources"] = json!({});
    assert_eq!(pod_requests(&pod(valid)), read);
}

#[test]
fn a_node_reports_its_allocatable_rounded_down_or_nothing() {
    let node = |allocatable: serde_json::Value| -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": allocatable}}))
            .expect("node")
    };
    let n = node(json!({"cpu": "64", "memory": "512Gi", "gpufed.io/gpu": "4"}));
    assert_eq!(allocatable(&n), Some(cm(64_000, 512 * 1024)));
    let n = node(json!({"cpu": "7900m", "memory": "32920964Ki"}));
    assert_eq!(allocatable(&n), Some(cm(7900, 32_149)), "whole MiB, rounded down");
    for partial in [
        json!({"cpu": "64"}),
        json!({"memory": "1Gi"}),
        json!({"cpu": "x", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "-1"}),
    ] {
        assert_eq!(allocatable(&node(partial.clone())), None, "{partial}");
    }
    let huge = node(json!({"cpu": "1e1000", "memory": "99999999Ei"}));
    assert_eq!(
        allocatable(&huge),
        Some(cm(crate::fleet::MAX_CPU_MILLIS, crate::fleet::MAX_MEMORY_MIB))
    );
}

#[test]
fn ephemeral_storage_is_requested_and_allocatable_like_memory_or_unstated() {
    let spec = pod(json!({
        "initContainers": [{"name": "fetch", "resources": {"requests": {"ephemeral-storage": "150Gi"}}}],
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1", "ephemeral-storage": "60Gi"}}},
            {"name": "b", "resources": {"limits": {"ephemeral-storage": "40G"}}},
        ],
    }));
    let got = pod_requests(&spec).rounded_up();
    // max(60 GiB + 40 GB, 150 GiB): the init container's peak.
    assert_eq!(got.ephemeral_mib, Some(150 * 1024));
    assert_eq!(got.request().ephemeral_mib, 150 * 1024);
    let none = pod_requests(&pod(json!({"containers": [{"name": "a"}]}))).rounded_up();
    assert_eq!(none.ephemeral_mib, None, "no storage stated");
    assert_eq!(none.request().ephemeral_mib, 0);

    let node = |allocatable: serde_json::Value| -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": allocatable}}))
            .expect("node")
    };
    let with = allocatable(&node(
        json!({"cpu": "64", "memory": "1Gi", "ephemeral-storage": "1Ti"}),
    ))
    .expect("reported");
    assert_eq!(with.ephemeral_mib, Some(1024 * 1024));
    assert_eq!(with.capacity().ephemeral_mib, 1024 * 1024);
    let without = allocatable(&node(json!({"cpu": "64", "memory": "1Gi"}))).expect("reported");
    assert_eq!(without.ephemeral_mib, None);
    assert_eq!(
        without.capacity().ephemeral_mib,
        u64::MAX,
        "unstated storage is no limit"
    );
}
