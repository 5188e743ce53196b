use super::*;
use gpufed_api::job_status::WorkerPlacement;

fn job(template: serde_json::Value) -> ComputeJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": "u1"},
        "spec": {"workers": 2, "gpusPerWorker": 4, "maxPricePerGpuHour": "2",
                 "checkpoint": {"uri": "s3://b/run/"},
                 "template": template}
    }))
    .expect("job")
}

fn placement() -> Placement {
    Placement {
        attempt: 3,
        provider: "a".into(),
        gpus: 8,
        price_per_gpu_hour: "2".into(),
        workers: vec![
            WorkerPlacement {
                rank: 0,
                node: "n1".into(),
                gpu_uuids: vec![],
            },
            WorkerPlacement {
                rank: 1,
                node: "n2".into(),
                gpu_uuids: vec![],
            },
        ],
        placed_time: "2026-11-25T12:00:00Z".into(),
        running_time: None,
        node_unreachable_since: None,
        preempted: None,
    }
}

fn env(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

#[test]
fn worker_pods_carry_gpus_pinning_gang_env_and_restricted_security() {
    let j = job(serde_json::json!({
        "metadata": {"annotations": {"gpufed.io/sim-run-seconds": "5"}},
        "spec": {"containers": [{"name": "main", "image": "trainer"}, {"name": "sidecar", "image": "log"}]}
    }));
    let objs = build(&j, &placement(), "gpufed.io/gpu").expect("builds");
    let ns = objs.namespace.metadata.name.clone().expect("ns name");
    assert_eq!(objs.pods.len(), 2);
    let pod = &objs.pods[1];
    assert_eq!(pod.metadata.name.as_deref(), Some("train-a3-w1"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some(ns.as_str()));
    let spec = pod.spec.as_ref().expect("spec");
    let limits = spec.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    assert_eq!(limits.get("gpufed.io/gpu").map(|q| q.0.as_str()), Some("4"));
    assert!(
        spec.containers[1].resources.is_none(),
        "only the first container holds GPUs"
    );
    let terms = &spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.clone())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution)
        .expect("affinity")
        .node_selector_terms;
    assert_eq!(
        terms[0].match_expressions.as_ref().expect("expr")[0].values,
        Some(vec!["n2".to_owned()])
    );
    assert_eq!(env(pod, "GPUFED_RANK").as_deref(), Some("1"));
    assert_eq!(env(pod, "GPUFED_WORLD_SIZE").as_deref(), Some("2"));
    assert_eq!(env(pod, "GPUFED_ATTEMPT").as_deref(), Some("3"));
    assert_eq!(env(pod, "GPUFED_CHECKPOINT_URI").as_deref(), Some("s3://b/run/"));
    assert_eq!(
        env(pod, "GPUFED_CHECKPOINT_DIR").as_deref(),
        Some("s3://b/run/attempt-3/")
    );
    assert_eq!(
        env(pod, "GPUFED_CHECKPOINT_RESUME_DIR"),
        None,
        "no earlier attempt ran"
    );
    assert_eq!(env(pod, "GPUFED_MASTER_ADDR"), Some(format!("w0.gang.{ns}.svc")));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        spec.security_context.as_ref().and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let sc = spec.containers[0]
        .security_context
        .as_ref()
        .expect("container sc");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("gpufed.io/sim-run-seconds"))
            .map(String::as_str),
        Some("5")
    );
    let labels = pod.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels.get(names::LABEL_ATTEMPT).map(String::as_str), Some("3"));
    let ns_labels = objs.namespace.metadata.labels.as_ref().expect("ns labels");
    assert_eq!(
        ns_labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let hard = objs
        .quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .expect("quota");
    assert_eq!(
        hard.get("requests.gpufed.io/gpu").map(|q| q.0.as_str()),
        Some("8")
    );
}

#[test]
fn building_twice_gives_identical_objects() {
    let j = job(serde_json::json!({"spec": {"containers": [{"name": "main", "image": "x"}]}}));
    let a = build(&j, &placement(), "gpufed.io/gpu").expect("a");
    let b = build(&j, &placement(), "gpufed.io/gpu").expect("b");
    assert_eq!(a.pods, b.pods);
    assert_eq!(a.namespace, b.namespace);
}

#[test]
fn an_invalid_template_is_an_error_naming_the_field() {
    let j =
        job(serde_json::json!({"spec": {"containers": [{"name": "main", "image": "x", "ports": "eighty"}]}}));
    let err = build(&j, &placement(), "gpufed.io/gpu").expect_err("refused");
    assert!(err.starts_with("spec.template.spec"), "{err}");
    // A node named by the tenant would bypass placement.
    let j =
        job(serde_json::json!({"spec": {"containers": [{"name": "main", "image": "x"}], "nodeName": "n1"}}));
    assert_eq!(
        template_error(&j.spec).as_deref(),
        Some("spec.template.spec.nodeName: not supported: gpufed chooses the node")
    );
}

#[test]
fn only_a_gang_gets_a_rendezvous_service() {
    let template = serde_json::json!({"spec": {"containers": [{"name": "main", "image": "x"}]}});
    let gang = build(&job(template.clone()), &placement(), "gpufed.io/gpu").expect("gang");
    let svc = gang.service.as_ref().expect("a gang has its headless Service");
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    assert_eq!(
        gang.pods[0].spec.as_ref().and_then(|s| s.subdomain.as_deref()),
        Some(names::GANG_SERVICE)
    );

    let mut single = job(template);
    single.spec.workers = 1;
    let mut p = placement();
    p.workers.truncate(1);
    p.gpus = 4;
    let objs = build(&single, &p, "gpufed.io/gpu").expect("single");
    assert!(objs.service.is_none(), "one worker needs no rendezvous Service");
    let pod = &objs.pods[0];
    assert_eq!(pod.spec.as_ref().and_then(|s| s.subdomain.clone()), None);
    assert_eq!(env(pod, "GPUFED_MASTER_ADDR").as_deref(), Some("localhost"));
    assert_eq!(env(pod, "GPUFED_WORLD_SIZE").as_deref(), Some("1"));
}

#[test]
fn a_long_dotted_job_name_builds_objects_a_member_accepts() {
    let spoofed = serde_json::json!({
        "metadata": {"annotations": {names::ANNOTATION_JOB_NAME: "spoofed"}},
        "spec": {"containers": [{"name": "main", "image": "x"}]}
    });
    let err =
        build(&job(spoofed), &placement(), "gpufed.io/gpu").expect_err("the template cannot rename the job");
    assert!(
        err.starts_with("spec.template.metadata.annotations.gpufed.io/job-name: "),
        "{err}"
    );
    let mut j = job(serde_json::json!({"spec": {"containers": [{"name": "main", "image": "x"}]}}));
    let name = format!("{}.{}", "a".repeat(200), "b".repeat(52));
    j.metadata.name = Some(name.clone());
    let objs = build(&j, &placement(), "gpufed.io/gpu").expect("builds");
    let ns = objs.namespace.metadata.name.clone().expect("ns name");
    assert!(ns.len() <= 63 && !ns.contains('.'), "{ns}");
    let pod = &objs.pods[0];
    for meta in [&objs.namespace.metadata, &pod.metadata, &objs.quota.metadata] {
        let labels = meta.labels.as_ref().expect("labels");
        assert!(labels.values().all(|v| names::is_label_value(v)), "{labels:?}");
    }
    assert_eq!(
        names::hub_job_name(pod),
        Some(name.as_str()),
        "the annotation names the job in full"
    );
    assert_eq!(names::hub_job_name(&objs.namespace), Some(name.as_str()));

    // A short name keeps its objects as they were: the label is the name, no annotation.
    let plain = build(
        &job(serde_json::json!({"spec": {"containers": [{"name": "main", "image": "x"}]}})),
        &placement(),
        "gpufed.io/gpu",
    )
    .expect("plain");
    assert_eq!(plain.pods[0].metadata.annotations, None);
    assert_eq!(plain.namespace.metadata.annotations, None);
    assert_eq!(names::hub_job_name(&plain.pods[0]), Some("train"));
}

#[test]
fn every_container_of_a_failover_attempt_resumes_from_the_last_attempt_that_ran() {
    let mut j = job(serde_json::json!({
        "spec": {"containers": [{"name": "main", "image": "trainer"}, {"name": "sidecar", "image": "log"}]}
    }));
    j.status = Some(
        serde_json::from_value(serde_json::json!({"attempts": [
            {"attempt": 1, "provider": "a", "outcome": "ProviderLost", "message": "", "gpuSeconds": 80,
             "runningTime": "2026-11-25T11:00:00Z", "pricePerGpuHour": "2", "endTime": "2026-11-25T11:10:00Z"},
            {"attempt": 2, "provider": "b", "outcome": "Failed", "message": "", "gpuSeconds": 0,
             "pricePerGpuHour": "2", "endTime": "2026-11-25T11:20:00Z"}
        ]}))
        .expect("status"),
    );
    let objs = build(&j, &placement(), "gpufed.io/gpu").expect("builds");
    for pod in &objs.pods {
        for c in &pod.spec.as_ref().expect("spec").containers {
            let var = |n: &str| {
                c.env
                    .iter()
                    .flatten()
                    .find(|e| e.name == n)
                    .and_then(|e| e.value.clone())
            };
            assert_eq!(
                var("GPUFED_CHECKPOINT_DIR").as_deref(),
                Some("s3://b/run/attempt-3/")
            );
            assert_eq!(
                var("GPUFED_CHECKPOINT_RESUME_DIR").as_deref(),
                Some("s3://b/run/attempt-1/")
            );
            let list: serde_json::Value =
                serde_json::from_str(&var("GPUFED_CHECKPOINT_RESUME").expect("resume list")).expect("json");
            assert_eq!(
                list,
                serde_json::json!([{"attempt": 1, "dir": "s3://b/run/attempt-1/", "endedAt": "2026-11-25T11:10:00Z"}])
            );
        }
    }
}

#[test]
fn workers_tolerate_the_providers_taints_after_their_templates_own() {
    let j = job(serde_json::json!({
        "spec": {"containers": [{"name": "main", "image": "trainer"}],
                 "tolerations": [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]}
    }));
    let mut objs = build(&j, &placement(), "gpufed.io/gpu").expect("builds");
    let spec: gpufed_api::GpuProviderSpec = serde_json::from_value(serde_json::json!({
        "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP", "region": "eu", "mode": "Pull",
        "prices": [{"model": "H100", "pricePerGpuHour": "2"}],
        "workerTolerations": [{"key": "dedicated", "value": "gpufed", "effect": "NoSchedule"},
                              {"key": "team", "value": "ml", "effect": "NoSchedule"}]
    }))
    .expect("spec");
    tolerate(&mut objs, &spec.effective_tolerations());
    // Twice: a retried dispatch adds nothing.
    tolerate(&mut objs, &spec.effective_tolerations());
    for pod in &objs.pods {
        let keys: Vec<(Option<&str>, Option<&str>)> = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .expect("tolerations")
            .iter()
            .map(|t| (t.key.as_deref(), t.operator.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                (Some("team"), Some("Equal")),
                (Some("dedicated"), Some("Equal")),
                (Some("gpufed.io/gpu"), Some("Exists")),
                (Some("node.kubernetes.io/not-ready"), Some("Exists")),
                (Some("node.kubernetes.io/unreachable"), Some("Exists")),
            ],
            "{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
    }
}

#[test]
fn placement_counts_the_cpu_memory_and_devices_of_the_worker_pod_as_built() {
    // Requests in the worker, a limit-only sidecar, an init container, a native sidecar
    // and overhead: what the hub counts per worker is what the member's scheduler counts
    // for the pod `build` makes.
    let j = job(serde_json::json!({"spec": {
        "containers": [
            {"name": "main", "image": "trainer", "resources": {"requests": {"cpu": "12", "memory": "64Gi"}}},
            {"name": "log", "image": "log", "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}],
        "initContainers": [
            {"name": "fetch", "image": "f", "resources": {"requests": {"cpu": "16", "memory": "1Gi"}, "limits": {"rdma/ib": "2"}}},
            {"name": "proxy", "image": "p", "restartPolicy": "Always",
             "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}}],
        "overhead": {"cpu": "100m", "memory": "32Mi"}}}));
    let objs = build(&j, &placement(), "gpufed.io/gpu").expect("builds");
    let want = crate::mapping::resources::Ask::of(&j.spec);
    for pod in &objs.pods {
        let spec = pod.spec.as_ref().expect("spec");
        let built = crate::fleet::requests::pod_requests(spec).rounded_up().request();
        assert_eq!(built, want.resources, "{:?}", pod.metadata.name);
        assert_eq!(
            crate::fleet::extended::pod_requests(spec, "gpufed.io/gpu"),
            want.extended,
            "{:?}",
            pod.metadata.name
        );
    }
    // max(12 + 0.5 + 0.25, 16) + 0.1 CPU; 64 GiB + 256 + 128 + 32 MiB; 2 RDMA devices
    // (the init container's peak, beside the sidecar's none).
    assert_eq!(
        want.resources,
        crate::fleet::CpuMemory {
            cpu_millis: 16_100,
            memory_mib: 64 * 1024 + 416,
            ephemeral_mib: None,
        }
        .request()
    );
    assert_eq!(want.extended, [("rdma/ib".to_owned(), 2)].into());
}

#[test]
fn init_containers_are_hardened_as_the_workers_are() {
    let j = job(serde_json::json!({
        "spec": {"initContainers": [{"name": "fetch", "image": "x"}],
                 "containers": [{"name": "main", "image": "trainer"}]}
    }));
    let objs = build(&j, &placement(), "gpufed.io/gpu").expect("builds");
    let init = &objs.pods[0]
        .spec
        .as_ref()
        .expect("spec")
        .init_containers
        .as_ref()
        .expect("init")[0];
    let sc = init.security_context.as_ref().expect("init sc");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
}

#[test]
fn a_template_choosing_its_own_gpus_cannot_be_built() {
    let j = job(serde_json::json!({
        "spec": {"containers": [{"name": "main", "image": "trainer",
                                 "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]}
    }));
    let e = template_error(&j.spec).expect("refused");
    assert!(
        e.starts_with("spec.template.spec.containers[0].env[0].name"),
        "{e}"
    );
    assert!(build(&j, &placement(), "gpufed.io/gpu").is_err());
}
