//! The Helm charts in tests (e2e/tests/charts.rs): rendering with helm, the RBAC audit of
//! the rendered charts, the permissions each chart identity needs and must not have (asked
//! of the real authorizer), applying the charts and minting a provider, pull mode's agent
//! (its Deployment and its identities), the device plugin's DaemonSet as the plugin parses
//! it, the hub's NetworkPolicy, and the Argo CD health checks run with Lua.

pub mod access;
pub mod apply;
pub mod audit;
pub mod device_plugin;
pub mod lua;
pub mod network_policy;
pub mod old_chart;
pub mod permissions;
pub mod pull;
pub mod pull_identities;
pub mod rendered;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::common;

pub const NS: &str = "gpufed-system";
pub const HUB_SA: &str = "system:serviceaccount:gpufed-system:gpufed";
pub const MEMBER_SA: &str = "system:serviceaccount:gpufed-system:gpufed-hub";
pub const DEVICE_PLUGIN_SA: &str = "system:serviceaccount:gpufed-system:gpufed-provider-device-plugin";
/// The pull-mode agent's ServiceAccount in the member (provider chart, mode=pull).
pub const AGENT_SA: &str = "system:serviceaccount:gpufed-system:gpufed-agent";
/// The Secret where the agent keeps its hub identity (its `--identity-secret` default).
pub const AGENT_IDENTITY_SECRET: &str = "gpufed-agent-identity";
/// The hub namespace of provider-a's agent (`gpufed_api::pull::agent_namespace`).
pub const AGENT_NS: &str = "gpufed-agent-provider-a";
/// The two ClusterRoles the hub chart ships for pull mode; the only roles the operator
/// may `bind`, and the only RoleBindings it may write.
pub const AGENT_ROLES: [&str; 2] = ["gpufed-agent", "gpufed-agent-bootstrap"];
pub const RBAC: &str = "rbac.authorization.k8s.io";
/// The member ConfigMap that carries the hub's GPU compute challenges.
pub const CHALLENGE_CM: &str = "configmaps/gpufed-challenge";
pub const MINUTE: Duration = Duration::from_secs(60);

/// The helm binary: `$HELM`, the cache of scripts/install-helm.sh, or `helm` on PATH.
pub fn helm() -> Option<PathBuf> {
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

pub fn parse_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of a chart, as JSON documents.
pub fn render(helm: &Path, release: &str, chart: &str, args: &[&str]) -> Vec<Value> {
    try_render(helm, release, chart, args).unwrap_or_else(|e| panic!("helm template {chart}: {e}"))
}

/// `helm template` of a chart: its documents, or helm's error (for values it must refuse).
pub fn try_render(helm: &Path, release: &str, chart: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm)
        .args(["template", release])
        .arg(common::repo_root().join("charts").join(chart))
        .args(["--namespace", NS])
        .args(args)
        .output()
        .expect("helm runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(parse_docs(&String::from_utf8(out.stdout).expect("UTF-8")))
}

pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// The command line a rendered container runs: `binary` then its `args`, as a CLI parser
/// (`try_parse_from`) takes it.
pub fn argv(binary: &str, container: &Value) -> Vec<String> {
    let mut argv = vec![binary.to_owned()];
    argv.extend(
        container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_owned()),
    );
    argv
}

pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}
