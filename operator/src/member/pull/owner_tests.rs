use std::sync::{Arc, Mutex};

use super::*;

fn s(v: &str) -> String {
    v.to_owned()
}
use crate::member::pull::{AgentPace, HubHealth};

const AGENT_NS: &str = "gpufed-agent-p";
const PATH: &str = "/apis/gpufed.io/v1alpha1/namespaces/gpufed-agent-p/assignments";

/// Attempt `attempt` of job `job_uid` in tenant namespace `gf-t`, the object `object_uid`.
fn stored(job_uid: &str, attempt: u32, object_uid: &str) -> Assignment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Assignment",
        "metadata": {"name": format!("gf-t-a{attempt}"), "namespace": AGENT_NS, "uid": object_uid,
                     "labels": {LABEL_TENANT_NAMESPACE: "gf-t", names::LABEL_JOB_UID: job_uid}},
        "spec": {"jobUid": job_uid, "attempt": attempt, "tenantNamespace": "gf-t", "namespace": {}},
    }))
    .unwrap()
}

/// A request the fake hub answered: method, path with query, body.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// The held Assignments a request's `labelSelector` (`k=v,…`; none: all) selects.
fn selected(held: &[Assignment], target: &str) -> Vec<Assignment> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let selector = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
        .unwrap_or_default()
        .replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",");
    let wanted: Vec<(&str, &str)> = selector.split(',').filter_map(|kv| kv.split_once('=')).collect();
    held.iter()
        .filter(|a| {
            wanted
                .iter()
                .all(|(k, v)| a.labels().get(*k).map(String::as_str) == Some(*v))
        })
        .cloned()
        .collect()
}

/// A hub API server holding `held` in the agent namespace: GET by name and list (by label
/// selector) answer from it, PATCH echoes the body, DELETE of one held or of the
/// collection succeeds. Every request is recorded, and each Assignment a DELETE removed
/// as `("DELETED", name, "")`.
async fn hub_holding(held: Vec<Assignment>) -> (PullLink, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let addr = crate::test_http::serve(move |method, target, body| {
        let path = target.split('?').next().unwrap_or_default();
        record
            .lock()
            .unwrap()
            .push((method.to_owned(), target.to_owned(), body.to_owned()));
        let by_name = path.strip_prefix(PATH).and_then(|p| p.strip_prefix('/'));
        let found = by_name.and_then(|n| held.iter().find(|a| a.name_any() == n));
        let chosen = match (method, by_name, found) {
            ("DELETE", None, _) => selected(&held, target),
            ("DELETE", Some(_), Some(a)) => vec![a.clone()],
            _ => Vec::new(),
        };
        for a in &chosen {
            record
                .lock()
                .unwrap()
                .push((s("DELETED"), a.name_any(), String::new()));
        }
        let (code, answer) = match (method, by_name, found) {
            ("GET" | "DELETE", None, _) => (
                200,
                serde_json::json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "AssignmentList",
                                   "metadata": {}, "items": selected(&held, target)}),
            ),
            ("GET", Some(_), Some(a)) => (200, serde_json::to_value(a).unwrap()),
            ("PATCH", Some(_), _) => (200, serde_json::from_str(body).unwrap()),
            ("DELETE", Some(_), Some(a)) => (200, serde_json::to_value(a).unwrap()),
            _ => (
                404,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "code": 404, "reason": "NotFound", "message": "not found"}),
            ),
        };
        (code, answer.to_string())
    })
    .await;
    let client = crate::test_http::client(addr);
    let pace = AgentPace {
        interval_seconds: 10,
        challenge_poll_millis: 0,
    };
    (PullLink::new(client, "p", HubHealth::new(0), pace), seen)
}

/// The requests of `method` the hub saw, as (path with query, body).
fn requests(seen: &Seen, method: &str) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m == method)
        .map(|(_, p, b)| (p.clone(), b.clone()))
        .collect()
}

/// Attempt `attempt` of job `uid` (`team/train`), as the job controller dispatches it.
fn objects(uid: &str, attempt: u32) -> crate::job::build::MemberObjects {
    let job: gpufed_api::ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": uid},
        "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "main", "image": "r/x:1"}]}}}
    }))
    .unwrap();
    let placement: gpufed_api::job_status::Placement = serde_json::from_value(serde_json::json!({
        "provider": "p", "attempt": attempt, "gpus": 1, "pricePerGpuHour": "0.50",
        "placedTime": "2026-12-01T00:00:00Z", "workers": [{"rank": 0, "node": "n1"}]
    }))
    .unwrap();
    crate::job::build::build(&job, &placement, "gpufed.io/gpu").unwrap()
}

#[test]
fn an_assignment_of_another_job_is_taken() {
    let a = stored("u-a", 1, "o-1");
    assert_eq!(taken_by(Some(&a), "u-b"), Some("u-a"));
    assert_eq!(taken_by(Some(&a), "u-a"), None, "the job's own is rewritten");
    assert_eq!(taken_by(None, "u-b"), None, "none yet: written");
    match taken_error("p", "gf-t-a1", "gf-t", "u-a") {
        Error::Forbidden { provider, message } => {
            assert_eq!(provider, "p");
            assert!(message.starts_with(TAKEN), "{message}");
            assert!(
                message.contains("gpufed.io/job-uid=u-a") && message.contains("gf-t"),
                "{message}"
            );
        }
        other => panic!("a taken Assignment is forbidden, not {other:?}"),
    }
    assert_eq!(
        own_selector("gf-t", "u-a"),
        "gpufed.io/tenant-namespace=gf-t,gpufed.io/job-uid=u-a",
        "only the job's own are withdrawn"
    );
    let listed = [stored("u-a", 1, "o-1"), stored("u-b", 2, "o-2")];
    assert_eq!(
        only(&listed[1]).preconditions.and_then(|p| p.uid).as_deref(),
        Some("o-2"),
        "deleted as read, not one made anew under its name"
    );
}

#[tokio::test]
async fn a_dispatch_never_overwrites_another_jobs_assignment() {
    let tenant = names::tenant_namespace("team", "train");
    let mut theirs = stored("u-victim", 1, "o-1");
    theirs.metadata.name = Some(pull::assignment_name(&tenant, 1));
    let (link, seen) = hub_holding(vec![theirs]).await;
    let link = crate::member::Link::Pull(link);
    match link.dispatch(&objects("u-attacker", 1)).await {
        Err(Error::Forbidden { message, .. }) => assert!(message.starts_with(TAKEN), "{message}"),
        other => panic!("the dispatch must be forbidden, got {other:?}"),
    }
    assert!(requests(&seen, "PATCH").is_empty(), "nothing written over it");
    // The job's own Assignment, and a new one, are written (again).
    link.dispatch(&objects("u-victim", 1)).await.unwrap();
    link.dispatch(&objects("u-attacker", 2)).await.unwrap();
    let patched: Vec<String> = requests(&seen, "PATCH").into_iter().map(|(p, _)| p).collect();
    assert_eq!(patched.len(), 2, "{patched:?}");
    assert!(
        patched[0].starts_with(&format!("{PATH}/{tenant}-a1?")),
        "{patched:?}"
    );
    assert!(
        patched[1].starts_with(&format!("{PATH}/{tenant}-a2?")),
        "{patched:?}"
    );
}

#[tokio::test]
async fn a_job_withdraws_only_its_own_assignments() {
    let held = vec![
        stored("u-a", 1, "o-1"),
        stored("u-b", 2, "o-2"),
        stored("u-a", 3, "o-3"),
    ];
    let (link, seen) = hub_holding(held).await;
    // As the job controller withdraws: through the member link.
    let link = crate::member::Link::Pull(link);
    link.remove_attempt("gf-t", "u-a", 1).await.unwrap();
    link.remove_attempt("gf-t", "u-a", 2).await.unwrap();
    link.remove_attempt("gf-t", "u-b", 1).await.unwrap();
    link.remove_attempt("gf-t", "u-b", 9).await.unwrap();
    let deleted: Vec<String> = requests(&seen, "DELETED").into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        deleted,
        ["gf-t-a1"],
        "fencing u-b never withdraws u-a's attempt, nor u-a u-b's"
    );
    let (_, options) = &requests(&seen, "DELETE")[0];
    let options: serde_json::Value = serde_json::from_str(options).unwrap();
    assert_eq!(options["preconditions"]["uid"], "o-1", "deleted as read");
    link.remove_own_namespace("gf-t", "u-a").await.unwrap();
    let deleted: Vec<String> = requests(&seen, "DELETED").into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        deleted,
        ["gf-t-a1", "gf-t-a1", "gf-t-a3"],
        "the deleted job's Assignments go, job u-b's stays"
    );
}
