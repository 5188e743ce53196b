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
