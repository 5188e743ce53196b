use gpufed_api::assignment::{AssignedPod, AssignmentStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

use super::*;
use crate::job::plan::PodPhase;

#[test]
fn agent_config_round_trips_and_names_bad_keys() {
    let cfg = AgentConfig {
        resource_name: "gpufed.io/gpu".into(),
        node_selector: BTreeMap::from([("pool".into(), "a".into())]),
        interval_seconds: 7,
        challenge_poll_millis: 1000,
        exposed_node_labels: vec!["example.com/network".into()],
    };
    assert_eq!(AgentConfig::from_data(&cfg.to_data()), Ok(cfg.clone()));
    // An older hub's config has no exposed labels: none beyond the well-known.
    let mut old = cfg.to_data();
    old.remove("exposedNodeLabels");
    let read = AgentConfig::from_data(&old).expect("an older hub's config reads");
    assert!(read.exposed_node_labels.is_empty());
    // Nor a challenge poll: the agent reports only every interval, as before.
    let mut old = cfg.to_data();
    old.remove("challengePollMillis");
    assert_eq!(
        AgentConfig::from_data(&old).map(|c| c.challenge_poll_millis),
        Ok(0)
    );
    let mut data = cfg.to_data();
    data.insert("challengePollMillis".into(), "-1".into());
    assert!(
        AgentConfig::from_data(&data)
            .unwrap_err()
            .contains("challengePollMillis")
    );
    let mut data = cfg.to_data();
    data.insert("intervalSeconds".into(), "soon".into());
    assert!(
        AgentConfig::from_data(&data)
            .unwrap_err()
            .contains("intervalSeconds")
    );
    data.remove("nodeSelector");
    assert!(
        AgentConfig::from_data(&data)
            .unwrap_err()
            .contains("nodeSelector")
    );
}

#[test]
fn staleness_is_three_intervals_and_never_under_ten_seconds() {
    assert_eq!(stale_after(1), 10);
    assert_eq!(stale_after(10), 30);
    assert_eq!(stale_after(u64::MAX), i64::MAX);
    // An agent claiming a huge interval is judged by (six times) the hub's.
    assert_eq!(silent_after(u64::MAX, 10), 180);
    assert_eq!(silent_after(5, 10), 15);
    // One still on the interval of before a restart with a shorter one is not silent yet.
    assert_eq!(silent_after(60, 10), 180);
}

#[test]
fn only_an_outage_of_the_hub_forgives_silence() {
    let api = |code: u16| kube::Error::Api(kube::core::Status::failure("m", "r").with_code(code).boxed());
    for code in [500, 503, 429] {
        assert!(hub_outage(&api(code)), "{code}");
    }
    for code in [403, 404, 409, 413, 422] {
        assert!(!hub_outage(&api(code)), "{code}: the hub answered");
    }
}

fn stamped(manager: &str, secs: i64) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        time: Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())),
        ..Default::default()
    }
}

#[test]
fn the_report_time_is_the_api_servers_stamp_of_the_agents_write() {
    let mut cm = ConfigMap::default();
    assert_eq!(report_time(&cm), None);
    cm.metadata.managed_fields = Some(vec![
        stamped(crate::FIELD_MANAGER, 2_000),
        stamped(AGENT_FIELD_MANAGER, 1_000),
    ]);
    assert_eq!(
        report_time(&cm),
        Some(1_000),
        "the operator's own writes are no heartbeat"
    );
}

#[test]
fn hub_health_restarts_the_clock_only_after_an_outage() {
    let h = HubHealth::new(100);
    assert_eq!(h.record(true, 150), 100);
    h.record(false, 160);
    h.record(false, 170);
    assert_eq!(
        h.record(true, 200),
        200,
        "back after an outage: reports are judged from now"
    );
    assert_eq!(h.record(true, 260), 200);
}

#[test]
fn a_report_is_as_old_as_this_process_has_seen_its_version() {
    let h = HubHealth::new(0);
    assert_eq!(h.heard("p", "7", 100), 100, "first seen now");
    assert_eq!(h.heard("p", "7", 140), 100, "the same version ages");
    assert_eq!(h.heard("q", "7", 140), 140, "per provider");
    assert_eq!(h.heard("p", "9", 150), 150, "a new write is a heartbeat");
    h.forget("p");
    assert_eq!(h.heard("p", "9", 400), 400, "a forgotten provider starts again");
}

fn pod(name: &str, rank: u32, phase: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {names::LABEL_RANK: rank.to_string()}},
        "spec": {"containers": [], "nodeName": node},
        "status": {"phase": phase, "containerStatuses": (phase == "Running").then(|| serde_json::json!([
            {"name": "main", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}}]))},
    }))
    .unwrap()
}

#[test]
fn reported_pods_read_back_as_the_push_mode_view() {
    let ready = crate::job::observe::ReadyNodes::from([(
        "n1".to_owned(),
        crate::job::observe::ReadyNode {
            unreachable: false,
            external_ip: Some("203.0.113.7".to_owned()),
            allocations: gpufed_trust::allocations::Allocations::new(),
        },
    )]);
    let pods = [
        pod("w0", 0, "Running", Some("n1")),
        pod("w1", 1, "Running", Some("n2")),
        pod("w2", 2, "Pending", None),
    ];
    let reported: Vec<AssignedPod> = pods.iter().filter_map(|p| assigned_pod(p, &ready)).collect();
    assert_eq!(reported.len(), 3);
    let status = AssignmentStatus {
        pods: reported,
        ..Default::default()
    };
    let (views, lost) = pod_views(&status);
    let direct: Vec<PodView> = pods
        .iter()
        .filter_map(|p| crate::job::observe::pod_view(p, &ready))
        .collect();
    assert_eq!(views, direct);
    assert_eq!(lost, vec!["n2".to_owned()]);
    // A served port is reached at the node's ExternalIP when it has one.
    assert_eq!(views[0].host_ip.as_deref(), Some("203.0.113.7"));
    // Billing starts from the kubelet's start of the containers, whichever side reported it.
    assert_eq!(views[0].started, Some(1_796_119_200));
    assert_eq!(views[2].started, None);
}

/// What a pending worker waits for (its scheduler's reason first, else its kubelet's)
/// reads the same from the pod and from the agent's report, cut to the schema's bound.
#[test]
fn what_a_pending_worker_waits_for_reads_the_same_in_both_modes() {
    let ready = crate::job::observe::ReadyNodes::new();
    let with_status = |status: serde_json::Value| -> Pod {
        let mut p = pod("w", 0, "Pending", None);
        p.status = Some(serde_json::from_value(status).unwrap());
        p
    };
    let unscheduled = with_status(serde_json::json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available: 3 node(s) had taint {gpu: dedicated}."}]}));
    let pulling = with_status(serde_json::json!({"phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "x".repeat(900)}}}]}));
    let running = pod("r", 0, "Running", None);
    let views: Vec<Option<String>> = [&unscheduled, &pulling, &running]
        .into_iter()
        .map(|p| {
            let direct = crate::job::observe::pod_view(p, &ready).unwrap();
            let status = AssignmentStatus {
                pods: vec![assigned_pod(p, &ready).unwrap()],
                ..Default::default()
            };
            assert_eq!(pod_views(&status).0, vec![direct.clone()]);
            direct.waiting
        })
        .collect();
    assert_eq!(
        views[0].as_deref(),
        Some("Unschedulable: 0/3 nodes are available: 3 node(s) had taint {gpu: dedicated}.")
    );
    let pull = views[1].as_deref().unwrap();
    assert!(
        pull.starts_with("ImagePullBackOff: xxx") && pull.chars().count() == 320,
        "{pull}"
    );
    assert_eq!(views[2], None, "a running worker waits for nothing");
}

#[test]
fn an_assignment_carries_the_push_mode_objects() {
    let job: gpufed_api::ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": "u-1"},
        "spec": {"workers": 2, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "main", "image": "r/x:1"}]}}}
    }))
    .unwrap();
    let placement: gpufed_api::job_status::Placement = serde_json::from_value(serde_json::json!({
        "provider": "p", "attempt": 3, "gpus": 2, "pricePerGpuHour": "0.50", "placedTime": "2026-12-01T00:00:00Z",
        "workers": [{"rank": 0, "node": "n1"}, {"rank": 1, "node": "n2"}]
    }))
    .unwrap();
    let objects = crate::job::build::build(&job, &placement, "gpufed.io/gpu").unwrap();
    let body = assignment(&objects).unwrap();
    let tenant = names::tenant_namespace("team", "train");
    assert_eq!(body["metadata"]["name"], pull::assignment_name(&tenant, 3));
    assert_eq!(body["spec"]["attempt"], 3);
    assert_eq!(body["spec"]["jobUid"], "u-1");
    assert_eq!(body["spec"]["namespace"]["kind"], "Namespace");
    let kinds: Vec<&str> = body["spec"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["NetworkPolicy", "ResourceQuota", "Service"]);
    let pods: Vec<Pod> = serde_json::from_value(body["spec"]["pods"].clone()).unwrap();
    assert_eq!(pods, objects.pods);
    // It is a valid Assignment as the CRD types read it.
    let parsed: Assignment = serde_json::from_value(body).unwrap();
    assert_eq!(parsed.spec.tenant_namespace, tenant);
}

/// Attempt 2 of job `u-1`, in its generation `generation`, with the agent's `status`.
fn reported(generation: i64, status: serde_json::Value) -> Assignment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Assignment",
        "metadata": {"name": "gf-t-a2", "namespace": "gpufed-agent-p", "generation": generation},
        "spec": {"jobUid": "u-1", "attempt": 2, "tenantNamespace": "gf-t", "namespace": {}},
        "status": status,
    }))
    .unwrap()
}

fn applied(status: &str, reason: &str, message: &str, generation: Option<i64>) -> serde_json::Value {
    serde_json::json!({
        "type": "Applied", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": generation,
    })
}

fn one_pod() -> serde_json::Value {
    serde_json::json!([{"name": "train-a2-w0", "rank": 0, "phase": "Running", "nodeName": "n1", "nodeReady": true}])
}

#[test]
fn a_refusal_of_the_current_assignment_ends_the_attempt() {
    let refusal = "spec.pods[0]: violates the restricted pod-security profile: hostNetwork";
    let invalid = "Pod \"train-a2-w0\" is invalid: spec.containers[0].env[0].name: Invalid value: \"1X\"";
    for (reason, answer) in [("Refused", refusal), ("Rejected", invalid)] {
        let a = reported(
            3,
            serde_json::json!({"observedGeneration": 3, "conditions": [applied("False", reason, answer, Some(3))]}),
        );
        match read_assignment("p", Some(&a), "u-1", 2) {
            Err(Error::Rejected { provider, message }) => {
                assert_eq!(provider, "p");
                assert!(
                    message.contains(answer) && message.contains("gf-t-a2"),
                    "{reason}: {message}"
                );
            }
            other => panic!("{reason}: {other:?}"),
        }
    }
    // An older agent writes no observedGeneration on the condition: its status's counts.
    let a = reported(
        3,
        serde_json::json!({"observedGeneration": 3, "conditions": [applied("False", "Refused", refusal, None)]}),
    );
    assert!(matches!(
        read_assignment("p", Some(&a), "u-1", 2),
        Err(Error::Rejected { .. })
    ));
}

#[test]
fn a_forbidden_apply_is_reported_for_the_job_controller_to_end_in_time() {
    let answer = "secrets \"gpufed-checkpoint\" is forbidden: User \"system:serviceaccount:gpufed:agent\" cannot patch resource \"secrets\"";
    let a = reported(
        3,
        serde_json::json!({"observedGeneration": 3, "conditions": [applied("False", "Forbidden", answer, Some(3))]}),
    );
    match read_assignment("p", Some(&a), "u-1", 2) {
        Err(Error::Forbidden { provider, message }) => {
            assert_eq!(provider, "p");
            assert!(
                message.contains(answer) && message.contains("gf-t-a2"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The Assignment as an agent older than the `Forbidden` reason reported a 403 answering
/// `answer`: `ApplyFailed`, with kube's whole error as the message.
fn old_agents_403(answer: &str) -> Assignment {
    let error = kube::Error::Api(
        kube::core::Status::failure(answer, "Forbidden")
            .with_code(403)
            .boxed(),
    );
    reported(
        3,
        serde_json::json!({"observedGeneration": 3, "pods": one_pod(),
                           "conditions": [applied("False", "ApplyFailed", &error.to_string(), None)]}),
    )
}

/// Such a report is read as forbidden all the same, unless the 403 passes by itself.
#[test]
fn an_older_agents_forbidden_apply_failure_is_forbidden_too() {
    let answer = "secrets \"gpufed-checkpoint\" is forbidden: User \"system:serviceaccount:gpufed:agent\" cannot patch resource \"secrets\"";
    match read_assignment("p", Some(&old_agents_403(answer)), "u-1", 2) {
        Err(Error::Forbidden { message, .. }) => {
            assert!(message.ends_with(&format!("gf-t-a2): {answer}")), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A used-up quota passes by itself (the pods end): the agent retries, the pods are read.
    let quota = "pods \"w-0\" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=8";
    let (pods, _) = read_assignment("p", Some(&old_agents_403(quota)), "u-1", 2).expect("pods");
    assert_eq!(pods.len(), 1);
}

#[test]
fn failures_that_may_heal_and_unknown_reasons_are_read_by_the_pods() {
    for reason in ["ApplyFailed", "ObserveFailed", "SomethingANewerAgentSays"] {
        let a = reported(
            1,
            serde_json::json!({"observedGeneration": 1, "pods": one_pod(),
                               "conditions": [applied("False", reason, "try later", Some(1))]}),
        );
        let (pods, lost) = read_assignment("p", Some(&a), "u-1", 2).unwrap();
        assert_eq!(
            (pods.len(), pods[0].phase, lost.len()),
            (1, PodPhase::Running, 0),
            "{reason}"
        );
    }
    let a = reported(
        1,
        serde_json::json!({"observedGeneration": 1, "pods": one_pod(),
                           "conditions": [applied("True", "Applied", "1 pods in gf-t", Some(1))]}),
    );
    assert_eq!(read_assignment("p", Some(&a), "u-1", 2).unwrap().0.len(), 1);
}

#[test]
fn only_the_current_attempts_refusal_counts() {
    let refused = |generation: i64| {
        serde_json::json!({"observedGeneration": generation,
                           "conditions": [applied("False", "Refused", "spec.pods[0]: no", Some(generation))]})
    };
    // Refused in generation 1; the hub has written generation 2 since, not acted on yet:
    // the job waits as for a silent member, the old refusal is not this one's.
    let a = reported(2, refused(1));
    assert!(
        matches!(
            read_assignment("p", Some(&a), "u-1", 2),
            Err(Error::NotTakenUp { .. })
        ),
        "not acted on yet"
    );
    // A status that moved on while its condition did not (a condition of generation 1
    // under a status of generation 2) is not a refusal of generation 2.
    let mut stale = refused(2);
    stale["conditions"][0]["observedGeneration"] = 1.into();
    stale["pods"] = one_pod();
    let a = reported(2, stale);
    assert_eq!(read_assignment("p", Some(&a), "u-1", 2).unwrap().0.len(), 1);
    // An Assignment of the same name for another job (a namespace reused by a new job
    // of the same name) or attempt counts as none: the job controller rewrites it.
    let a = reported(1, refused(1));
    for (uid, attempt) in [("u-2", 2), ("u-1", 3)] {
        let (pods, lost) = read_assignment("p", Some(&a), uid, attempt).unwrap();
        assert!(pods.is_empty() && lost.is_empty(), "{uid} {attempt}");
    }
    let (pods, _) = read_assignment("p", None, "u-1", 2).unwrap();
    assert!(pods.is_empty(), "no Assignment: no pods");
    // Never written by an agent: not acted on.
    let a = reported(1, serde_json::Value::Null);
    assert!(matches!(
        read_assignment("p", Some(&a), "u-1", 2),
        Err(Error::NotTakenUp { .. })
    ));
}

/// Two jobs' names can give one tenant namespace, so one Assignment name: a serving
/// replica's endpoint is read from its own job's Assignment only, never the other's.
#[test]
fn only_the_jobs_own_assignment_gives_its_exposure() {
    let a = reported(
        1,
        serde_json::json!({"observedGeneration": 1, "exposure": {"type": "NodePort", "nodePort": 30080}}),
    );
    let own = exposure_of_own(Some(a.clone()), "u-1").unwrap();
    assert_eq!(own.node_port, Some(30080));
    assert!(exposure_of_own(Some(a), "u-other").is_none());
    assert!(exposure_of_own(None, "u-1").is_none());
}
