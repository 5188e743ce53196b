//! Evidence documents in the hub: one ConfigMap per evidence (in the operator's namespace),
//! written by verification, read by the Stake controller, kept for disputes and audits.
//!
//! A provider gets at most one new evidence of a kind per cooldown, so a provider that
//! keeps failing is slashed once per cooldown, not once per challenge round.

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_settlement::Hash32;
use gpufed_trust::evidence::Evidence;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::stake::plan::EvidenceRef;

/// Label on every evidence ConfigMap.
pub const LABEL_EVIDENCE: &str = "gpufed.io/evidence";
/// Label: the provider the evidence is against.
pub const LABEL_PROVIDER: &str = "gpufed.io/evidence-provider";
/// Label: the evidence kind.
pub const LABEL_KIND: &str = "gpufed.io/evidence-kind";

/// The label value naming `provider`: its name when that fits a label value (63
/// characters), else `sha256-` and the start of its name's digest (GpuProvider names may
/// be 253 characters long). Only `record`'s cooldown lookup selects by it; the provider
/// of an evidence is read from the document.
pub fn provider_label(provider: &str) -> String {
    if provider.len() <= 63 {
        return provider.to_owned();
    }
    let digest = gpufed_settlement::hash::sha256(provider.as_bytes()).to_hex();
    format!("sha256-{}", &digest[..56])
}

/// ConfigMap name of an evidence document.
pub fn configmap_name(hash: &Hash32) -> String {
    format!("gpufed-evidence-{}", &hash.to_hex()[..20])
}

/// The ConfigMap holding `evidence`.
pub fn configmap(evidence: &Evidence) -> ConfigMap {
    let hash = evidence.hash();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(configmap_name(&hash)),
            labels: Some(
                [
                    (LABEL_EVIDENCE.to_owned(), "true".to_owned()),
                    (LABEL_PROVIDER.to_owned(), provider_label(&evidence.provider)),
                    (LABEL_KIND.to_owned(), evidence.kind.clone()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        crate::FIELD_MANAGER.to_owned(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        },
        data: Some(
            [
                ("hash".to_owned(), hash.to_hex()),
                (
                    "evidence.json".to_owned(),
                    String::from_utf8_lossy(&evidence.canonical_bytes()).into_owned(),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

/// Every evidence in `namespace`, by provider, oldest first. A ConfigMap whose hash does
/// not match its document is skipped (and logged): what is slashed must be what is shown.
pub async fn list(hub: &Client, namespace: &str) -> Result<BTreeMap<String, Vec<EvidenceRef>>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let mut items = api
        .list(&ListParams::default().labels(&format!("{LABEL_EVIDENCE}=true")))
        .await?
        .items;
    items.sort_by(|a, b| {
        let key = |c: &ConfigMap| (c.metadata.creation_timestamp.clone(), c.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    let mut out: BTreeMap<String, Vec<EvidenceRef>> = BTreeMap::new();
    for cm in items {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let data = cm.data.unwrap_or_default();
        let doc: Option<Evidence> = data
            .get("evidence.json")
            .and_then(|t| serde_json::from_str(t).ok());
        let stated = data.get("hash").and_then(|h| Hash32::from_hex(h));
        match (doc, stated) {
            (Some(doc), Some(hash)) if doc.hash() == hash => {
                out.entry(doc.provider.clone()).or_default().push(EvidenceRef {
                    observed_at: crate::time::parse(&doc.observed_at),
                    kind: doc.kind,
                    hash,
                })
            }
            _ => tracing::warn!(configmap = %name, "evidence ConfigMap does not match its hash; ignored"),
        }
    }
    Ok(out)
}

/// Records `evidence` unless the provider already has evidence of that kind younger than
/// `cooldown`. Returns whether it was recorded.
pub async fn record(
    hub: &Client,
    namespace: &str,
    evidence: &Evidence,
    cooldown: Duration,
) -> Result<bool, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(hub.clone(), namespace);
    let recent = api
        .list(&ListParams::default().labels(&format!(
            "{LABEL_EVIDENCE}=true,{LABEL_PROVIDER}={},{LABEL_KIND}={}",
            provider_label(&evidence.provider),
            evidence.kind
        )))
        .await?
        .items
        .iter()
        .filter_map(|c| c.metadata.creation_timestamp.as_ref())
        .any(|t| {
            let age = crate::time::now() - t.0.as_second();
            u64::try_from(age).unwrap_or(0) < cooldown.as_secs()
        });
    if recent {
        return Ok(false);
    }
    match api.create(&PostParams::default(), &configmap(evidence)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_carries_the_document_and_its_hash() {
        let e = Evidence {
            kind: "failed-challenge".into(),
            provider: "p1".into(),
            nonces: vec!["n".into()],
            observed_at: "2026-12-01T00:00:00Z".into(),
            gpus: vec![],
            ..Default::default()
        };
        let cm = configmap(&e);
        let data = cm.data.unwrap();
        let back: Evidence = serde_json::from_str(&data["evidence.json"]).unwrap();
        assert_eq!(back.hash().to_hex(), data["hash"]);
        assert_eq!(cm.metadata.name.unwrap(), configmap_name(&e.hash()));
        assert_eq!(cm.metadata.labels.unwrap()[LABEL_PROVIDER], "p1");
    }

    #[test]
    fn a_provider_name_too_long_for_a_label_value_is_labelled_by_its_digest() {
        let long = "p".repeat(200);
        let label = provider_label(&long);
        assert!(label.len() <= 63, "{label}");
        assert_ne!(
            label,
            provider_label(&"p".repeat(199)),
            "distinct names, distinct labels"
        );
        let e = Evidence {
            kind: "failed-challenge".into(),
            provider: long.clone(),
            nonces: vec![],
            observed_at: "2026-12-01T00:00:00Z".into(),
            gpus: vec![],
            ..Default::default()
        };
        assert_eq!(configmap(&e).metadata.labels.unwrap()[LABEL_PROVIDER], label);
        assert_eq!(provider_label("short-name"), "short-name");
    }
}
