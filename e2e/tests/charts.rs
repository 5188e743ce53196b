//! The Helm charts on a real API server: rendered with helm, applied to the hub and a
//! member, and the operator then runs with the chart's identities — on the hub as the
//! chart's ServiceAccount (impersonated), on the member with the token that
//! scripts/mint-provider.sh minted for the provider chart's ServiceAccount. A missing
//! permission in either chart fails a provider, a dispatch or a cleanup below.

mod common;
mod opsupport;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use gpufed_e2e::{FederationSpec, GpuPool, TestEnv};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Deserialize;
use serde_json::Value;

use opsupport::{Operator, job, job_until, phase, submit};

const NS: &str = "gpufed-system";
const HUB_SA: &str = "system:serviceaccount:gpufed-system:gpufed";
const MEMBER_SA: &str = "system:serviceaccount:gpufed-system:gpufed-hub";
const DEVICE_PLUGIN_SA: &str = "system:serviceaccount:gpufed-system:gpufed-provider-device-plugin";
/// The member ConfigMap that carries the hub's GPU compute challenges.
const CHALLENGE_CM: &str = "configmaps/gpufed-challenge";
const MINUTE: Duration = Duration::from_secs(60);

/// (verb, group, resource, subresource, namespace) the operator uses on the hub. `resource`
/// may name one object as `resource/name` (as `kubectl auth can-i` does); Leases are
/// always asked about by their name, gpufed-operator. The operator run below proves the
/// chart is sufficient; this list names each permission so a failure says which one is
/// missing.
const HUB_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "gpufed.io", "gpuproviders", "", ""),
    ("list", "gpufed.io", "gpuproviders", "", ""),
    ("watch", "gpufed.io", "gpuproviders", "", ""),
    ("patch", "gpufed.io", "gpuproviders", "status", ""),
    ("get", "gpufed.io", "computejobs", "", "team-a"),
    ("list", "gpufed.io", "computejobs", "", ""),
    ("watch", "gpufed.io", "computejobs", "", ""),
    ("patch", "gpufed.io", "computejobs", "", "team-a"),
    ("patch", "gpufed.io", "computejobs", "status", "team-a"),
    ("list", "gpufed.io", "stakes", "", ""),
    ("patch", "gpufed.io", "stakes", "status", ""),
    ("create", "coordination.k8s.io", "leases", "", NS),
    ("get", "coordination.k8s.io", "leases", "", NS),
    ("update", "coordination.k8s.io", "leases", "", NS),
    ("get", "", "secrets", "", NS),
    ("get", "", "namespaces", "", ""),
    ("get", "", "configmaps", "", NS),
    ("list", "", "configmaps", "", NS),
    ("create", "", "configmaps", "", NS),
    ("update", "", "configmaps", "", NS),
    ("delete", "", "configmaps", "", NS),
];

/// What the hub's identity must NOT be able to do.
const HUB_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "", "secrets", "", "kube-system"),
    ("list", "", "secrets", "", NS),
    ("watch", "", "secrets", "", NS),
    ("delete", "gpufed.io", "computejobs", "", "team-a"),
    ("update", "gpufed.io", "gpuproviders", "", ""),
    ("create", "gpufed.io", "stakes", "", "team-a"),
    ("create", "coordination.k8s.io", "leases", "", "kube-system"),
    ("create", "", "pods", "", NS),
    ("create", "", "configmaps", "", "kube-system"),
    ("list", "", "configmaps", "", "kube-system"),
    ("list", "", "namespaces", "", ""),
];

/// What the operator does on a member (operator/src/job/dispatch.rs, observe.rs,
/// provider/observe.rs).
const MEMBER_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("create", "", "namespaces", "", ""),
    ("patch", "", "namespaces", "", ""),
    ("delete", "", "namespaces", "", ""),
    ("create", "networking.k8s.io", "networkpolicies", "", "gpufed-t"),
    ("patch", "networking.k8s.io", "networkpolicies", "", "gpufed-t"),
    ("create", "", "resourcequotas", "", "gpufed-t"),
    ("patch", "", "resourcequotas", "", "gpufed-t"),
    ("delete", "", "resourcequotas", "", "gpufed-t"),
    ("create", "", "services", "", "gpufed-t"),
    ("patch", "", "services", "", "gpufed-t"),
    ("get", "", "pods", "", "gpufed-t"),
    ("list", "", "pods", "", ""),
    ("create", "", "pods", "", "gpufed-t"),
    ("patch", "", "pods", "", "gpufed-t"),
    ("deletecollection", "", "pods", "", "gpufed-t"),
    ("get", "", "nodes", "", ""),
    ("list", "", "nodes", "", ""),
    // GPU verification: challenges read back and written by server-side apply, whose
    // first apply creates the ConfigMap: authorized as patch and as create of that name
    // (proven by a real apply below).
    ("get", "", CHALLENGE_CM, "", NS),
    ("patch", "", CHALLENGE_CM, "", NS),
    ("create", "", CHALLENGE_CM, "", NS),
];

const MEMBER_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "", "secrets", "", "kube-system"),
    ("list", "", "secrets", "", ""),
    ("list", "", "secrets", "", NS),
    // Challenges go through a ConfigMap so that the hub never writes Nodes.
    ("patch", "", "nodes", "", ""),
    ("get", "", "configmaps/other", "", NS),
    ("patch", "", "configmaps/other", "", NS),
    ("list", "", "configmaps", "", NS),
    // A plain create (POST, no name) of any ConfigMap.
    ("create", "", "configmaps", "", NS),
    ("create", "", "configmaps/other", "", NS),
    ("delete", "", CHALLENGE_CM, "", NS),
    ("get", "", CHALLENGE_CM, "", "kube-system"),
    ("patch", "", CHALLENGE_CM, "", "kube-system"),
    ("delete", "", "pods", "", "kube-system"),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "",
        "",
    ),
];

/// What the device plugin does (device-plugin/src/node.rs, challenge.rs): labels and the
/// signed report on its Node, the hub's challenge read from the release namespace.
const DEVICE_PLUGIN_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "", "nodes", "", ""),
    ("patch", "", "nodes", "", ""),
    ("get", "", CHALLENGE_CM, "", NS),
];

const DEVICE_PLUGIN_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("patch", "", CHALLENGE_CM, "", NS),
    ("get", "", "configmaps/other", "", NS),
    ("list", "", "configmaps", "", NS),
    ("get", "", CHALLENGE_CM, "", "kube-system"),
    ("get", "", "secrets", "", NS),
    ("list", "", "pods", "", ""),
];

/// The helm binary: `$HELM`, the cache of scripts/install-helm.sh, or `helm` on PATH.
fn helm() -> Option<PathBuf> {
    let cache = std::env::var_os("GPUFED_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/gpufed")))?;
    let candidates = [
        std::env::var_os("HELM").map(PathBuf::from),
        Some(cache.join("bin/helm")),
        Some(PathBuf::from("helm")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn parse_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of a chart, as JSON documents.
fn render(helm: &Path, release: &str, chart: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(helm)
        .args(["template", release])
        .arg(common::repo_root().join("charts").join(chart))
        .args(["--namespace", NS])
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {chart}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_docs(&String::from_utf8(out.stdout).expect("UTF-8"))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// No wildcard anywhere in the rules; no escalate/bind/impersonate, no access to RBAC
/// objects; no Secret access outside a namespaced Role.
fn assert_least_privilege(docs: &[Value]) {
    for doc in docs.iter().filter(|d| matches!(kind(d), "ClusterRole" | "Role")) {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        for rule in doc["rules"].as_array().expect("rules") {
            for field in ["apiGroups", "resources", "verbs"] {
                let values = rule[field].as_array().expect(field);
                assert!(!values.is_empty(), "{name}: empty {field}");
                assert!(
                    values
                        .iter()
                        .all(|v| v.as_str().is_some_and(|s| !s.contains('*'))),
                    "{name}: wildcard in {field}: {rule}"
                );
            }
            let verbs = rule["verbs"].as_array().expect("verbs");
            for v in ["escalate", "bind", "impersonate"] {
                assert!(
                    !verbs.iter().any(|x| x == v),
                    "{name}: verb {v} grants privilege escalation: {rule}"
                );
            }
            let rbac = rule["resources"].as_array().is_some_and(|r| {
                r.iter().any(|v| {
                    ["roles", "clusterroles", "rolebindings", "clusterrolebindings"]
                        .contains(&v.as_str().unwrap_or_default())
                })
            });
            assert!(
                !rbac,
                "{name}: no access to RBAC objects (a way to grant oneself more): {rule}"
            );
            let secrets = rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|v| v == "secrets"));
            if secrets {
                assert_eq!(kind(doc), "Role", "{name}: Secrets only in a namespaced Role");
                assert_eq!(
                    rule["verbs"],
                    serde_json::json!(["get"]),
                    "{name}: Secrets get only"
                );
            }
        }
    }
}

/// With bands (ci/ha-values.yaml), the chart renders them into a ConfigMap mounted where
/// `--challenge-bands` points, in a form the operator accepts.
fn check_challenge_bands(helm: &Path) {
    let ci = common::repo_root().join("charts/gpufed/ci/ha-values.yaml");
    let docs = render(
        helm,
        "gpufed",
        "gpufed",
        &["-f", ci.to_str().expect("UTF-8 path")],
    );
    let cm = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "gpufed-challenge-bands")
        .expect("the bands ConfigMap");
    let bands_yaml = cm["data"]["bands.yaml"].as_str().expect("bands.yaml");
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == "gpufed-challenge-bands")
        .expect("the bands volume");
    let container = &pod["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the bands mount");
    assert_eq!(mount["readOnly"], true);
    let path = format!("{}/bands.yaml", mount["mountPath"].as_str().expect("mountPath"));
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("bands.yaml");
    std::fs::write(&file, bands_yaml).expect("write bands");
    let mut argv = vec!["gpufed-operator".to_owned()];
    for arg in container["args"].as_array().expect("args") {
        let arg = arg.as_str().expect("arg");
        argv.push(match arg.strip_prefix("--challenge-bands=") {
            Some(p) => {
                assert_eq!(p, path, "--challenge-bands points into the mount");
                format!("--challenge-bands={}", file.display())
            }
            None => arg.to_owned(),
        });
    }
    let args = gpufed_operator::cli::Args::try_parse_from(&argv).expect("operator accepts the args");
    assert!(args.challenge_bands.is_some(), "--challenge-bands passed");
    let cfg = args
        .verification()
        .expect("the operator accepts the rendered bands");
    assert_eq!(cfg.bands.bands.len(), 1);
    assert_eq!(cfg.interval, 30 * MINUTE);
    assert_eq!(cfg.timeout, 3 * MINUTE);
    // The stake values of ci/ha-values.yaml reach the operator as it reads them.
    let stake = args.stake().expect("stake flags").expect("stake controller on");
    assert_eq!(stake.slash_bps, 500);
    assert_eq!(cfg.stake_per_gpu, "10");
    assert_eq!(cfg.stake_multipliers.get("nvidia-h100-80gb-hbm3"), Some(&25_000));
}

async fn create_all(client: &Client, docs: &[Value], kinds: &[&str]) {
    for doc in docs.iter().filter(|d| kinds.contains(&kind(d))) {
        gpufed_e2e::crds::create_manifest(client, doc, NS)
            .await
            .unwrap_or_else(|e| panic!("creating {} {}: {e}", kind(doc), doc["metadata"]["name"]));
    }
}

async fn ensure_namespace(client: &Client, name: &str) {
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

/// Asks the real authorizer whether `user` may do each of `checks`; returns the mismatches.
async fn access(
    client: &Client,
    user: &str,
    checks: &[(&str, &str, &str, &str, &str)],
    want: bool,
) -> Vec<String> {
    let sa_ns = user.split(':').nth(2).unwrap_or_default();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut wrong = Vec::new();
    for (verb, group, resource_name, sub, ns) in checks {
        let (resource, name) = match resource_name.split_once('/') {
            Some((r, n)) => (r, Some(n)),
            None if *resource_name == "leases" => (*resource_name, Some("gpufed-operator")),
            None => (*resource_name, None),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{sa_ns}"),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some((*verb).into()),
                    group: Some((*group).into()),
                    resource: Some(resource.into()),
                    subresource: (!sub.is_empty()).then(|| (*sub).into()),
                    namespace: (!ns.is_empty()).then(|| (*ns).into()),
                    name: name.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let result = api
            .create(&PostParams::default(), &review)
            .await
            .expect("SubjectAccessReview");
        let allowed = result.status.is_some_and(|s| s.allowed);
        if allowed != want {
            wrong.push(format!(
                "{verb} {group}/{resource_name}/{sub} in {ns:?}: allowed={allowed}"
            ));
        }
    }
    wrong
}

/// A client for the hub that acts as the chart's ServiceAccount.
async fn impersonating(kubeconfig: &Path, user: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_render_apply_and_are_the_permissions_the_operator_runs_with() {
    common::init_tracing();
    let _serial = common::SERIAL.lock().await;
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm not found (run scripts/install-helm.sh; `make test` does)");
        return;
    };

    // Offline checks of the rendered charts.
    let crds = render(&helm, "gpufed-crds", "gpufed-crds", &[]);
    assert_eq!(of_kind(&crds, "CustomResourceDefinition").len(), 3);
    for crd in &crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{} must survive helm uninstall",
            crd["metadata"]["name"]
        );
    }
    let hub_docs = render(&helm, "gpufed", "gpufed", &[]);
    let provider_docs = render(&helm, "gpufed-provider", "gpufed-provider", &[]);
    assert_least_privilege(&hub_docs);
    assert_least_privilege(&provider_docs);
    // Every value set the charts' CI renders is audited the same way.
    for (chart, values) in [
        ("gpufed", "charts/gpufed/ci/ha-values.yaml"),
        ("gpufed-provider", "charts/gpufed-provider/ci/minimal-values.yaml"),
    ] {
        let file = common::repo_root().join(values);
        assert_least_privilege(&render(
            &helm,
            chart,
            chart,
            &["-f", file.to_str().expect("UTF-8 path")],
        ));
    }
    for docs in [&hub_docs, &provider_docs] {
        assert!(
            of_kind(docs, "PodDisruptionBudget").is_empty(),
            "no PDB for one replica"
        );
        assert!(
            of_kind(docs, "ServiceMonitor").is_empty(),
            "no ServiceMonitor without the API"
        );
    }
    let ha = render(&helm, "gpufed", "gpufed", &["--set", "replicas=2"]);
    assert_eq!(
        of_kind(&ha, "PodDisruptionBudget").len(),
        1,
        "PDB when replicas > 1"
    );
    let with_prom = render(
        &helm,
        "gpufed",
        "gpufed",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1",
        ],
    );
    assert_eq!(of_kind(&with_prom, "ServiceMonitor").len(), 1);
    // The Grafana dashboard: off by default; on, one ConfigMap the sidecar picks up by label.
    assert!(
        of_kind(&hub_docs, "ConfigMap").is_empty(),
        "no ConfigMap by default"
    );
    let with_dash = render(&helm, "gpufed", "gpufed", &["--set", "dashboards.enabled=true"]);
    let dash = of_kind(&with_dash, "ConfigMap");
    assert_eq!(dash.len(), 1, "one dashboard ConfigMap");
    assert_eq!(dash[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dash[0]["data"]["gpufed.json"].as_str().expect("gpufed.json"))
        .expect("the dashboard is JSON");
    assert_eq!(json["uid"], "gpufed-overview");

    // The Deployment's args are flags the operator accepts.
    let deploy = of_kind(&hub_docs, "Deployment")[0];
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(container["resources"]["requests"]["memory"].is_string());
    let mut argv = vec!["gpufed-operator".to_owned()];
    argv.extend(
        container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_owned()),
    );
    let args = gpufed_operator::cli::Args::try_parse_from(&argv).expect("operator accepts the chart's args");
    assert_eq!(args.namespace, NS, "Lease in the release namespace");
    assert_eq!(args.verify_interval, Duration::from_secs(3600));
    assert_eq!(args.challenge_timeout, 2 * MINUTE);
    assert_eq!(
        args.challenge_bands, None,
        "no bands by default (no GPU verifies)"
    );
    check_challenge_bands(&helm);
    let ds = of_kind(&provider_docs, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["volumes"][0]["hostPath"]["path"],
        "/var/lib/kubelet/device-plugins"
    );

    // Apply to real API servers: hub (CRDs + operator chart), member (provider chart).
    let spec = FederationSpec::new("charts").member("provider-a", vec![GpuPool::rtx4090("a-rtx", 2)]);
    let env = TestEnv::start(spec).await.expect("federation");
    let Some(fed) = env.federation() else {
        eprintln!("SKIPPED the apply and operator checks: they need the harness' own federation");
        return;
    };
    let hub = env.hub_client().await.expect("hub");
    let member = env.member_client("provider-a").await.expect("member");
    let dir = std::env::temp_dir().join(format!("gpufed-chart-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let yaml: Vec<String> = crds
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("yaml"))
        .collect();
    std::fs::write(dir.join("crds.yaml"), yaml.join("---\n")).expect("write");
    let names = gpufed_e2e::crds::install_crds(&hub, &dir, MINUTE)
        .await
        .expect("the chart's CRDs install");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(names.len(), 3);
    ensure_namespace(&hub, NS).await;
    ensure_namespace(&member, NS).await;
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
    create_all(&hub, &hub_docs, &objects).await;
    create_all(&member, &provider_docs, &objects).await;

    // The real authorizer agrees with the lists above.
    let mut wrong = access(&hub, HUB_SA, HUB_NEEDS, true).await;
    wrong.extend(access(&hub, HUB_SA, HUB_DENIED, false).await);
    wrong.extend(access(&member, MEMBER_SA, MEMBER_NEEDS, true).await);
    wrong.extend(access(&member, MEMBER_SA, MEMBER_DENIED, false).await);
    wrong.extend(access(&member, DEVICE_PLUGIN_SA, DEVICE_PLUGIN_NEEDS, true).await);
    wrong.extend(access(&member, DEVICE_PLUGIN_SA, DEVICE_PLUGIN_DENIED, false).await);
    assert!(
        wrong.is_empty(),
        "RBAC differs from what the operator needs:\n{}",
        wrong.join("\n")
    );

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
    create_all(&hub, &minted, &["Secret", "GpuProvider"]).await;

    // The operator as the chart's ServiceAccount: provider Ready, a job runs and finishes,
    // and deleting it runs the finalizer (member namespace removed).
    let op_hub = impersonating(fed.hub().kubeconfig(), HUB_SA).await;
    let operator = Operator::start(op_hub, "chart-rbac");
    opsupport::providers_ready(&hub, 1).await;
    let ns = common::namespace(&hub, "charts").await;
    submit(&hub, &ns, &job("rbac-1", 1, 1, serde_json::json!({}), "1.00", 2)).await;
    let done = job_until(&hub, &ns, "rbac-1", "Succeeded", 2 * MINUTE, |j| {
        phase(j) == "Succeeded"
    })
    .await;
    let tenant = gpufed_operator::job::names::tenant_namespace(&ns, "rbac-1");
    let tenant_exists = || async {
        Api::<Namespace>::all(member.clone())
            .get_opt(&tenant)
            .await
            .expect("tenant namespace")
            .is_some_and(|n| n.metadata.deletion_timestamp.is_none())
    };
    assert_eq!(phase(&done), "Succeeded");
    eprintln!(
        "tenant namespace {tenant} present before deletion: {}",
        tenant_exists().await
    );
    Api::<gpufed_api::ComputeJob>::namespaced(hub.clone(), &ns)
        .delete("rbac-1", &DeleteParams::default())
        .await
        .expect("delete job");
    gpufed_e2e::wait::until("job deleted (finalizer ran)", MINUTE, || async {
        let gone = Api::<gpufed_api::ComputeJob>::namespaced(hub.clone(), &ns)
            .get_opt("rbac-1")
            .await?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await
    .expect("the operator, with the chart's RBAC, removes its finalizer");
    assert!(!tenant_exists().await, "member tenant namespace {tenant} removed");
    operator.stop().await;
}

/// A JSON value as a Lua table constructor (null fields are left out, as Argo CD does).
fn lua_literal(v: &Value) -> String {
    fn string(s: &str) -> String {
        let mut out = String::from("\"");
        for b in s.bytes() {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x20..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('"');
        out
    }
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs an Argo CD health.lua on `obj` with lua5.4; returns (status, message).
fn run_lua(lua: &Path, script: &str, obj: &Value) -> (String, String) {
    use std::io::Write;
    let program = format!(
        "local obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_literal(obj)
    );
    let mut child = Command::new(lua)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lua runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(program.as_bytes())
        .expect("write program");
    let out = child.wait_with_output().expect("lua output");
    assert!(
        out.status.success(),
        "lua: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}

/// The Argo CD health checks shipped in charts/gpufed/files/argocd-health give the results
/// their health_test.yaml expects (run with lua5.4 when installed: `make lua`), and
/// kstatus' reading (`gpufed_api::conditions::health`, what Flux sees) agrees on every case
/// it can express (not deletion, which kstatus reads from metadata, nor Suspended).
#[test]
fn argocd_health_lua_matches_its_tests_and_agrees_with_kstatus() {
    use gpufed_api::conditions::{Health, health};
    let lua = ["lua5.4", "lua"].into_iter().map(PathBuf::from).find(|p| {
        Command::new(p)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if lua.is_none() {
        eprintln!("SKIPPED the Lua half: no lua5.4 (`make lua` installs it); kstatus half runs");
    }
    let root = common::repo_root().join("charts/gpufed/files/argocd-health/gpufed.io");
    let (mut lua_checked, mut kstatus_checked) = (0, 0);
    for kind in ["ComputeJob", "GpuProvider", "Stake"] {
        let dir = root.join(kind);
        let script = std::fs::read_to_string(dir.join("health.lua")).expect("health.lua");
        let tests: Value = serde_yaml::from_str(
            &std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"),
        )
        .expect("health_test.yaml parses");
        let cases = tests["tests"].as_array().expect("tests");
        let statuses: std::collections::BTreeSet<&str> = cases
            .iter()
            .filter_map(|c| c["healthStatus"]["status"].as_str())
            .collect();
        for want in ["Healthy", "Degraded", "Progressing"] {
            assert!(statuses.contains(want), "{kind}: no {want} test case");
        }
        for case in cases {
            let input = case["inputPath"].as_str().expect("inputPath");
            let obj: Value =
                serde_yaml::from_str(&std::fs::read_to_string(dir.join(input)).expect("testdata"))
                    .expect("testdata parses");
            let want_status = case["healthStatus"]["status"].as_str().expect("status");
            let want_message = case["healthStatus"]["message"].as_str().unwrap_or_default();
            if let Some(lua) = &lua {
                let (status, message) = run_lua(lua, &script, &obj);
                assert_eq!(
                    (status.as_str(), message.as_str()),
                    (want_status, want_message),
                    "{kind} {input}"
                );
                lua_checked += 1;
            }
            let kstatus_want = match want_status {
                "Healthy" => Health::Current,
                "Degraded" => Health::Failed,
                "Progressing" => Health::InProgress,
                _ => continue,
            };
            if !obj["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let conditions: Vec<gpufed_api::Condition> =
                serde_json::from_value(obj["status"]["conditions"].clone()).unwrap_or_default();
            let got = health(
                obj["metadata"]["generation"].as_i64(),
                obj["status"]["observedGeneration"].as_i64(),
                &conditions,
            );
            assert_eq!(got, kstatus_want, "kstatus vs Argo CD on {kind} {input}");
            kstatus_checked += 1;
        }
    }
    assert!(
        kstatus_checked >= 15,
        "only {kstatus_checked} cases compared with kstatus"
    );
    if lua.is_some() {
        assert!(lua_checked >= 20, "only {lua_checked} Lua cases ran");
    }
}
