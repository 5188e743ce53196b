//! Readiness of the pods the **simulated** kubelet runs, as kubelet reports it.
//!
//! - A container without a `readinessProbe` is ready as soon as it runs.
//! - A container with one starts not ready; its simulated probe first succeeds
//!   `initialDelaySeconds` (default 0) plus one `periodSeconds` (default 10) after the container
//!   started, with that period capped at [`PERIOD_CAP`] so that tests stay fast (kubelet's
//!   first probe comes within one period after the initial delay).
//! - The annotation [`READY_ANNOTATION`]`: "false"` makes the probe fail: every container of
//!   the pod is not ready (containers without a probe too, so the switch works on any pod)
//!   until the annotation is `"true"` or removed (any other value counts as `"true"`).
//!
//! A pod that is not ready has `Ready` and `ContainersReady` False with reason
//! `ContainersNotReady` and message `containers with unready status: [a b]`, as kubelet
//! writes them. [`evaluate`] and [`status_patch`] are pure; the pod loop applies the patch
//! and looks again after [`Readiness::recheck_in`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// Annotation: `"false"` → the pod's (simulated) readiness probe fails and its containers are
/// not ready; `"true"` or no annotation → the probe succeeds. Works across processes while
/// the pod runs, e.g. `kubectl annotate pod NAME gpufed.io/sim-ready=false --overwrite`.
pub const READY_ANNOTATION: &str = "gpufed.io/sim-ready";

/// Longest simulated wait for a probe's first success after its `initialDelaySeconds`
/// (kubelet waits up to one `periodSeconds`, 10 s by default; tests should not).
pub const PERIOD_CAP: Duration = Duration::from_secs(2);

const DEFAULT_PERIOD_SECONDS: i32 = 10;

/// Readiness of a running pod at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// Containers that are not ready, in spec order.
    pub unready: Vec<String>,
    /// When to evaluate again: the earliest moment a container's simulated probe first
    /// succeeds (`None` when time alone changes nothing).
    pub recheck_in: Option<Duration>,
}

impl Readiness {
    /// Whether every container is ready.
    pub fn ready(&self) -> bool {
        self.unready.is_empty()
    }

    fn message(&self) -> Option<String> {
        (!self.ready()).then(|| format!("containers with unready status: [{}]", self.unready.join(" ")))
    }
}

/// Whether [`READY_ANNOTATION`] makes the probes fail.
fn probe_fails(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(READY_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// The pure decision: readiness of the containers of `spec`, running since `since`, at `now`.
pub(crate) fn decide(
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    since: Timestamp,
    now: Timestamp,
) -> Readiness {
    let fails = probe_fails(annotations);
    let elapsed_ms = now.as_millisecond().saturating_sub(since.as_millisecond());
    let mut unready = Vec::new();
    let mut recheck_ms: Option<i64> = None;
    for c in &spec.containers {
        let wait_ms = c.readiness_probe.as_ref().map(|p| {
            let delay = i64::from(p.initial_delay_seconds.unwrap_or(0).max(0));
            let period = i64::from(p.period_seconds.unwrap_or(DEFAULT_PERIOD_SECONDS).max(1));
            let cap = i64::try_from(PERIOD_CAP.as_secs()).unwrap_or(i64::MAX);
            (delay + period.min(cap)) * 1000
        });
        let pending = wait_ms.filter(|w| elapsed_ms < *w);
        if fails || pending.is_some() {
            unready.push(c.name.clone());
        }
        if let (false, Some(w)) = (fails, pending) {
            let left = w - elapsed_ms;
            recheck_ms = Some(recheck_ms.map_or(left, |r| r.min(left)));
        }
    }
    Readiness {
        unready,
        recheck_in: recheck_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    }
}

/// [`decide`] for a pod: running since its `status.startTime` (or `now` before it has one).
pub(crate) fn evaluate(pod: &Pod, now: Timestamp) -> Readiness {
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(now, |t| t.0);
    let spec = pod.spec.clone().unwrap_or_default();
    decide(&spec, pod.metadata.annotations.as_ref(), since, now)
}

/// The `ContainersReady` and `Ready` conditions for `r`, with `lastTransitionTime` `since`.
fn ready_condition(type_: &str, r: &Readiness, since: &Time) -> Value {
    let mut c = json!({
        "type": type_,
        "status": if r.ready() { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": since,
    });
    if let Some(message) = r.message() {
        c["reason"] = json!("ContainersNotReady");
        c["message"] = json!(message);
    }
    c
}

/// `ContainersReady` and `Ready` of a pod that just started running.
pub(crate) fn initial_conditions(r: &Readiness, now: &Time) -> [Value; 2] {
    [
        ready_condition("ContainersReady", r, now),
        ready_condition("Ready", r, now),
    ]
}

/// The status patch that brings `pod` to readiness `r`, or `None` when it already reports
/// it. `lastTransitionTime` becomes `now` only for a condition whose status changes. The
/// patch carries the pod's `resourceVersion`, so it fails (409) instead of overwriting a
/// newer status (e.g. a pod that finished meanwhile).
pub(crate) fn status_patch(pod: &Pod, r: &Readiness, now: &Time) -> Option<Value> {
    let status = pod.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.clone()).unwrap_or_default();
    let statuses = status
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let want_status = if r.ready() { "True" } else { "False" };
    let message = r.message();
    let condition_ok = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == want_status && c.message == message)
    };
    let containers_ok = statuses.iter().all(|s| s.ready != r.unready.contains(&s.name));
    if condition_ok("ContainersReady") && condition_ok("Ready") && containers_ok {
        return None;
    }
    let mut new_conditions: Vec<Value> = Vec::new();
    for type_ in ["ContainersReady", "Ready"] {
        let since = conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == want_status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        new_conditions.push(ready_condition(type_, r, &since));
    }
    let mut all: Vec<Value> = conditions
        .iter()
        .filter(|c| c.type_ != "ContainersReady" && c.type_ != "Ready")
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    all.extend(new_conditions);
    let container_statuses: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["ready"] = json!(!r.unready.contains(&s.name));
            v
        })
        .collect();
    Some(json!({
        "metadata": { "resourceVersion": pod.metadata.resource_version },
        "status": { "conditions": all, "containerStatuses": container_statuses },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(probe: Option<Value>, ready_annotation: Option<&str>) -> Pod {
        let mut container = json!({ "name": "server", "image": "example.invalid/serve:1" });
        if let Some(p) = probe {
            container["readinessProbe"] = p;
        }
        let annotations: BTreeMap<String, String> = ready_annotation
            .map(|v| (READY_ANNOTATION.to_owned(), v.to_owned()))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "ns", "resourceVersion": "7", "annotations": annotations },
            "spec": { "containers": [container, { "name": "sidecar", "image": "example.invalid/side:1" }] },
        }))
        .expect("pod")
    }

    fn probe(delay: i32) -> Option<Value> {
        Some(json!({ "tcpSocket": { "port": 8080 }, "initialDelaySeconds": delay }))
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("timestamp")
    }

    fn at(p: &Pod, secs: i64) -> Readiness {
        decide(
            p.spec.as_ref().expect("spec"),
            p.metadata.annotations.as_ref(),
            t(0),
            t(secs),
        )
    }

    /// A pod that reports readiness `r` (as [`initial_conditions`] plus container statuses).
    fn reporting(mut p: Pod, r: &Readiness) -> Pod {
        let when = Time(t(0));
        let statuses: Vec<Value> = ["server", "sidecar"]
            .iter()
            .map(|n| {
                json!({ "name": n, "image": "i", "imageID": "", "restartCount": 0,
                             "ready": !r.unready.iter().any(|u| u == n) })
            })
            .collect();
        p.status = Some(
            serde_json::from_value(json!({
                "phase": "Running",
                "startTime": when,
                "conditions": initial_conditions(r, &when),
                "containerStatuses": statuses,
            }))
            .expect("status"),
        );
        p
    }

    #[test]
    fn no_probe_is_ready_at_once() {
        let r = at(&pod(None, None), 0);
        assert!(r.ready());
        assert_eq!(r.recheck_in, None);
    }

    #[test]
    fn probe_waits_for_initial_delay_plus_capped_period() {
        let p = pod(probe(5), None);
        let early = at(&p, 3);
        assert_eq!(early.unready, vec!["server".to_owned()]);
        assert_eq!(early.recheck_in, Some(Duration::from_secs(5 + 2 - 3)));
        assert_eq!(
            early.message().as_deref(),
            Some("containers with unready status: [server]")
        );
        let later = at(&p, 8);
        assert!(later.ready(), "{later:?}");
        assert_eq!(later.recheck_in, None);
    }

    #[test]
    fn short_period_is_not_stretched_to_the_cap() {
        let p = pod(
            Some(json!({ "exec": { "command": ["true"] }, "periodSeconds": 1 })),
            None,
        );
        assert!(!at(&p, 0).ready());
        assert!(at(&p, 1).ready());
    }

    #[test]
    fn annotation_false_fails_every_container_until_true() {
        let r = at(&pod(probe(0), Some("false")), 60);
        assert_eq!(r.unready, vec!["server".to_owned(), "sidecar".to_owned()]);
        assert_eq!(r.recheck_in, None, "only the annotation can change this");
        assert_eq!(at(&pod(None, Some("False")), 60).unready.len(), 2);
        assert!(at(&pod(probe(0), Some("true")), 60).ready());
        assert!(
            !at(&pod(probe(5), Some("true")), 1).ready(),
            "true does not skip the delay"
        );
    }

    #[test]
    fn ready_to_not_ready_patches_and_keeps_unchanged_state_alone() {
        let p = pod(probe(0), None);
        let ready = at(&p, 60);
        let running = reporting(p.clone(), &ready);
        let now = Time(t(60));
        assert_eq!(status_patch(&running, &ready, &now), None, "nothing changed");

        let failing = at(&pod(probe(0), Some("false")), 60);
        let patch = status_patch(&running, &failing, &now).expect("a transition patches");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let conditions = patch["status"]["conditions"].as_array().expect("conditions");
        let ready_c = conditions.iter().find(|c| c["type"] == "Ready").expect("Ready");
        assert_eq!(ready_c["status"], "False");
        assert_eq!(ready_c["reason"], "ContainersNotReady");
        assert_eq!(
            ready_c["message"],
            "containers with unready status: [server sidecar]"
        );
        assert_eq!(ready_c["lastTransitionTime"], json!(now));
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == "ContainersReady" && c["status"] == "False")
        );
        let statuses = patch["status"]["containerStatuses"].as_array().expect("statuses");
        assert!(statuses.iter().all(|s| s["ready"] == false));
    }

    #[test]
    fn message_change_keeps_the_transition_time() {
        let p = pod(probe(0), None);
        let one = Readiness {
            unready: vec!["server".into()],
            recheck_in: None,
        };
        let two = Readiness {
            unready: vec!["server".into(), "sidecar".into()],
            recheck_in: None,
        };
        let running = reporting(p, &one);
        let patch = status_patch(&running, &two, &Time(t(90))).expect("message changed");
        let ready_c = patch["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Ready").cloned())
            .expect("Ready");
        assert_eq!(ready_c["lastTransitionTime"], json!(Time(t(0))));
        assert_eq!(
            status_patch(&reporting(pod(None, None), &two), &two, &Time(t(90))),
            None
        );
    }

    #[test]
    fn evaluate_counts_from_the_pod_start_time() {
        let p = pod(probe(5), None);
        let r = at(&p, 0);
        let running = reporting(p, &r);
        assert!(!evaluate(&running, t(3)).ready());
        assert!(evaluate(&running, t(8)).ready());
    }
}
