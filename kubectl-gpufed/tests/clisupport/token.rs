//! `provider token` in `tests/cli.rs`: two pull-mode providers, a token issued for one
//! (its Secret checked as the API server's bootstrap authenticator reads it), the errors,
//! and `--revoke`, which deletes that provider's tokens and no other's.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use gpufed_api::pull::{BootstrapToken, agent_namespace, bootstrap_group};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use super::{Hub, WALLET, fails, ok, ok_json};

async fn pull_provider(hub: &Hub, name: &str) {
    let p: GpuProvider = serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider", "metadata": {"name": name},
        "spec": {"mode": "Pull", "payoutWallet": WALLET, "region": "eu-west",
                 "prices": [{"model": "NVIDIA-GeForce-RTX-4090", "pricePerGpuHour": "0.4"}]}
    }))
    .unwrap();
    Api::<GpuProvider>::all(hub.client.clone())
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
}

fn secrets(hub: &Hub) -> Api<Secret> {
    Api::namespaced(hub.client.clone(), "kube-system")
}

/// The token Secrets of `provider` in kube-system.
async fn token_secrets(hub: &Hub, provider: &str) -> Vec<Secret> {
    let selector = format!("gpufed.io/agent-namespace={}", agent_namespace(provider));
    secrets(hub)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

fn data(secret: &Secret) -> BTreeMap<String, String> {
    (secret.data.clone().unwrap_or_default().into_iter())
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// Seconds from now to an RFC 3339 instant.
fn from_now(text: &str) -> i64 {
    let t: k8s_openapi::jiff::Timestamp = text.parse().unwrap();
    t.as_second() - k8s_openapi::jiff::Timestamp::now().as_second()
}

/// `provider token`: issue (-o json and table), errors, `--revoke`.
pub async fn provider_tokens(hub: &Hub) {
    let k = hub.k();
    let suffix = hub.ns.trim_start_matches("kplugin-");
    let (a, b) = (format!("kp-pull-a-{suffix}"), format!("kp-pull-b-{suffix}"));
    pull_provider(hub, &a).await;
    pull_provider(hub, &b).await;

    // Errors: a push-mode provider, a missing one, a TTL over a week.
    let e = fails(k, &["provider", "token", &hub.good]).await;
    let expected = format!("error: gpuprovider {} has spec.mode Push", hub.good);
    assert!(e.starts_with(&expected), "{e}");
    let e = fails(k, &["provider", "token", "kp-nope"]).await;
    assert_eq!(e.trim(), "error: gpuprovider kp-nope not found");
    let e = fails(k, &["provider", "token", &a, "--ttl", "200h"]).await;
    assert!(
        e.starts_with("error: invalid --ttl:") && e.contains("168h"),
        "{e}"
    );
    assert!(token_secrets(hub, &a).await.is_empty());

    // -o json: the token, its expiry, the hub's URL and the agent namespace.
    let issued = ok_json(k, &["provider", "token", &a, "--ttl", "2h", "-o", "json"]).await;
    let keys: Vec<&String> = issued.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{issued}");
    assert_eq!(issued["provider"], a.as_str());
    assert_eq!(issued["agentNamespace"], agent_namespace(&a).as_str());
    let config: Value = serde_yaml::from_str(&std::fs::read_to_string(k).unwrap()).unwrap();
    let server = config["clusters"][0]["cluster"]["server"].as_str().unwrap();
    assert_eq!(issued["hubServer"], server.trim_end_matches('/'));
    let expiration = issued["expiration"].as_str().unwrap();
    assert!((7190..=7200).contains(&from_now(expiration)), "{expiration}");
    let token = BootstrapToken::parse(issued["token"].as_str().unwrap()).unwrap();

    // Its Secret, as the API server's bootstrap-token authenticator reads it.
    let secret = secrets(hub)
        .get(&format!("bootstrap-token-{}", token.id))
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
    let d = data(&secret);
    assert_eq!(d["token-id"], token.id);
    assert_eq!(d["token-secret"], token.secret);
    assert_eq!(d["expiration"], expiration);
    assert_eq!(d["usage-bootstrap-authentication"], "true");
    assert_eq!(d["auth-extra-groups"], bootstrap_group(&a));

    // The table: the same facts and the helm command; then one token for b.
    let table = ok(k, &["provider", "token", &a]).await;
    for part in [
        "Expires:",
        "(in 24h)",
        &format!("Agent namespace:  {}", agent_namespace(&a)),
        "helm install gpufed-provider charts/gpufed-provider --set mode=pull",
        &format!("--set provider.name={a}"),
        "--set-file hub.caData=hub-ca.pem",
        "--set hub.bootstrapToken=",
    ] {
        assert!(table.contains(part), "{part:?} missing in\n{table}");
    }
    assert_eq!(token_secrets(hub, &a).await.len(), 2);
    ok(k, &["provider", "token", &b, "-o", "yaml"]).await;

    // --revoke deletes a's two tokens and leaves b's.
    let revoked = ok(k, &["provider", "token", &a, "--revoke"]).await;
    assert!(
        revoked.starts_with(&format!("revoked 2 bootstrap tokens of GpuProvider {a}")),
        "{revoked}"
    );
    assert!(token_secrets(hub, &a).await.is_empty());
    assert_eq!(token_secrets(hub, &b).await.len(), 1);
    let again = ok_json(k, &["provider", "token", &a, "--revoke", "-o", "json"]).await;
    assert_eq!(again["revoked"], 0);
    let b_revoked = ok_json(k, &["provider", "token", &b, "--revoke", "-o", "json"]).await;
    assert_eq!(b_revoked["revoked"], 1);
    assert!(token_secrets(hub, &b).await.is_empty());
}
