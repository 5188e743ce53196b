//! `rollout status` and `rollout restart` in `tests/cli.rs`, on a ComputeService whose
//! status the test writes as the operator would: every state line, the end of a watched
//! rollout, a stuck one (exit 1 with the operator's reason), `--timeout`, and the errors.
#![allow(clippy::unwrap_used, dead_code)]

use std::process::Stdio;
use std::time::Duration;

use gpufed_api::ComputeService;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Hub, command, cond, fails, ok, text};

fn services(hub: &Hub) -> Api<ComputeService> {
    Api::namespaced(hub.client.clone(), &hub.ns)
}

/// Writes the service's status as the operator does.
async fn set_status(hub: &Hub, observed: i64, counts: (u32, u32, u32), conditions: Value) {
    let (replicas, updated, ready) = counts;
    let status = json!({"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                        "readyReplicas": ready, "replicaStatus": [], "conditions": conditions});
    services(hub)
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

pub async fn rollout_status_and_restart(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    let svc: ComputeService = serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00", "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm:1"}]}}}
    }))
    .unwrap();
    services(hub).create(&PostParams::default(), &svc).await.unwrap();
    let once = ["rollout", "status", "web", "-n", ns, "--watch=false"];
    let out = ok(k, &once).await;
    assert_eq!(
        out,
        "Waiting for computeservice \"web\" rollout to finish: the operator has not written its status yet...\n"
    );

    // restart: the template annotation, a new generation (a new revision to roll).
    let out = ok(k, &["rollout", "restart", "web", "-n", ns]).await;
    assert_eq!(out, "computeservice.gpufed.io/web restarted\n");
    let restarted = services(hub).get("web").await.unwrap();
    assert_eq!(restarted.metadata.generation, Some(2));
    let meta = restarted
        .spec
        .template
        .metadata
        .clone()
        .expect("template metadata");
    let at = &meta.annotations["gpufed.io/restartedAt"];
    assert!(at.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{at}");
    let managers = super::managers(&restarted.metadata);
    assert!(managers.iter().any(|m| m == "kubectl-gpufed"), "{managers:?}");

    // The operator's status for generation 1 says nothing about generation 2.
    set_status(hub, 1, (2, 2, 2), json!([cond("Ready", "True", "Ready", "")])).await;
    let out = ok(k, &once).await;
    assert!(out.contains("has not observed generation 2 yet"), "{out}");

    // Watched: each new state once, then done (exit 0).
    let progressing = json!([cond(
        "Ready",
        "False",
        "Progressing",
        "2 of 2 replicas ready, 1 of 2 updated"
    )]);
    set_status(hub, 2, (3, 1, 2), progressing).await;
    let watch = command(k, &["rollout", "status", "web", "-n", ns, "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_status(
        hub,
        2,
        (2, 2, 2),
        json!([cond("Ready", "True", "Ready", "2 of 2 replicas ready")]),
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(30), watch.wait_with_output())
        .await
        .expect("rollout status ends once the service is Ready")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Waiting for computeservice \"web\" rollout to finish: 1 out of 2 new replicas have been updated...\n\
         computeservice \"web\" successfully rolled out\n"
    );

    // Stuck: exit 1 with the operator's reason and message.
    let msg =
        "no progress within spec.rollout.progressDeadlineSeconds (600s): replica web-2: Ready=False Starting";
    set_status(
        hub,
        2,
        (3, 1, 2),
        json!([
            cond(
                "Ready",
                "False",
                "ProgressDeadlineExceeded",
                "2 of 2 replicas ready"
            ),
            cond("Stalled", "True", "ProgressDeadlineExceeded", msg)
        ]),
    )
    .await;
    let err = fails(k, &["rollout", "status", "web", "-n", ns]).await;
    assert_eq!(
        err,
        format!("error: computeservice {ns}/web rollout is stuck (ProgressDeadlineExceeded): {msg}\n")
    );

    // --timeout: still rolling at the deadline.
    set_status(
        hub,
        2,
        (2, 2, 1),
        json!([cond("Ready", "False", "Progressing", "1 of 2")]),
    )
    .await;
    let err = fails(k, &["rollout", "status", "web", "-n", ns, "--timeout", "3s"]).await;
    assert!(
        err.contains(&format!(
            "gave up waiting for computeservice {ns}/web after 3s: Waiting"
        )) && err.contains("1 of 2 updated replicas are ready"),
        "{err}"
    );

    // Errors name what is wrong.
    let err = fails(k, &["rollout", "status", "nope", "-n", ns]).await;
    assert_eq!(err, format!("error: computeservice {ns}/nope not found\n"));
    let err = fails(k, &["rollout", "restart", "nope", "-n", ns]).await;
    assert_eq!(err, format!("error: computeservice {ns}/nope not found\n"));
    let err = fails(k, &["rollout", "status", "web", "-n", ns, "-o", "json"]).await;
    assert!(err.starts_with("error: invalid --output:"), "{err}");
    let err = fails(k, &["rollout", "status", "web", "-n", ns, "--timeout", "soon"]).await;
    assert!(err.starts_with("error: invalid --timeout:"), "{err}");
}
