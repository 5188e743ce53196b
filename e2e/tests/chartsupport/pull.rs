//! Pull mode of the provider chart, rendered: gpufed-agent's Deployment as the agent
//! reads it (args, env, files), its RBAC, and nothing of push mode's hub access.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

use super::audit::assert_least_privilege;
use super::{AGENT_IDENTITY_SECRET, MINUTE, kind, of_kind, render};
use crate::common;

/// The env of a rendered container as (name, value) pairs (literal values only).
pub fn env_of(container: &Value) -> Vec<(String, String)> {
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
pub fn volume_for<'a>(pod: &'a Value, container: &Value, file: &str) -> &'a Value {
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
pub fn agent_args(container: &Value) -> gpufed_agent::Args {
    use clap::CommandFactory as _;
    let cmd = gpufed_agent::Args::command();
    let mut argv = super::argv("gpufed-agent", container);
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
pub fn check_pull_mode(helm: &Path, push_docs: &[Value]) -> Vec<Value> {
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
