use serde_json::{Value, json};

use super::*;

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2027-01-15T08:00:00Z", "observedGeneration": 3})
}

/// A service of 2 replicas at generation 3 with `status`.
fn service(status: Value) -> ComputeService {
    serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm", "namespace": "team", "generation": 3},
        "spec": {"replicas": 2, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                 "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm:2"}]}}},
        "status": status
    }))
    .expect("service")
}

fn waiting(s: &State) -> &str {
    match s {
        State::Waiting(m) => m.split_once("to finish: ").map_or(m.as_str(), |(_, w)| w),
        other => panic!("not waiting: {other:?}"),
    }
}

#[test]
fn a_rollout_is_followed_step_by_step_as_kubectl_follows_a_deployment() {
    let mut svc = service(Value::Null);
    svc.status = None;
    assert_eq!(
        waiting(&state(&svc)),
        "the operator has not written its status yet..."
    );
    let st = |observed: i64, replicas: u32, updated: u32, ready: u32, conds: Value| {
        service(json!({"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": updated, "readyReplicas": ready, "conditions": conds}))
    };
    let progressing = json!([cond("Ready", "False", "Progressing", "2 of 2 replicas ready")]);
    let s = state(&st(2, 2, 2, 2, json!([cond("Ready", "True", "Ready", "")])));
    assert_eq!(
        waiting(&s),
        "the operator has not observed generation 3 yet...",
        "a Ready of the last generation is not this one's"
    );
    let s = state(&st(3, 3, 1, 2, progressing.clone()));
    assert_eq!(waiting(&s), "1 out of 2 new replicas have been updated...");
    let s = state(&st(3, 3, 2, 3, progressing.clone()));
    assert_eq!(waiting(&s), "1 old replicas are pending termination...");
    let s = state(&st(3, 2, 2, 1, progressing));
    assert_eq!(waiting(&s), "1 of 2 updated replicas are ready...");
    let done = state(&st(3, 2, 2, 2, json!([cond("Ready", "True", "Ready", "")])));
    assert_eq!(
        done,
        State::Done("computeservice \"llm\" successfully rolled out".into())
    );
}

#[test]
fn a_stalled_service_is_stuck_with_the_operators_reason() {
    let svc = service(
        json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2,
        "conditions": [cond("Ready", "False", "ProgressDeadlineExceeded", "2 of 2 ready"),
                       cond("Stalled", "True", "ProgressDeadlineExceeded", "no progress within 600s")]}),
    );
    assert_eq!(
        state(&svc),
        State::Stuck {
            reason: "ProgressDeadlineExceeded".into(),
            message: "no progress within 600s".into()
        }
    );
    // A Stalled condition that is not True is no stall.
    let svc = service(
        json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
        "conditions": [cond("Ready", "True", "Ready", ""), cond("Stalled", "False", "Recovered", "")]}),
    );
    assert!(matches!(state(&svc), State::Done(_)));
}

#[test]
fn restart_sets_the_template_annotation() {
    let patch = restart_patch("2027-01-15T08:00:00Z");
    assert_eq!(
        patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
        "2027-01-15T08:00:00Z"
    );
    // The pod template's metadata, as the CRD types it.
    let meta: gpufed_api::job::TemplateMetadata =
        serde_json::from_value(patch["spec"]["template"]["metadata"].clone()).expect("template metadata");
    assert_eq!(meta.annotations[RESTARTED_AT], "2027-01-15T08:00:00Z");
}

#[test]
fn a_paused_rollout_waits_and_says_how_to_resume() {
    let svc = service(
        json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 0,
        "readyReplicas": 2, "conditions": [cond("Ready", "False", "Paused",
        "rollout paused (spec.paused): 2 of 2 replicas ready, 0 of 2 on the spec's template")]}),
    );
    assert_eq!(
        waiting(&state(&svc)),
        "the rollout is paused (spec.paused); `kubectl gpufed rollout resume llm` resumes it..."
    );
    assert_eq!(pause_patch(true), json!({"spec": {"paused": true}}));
    assert_eq!(pause_patch(false), json!({"spec": {"paused": false}}));
}

#[test]
fn with_min_ready_seconds_it_waits_for_available_replicas() {
    let mut svc = service(
        json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": 2, "availableReplicas": 1,
        "conditions": [cond("Ready", "False", "Progressing", "2 of 2 replicas ready (1 available)")]}),
    );
    assert_eq!(waiting(&state(&svc)), "2 of 2 updated replicas are ready...");
    svc.spec.min_ready_seconds = 30;
    assert_eq!(waiting(&state(&svc)), "1 of 2 updated replicas are available...");
}
