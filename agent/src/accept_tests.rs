#![allow(clippy::unwrap_used)]

use super::*;

fn assignment_body() -> (Value, MemberObjects) {
    let objects = objects();
    (
        gpufed_operator::member::pull::assignment(&objects).unwrap(),
        objects,
    )
}

fn test_job() -> gpufed_api::ComputeJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": "u-1"},
        "spec": {"workers": 2, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "main", "image": "r/x:1"}]}}}
    }))
    .unwrap()
}

fn objects() -> MemberObjects {
    let job = test_job();
    let placement: gpufed_api::job_status::Placement = serde_json::from_value(serde_json::json!({
        "provider": "p", "attempt": 2, "gpus": 2, "pricePerGpuHour": "0.50",
        "placedTime": "2026-12-01T00:00:00Z",
        "workers": [{"rank": 0, "node": "n1"}, {"rank": 1, "node": "n2"}]
    }))
    .unwrap();
    gpufed_operator::job::build::build(&job, &placement, "gpufed.io/gpu").unwrap()
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
fn only_a_namespace_of_gpufed_s_own_is_taken_for_a_tenant() {
    // The hub names one of the member's own namespaces, consistently everywhere.
    let (mut body, _) = assignment_body();
    let ns = "ingress-nginx";
    body["spec"]["tenantNamespace"] = ns.into();
    body["spec"]["namespace"]["metadata"]["name"] = ns.into();
    for o in body["spec"]["objects"].as_array_mut().unwrap() {
        o["metadata"]["namespace"] = ns.into();
    }
    for p in body["spec"]["pods"].as_array_mut().unwrap() {
        p["metadata"]["namespace"] = ns.into();
    }
    let err = accept(&parse(body)).unwrap_err();
    assert!(
        err.starts_with("spec.tenantNamespace") && err.contains("gf-"),
        "{err}"
    );

    // A name of our form that someone else's namespace already has.
    let theirs: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gf-theirs", "labels": {"team": "x"}}
    }))
    .unwrap();
    assert!(foreign(Some(&theirs)).unwrap().contains("gf-theirs"));
    let (_, objects) = assignment_body();
    assert_eq!(
        foreign(Some(&objects.namespace)),
        None,
        "ours, as the hub builds it"
    );
    assert_eq!(foreign(None), None, "not there yet: created");
}

#[test]
fn a_pod_choosing_its_own_gpus_is_refused() {
    let (mut body, _) = assignment_body();
    body["spec"]["pods"][0]["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]);
    let err = accept(&parse(body)).unwrap_err();
    assert!(
        err.starts_with("spec.pods[0]") && err.contains("NVIDIA_VISIBLE_DEVICES"),
        "{err}"
    );
}

#[test]
fn a_pod_spelling_its_gpus_from_its_credentials_is_refused() {
    // `prefix: NVIDIA_` + a credentials key `VISIBLE_DEVICES` = NVIDIA_VISIBLE_DEVICES.
    let (mut body, _) = with_credentials();
    body["spec"]["pods"][1]["spec"]["containers"][0]["envFrom"] =
        serde_json::json!([{"prefix": "NVIDIA_", "secretRef": {"name": MEMBER_SECRET}}]);
    let err = accept(&parse(body)).unwrap_err();
    assert!(
        err.starts_with("spec.pods[1]") && err.contains("containers[0].envFrom[0].prefix"),
        "{err}"
    );
}

#[test]
fn the_namespace_enforces_restricted_whatever_the_hub_sent() {
    let (mut body, objects) = assignment_body();
    let labels = &mut body["spec"]["namespace"]["metadata"]["labels"];
    labels["pod-security.kubernetes.io/enforce"] = "privileged".into();
    labels["pod-security.kubernetes.io/enforce-version"] = "v1.22".into();
    labels
        .as_object_mut()
        .unwrap()
        .remove("pod-security.kubernetes.io/audit");
    let got = accept(&parse(body)).unwrap().namespace.metadata.labels.unwrap();
    let security: Vec<(&str, &str)> = got
        .iter()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        security,
        vec![
            ("pod-security.kubernetes.io/audit", "restricted"),
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/warn", "restricted"),
        ]
    );
    assert_eq!(
        Some(got),
        objects.namespace.metadata.labels,
        "what the hub builds is taken as it is"
    );
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

fn serving_body() -> Value {
    let job: gpufed_api::ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "llm-0", "namespace": "team", "uid": "u-2"},
        "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "serving": {"port": {"port": 8000, "type": "NodePort"}},
                 "template": {"spec": {"containers": [{"name": "server", "image": "r/vllm:1"}]}}}
    }))
    .unwrap();
    let placement: gpufed_api::job_status::Placement = serde_json::from_value(serde_json::json!({
        "provider": "p", "attempt": 1, "gpus": 1, "pricePerGpuHour": "0.50",
        "placedTime": "2026-12-01T00:00:00Z", "workers": [{"rank": 0, "node": "n1"}]
    }))
    .unwrap();
    let objects = gpufed_operator::job::build::build(&job, &placement, "gpufed.io/gpu").unwrap();
    assert!(objects.exposure.is_some());
    gpufed_operator::member::pull::assignment(&objects).unwrap()
}

#[test]
fn a_serving_replicas_service_is_accepted_apart_from_the_gang_service() {
    let got = accept(&parse(serving_body())).unwrap();
    let exposure = got.exposure.expect("serving Service");
    assert_eq!(exposure.spec.and_then(|s| s.type_).as_deref(), Some("NodePort"));
    assert!(got.service.is_none(), "a one-worker replica has no gang Service");
}

#[test]
fn a_serving_service_that_reaches_beyond_its_pods_is_refused() {
    let idx = |body: &Value| {
        body["spec"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .position(|o| o["metadata"]["name"] == SERVING_SERVICE)
            .unwrap()
    };
    let mut body = serving_body();
    let i = idx(&body);
    body["spec"]["objects"][i]["spec"]["externalIPs"] = serde_json::json!(["10.96.0.10"]);
    assert!(accept(&parse(body)).unwrap_err().contains("externalIPs"));

    let mut body = serving_body();
    let i = idx(&body);
    body["spec"]["objects"][i]["spec"]["ports"][0]["nodePort"] = 30080.into();
    assert!(accept(&parse(body)).unwrap_err().contains("node ports"));

    let mut body = serving_body();
    let i = idx(&body);
    body["spec"]["objects"][i]["spec"]["type"] = "ExternalName".into();
    assert!(accept(&parse(body)).unwrap_err().contains("ExternalName"));

    let mut body = serving_body();
    let i = idx(&body);
    body["spec"]["objects"][i]["spec"]["selector"] = serde_json::json!({"app": "someone-else"});
    assert!(accept(&parse(body)).unwrap_err().contains("selector"));
}

#[test]
fn the_gang_service_cannot_be_exposed_under_another_name() {
    let gang = |body: &Value| {
        body["spec"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .position(|o| o["kind"] == "Service")
            .unwrap()
    };
    let (mut body, _) = assignment_body();
    let i = gang(&body);
    body["spec"]["objects"][i]["spec"]["type"] = "LoadBalancer".into();
    assert!(accept(&parse(body)).unwrap_err().contains("LoadBalancer"));

    let (mut body, _) = assignment_body();
    let i = gang(&body);
    body["spec"]["objects"][i]["spec"]["clusterIP"] = "10.96.0.50".into();
    assert!(accept(&parse(body)).unwrap_err().contains("headless"));

    let (mut body, _) = assignment_body();
    let i = gang(&body);
    body["spec"]["objects"][i]["spec"]["selector"]["gpufed.io/job-uid"] = "someone-elses-uid".into();
    assert!(accept(&parse(body)).unwrap_err().contains("this job's pods"));
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,30}".prop_map(Value::from),
            Just(serde_json::json!({})),
            Just(serde_json::json!([])),
            Just(Value::from("kube-system")),
            Just(Value::from("NodePort")),
        ]
    }

    /// Replaces the `n`-th value (in a walk of the tree) with `v`.
    fn replace_nth(v: &mut Value, n: &mut usize, with: &Value) -> bool {
        if *n == 0 {
            *v = with.clone();
            return true;
        }
        *n -= 1;
        match v {
            Value::Object(m) => m.values_mut().any(|c| replace_nth(c, n, with)),
            Value::Array(a) => a.iter_mut().any(|c| replace_nth(c, n, with)),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the hub writes into an Assignment, the agent accepts it or refuses it
        /// with a message naming a field; it never panics.
        #[test]
        fn mutated_assignments_are_refused_with_a_reason_or_accepted(
            serving in any::<bool>(),
            edits in prop::collection::vec((0usize..400, leaf()), 1..4),
        ) {
            let mut body = if serving { serving_body() } else { assignment_body().0 };
            for (n, v) in &edits {
                let mut n = *n;
                replace_nth(&mut body["spec"], &mut n, v);
            }
            let Ok(a) = serde_json::from_value::<Assignment>(body) else { return Ok(()) };
            if let Err(msg) = accept(&a) {
                prop_assert!(msg.starts_with("spec."), "refusal names a field: {msg}");
            }
        }
    }
}

/// The Assignment of a job with checkpoint credentials: its copy travels in `objects`.
fn with_credentials() -> (Value, MemberObjects) {
    let mut objects = objects();
    let data = std::collections::BTreeMap::from([(
        "AWS_ACCESS_KEY_ID".to_owned(),
        k8s_openapi::ByteString(b"k".to_vec()),
    )]);
    gpufed_operator::job::build::with_credentials(&mut objects, &test_job(), 2, data);
    (
        gpufed_operator::member::pull::assignment(&objects).unwrap(),
        objects,
    )
}

fn secret_index(body: &Value) -> usize {
    body["spec"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .position(|o| o["kind"] == "Secret")
        .unwrap()
}

#[test]
fn the_attempts_checkpoint_credentials_are_accepted_into_the_tenant_namespace() {
    let (body, objects) = with_credentials();
    let got = accept(&parse(body)).unwrap();
    let secret = got.credentials.expect("the copy");
    let want = objects.credentials.unwrap();
    assert_eq!(secret.data, want.data);
    assert_eq!(secret.metadata.namespace, objects.namespace.metadata.name);
    assert_eq!(secret.metadata.name.as_deref(), Some(MEMBER_SECRET));
}

#[test]
fn no_other_secret_is_accepted() {
    let (mut body, _) = with_credentials();
    let i = secret_index(&body);
    body["spec"]["objects"][i]["metadata"]["name"] = "default-token".into();
    let err = accept(&parse(body)).unwrap_err();
    assert!(
        err.starts_with(&format!("spec.objects[{i}].metadata.name")),
        "{err}"
    );

    let (mut body, _) = with_credentials();
    let i = secret_index(&body);
    body["spec"]["objects"][i]["type"] = "kubernetes.io/service-account-token".into();
    let err = accept(&parse(body)).unwrap_err();
    assert!(err.starts_with(&format!("spec.objects[{i}].type")), "{err}");

    let (mut body, _) = with_credentials();
    let i = secret_index(&body);
    body["spec"]["objects"][i]["metadata"]["labels"]["gpufed.io/attempt"] = "1".into();
    let err = accept(&parse(body)).unwrap_err();
    assert!(err.contains("attempt 2"), "{err}");

    let (mut body, _) = with_credentials();
    let i = secret_index(&body);
    body["spec"]["objects"][i]["metadata"]["namespace"] = "kube-system".into();
    assert!(accept(&parse(body)).unwrap_err().contains("kube-system"));
}

#[test]
fn no_credentials_key_chooses_the_gpus() {
    for field in ["data", "stringData"] {
        let (mut body, _) = with_credentials();
        let i = secret_index(&body);
        // "all" in base64 for `data`; `stringData` is plain.
        let value = if field == "data" { "YWxs" } else { "all" };
        body["spec"]["objects"][i][field]["NVIDIA_VISIBLE_DEVICES"] = value.into();
        let err = accept(&parse(body)).unwrap_err();
        assert!(
            err.starts_with(&format!("spec.objects[{i}].{field}.NVIDIA_VISIBLE_DEVICES")),
            "{err}"
        );
    }
}
