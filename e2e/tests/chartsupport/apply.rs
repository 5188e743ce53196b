//! Applying the rendered charts to real API servers, and minting a provider's member
//! access with scripts/mint-provider.sh.

use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;

use super::rendered::Rendered;
use super::{MINUTE, NS, kind, parse_docs};
use crate::common;

pub async fn create_all(client: &Client, docs: &[Value], kinds: &[&str]) {
    for doc in docs.iter().filter(|d| kinds.contains(&kind(d))) {
        gpufed_e2e::crds::create_manifest(client, doc, NS)
            .await
            .unwrap_or_else(|e| panic!("creating {} {}: {e}", kind(doc), doc["metadata"]["name"]));
    }
}

pub async fn ensure_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
}

/// Applies the charts: the CRDs and the hub chart to the hub, the provider chart and pull
/// mode's agent RBAC (another release, without its workloads) to the member.
pub async fn apply_charts(hub: &Client, member: &Client, rendered: &Rendered) {
    let Rendered {
        crds,
        hub_docs,
        provider_docs,
        pull_docs,
    } = rendered;
    let dir = std::env::temp_dir().join(format!("gpufed-chart-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let yaml: Vec<String> = crds
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("yaml"))
        .collect();
    std::fs::write(dir.join("crds.yaml"), yaml.join("---\n")).expect("write");
    let names = gpufed_e2e::crds::install_crds(hub, &dir, MINUTE)
        .await
        .expect("the chart's CRDs install");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(names.len(), 6);
    ensure_namespace(hub, NS).await;
    ensure_namespace(member, NS).await;
    let objects = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "DaemonSet",
    ];
    create_all(hub, hub_docs, &objects).await;
    create_all(member, provider_docs, &objects).await;
    // Pull mode's agent RBAC (another release, next to push mode's), without its workloads.
    let agent_rbac: Vec<Value> = pull_docs
        .iter()
        .filter(|d| {
            matches!(
                d["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
                Some("gpufed-agent" | "gpufed-hub-access")
            )
        })
        .cloned()
        .collect();
    create_all(
        member,
        &agent_rbac,
        &[
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ],
    )
    .await;
}

/// Runs scripts/mint-provider.sh against provider-a's member and checks what the minted
/// access may do there; returns the minted documents (a Secret and a GpuProvider).
pub async fn mint_provider(fed: &gpufed_e2e::Federation, member: &Client) -> Vec<Value> {
    // scripts/mint-provider.sh mints the member access; its output goes to the hub.
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("kubectl is needed by scripts/mint-provider.sh");
    }
    let member_cluster = fed.cluster("provider-a").expect("member cluster");
    let out = Command::new(common::repo_root().join("scripts/mint-provider.sh"))
        .args(["--name", "provider-a", "--region", "eu-west"])
        .args(["--wallet", "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP"])
        .args(["--price", "NVIDIA-GeForce-RTX-4090=0.30", "--duration", "1h"])
        .arg(format!("--kubeconfig={}", member_cluster.kubeconfig().display()))
        .output()
        .expect("mint-provider.sh runs");
    assert!(
        out.status.success(),
        "mint-provider.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = parse_docs(&String::from_utf8(out.stdout).expect("UTF-8"));
    assert_eq!(
        minted.iter().map(kind).collect::<Vec<_>>(),
        ["Secret", "GpuProvider"]
    );
    // The minted kubeconfig authenticates as the ServiceAccount: Nodes yes, Secrets no.
    let kubeconfig = minted[0]["stringData"]["kubeconfig"]
        .as_str()
        .expect("kubeconfig");
    let kc = Kubeconfig::from_yaml(kubeconfig).expect("minted kubeconfig parses");
    let as_sa = Client::try_from(
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config"),
    )
    .expect("client");
    Api::<Node>::all(as_sa.clone())
        .list(&Default::default())
        .await
        .expect("the minted token lists Nodes");
    // The challenge ConfigMap, as the operator writes it: the first server-side apply
    // creates it in the context's namespace (the release namespace); the API server
    // authorizes that as patch and as create, both of the name gpufed-challenge.
    assert_eq!(
        as_sa.default_namespace(),
        NS,
        "the minted context names the namespace"
    );
    let no_challenges = std::collections::BTreeMap::new();
    gpufed_operator::verification::write_challenges(&as_sa, &no_challenges)
        .await
        .expect("the minted token creates gpufed-challenge by server-side apply");
    gpufed_operator::verification::write_challenges(&as_sa, &no_challenges)
        .await
        .expect("and applies it again");
    gpufed_operator::verification::read_challenges(&as_sa)
        .await
        .expect("the minted token reads gpufed-challenge");
    let cms = Api::<ConfigMap>::namespaced(member.clone(), NS);
    let cm = cms
        .get(gpufed_operator::verification::CHALLENGE_CONFIGMAP)
        .await
        .expect("gpufed-challenge exists");
    assert_eq!(
        cm.metadata.labels.unwrap_or_default()["app.kubernetes.io/managed-by"],
        "gpufed-operator"
    );
    cms.delete(
        gpufed_operator::verification::CHALLENGE_CONFIGMAP,
        &DeleteParams::default(),
    )
    .await
    .expect("cleanup");
    let denied = Api::<Secret>::namespaced(as_sa, "kube-system")
        .list(&Default::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref e)) if e.code == 403),
        "the minted token must not read Secrets: {denied:?}"
    );
    minted
}
