#![allow(clippy::unwrap_used)]
use super::*;
use kube::CustomResourceExt;

#[test]
fn a_service_without_replicas_sends_an_empty_replica_list() {
    let status = serde_json::to_value(ComputeServiceStatus::default()).expect("status serializes");
    assert_eq!(status["replicaStatus"], serde_json::json!([]));
    assert!(status.get("unlistedReplicas").is_none(), "{status}");
}

/// The schema's bound on `replicaStatus` is the one the operator caps the list at.
#[test]
fn the_replica_list_bound_is_the_schemas() {
    let crd = serde_json::to_value(ComputeService::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let list = &schema["properties"]["status"]["properties"]["replicaStatus"];
    assert_eq!(list["maxItems"], serde_json::json!(MAX_REPLICA_STATUS));
    // Every live replica fits: `replicas` and as many again while a rollout surges.
    assert!(MAX_REPLICA_STATUS >= 2 * MAX_REPLICAS as usize);
}

fn service(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"replicas": 1, "gpusPerReplica": 1, "maxPricePerGpuHour": "1.00",
                 "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm"}]}}}
    })
}

fn cel_refuses(object: &serde_json::Value) -> Vec<String> {
    let crd = serde_json::to_value(ComputeService::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    match kube_cel::Validator::new().validate(schema, object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The name becomes the hub Service's (DNS-1035), the replicas' label value and spread
/// group (DNS-1123 labels): the operator refuses other names.
#[test]
fn a_name_that_cannot_name_the_hub_service_is_refused_by_the_operator() {
    let long = format!("a{}", "b".repeat(62));
    for good in ["llm", "llama-8b-chat", "a", long.as_str()] {
        assert_eq!(name_error(good), None, "{good}");
    }
    let too_long = format!("a{}", "b".repeat(63));
    for bad in ["llama-3.1-chat", "8b-chat", "chat-", "Chat", too_long.as_str()] {
        let e = name_error(bad).unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(e.starts_with("metadata.name: ") && e.contains("DNS-1035"), "{e}");
    }
}

/// The API server does not check the name: a rule on `metadata.name` runs on every update,
/// status writes and finalizer removal included, so a service made before it with a name
/// it refuses (`llama-3.1-8b`) could be neither written by the operator nor deleted.
#[test]
fn the_api_server_keeps_a_service_with_a_name_the_operator_refuses_writable() {
    let crd = serde_json::to_value(ComputeService::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let long = format!("a{}", "b".repeat(63));
    for name in ["llama-3.1-8b", "8b-chat", "Chat", long.as_str()] {
        assert_eq!(cel_refuses(&service(name)), Vec::<String>::new(), "{name}");
    }
    let root = schema.get("x-kubernetes-validations");
    assert!(root.is_none(), "root-level rules: {root:?}");
}
