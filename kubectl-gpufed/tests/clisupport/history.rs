//! `rollout history`, `rollout undo` and `rollout pause|resume` in `tests/cli.rs`, on a ComputeService whose
//! ControllerRevisions the test records as the operator does (with the operator's own
//! `history::build`): the table, one revision's template, JSON, a rollback that replaces
//! the template whole and removes a field the old one lacked, the `resourceVersion`
//! guard, and the errors.
#![allow(clippy::unwrap_used, dead_code)]

use gpufed_api::ComputeService;
use gpufed_operator::service::{build, history};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{Hub, fails, ok, ok_json};

/// Records `svc`'s current template as revision `n`, as the operator would.
async fn record(hub: &Hub, svc: &ComputeService, n: i64) -> String {
    let hash = build::revision(&build::replica_spec(svc));
    let rev = history::build(svc, &hash, n);
    Api::<ControllerRevision>::namespaced(hub.client.clone(), &hub.ns)
        .create(&PostParams::default(), &rev)
        .await
        .unwrap();
    hash
}

pub async fn rollout_history_and_undo(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    let services: Api<ComputeService> = Api::namespaced(hub.client.clone(), ns);
    let v1: ComputeService = serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService", "metadata": {"name": "chat"},
        "spec": {"replicas": 2, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00", "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm:1"}]}}}
    }))
    .unwrap();
    let err = fails(k, &["rollout", "undo", "chat", "-n", ns]).await;
    assert_eq!(err, format!("error: computeservice {ns}/chat not found\n"));
    let svc = services.create(&PostParams::default(), &v1).await.unwrap();
    let out = ok(k, &["rollout", "history", "chat", "-n", ns]).await;
    assert!(out.contains("no revisions recorded yet"), "{out}");
    let err = fails(k, &["rollout", "undo", "chat", "-n", ns]).await;
    assert_eq!(err, "error: no rollout history found for computeservice chat\n");
    let h1 = record(hub, &svc, 1).await;

    // v2: a new image, a template annotation and a readiness probe.
    let v2 = json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "vllm 2"}},
                    "spec": {"template": {"metadata": {"annotations": {"team": "llm"}},
                                          "spec": {"containers": [{"name": "server", "image": "vllm:2"}]}},
                             "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}}}});
    let svc = services
        .patch("chat", &PatchParams::default(), &Patch::Merge(&v2))
        .await
        .unwrap();
    let h2 = record(hub, &svc, 2).await;
    let out = ok(k, &["rollout", "history", "chat", "-n", ns]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "computeservice.gpufed.io/chat", "{out}");
    assert!(lines[2].starts_with("1 ") && lines[2].contains(&h1), "{out}");
    assert!(lines[2].ends_with("<none>"), "{out}");
    assert!(
        lines[3].starts_with("2 (current)") && lines[3].contains(&h2),
        "{out}"
    );
    assert!(lines[3].ends_with("vllm 2"), "{out}");
    let one = ok(k, &["rollout", "history", "chat", "-n", ns, "--revision", "1"]).await;
    assert!(
        one.starts_with("computeservice.gpufed.io/chat with revision #1\n"),
        "{one}"
    );
    assert!(
        one.contains("image: vllm:1") && !one.contains("readinessProbe"),
        "{one}"
    );
    let listed = ok_json(k, &["rollout", "history", "chat", "-n", ns, "-o", "json"]).await;
    assert_eq!(listed["kind"], "List");
    assert_eq!(listed["items"][1]["revision"], 2);
    assert_eq!(listed["items"][1]["current"], true);
    assert_eq!(listed["items"][0]["hash"], h1.as_str());
    let err = fails(k, &["rollout", "history", "chat", "-n", ns, "--revision", "7"]).await;
    assert_eq!(err, "error: unable to find specified revision 7 in history\n");

    // A stale resourceVersion: the guard refuses the rollback patch. 1.20 says only 422
    // Invalid, "the server rejected our request…": `rollout undo` reads the service again
    // to tell a change made meanwhile (retried) from a refused template (reported).
    let mut stale = svc.clone();
    stale.metadata.resource_version = Some("1".into());
    let patch = history::rollback_patch(&stale, &history::template(&v1.spec)).unwrap();
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    let refused = services
        .patch("chat", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("an API error: {refused:?}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    assert_eq!(
        services.get("chat").await.unwrap().spec,
        svc.spec,
        "nothing changed"
    );

    // undo: back to revision 1, the template replaced whole, the probe removed.
    let out = ok(k, &["rollout", "undo", "chat", "-n", ns]).await;
    assert_eq!(out, "computeservice.gpufed.io/chat rolled back to revision 1\n");
    let back = services.get("chat").await.unwrap();
    assert_eq!(back.spec.template.spec.containers[0].0["image"], "vllm:1");
    assert!(back.spec.template.metadata.is_none(), "{:?}", back.spec.template);
    assert!(back.spec.readiness_probe.is_none());
    assert_eq!(build::revision(&build::replica_spec(&back)), h1);
    assert!(
        super::managers(&back.metadata)
            .iter()
            .any(|m| m == "kubectl-gpufed")
    );
    let out = ok(k, &["rollout", "undo", "chat", "-n", ns, "--to-revision", "1"]).await;
    assert_eq!(
        out,
        "computeservice.gpufed.io/chat skipped rollback (current template already matches revision 1)\n"
    );
    let err = fails(k, &["rollout", "undo", "chat", "-n", ns, "--to-revision", "9"]).await;
    assert_eq!(err, "error: unable to find specified revision 9 in history\n");
    // And forward again to 2 (-o json: the patched object).
    let forward = ok_json(
        k,
        &[
            "rollout",
            "undo",
            "chat",
            "-n",
            ns,
            "--to-revision",
            "2",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(
        forward["spec"]["template"]["spec"]["containers"][0]["image"],
        "vllm:2"
    );
    assert_eq!(forward["spec"]["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(forward["spec"]["replicas"], 2, "not a template field: kept");

    // pause / resume: spec.paused, refused when already so (as kubectl's).
    let out = ok(k, &["rollout", "pause", "chat", "-n", ns]).await;
    assert_eq!(out, "computeservice.gpufed.io/chat paused\n");
    assert!(services.get("chat").await.unwrap().spec.paused);
    let err = fails(k, &["rollout", "pause", "chat", "-n", ns]).await;
    assert_eq!(
        err,
        format!("error: computeservice {ns}/chat is already paused\n")
    );
    let out = ok(k, &["rollout", "resume", "chat", "-n", ns]).await;
    assert_eq!(out, "computeservice.gpufed.io/chat resumed\n");
    assert!(!services.get("chat").await.unwrap().spec.paused);
    let err = fails(k, &["rollout", "resume", "chat", "-n", ns]).await;
    assert_eq!(err, format!("error: computeservice {ns}/chat is not paused\n"));
    let err = fails(k, &["rollout", "pause", "nope", "-n", ns]).await;
    assert_eq!(err, format!("error: computeservice {ns}/nope not found\n"));
}
