use std::sync::Arc;

use super::*;
use crate::service::build;
use crate::service::plan::rollout_tests::serving;
use gpufed_api::job_status::Preemption;

fn service(replicas: u32, budget: Option<serde_json::Value>) -> ComputeService {
    let mut v = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm", "namespace": "team", "uid": "s1", "generation": 1},
        "spec": {"replicas": replicas, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                 "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm"}]}}}
    });
    if let Some(b) = budget {
        v["spec"]["disruptionBudget"] = b;
    }
    serde_json::from_value(v).expect("service")
}

fn replica(svc: &ComputeService, index: u32, ready: bool) -> ComputeJob {
    let spec = build::replica_spec(svc);
    serving(build::replica(svc, index, &spec, &build::revision(&spec)), ready)
}

fn alloc(job: &str) -> pl::RunningAllocation {
    pl::RunningAllocation {
        job: job.into(),
        namespace: "team".into(),
        priority: 0,
        start_time: 0,
        provider: "p".into(),
        gpus: Vec::new(),
        spread_group: None,
        evicting: false,
        budget: None,
        ..Default::default()
    }
}

#[test]
fn healthy_is_ready_and_not_already_leaving() {
    let svc = service(3, None);
    assert!(healthy(&replica(&svc, 0, true)));
    assert!(!healthy(&replica(&svc, 0, false)));
    let mut retiring = replica(&svc, 0, true);
    retiring.spec.suspend = true;
    assert!(!healthy(&retiring));
    let mut marked = replica(&svc, 0, true);
    if let Some(p) = marked.status.as_mut().and_then(|s| s.placement.as_mut()) {
        p.preempted = Some(Preemption {
            by: "team/urgent".into(),
            ..Default::default()
        });
    }
    assert!(!healthy(&marked));
    let mut deleted = replica(&svc, 0, true);
    deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"),
    ));
    assert!(!healthy(&deleted));
}

#[test]
fn status_reads_like_a_pod_disruption_budgets() {
    let svc = service(3, Some(serde_json::json!({"maxUnavailable": 1})));
    let (a, b, c) = (
        replica(&svc, 0, true),
        replica(&svc, 1, true),
        replica(&svc, 2, true),
    );
    let st = status(&svc, &[&a, &b, &c]).expect("a budget");
    assert_eq!(
        (st.current_healthy, st.desired_healthy, st.disruptions_allowed),
        (3, 2, 1)
    );
    // One not ready: at the minimum, nothing more may go.
    let c = replica(&svc, 2, false);
    let st = status(&svc, &[&a, &b, &c]).expect("a budget");
    assert_eq!(
        (st.current_healthy, st.desired_healthy, st.disruptions_allowed),
        (2, 2, 0)
    );
    // Below it: still 0, never negative.
    let b = replica(&svc, 1, false);
    assert_eq!(
        status(&svc, &[&a, &b, &c]).map(|s| s.disruptions_allowed),
        Some(0)
    );
    // No budget, or one the API refuses: no status (the service says InvalidSpec).
    assert_eq!(status(&service(3, None), &[&a]), None);
    let both = service(
        3,
        Some(serde_json::json!({"minAvailable": 1, "maxUnavailable": 1})),
    );
    assert_eq!(status(&both, &[&a]), None);
}

#[test]
fn only_healthy_replicas_the_service_controls_count_toward_its_budget() {
    let svc = service(3, Some(serde_json::json!({"minAvailable": "50%"})));
    let ready = replica(&svc, 0, true);
    let unready = replica(&svc, 1, false);
    // Same name pattern and label, but another object's (a re-created service's) replica.
    let mut foreign = replica(&svc, 2, true);
    if let Some(o) = foreign.metadata.owner_references.as_mut() {
        o[0].uid = "old-uid".into();
    }
    let mut plain: ComputeJob = replica(&svc, 3, true);
    plain.metadata.labels = None;
    let jobs: Vec<Arc<ComputeJob>> = [ready, unready, foreign, plain]
        .into_iter()
        .map(Arc::new)
        .collect();
    let mut snap = pl::Snapshot {
        running: [
            "team/llm-0",
            "team/llm-1",
            "team/llm-2",
            "team/llm-3",
            "other/llm-0",
        ]
        .into_iter()
        .map(alloc)
        .collect(),
        ..pl::Snapshot::default()
    };
    let (budgets, replicas) = keys(&jobs, &[Arc::new(svc), Arc::new(service(2, None))]);
    assert_eq!(budgets, BTreeMap::from([("team/llm".to_owned(), 2)]));
    assert_eq!(
        replicas,
        BTreeMap::from([("team/llm-0".to_owned(), "team/llm".to_owned())])
    );
    apply(&mut snap, &budgets, &replicas);
    assert_eq!(
        snap.budgets, budgets,
        "its one healthy replica is in the snapshot"
    );
    let keyed: Vec<(&str, Option<&str>)> = snap
        .running
        .iter()
        .map(|a| (a.job.as_str(), a.budget.as_deref()))
        .collect();
    assert_eq!(
        keyed,
        [
            ("team/llm-0", Some("team/llm")),
            ("team/llm-1", None),
            ("team/llm-2", None),
            ("team/llm-3", None),
            ("other/llm-0", None),
        ]
    );
}

#[test]
fn healthy_replicas_outside_the_snapshot_lower_the_engines_minimum() {
    // llm-0 and llm-1 serve, llm-1 on a provider placement leaves out (draining): the
    // engine sees only llm-0 but may take it, since llm-1 keeps the minimum of 1.
    let svc = service(2, Some(serde_json::json!({"maxUnavailable": 1})));
    let jobs: Vec<Arc<ComputeJob>> = [replica(&svc, 0, true), replica(&svc, 1, true)]
        .into_iter()
        .map(Arc::new)
        .collect();
    let (budgets, replicas) = keys(&jobs, &[Arc::new(svc)]);
    let mut snap = pl::Snapshot {
        running: vec![alloc("team/llm-0")],
        ..pl::Snapshot::default()
    };
    apply(&mut snap, &budgets, &replicas);
    assert_eq!(budgets["team/llm"], 1);
    assert_eq!(snap.budgets["team/llm"], 0);
    assert_eq!(snap.running[0].budget.as_deref(), Some("team/llm"));
}
