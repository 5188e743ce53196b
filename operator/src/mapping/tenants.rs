//! Providers' tenant policies (`spec.tenants`) resolved for one round: per provider that
//! restricts its tenants, the namespaces of the round's queued jobs it admits.
//!
//! The engine sees a plain set; the selector is evaluated here, against the hub's
//! namespace labels. A namespace whose labels are not known (the namespace cache is not
//! listed yet, or the namespace is gone) is admitted by no selector: the policy fails
//! closed, and other providers go on placing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gpufed_api::GpuProvider;
use gpufed_placement as pl;
use kube::ResourceExt;

/// Sets each snapshot provider's admitted namespaces from its GpuProvider's policy.
/// `labels` answers a namespace's labels, `None` when not known.
pub fn admit(
    snap: &mut pl::Snapshot,
    providers: &[Arc<GpuProvider>],
    labels: impl Fn(&str) -> Option<BTreeMap<String, String>>,
) {
    let policies: BTreeMap<String, &gpufed_api::tenants::Tenants> = providers
        .iter()
        .filter_map(|p| Some((p.name_any(), p.spec.tenants.as_ref().filter(|t| t.restricts())?)))
        .collect();
    if policies.is_empty() {
        return;
    }
    let namespaces: BTreeSet<&str> = snap.jobs.iter().map(|j| j.namespace.as_str()).collect();
    let known: BTreeMap<&str, Option<BTreeMap<String, String>>> =
        namespaces.iter().map(|&ns| (ns, labels(ns))).collect();
    for p in &mut snap.providers {
        if let Some(policy) = policies.get(&p.id) {
            p.tenants = Some(
                known
                    .iter()
                    .filter(|(ns, l)| policy.admits(ns, l.as_ref()))
                    .map(|(ns, _)| (*ns).to_owned())
                    .collect(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_api::tenants::{NamespaceSelector, Tenants};

    fn provider(name: &str, tenants: Option<Tenants>) -> Arc<GpuProvider> {
        let mut p: GpuProvider = serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
            "metadata": {"name": name},
            "spec": {"mode": "Pull", "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP",
                     "region": "eu", "prices": [{"model": "H100", "pricePerGpuHour": "2"}]}
        }))
        .expect("provider");
        p.spec.tenants = tenants;
        Arc::new(p)
    }

    fn snap(providers: &[&str], namespaces: &[&str]) -> pl::Snapshot {
        pl::Snapshot {
            providers: providers
                .iter()
                .map(|id| pl::Provider {
                    id: (*id).into(),
                    region: "eu".into(),
                    healthy: true,
                    verified: true,
                    reputation: 1.0,
                    prices: BTreeMap::new(),
                    nodes: Vec::new(),
                    tenants: None,
                })
                .collect(),
            jobs: namespaces
                .iter()
                .enumerate()
                .map(|(i, ns)| pl::Job {
                    id: format!("{ns}/j{i}"),
                    namespace: (*ns).into(),
                    ..pl::Job::default()
                })
                .collect(),
            ..pl::Snapshot::default()
        }
    }

    fn vetted(ns: &str) -> Option<BTreeMap<String, String>> {
        match ns {
            "team-a" => Some(BTreeMap::from([("gpufed.io/kyc".into(), "verified".into())])),
            "team-b" => Some(BTreeMap::new()),
            _ => None,
        }
    }

    #[test]
    fn only_restricting_providers_get_a_set_of_the_rounds_namespaces() {
        let kyc = Tenants {
            namespace_selector: Some(NamespaceSelector {
                match_labels: BTreeMap::from([("gpufed.io/kyc".into(), "verified".into())]),
                ..NamespaceSelector::default()
            }),
            ..Tenants::default()
        };
        let listed = Tenants {
            namespaces: vec!["team-b".into(), "team-z".into()],
            ..Tenants::default()
        };
        let providers = [
            provider("open", None),
            provider("empty-policy", Some(Tenants::default())),
            provider("kyc", Some(kyc)),
            provider("listed", Some(listed)),
        ];
        let mut s = snap(
            &["open", "empty-policy", "kyc", "listed"],
            &["team-a", "team-b", "gone"],
        );
        admit(&mut s, &providers, vetted);
        let got: BTreeMap<&str, Option<Vec<&str>>> = s
            .providers
            .iter()
            .map(|p| {
                let set = p.tenants.as_ref().map(|t| t.iter().map(String::as_str).collect());
                (p.id.as_str(), set)
            })
            .collect();
        assert_eq!(got["open"], None);
        assert_eq!(got["empty-policy"], None, "an empty policy restricts nothing");
        // "gone" has no known labels: no selector admits it.
        assert_eq!(got["kyc"], Some(vec!["team-a"]));
        assert_eq!(
            got["listed"],
            Some(vec!["team-b"]),
            "only namespaces of this round"
        );
    }
}
