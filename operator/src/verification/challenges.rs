//! The member's challenge ConfigMap ([`CHALLENGE_CONFIGMAP`]): reading it and setting it.

use std::collections::BTreeMap;

use gpufed_trust::ChallengeRequest;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::CHALLENGE_CONFIGMAP;

/// The challenge requests currently in the member's ConfigMap (node → JSON).
pub async fn read_challenges(client: &Client) -> Result<BTreeMap<String, String>, kube::Error> {
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    match api.get_opt(CHALLENGE_CONFIGMAP).await {
        Ok(cm) => Ok(cm.and_then(|c| c.data).unwrap_or_default().into_iter().collect()),
        // A member that does not let the hub read it simply gets no challenges answered.
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Sets the member's challenge ConfigMap to exactly `writes` (server-side apply: keys
/// this manager wrote before and left out now are removed).
pub async fn write_challenges(
    client: &Client,
    writes: &BTreeMap<String, ChallengeRequest>,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    write_challenge_data(&api, &challenge_data(writes), crate::FIELD_MANAGER).await
}

/// The challenge ConfigMap's data for `writes` (node → request JSON).
pub fn challenge_data(writes: &BTreeMap<String, ChallengeRequest>) -> BTreeMap<String, String> {
    writes
        .iter()
        .map(|(node, req)| (node.clone(), serde_json::to_string(req).unwrap_or_default()))
        .collect()
}

/// Sets the challenge ConfigMap in `api`'s namespace to exactly `data`, as `manager`.
pub async fn write_challenge_data(
    api: &Api<ConfigMap>,
    data: &BTreeMap<String, String>,
    manager: &str,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CHALLENGE_CONFIGMAP, "labels": {"app.kubernetes.io/managed-by": manager}},
        "data": data,
    });
    api.patch(
        CHALLENGE_CONFIGMAP,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
}
