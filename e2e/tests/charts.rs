//! The Helm charts on a real API server: rendered with helm, applied to the hub and a
//! member, and the operator then runs with the chart's identities — on the hub as the
//! chart's ServiceAccount (impersonated), on the member with the token that
//! scripts/mint-provider.sh minted for the provider chart's ServiceAccount. A missing
//! permission in either chart fails a provider, a dispatch or a cleanup below. Pull mode:
//! the operator, as the chart's ServiceAccount, prepares an agent namespace (binding the
//! chart's agent ClusterRoles), the agent's and its bootstrap group's hub identities
//! request their tokens, and the provider chart's agent RBAC (mode=pull) is applied to the
//! member and used as the agent uses it.

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
/// The pull-mode agent's ServiceAccount in the member (provider chart, mode=pull).
const AGENT_SA: &str = "system:serviceaccount:gpufed-system:gpufed-agent";
/// The Secret where the agent keeps its hub identity (its `--identity-secret` default).
const AGENT_IDENTITY_SECRET: &str = "gpufed-agent-identity";
/// The hub namespace of provider-a's agent (`gpufed_api::pull::agent_namespace`).
const AGENT_NS: &str = "gpufed-agent-provider-a";
/// The two ClusterRoles the hub chart ships for pull mode; the only roles the operator
/// may `bind`, and the only RoleBindings it may write.
const AGENT_ROLES: [&str; 2] = ["gpufed-agent", "gpufed-agent-bootstrap"];
const RBAC: &str = "rbac.authorization.k8s.io";
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
    // Pull mode (operator/src/member/pull.rs): the agent namespace, its ServiceAccount, the
    // two RoleBindings (bind of exactly the chart's two ClusterRoles), its ConfigMaps
    // (the report is created by POST: no name), the Assignments.
    ("create", "", "namespaces", "", ""),
    ("patch", "", "namespaces", "", ""),
    ("get", "", "serviceaccounts/gpufed-agent", "", AGENT_NS),
    ("create", "", "serviceaccounts/gpufed-agent", "", AGENT_NS),
    ("patch", "", "serviceaccounts/gpufed-agent", "", AGENT_NS),
    ("create", RBAC, "rolebindings/gpufed-agent", "", AGENT_NS),
    ("patch", RBAC, "rolebindings/gpufed-agent", "", AGENT_NS),
    ("get", RBAC, "rolebindings/gpufed-agent-bootstrap", "", AGENT_NS),
    (
        "create",
        RBAC,
        "rolebindings/gpufed-agent-bootstrap",
        "",
        AGENT_NS,
    ),
    ("patch", RBAC, "rolebindings/gpufed-agent-bootstrap", "", AGENT_NS),
    ("bind", RBAC, "clusterroles/gpufed-agent", "", AGENT_NS),
    ("bind", RBAC, "clusterroles/gpufed-agent-bootstrap", "", AGENT_NS),
    ("create", "", "configmaps", "", AGENT_NS),
    ("create", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("get", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("get", "gpufed.io", "assignments", "", AGENT_NS),
    ("list", "gpufed.io", "assignments", "", AGENT_NS),
    ("watch", "gpufed.io", "assignments", "", AGENT_NS),
    ("create", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "gpufed.io", "assignments", "", AGENT_NS),
    ("delete", "gpufed.io", "assignments", "", AGENT_NS),
    ("deletecollection", "gpufed.io", "assignments", "", AGENT_NS),
    ("get", "gpufed.io", "assignments", "status", AGENT_NS),
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
    // ConfigMaps: create anywhere (pull mode's report is created by POST, which names no
    // object), but read or write only the three pull-mode names outside NS.
    ("list", "", "configmaps", "", "kube-system"),
    ("get", "", "configmaps/other", "", "kube-system"),
    ("patch", "", "configmaps/other", "", AGENT_NS),
    ("delete", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    ("list", "", "namespaces", "", ""),
    ("delete", "", "namespaces", "", ""),
    // No other ServiceAccount, no tokens: only the agent and its bootstrap group get those.
    ("create", "", "serviceaccounts", "", AGENT_NS),
    ("patch", "", "serviceaccounts/default", "", "kube-system"),
    ("create", "", "serviceaccounts/gpufed-agent", "token", AGENT_NS),
    ("create", "", "serviceaccounts/gpufed", "token", NS),
    // RBAC: the two RoleBindings by name, bind of the two ClusterRoles, nothing else.
    ("create", RBAC, "rolebindings", "", "kube-system"),
    ("create", RBAC, "rolebindings/other", "", AGENT_NS),
    ("delete", RBAC, "rolebindings/gpufed-agent", "", AGENT_NS),
    ("create", RBAC, "roles", "", AGENT_NS),
    ("create", RBAC, "clusterroles", "", ""),
    ("create", RBAC, "clusterrolebindings", "", ""),
    ("bind", RBAC, "clusterroles/cluster-admin", "", AGENT_NS),
    ("bind", RBAC, "clusterroles/gpufed", "", AGENT_NS),
    ("bind", RBAC, "roles/gpufed-agent", "", AGENT_NS),
    ("escalate", RBAC, "clusterroles/gpufed-agent", "", ""),
    ("impersonate", "", "serviceaccounts", "", AGENT_NS),
    ("impersonate", "", "users", "", ""),
    ("patch", "gpufed.io", "assignments", "status", AGENT_NS),
];

/// What a pull-mode agent's hub identity may do, in its own namespace only.
const AGENT_HUB_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "gpufed.io", "assignments", "status", AGENT_NS),
    ("get", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("get", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-agent-report", "", AGENT_NS),
    ("create", "", "serviceaccounts/gpufed-agent", "token", AGENT_NS),
];

const AGENT_HUB_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "gpufed.io", "assignments", "", "gpufed-agent-other"),
    ("create", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "gpufed.io", "assignments", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-agent-config", "", AGENT_NS),
    ("patch", "", "configmaps/gpufed-challenge", "", AGENT_NS),
    ("list", "", "configmaps", "", AGENT_NS),
    ("get", "", "secrets", "", AGENT_NS),
    ("create", "", "serviceaccounts/default", "token", AGENT_NS),
    (
        "create",
        "",
        "serviceaccounts/gpufed-agent",
        "token",
        "gpufed-agent-other",
    ),
    ("list", "gpufed.io", "computejobs", "", ""),
    ("get", "gpufed.io", "gpuproviders", "", ""),
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

/// What the pull-mode agent does in its member (agent/src/sync.rs, identity.rs): all the
/// operator does on a push-mode member (it applies Assignments with the operator's code),
/// removes withdrawn work, keeps its identity Secret (server-side apply: patch, and
/// create of that name).
const AGENT_MEMBER_EXTRA_NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "", "namespaces", "", ""),
    ("delete", "", "pods", "", "gpufed-t"),
    ("get", "", "secrets/gpufed-agent-identity", "", NS),
    ("create", "", "secrets/gpufed-agent-identity", "", NS),
    ("patch", "", "secrets/gpufed-agent-identity", "", NS),
];

const AGENT_MEMBER_DENIED: &[(&str, &str, &str, &str, &str)] = &[
    ("list", "", "secrets", "", NS),
    ("watch", "", "secrets", "", NS),
    ("get", "", "secrets/other", "", NS),
    // A plain create (POST, no name) of any Secret.
    ("create", "", "secrets", "", NS),
    ("delete", "", "secrets/gpufed-agent-identity", "", NS),
    ("get", "", "secrets/gpufed-agent-identity", "", "kube-system"),
    ("create", "", "secrets/gpufed-agent-identity", "", "kube-system"),
    ("get", "", "secrets", "", "kube-system"),
    ("patch", "", "nodes", "", ""),
    ("get", "", "configmaps/other", "", NS),
    ("create", "", "configmaps", "", NS),
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

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// No wildcard anywhere in the rules; no escalate or impersonate; `bind` only of the two
/// pull-mode ClusterRoles, by name; no access to RBAC objects but the two pull-mode
/// RoleBindings, by name (get/create/patch); no Secret access outside a namespaced Role,
/// and there either `get` or, by name, the agent's identity Secret (get/create/patch).
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
            let verbs = strings(&rule["verbs"]);
            let resources = strings(&rule["resources"]);
            let mut names = strings(&rule["resourceNames"]);
            names.sort_unstable();
            let only = |allowed: &[&str]| verbs.iter().all(|v| allowed.contains(v));
            for v in ["escalate", "impersonate"] {
                assert!(
                    !verbs.contains(&v),
                    "{name}: verb {v} grants privilege escalation: {rule}"
                );
            }
            if verbs.contains(&"bind") {
                assert!(
                    kind(doc) == "ClusterRole"
                        && strings(&rule["apiGroups"]) == [RBAC]
                        && resources == ["clusterroles"]
                        && verbs == ["bind"]
                        && names == AGENT_ROLES,
                    "{name}: bind only of the ClusterRoles {AGENT_ROLES:?}, by name: {rule}"
                );
            }
            for r in &resources {
                match *r {
                    "clusterroles" => assert!(
                        verbs == ["bind"],
                        "{name}: no access to ClusterRoles but bind: {rule}"
                    ),
                    "rolebindings" => assert!(
                        only(&["get", "create", "patch"]) && names == AGENT_ROLES,
                        "{name}: RoleBindings only {AGENT_ROLES:?}, by name, get/create/patch: {rule}"
                    ),
                    "roles" | "clusterrolebindings" => {
                        panic!("{name}: no access to {r} (a way to grant oneself more): {rule}")
                    }
                    _ => {}
                }
            }
            if resources.contains(&"secrets") {
                assert_eq!(kind(doc), "Role", "{name}: Secrets only in a namespaced Role");
                let get_only = verbs == ["get"];
                let identity = names == [AGENT_IDENTITY_SECRET] && only(&["get", "create", "patch"]);
                assert!(
                    get_only || identity,
                    "{name}: Secrets get only, or the agent's identity Secret by name: {rule}"
                );
            }
        }
    }
}

/// The hub chart's ClusterRoles: the operator's and exactly the two pull-mode ones, whose
/// rules are `gpufed_api::pull::cluster_roles()` (what the operator and the agent expect).
fn check_agent_cluster_roles(docs: &[Value]) {
    let mut found: Vec<&str> = of_kind(docs, "ClusterRole")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    found.sort_unstable();
    assert_eq!(found, ["gpufed", "gpufed-agent", "gpufed-agent-bootstrap"]);
    let want = gpufed_api::pull::cluster_roles();
    assert_eq!(want.len(), AGENT_ROLES.len());
    for role in &want {
        let name = role["metadata"]["name"].as_str().expect("name");
        assert!(AGENT_ROLES.contains(&name), "{name}");
        let rendered = of_kind(docs, "ClusterRole")
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the hub chart ships ClusterRole {name}"));
        assert_eq!(
            rendered["rules"], role["rules"],
            "ClusterRole {name}: the chart's rules differ from gpufed_api::pull::cluster_roles()"
        );
        for (k, v) in role["metadata"]["labels"].as_object().expect("labels") {
            assert_eq!(
                &rendered["metadata"]["labels"][k], v,
                "ClusterRole {name}: label {k}"
            );
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

/// A client that acts as `user` in `groups`, with `namespace` as its default namespace (as
/// an in-cluster client of a pod in that namespace has).
async fn impersonating_as(kubeconfig: &Path, user: &str, groups: &[&str], namespace: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some(user.into());
    if !groups.is_empty() {
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    config.default_namespace = namespace.into();
    Client::try_from(config).expect("client")
}

/// The API server URL and CA bundle (PEM) of a harness kubeconfig.
fn endpoint_of(kubeconfig: &Path) -> (String, Vec<u8>) {
    use base64::Engine as _;
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let kc: Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let cluster = &kc["clusters"][0]["cluster"];
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().expect("CA data"))
        .expect("CA base64");
    (cluster["server"].as_str().expect("server").to_owned(), ca)
}

/// The env of a rendered container as (name, value) pairs (literal values only).
fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_owned();
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("env {name}: a literal value"))
                .to_owned();
            (name, value)
        })
        .collect()
}

/// The volume (in `pod`) mounted at the directory of `file` in `container`.
fn volume_for<'a>(pod: &'a Value, container: &Value, file: &str) -> &'a Value {
    let dir = Path::new(file).parent().expect("a file in a directory");
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
        .unwrap_or_else(|| panic!("no volume mounted at {}", dir.display()));
    assert_eq!(mount["readOnly"], true, "{file}: mounted read-only");
    pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume")
}

/// The agent as the rendered Deployment starts it: its args, and its env turned into the
/// flags they stand for (every GPUFED_ variable must be one of the agent's).
fn agent_args(container: &Value) -> gpufed_agent::Args {
    use clap::CommandFactory as _;
    let cmd = gpufed_agent::Args::command();
    let mut argv = vec!["gpufed-agent".to_owned()];
    argv.extend(
        container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_owned()),
    );
    for (name, value) in env_of(container) {
        if name == "RUST_LOG" {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env() == Some(std::ffi::OsStr::new(&name)))
            .unwrap_or_else(|| panic!("env {name} is no flag of gpufed-agent"));
        let long = arg.get_long().expect("long flag");
        if arg.get_action().takes_values() {
            argv.push(format!("--{long}={value}"));
        } else if value == "true" {
            argv.push(format!("--{long}"));
        } else {
            assert_eq!(value, "false", "env {name}: a boolean");
        }
    }
    gpufed_agent::Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("gpufed-agent rejects {argv:?}: {e}"))
}

/// Pull mode of the provider chart (ci/pull-values.yaml): gpufed-agent's Deployment with
/// the env and files the agent reads, its RBAC, and nothing of push mode's hub access (no
/// ServiceAccount for a hub kubeconfig, no binding of one). Returns the rendered documents.
fn check_pull_mode(helm: &Path, push_docs: &[Value]) -> Vec<Value> {
    const RELEASE: &str = "gpufed-provider-pull";
    let ci = common::repo_root().join("charts/gpufed-provider/ci/pull-values.yaml");
    let ci = ci.to_str().expect("UTF-8 path");
    let docs = render(helm, RELEASE, "gpufed-provider", &["-f", ci]);
    assert_least_privilege(&docs);
    let named = |k: &str, n: &str| {
        docs.iter()
            .find(|d| kind(d) == k && d["metadata"]["name"] == n)
            .unwrap_or_else(|| panic!("pull mode renders {k} {n}"))
    };

    // Push mode's hub access is gone but for the member ClusterRole, now the agent's.
    let accounts: Vec<&str> = of_kind(&docs, "ServiceAccount")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(accounts, ["gpufed-agent", "gpufed-provider-pull-device-plugin"]);
    for k in ["ClusterRoleBinding", "RoleBinding"] {
        for binding in of_kind(&docs, k) {
            for subject in binding["subjects"].as_array().expect("subjects") {
                assert!(
                    subject["name"] == "gpufed-agent"
                        || subject["name"] == "gpufed-provider-pull-device-plugin",
                    "pull mode binds nothing to a hub identity: {binding}"
                );
            }
        }
    }
    assert!(
        !docs.iter().any(|d| d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-hub-challenge"))),
        "no challenge Role for a hub identity in pull mode"
    );
    let member_role = named("ClusterRole", "gpufed-provider-pull-hub");
    let push_role = of_kind(push_docs, "ClusterRole")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "gpufed-provider-hub")
        .expect("push mode's member ClusterRole");
    assert_eq!(
        member_role["rules"], push_role["rules"],
        "the agent holds what the hub holds in push mode"
    );
    let member_binding = named("ClusterRoleBinding", "gpufed-provider-pull-agent-member");
    assert_eq!(member_binding["roleRef"]["name"], "gpufed-provider-pull-hub");
    let role = named("Role", "gpufed-provider-pull-agent");
    assert!(
        role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["resourceNames"] == serde_json::json!([AGENT_IDENTITY_SECRET])),
        "the agent's Role names its identity Secret"
    );

    // The Deployment: one agent, never two at once, restricted.
    let deploy = named("Deployment", "gpufed-provider-pull-agent");
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "gpufed-agent");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(
        container["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("ghcr.io/gpufed/gpufed-agent:")),
        "{}",
        container["image"]
    );
    let env: std::collections::BTreeMap<String, String> = env_of(container).into_iter().collect();
    for name in [
        "GPUFED_PROVIDER",
        "GPUFED_HUB_SERVER",
        "GPUFED_HUB_CA_FILE",
        "GPUFED_BOOTSTRAP_TOKEN_FILE",
        "GPUFED_IDENTITY_SECRET",
        "GPUFED_LOG_JSON",
    ] {
        assert!(env.contains_key(name), "env {name}");
    }

    // The agent accepts what the chart passes, as the values say.
    let args = agent_args(container);
    assert_eq!(args.provider, "rtx-home");
    assert_eq!(args.hub_server, "https://hub.example.com:6443");
    assert_eq!(args.identity_secret, AGENT_IDENTITY_SECRET);
    assert_eq!(args.token_ttl, Duration::from_secs(3600));
    assert_eq!(args.renew_after, Some(45 * MINUTE));
    assert_eq!(args.interval, Duration::from_secs(15));
    assert!(!args.log_json);

    // Its files: the hub CA from the ConfigMap, the token from the Secret (key `token`).
    let ca_file = args.hub_ca_file.to_str().expect("UTF-8 path");
    let ca_volume = volume_for(pod, container, ca_file);
    let ca_cm = named(
        "ConfigMap",
        ca_volume["configMap"]["name"].as_str().expect("CA ConfigMap"),
    );
    assert_eq!(ca_volume["configMap"]["items"][0]["key"], "ca.crt");
    assert!(ca_file.ends_with("/ca.crt"));
    assert!(
        ca_cm["data"]["ca.crt"]
            .as_str()
            .is_some_and(|c| c.starts_with("-----BEGIN CERTIFICATE-----")),
        "the CA is PEM"
    );
    let token_file = args
        .bootstrap_token_file
        .as_ref()
        .expect("--bootstrap-token-file");
    let token_volume = volume_for(pod, container, token_file.to_str().expect("UTF-8 path"));
    assert_eq!(
        token_volume["secret"]["optional"], true,
        "a deleted token Secret must not keep a registered agent from starting"
    );
    assert_eq!(token_volume["secret"]["items"][0]["key"], "token");
    let secret = named(
        "Secret",
        token_volume["secret"]["secretName"].as_str().expect("Secret"),
    );
    let token = secret["stringData"]["token"].as_str().expect("token");
    gpufed_api::pull::BootstrapToken::parse(token).expect("the token is a bootstrap token");

    // The agent's own default identity Secret is the one its Role names.
    let defaults = gpufed_agent::Args::try_parse_from([
        "gpufed-agent",
        "--provider=p",
        "--hub-server=https://h",
        "--hub-ca-file=/c",
    ])
    .expect("minimal flags");
    assert_eq!(defaults.identity_secret, AGENT_IDENTITY_SECRET);

    // An existing token Secret: none rendered, that one mounted; no token at all: no file.
    let existing = render(
        helm,
        RELEASE,
        "gpufed-provider",
        &[
            "-f",
            ci,
            "--set",
            "hub.bootstrapToken=,hub.bootstrapTokenSecret=provider-token",
        ],
    );
    assert!(
        of_kind(&existing, "Secret").is_empty(),
        "no Secret for an existing one"
    );
    let pod = &of_kind(&existing, "Deployment")[0]["spec"]["template"]["spec"];
    let token_volume = volume_for(pod, &pod["containers"][0], token_file.to_str().expect("path"));
    assert_eq!(token_volume["secret"]["secretName"], "provider-token");
    let tokenless = render(
        helm,
        RELEASE,
        "gpufed-provider",
        &["-f", ci, "--set", "hub.bootstrapToken="],
    );
    let container = &of_kind(&tokenless, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(agent_args(container).bootstrap_token_file, None);
    assert!(of_kind(&tokenless, "Secret").is_empty());

    // The install command `kubectl gpufed provider token` prints (docs/kubectl.md).
    let dir = tempfile::tempdir().expect("tmp");
    let ca_pem = dir.path().join("hub-ca.pem");
    std::fs::write(&ca_pem, ca_cm["data"]["ca.crt"].as_str().expect("CA")).expect("write CA");
    let printed = render(
        helm,
        "gpufed-provider",
        "gpufed-provider",
        &[
            "--set",
            "mode=pull",
            "--set",
            "provider.name=rtx-home",
            "--set",
            "hub.server=https://hub.example.com:6443",
            "--set-file",
            &format!("hub.caData={}", ca_pem.display()),
            "--set",
            "hub.bootstrapToken=k3v9qa.7m2xw0c8b1fz4hd6",
        ],
    );
    let container = &of_kind(&printed, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    let args = agent_args(container);
    assert_eq!(
        (args.provider.as_str(), args.hub_server.as_str()),
        ("rtx-home", "https://hub.example.com:6443")
    );
    assert!(args.bootstrap_token_file.is_some());

    // Push mode (the default) renders no agent.
    assert!(
        of_kind(push_docs, "Deployment").is_empty(),
        "no agent in push mode"
    );
    assert!(
        !push_docs.iter().any(|d| d["metadata"]["name"] == "gpufed-agent"),
        "no agent ServiceAccount in push mode"
    );
    docs
}

fn forbidden(what: &str, e: &anyhow::Error) {
    let code = e.chain().find_map(|c| match c.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    });
    assert_eq!(code, Some(403), "{what}: expected 403 Forbidden, got {e:#}");
}

/// Pull mode with nothing but the charts' identities (provider-a is a push provider; only
/// the RBAC is under test here, e2e/tests/pull_mode.rs runs pull mode end to end): the
/// operator, as the hub chart's ServiceAccount, prepares provider-a's agent namespace
/// (binding the chart's agent ClusterRoles, which it may only `bind`) and uses it; the
/// bootstrap group registers and the agent renews with the chart's ClusterRoles; one
/// agent round runs with that hub token and, in the member, as the provider chart's
/// agent ServiceAccount (mode=pull); the operator then reads the agent's report.
async fn pull_mode_with_the_charts_identities(fed: &gpufed_e2e::Federation, hub: &Client, member: &Client) {
    use gpufed_agent::identity::{HubEndpoint, IdentityStore};
    use gpufed_operator::member::pull::{HubHealth, PullLink, ensure};

    assert_eq!(gpufed_api::pull::agent_namespace("provider-a"), AGENT_NS);
    let hub_kc = fed.hub().kubeconfig();
    let op_hub = impersonating(hub_kc, HUB_SA).await;
    let provider = Api::<gpufed_api::GpuProvider>::all(hub.clone())
        .get("provider-a")
        .await
        .expect("provider-a");
    for round in 1..=2 {
        ensure(&op_hub, &provider, 5).await.unwrap_or_else(|e| {
            panic!("the chart's operator prepares the agent namespace (round {round}): {e}")
        });
    }
    let now = gpufed_operator::time::now();
    let link = PullLink::new(op_hub, "provider-a", HubHealth::new(now));
    link.write_challenges(&std::collections::BTreeMap::new())
        .await
        .expect("the operator writes the agent's challenges");
    let (pods, lost) = link
        .attempt_pods("gpufed-t", 1)
        .await
        .expect("the operator reads Assignments");
    assert!(pods.is_empty() && lost.is_empty());
    link.remove_attempt("gpufed-t", 1)
        .await
        .expect("the operator withdraws an Assignment");
    link.remove_namespace("gpufed-t")
        .await
        .expect("the operator withdraws a tenant namespace's Assignments");

    // The agent's hub identity, as the authorizer sees it.
    let agent_user = format!("system:serviceaccount:{AGENT_NS}:gpufed-agent");
    let mut wrong = access(hub, &agent_user, AGENT_HUB_NEEDS, true).await;
    wrong.extend(access(hub, &agent_user, AGENT_HUB_DENIED, false).await);
    assert!(
        wrong.is_empty(),
        "the agent's hub identity (ClusterRole gpufed-agent) differs:\n{}",
        wrong.join("\n")
    );

    // Registration as the provider's bootstrap group, renewal with the token it bought.
    let (server, ca_pem) = endpoint_of(hub_kc);
    let endpoint = HubEndpoint {
        server,
        ca_pem,
        namespace: AGENT_NS.into(),
        timeout: Duration::from_secs(10),
    };
    let group = gpufed_api::pull::bootstrap_group("provider-a");
    let bootstrapper = impersonating_as(
        hub_kc,
        "system:bootstrap:abcdef",
        &["system:bootstrappers", &group, "system:authenticated"],
        AGENT_NS,
    )
    .await;
    let first = endpoint
        .request_token(&bootstrapper, 10 * MINUTE, now)
        .await
        .expect("the bootstrap group registers (ClusterRole gpufed-agent-bootstrap)");
    let elsewhere = HubEndpoint {
        namespace: NS.into(),
        ..endpoint.clone()
    };
    let denied = elsewhere.request_token(&bootstrapper, 10 * MINUTE, now).await;
    forbidden(
        "a bootstrap token outside its agent namespace",
        &denied.expect_err("denied"),
    );
    let as_agent = endpoint.client(&first.token).await.expect("hub client");
    let identity = endpoint
        .request_token(&as_agent, 10 * MINUTE, now)
        .await
        .expect("the agent renews with itself (ClusterRole gpufed-agent)");

    // In the member, as the provider chart's agent ServiceAccount (in the release namespace).
    let member_cluster = fed.cluster("provider-a").expect("member cluster");
    let member_agent = impersonating_as(member_cluster.kubeconfig(), AGENT_SA, &[], NS).await;
    let store = IdentityStore::new(&member_agent, AGENT_IDENTITY_SECRET);
    for _ in 0..2 {
        store
            .save(&identity)
            .await
            .expect("the agent creates, then updates, its identity Secret by server-side apply");
    }
    assert_eq!(store.load().await.expect("load"), Some(identity.clone()));
    let mut state = gpufed_agent::sync::State::new(Duration::from_secs(5));
    gpufed_agent::sync::round(&as_agent, &member_agent, &mut state)
        .await
        .unwrap_or_else(|e| panic!("one agent round with the charts' identities: {e:#}"));
    let view = link
        .probe()
        .await
        .unwrap_or_else(|e| panic!("the operator reads the agent's report: {e}"));
    assert!(
        !view.nodes.is_empty(),
        "the agent reported provider-a's GPU nodes"
    );

    // Leave the member as push mode expects it.
    let _ = Api::<Secret>::namespaced(member.clone(), NS)
        .delete(AGENT_IDENTITY_SECRET, &DeleteParams::default())
        .await;
    let _ = Api::<ConfigMap>::namespaced(member.clone(), NS)
        .delete(
            gpufed_operator::verification::CHALLENGE_CONFIGMAP,
            &DeleteParams::default(),
        )
        .await;
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
    assert_eq!(of_kind(&crds, "CustomResourceDefinition").len(), 4);
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
        ("gpufed-provider", "charts/gpufed-provider/ci/pull-values.yaml"),
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
    check_agent_cluster_roles(&hub_docs);
    let pull_docs = check_pull_mode(&helm, &provider_docs);
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
    assert_eq!(names.len(), 4);
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
        &member,
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

    // The real authorizer agrees with the lists above.
    let mut wrong = access(&hub, HUB_SA, HUB_NEEDS, true).await;
    wrong.extend(access(&hub, HUB_SA, HUB_DENIED, false).await);
    wrong.extend(access(&member, MEMBER_SA, MEMBER_NEEDS, true).await);
    wrong.extend(access(&member, MEMBER_SA, MEMBER_DENIED, false).await);
    wrong.extend(access(&member, DEVICE_PLUGIN_SA, DEVICE_PLUGIN_NEEDS, true).await);
    wrong.extend(access(&member, DEVICE_PLUGIN_SA, DEVICE_PLUGIN_DENIED, false).await);
    wrong.extend(access(&member, AGENT_SA, MEMBER_NEEDS, true).await);
    wrong.extend(access(&member, AGENT_SA, AGENT_MEMBER_EXTRA_NEEDS, true).await);
    wrong.extend(access(&member, AGENT_SA, AGENT_MEMBER_DENIED, false).await);
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
    pull_mode_with_the_charts_identities(fed, &hub, &member).await;

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
