#![allow(clippy::unwrap_used)]

use super::*;

fn assignment_body() -> (Value, MemberObjects) {
    let job: gpufed_api::ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": "u-1"},
        "spec": {"workers": 2, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "main", "image": "r/x:1"}]}}}
    }))
    .unwrap();
    let placement: gpufed_api::job_status::Placement = serde_json::from_value(serde_json::json!({
        "provider": "p", "attempt": 2, "gpus": 2, "pricePerGpuHour": "0.50",
        "placedTime": "2026-12-01T00:00:00Z",
        "workers": [{"rank": 0, "node": "n1"}, {"rank": 1, "node": "n2"}]
    }))
    .unwrap();
    let objects = gpufed_operator::job::build::build(&job, &placement, "gpufed.io/gpu").unwrap();
    (
        gpufed_operator::member::pull::assignment(&objects).unwrap(),
        objects,
    )
}

fn parse(v: Value) -> Assignment {
    serde_json::from_value(v).unwrap()
}

#[test]
fn what_the_hub_builds_is_accepted_unchanged() {
    let (body, objects) = assignment_body();
    let got = accept(&parse(body)).unwrap();
    assert_eq!(got.pods.len(), 2);
    for (a, b) in got.pods.iter().zip(&objects.pods) {
        assert_eq!(a.spec, b.spec);
        assert_eq!(a.metadata.labels, b.metadata.labels);
    }
    assert_eq!(got.namespace.metadata.name, objects.namespace.metadata.name);
    assert_eq!(got.quota.spec, objects.quota.spec);
}

#[test]
fn a_privileged_pod_is_refused_naming_the_pod() {
    let (mut body, _) = assignment_body();
    body["spec"]["pods"][1]["spec"]["hostNetwork"] = true.into();
    let err = accept(&parse(body)).unwrap_err();
    assert!(
        err.starts_with("spec.pods[1]") && err.contains("restricted"),
        "{err}"
    );
}

#[test]
fn objects_outside_the_tenant_namespace_or_of_other_kinds_are_refused() {
    let (mut body, _) = assignment_body();
    body["spec"]["pods"][0]["metadata"]["namespace"] = "kube-system".into();
    assert!(accept(&parse(body)).unwrap_err().contains("kube-system"));

    let (mut body, _) = assignment_body();
    body["spec"]["objects"][0] = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "mine"}, "roleRef": {}, "subjects": []
    });
    assert!(accept(&parse(body)).unwrap_err().contains("ClusterRoleBinding"));

    let (mut body, _) = assignment_body();
    body["spec"]["namespace"]["metadata"]["name"] = "kube-system".into();
    assert!(accept(&parse(body)).unwrap_err().contains("tenantNamespace"));
}

#[test]
fn pods_of_another_job_or_attempt_are_refused() {
    let (mut body, _) = assignment_body();
    body["spec"]["pods"][0]["metadata"]["labels"][names::LABEL_ATTEMPT] = "1".into();
    assert!(accept(&parse(body)).unwrap_err().contains("attempt 2"));
    let (mut body, _) = assignment_body();
    body["spec"]["jobUid"] = "someone-else".into();
    assert!(accept(&parse(body)).unwrap_err().contains("someone-else"));
}
