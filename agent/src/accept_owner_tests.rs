use super::*;

fn assignment(namespace_uid: Option<&str>) -> Assignment {
    let job: gpufed_api::ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": "u-1"},
        "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "main", "image": "r/x:1"}]}}}
    }))
    .unwrap();
    let placement: gpufed_api::job_status::Placement = serde_json::from_value(serde_json::json!({
        "provider": "p", "attempt": 1, "gpus": 1, "pricePerGpuHour": "0.50",
        "placedTime": "2026-12-01T00:00:00Z", "workers": [{"rank": 0, "node": "n1"}]
    }))
    .unwrap();
    let objects = gpufed_operator::job::build::build(&job, &placement, "gpufed.io/gpu").unwrap();
    let mut body = gpufed_operator::member::pull::assignment(&objects).unwrap();
    let labels = &mut body["spec"]["namespace"]["metadata"]["labels"];
    match namespace_uid {
        Some(uid) => labels[names::LABEL_JOB_UID] = uid.into(),
        None => {
            labels.as_object_mut().unwrap().remove(names::LABEL_JOB_UID);
        }
    }
    serde_json::from_value(body).unwrap()
}

#[test]
fn the_namespace_must_be_the_assignments_own_jobs() {
    assert!(accept(&assignment(Some("u-1"))).is_ok());
    for other in [Some("u-2"), Some(""), None] {
        let err = accept(&assignment(other)).unwrap_err();
        assert!(
            err.starts_with("spec.namespace") && err.contains("gpufed.io/job-uid=u-1"),
            "{other:?}: {err}"
        );
    }
}

/// The Assignment the hub builds for a one-worker job, as JSON.
fn built_assignment() -> serde_json::Value {
    gpufed_operator::member::pull::assignment(
        &gpufed_operator::job::build::build(
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": "train", "namespace": "team", "uid": "u-1"},
                "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                         "template": {"spec": {"containers": [{"name": "main", "image": "r/x:1"}]}}}
            }))
            .unwrap(),
            &serde_json::from_value(serde_json::json!({
                "provider": "p", "attempt": 1, "gpus": 1, "pricePerGpuHour": "0.50",
                "placedTime": "2026-12-01T00:00:00Z", "workers": [{"rank": 0, "node": "n1"}]
            }))
            .unwrap(),
            "gpufed.io/gpu",
        )
        .unwrap(),
    )
    .unwrap()
}

/// The last line of defence: a worker pod choosing its scheduling priority could preempt
/// this cluster's own pods and other tenants', whatever the hub let through.
#[test]
fn a_pod_choosing_its_priority_is_refused_naming_the_field() {
    let built = built_assignment();
    for (field, value) in [
        ("priorityClassName", serde_json::json!("system-node-critical")),
        ("priority", serde_json::json!(2_000_001_000)),
        ("priority", serde_json::json!(0)),
        ("preemptionPolicy", serde_json::json!("PreemptLowerPriority")),
        ("preemptionPolicy", serde_json::json!("Never")),
    ] {
        let mut body = built.clone();
        body["spec"]["pods"][0]["spec"][field] = value.clone();
        let err = accept(&serde_json::from_value(body).unwrap()).unwrap_err();
        assert!(
            err.starts_with(&format!("spec.pods[0].spec.{field}: not accepted")),
            "{field}={value}: {err}"
        );
    }
}

/// `nodeName` skips this cluster's scheduler and its taints; a mounted token or another
/// service account is a credential here: refused, whatever the hub let through.
#[test]
fn a_pod_reaching_past_the_scheduler_or_its_namespace_is_refused_naming_the_field() {
    let built = built_assignment();
    assert!(accept(&serde_json::from_value(built.clone()).unwrap()).is_ok());
    for (field, value) in [
        ("nodeName", serde_json::json!("control-plane-1")),
        ("automountServiceAccountToken", serde_json::json!(true)),
        ("automountServiceAccountToken", serde_json::Value::Null),
        ("serviceAccountName", serde_json::json!("admin")),
        ("serviceAccount", serde_json::json!("admin")),
    ] {
        let mut body = built.clone();
        body["spec"]["pods"][0]["spec"][field] = value.clone();
        let err = accept(&serde_json::from_value(body).unwrap()).unwrap_err();
        assert!(
            err.starts_with(&format!("spec.pods[0].spec.{field}: ")),
            "{field}={value}: {err}"
        );
    }
    let mut body = built;
    body["spec"]["pods"][0]["spec"]["serviceAccountName"] = serde_json::json!("default");
    assert!(accept(&serde_json::from_value(body).unwrap()).is_ok());
}
