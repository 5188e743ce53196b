//! `provider cordon|uncordon|drain` in `tests/cli.rs`, on a GpuProvider whose status the
//! test writes as the operator would: the spec fields and their field manager, a watched
//! drain ending once the provider reports `Drained`, `--wait=false`, `--timeout`, a drain
//! undone while waited for, and the errors.
#![allow(clippy::unwrap_used, dead_code)]

use std::process::Stdio;
use std::time::Duration;

use gpufed_api::GpuProvider;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::{Hub, command, cond, fails, h100_status, managers, ok, provider, text};

fn providers(hub: &Hub) -> Api<GpuProvider> {
    Api::all(hub.client.clone())
}

/// Writes `Ready=False` with `reason` for the provider's current generation.
async fn set_ready(hub: &Hub, name: &str, reason: &str, message: &str) -> i64 {
    let generation = providers(hub)
        .get(name)
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    let mut status: Value = h100_status(true);
    status["observedGeneration"] = generation.into();
    status["conditions"][0] = cond("Ready", "False", reason, message);
    providers(hub)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    generation
}

pub async fn provider_cordon_uncordon_drain(hub: &Hub) {
    let k = hub.k();
    let name = format!("kp-dc-{}", hub.ns);
    provider(&hub.client, &name, h100_status(true)).await;

    let out = ok(k, &["provider", "cordon", &name]).await;
    assert_eq!(out, format!("gpuprovider.gpufed.io/{name} cordoned\n"));
    let p = providers(hub).get(&name).await.unwrap();
    assert!(p.spec.paused && !p.spec.drain);
    let managers = managers(&p.metadata);
    assert!(managers.iter().any(|m| m == "kubectl-gpufed"), "{managers:?}");

    let out = ok(k, &["provider", "drain", &name, "--wait=false"]).await;
    assert_eq!(out, format!("gpuprovider.gpufed.io/{name} draining\n"));
    assert!(providers(hub).get(&name).await.unwrap().spec.drain);

    // Watched: each new state line once, then drained (exit 0).
    let msg = "spec.drain is true: no new jobs; evicting 1 running attempt(s)";
    set_ready(hub, &name, "Draining", msg).await;
    let watch = command(k, &["provider", "drain", &name, "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_ready(
        hub,
        &name,
        "Drained",
        "spec.drain is true: no new jobs, and nothing runs here",
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(30), watch.wait_with_output())
        .await
        .expect("drain ends once the provider is Drained")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "gpuprovider.gpufed.io/{name} draining\ngpuprovider/{name}: {msg}\ngpuprovider.gpufed.io/{name} drained\n"
        )
    );

    // --timeout: still draining at the deadline (the drain goes on).
    set_ready(hub, &name, "Draining", msg).await;
    let err = fails(k, &["provider", "drain", &name, "--timeout", "3s"]).await;
    assert!(
        err.contains(&format!(
            "gave up waiting for gpuprovider {name} to drain after 3s"
        )) && err.contains(msg),
        "{err}"
    );

    // Undone while waited for: the wait ends with an error naming it.
    let watch = command(k, &["provider", "drain", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = ok(k, &["provider", "uncordon", &name]).await;
    assert_eq!(out, format!("gpuprovider.gpufed.io/{name} uncordoned\n"));
    let p = providers(hub).get(&name).await.unwrap();
    assert!(!p.spec.paused && !p.spec.drain);
    let out = tokio::time::timeout(Duration::from_secs(30), watch.wait_with_output())
        .await
        .expect("the wait ends when the drain is undone")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("gpuprovider {name} is no longer draining")),
        "{}",
        text(&out.stderr)
    );

    // Errors name what is wrong.
    let err = fails(k, &["provider", "drain", "kp-nope"]).await;
    assert_eq!(err.trim(), "error: gpuprovider kp-nope not found");
    let err = fails(k, &["provider", "cordon", "kp-nope"]).await;
    assert_eq!(err.trim(), "error: gpuprovider kp-nope not found");
    let err = fails(k, &["provider", "drain", &name, "-o", "json"]).await;
    assert!(err.starts_with("error: invalid --output:"), "{err}");
    let err = fails(k, &["provider", "drain", &name, "--timeout", "soon"]).await;
    assert!(err.starts_with("error: invalid --timeout:"), "{err}");
}
