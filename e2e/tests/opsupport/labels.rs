//! Member node labels, as a provider's administrator sets them, and exposing them to the
//! hub (`GpuProvider.spec.exposedNodeLabels`).

use gpufed_api::GpuProvider;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// Sets label `key` on each `(member, node, value)`.
pub async fn label_nodes(env: &gpufed_e2e::TestEnv, key: &str, nodes: &[(&str, &str, &str)]) {
    for (member, node, value) in nodes {
        let client = env.member_client(member).await.expect("member client");
        let label = serde_json::json!({"metadata": {"labels": {key: value}}});
        Api::<Node>::all(client)
            .patch(node, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .expect("node labelled");
    }
}

/// Lets each of `providers` expose node label `key` to the hub.
pub async fn expose_label(hub: &Client, providers: &[&str], key: &str) {
    let expose = serde_json::json!({"spec": {"exposedNodeLabels": [key]}});
    for provider in providers {
        Api::<GpuProvider>::all(hub.clone())
            .patch(provider, &PatchParams::default(), &Patch::Merge(&expose))
            .await
            .expect("label exposed");
    }
}
