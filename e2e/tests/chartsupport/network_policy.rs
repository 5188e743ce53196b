//! The hub chart's NetworkPolicy, rendered only: ingress to the operator's pods only on
//! the admin port, only from `networkPolicy.metricsFrom`; an empty list admits no peer
//! (a rule without `from` would admit every source).

use std::path::Path;

use serde_json::{Value, json};

use super::{of_kind, render};

/// The NetworkPolicy rendered with `args` (networkPolicy.enabled set by the caller).
fn policy(helm: &Path, args: &[&str]) -> Value {
    let docs = render(helm, "gpufed", "gpufed", args);
    let found = of_kind(&docs, "NetworkPolicy");
    assert_eq!(found.len(), 1, "one NetworkPolicy with {args:?}");
    found[0].clone()
}

pub fn check_network_policy(helm: &Path) {
    let docs = render(helm, "gpufed", "gpufed", &[]);
    assert!(of_kind(&docs, "NetworkPolicy").is_empty(), "off by default");

    // Enabled, no peers: the pods are isolated for ingress and no rule admits anything.
    let closed = policy(helm, &["--set", "networkPolicy.enabled=true"]);
    assert_eq!(closed["spec"]["policyTypes"], json!(["Ingress"]));
    let rules = closed["spec"]["ingress"].as_array().cloned().unwrap_or_default();
    assert!(
        rules.is_empty(),
        "an empty metricsFrom must admit nobody, yet rules are rendered: {rules:?}"
    );

    // Peers listed: one rule, the admin port, from exactly those peers.
    let open = policy(
        helm,
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        ],
    );
    let rules = open["spec"]["ingress"].as_array().expect("ingress rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["ports"], json!([{"port": "admin", "protocol": "TCP"}]));
    assert_eq!(
        rules[0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}])
    );
    // No rendered rule may lack `from` (that would admit every source).
    for values in ["charts/gpufed/ci/ha-values.yaml"] {
        let file = crate::common::repo_root().join(values);
        let p = policy(helm, &["-f", file.to_str().expect("UTF-8 path")]);
        for rule in p["spec"]["ingress"].as_array().into_iter().flatten() {
            assert!(
                rule["from"].as_array().is_some_and(|f| !f.is_empty()),
                "{values}: a rule admitting every source: {rule}"
            );
        }
    }
}
