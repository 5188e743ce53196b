//! Pure: where a job's workers may connect to — the egress rules of its tenant
//! namespace's NetworkPolicy (enforced where the provider's network plugin enforces
//! NetworkPolicy). Always the gang's own pods and the cluster DNS: a gang finds its rank 0
//! through the headless Service's name, which a policy without DNS would leave
//! unresolvable. With `spec.egress: Internet`, or a checkpoint location outside the cluster,
//! also every public address — never the private, shared, loopback or link-local ranges,
//! so a tenant cannot probe the provider's own network or its cloud metadata endpoint.

use std::collections::BTreeMap;

use gpufed_api::ComputeJobSpec;
use gpufed_api::job::Egress;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label of the cluster DNS pods (CoreDNS and kube-dns both keep it).
const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// IPv4 ranges that are not the public internet (RFC 1918, RFC 6598 shared, loopback,
/// link-local — where cloud metadata endpoints live).
const PRIVATE_V4: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
];

/// IPv6 ranges that are not the public internet (unique local, link-local, loopback).
const PRIVATE_V6: [&str; 3] = ["fc00::/7", "fe80::/10", "::1/128"];

/// Checkpoint schemes that live outside the cluster.
const EXTERNAL_SCHEMES: [&str; 4] = ["s3://", "gs://", "az://", "https://"];

/// Whether the job's workers may reach the public internet: asked for, or implied by a
/// checkpoint location outside the cluster.
pub fn internet_allowed(spec: &ComputeJobSpec) -> bool {
    spec.egress == Egress::Internet
        || spec
            .checkpoint
            .as_ref()
            .is_some_and(|c| EXTERNAL_SCHEMES.iter().any(|s| c.uri.starts_with(s)))
}

/// The egress rules: the namespace's own pods (`same_namespace`), the cluster DNS, and
/// the public internet when allowed.
pub fn rules(spec: &ComputeJobSpec, same_namespace: Vec<NetworkPolicyPeer>) -> Vec<NetworkPolicyEgressRule> {
    let port = |protocol: &str| NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(53)),
        ..Default::default()
    };
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            // Any namespace: its name label is not set by every API server (before 1.21).
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(DNS_LABEL.0.to_owned(), DNS_LABEL.1.to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![port("UDP"), port("TCP")]),
    };
    let mut rules = vec![
        NetworkPolicyEgressRule {
            to: Some(same_namespace),
            ..Default::default()
        },
        dns,
    ];
    if internet_allowed(spec) {
        let block = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_owned(),
                except: Some(except.iter().map(|e| (*e).to_owned()).collect()),
            }),
            ..Default::default()
        };
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![block("0.0.0.0/0", &PRIVATE_V4), block("::/0", &PRIVATE_V6)]),
            ..Default::default()
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> ComputeJobSpec {
        let mut v = serde_json::json!({"workers": 2, "gpusPerWorker": 1, "maxPricePerGpuHour": "1",
            "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("spec")
    }

    fn cidrs(rules: &[NetworkPolicyEgressRule]) -> Vec<String> {
        rules
            .iter()
            .flat_map(|r| r.to.iter().flatten())
            .filter_map(|p| p.ip_block.as_ref().map(|b| b.cidr.clone()))
            .collect()
    }

    #[test]
    fn by_default_the_gang_and_the_cluster_dns_only() {
        let s = spec(serde_json::json!({}));
        assert!(!internet_allowed(&s));
        let r = rules(&s, Vec::new());
        assert_eq!(r.len(), 2);
        let dns = &r[1];
        let ports: Vec<_> = dns
            .ports
            .iter()
            .flatten()
            .map(|p| (p.protocol.clone(), p.port.clone()))
            .collect();
        assert_eq!(
            ports,
            [
                (Some("UDP".into()), Some(IntOrString::Int(53))),
                (Some("TCP".into()), Some(IntOrString::Int(53)))
            ]
        );
        let peer = &dns.to.as_ref().expect("to")[0];
        assert_eq!(
            peer.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .and_then(|l| l.get("k8s-app")),
            Some(&"kube-dns".to_owned())
        );
        assert!(cidrs(&r).is_empty(), "no address block: no internet");
    }

    #[test]
    fn internet_is_every_public_address_never_the_providers_network() {
        let s = spec(serde_json::json!({"egress": "Internet"}));
        let r = rules(&s, Vec::new());
        assert_eq!(cidrs(&r), ["0.0.0.0/0", "::/0"]);
        let blocks: Vec<&IPBlock> = r[2]
            .to
            .iter()
            .flatten()
            .filter_map(|p| p.ip_block.as_ref())
            .collect();
        let v4 = blocks[0].except.clone().unwrap_or_default();
        for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"] {
            assert!(v4.iter().any(|e| e == private), "{private} reachable");
        }
        assert!(blocks[1].except.iter().flatten().any(|e| e == "fe80::/10"));
    }

    #[test]
    fn an_external_checkpoint_location_implies_internet() {
        for (uri, internet) in [
            ("s3://b/run/", true),
            ("gs://b/run/", true),
            ("https://store.example/run/", true),
            ("pvc://ckpt/run/", false),
            ("nfs://filer/run/", false),
        ] {
            let s = spec(serde_json::json!({"checkpoint": {"uri": uri}}));
            assert_eq!(internet_allowed(&s), internet, "{uri}");
            assert_eq!(
                cidrs(&rules(&s, Vec::new())).len(),
                if internet { 2 } else { 0 },
                "{uri}"
            );
        }
    }
}
