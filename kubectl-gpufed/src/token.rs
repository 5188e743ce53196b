//! Pure: `provider token` — the checks before a pull-mode agent's bootstrap token is
//! issued (`spec.mode`, `--ttl`), its expiration, and what is printed: the token, where
//! the agent connects, and the helm command that installs it.

use gpufed_api::GpuProvider;
use gpufed_api::formats::parse_duration;
use gpufed_api::provider::ConnectionMode;
use kube::ResourceExt;
use serde::Serialize;

use crate::error::{Error, Result};

/// Longest `--ttl`: a week (the token only has to outlive the agent's registration).
pub const MAX_TTL_SECS: u64 = 168 * 3600;
/// Namespace of bootstrap-token Secrets (the only one the API server reads them from).
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// Type of bootstrap-token Secrets.
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Label the token Secret carries: the provider's agent namespace.
pub const LABEL_AGENT_NAMESPACE: &str = "gpufed.io/agent-namespace";
/// Where the helm command reads the hub's CA certificate from.
pub const CA_FILE: &str = "hub-ca.pem";

/// `--ttl` in seconds: a duration such as `24h` or `1h30m`, more than 0, at most 168h.
pub fn ttl_seconds(text: &str) -> Result<u64> {
    let flag = |message: String| Error::Flag {
        flag: "--ttl".into(),
        message,
    };
    let secs = parse_duration(text).map_err(|e| flag(e.to_string()))?;
    if secs == 0 {
        return Err(flag("must be longer than 0s".into()));
    }
    if secs > MAX_TTL_SECS {
        return Err(flag(format!(
            "{text:?} is longer than 168h (a week); issue a new token when it expires"
        )));
    }
    Ok(secs)
}

/// The token's expiration, RFC 3339 in UTC, `ttl` seconds after `now` (Unix seconds).
pub fn expiration(now: i64, ttl: u64) -> Result<String> {
    i64::try_from(ttl)
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok())
        .map(|t| t.to_string())
        .ok_or_else(|| Error::Flag {
            flag: "--ttl".into(),
            message: format!("{ttl}s from now is not a representable time"),
        })
}

/// Tokens are for pull-mode providers: any other `spec.mode` is an error naming it.
pub fn check_pull_mode(provider: &GpuProvider) -> Result<()> {
    match provider.spec.mode {
        ConnectionMode::Pull => Ok(()),
        mode => Err(Error::NotPullMode {
            provider: provider.name_any(),
            mode: format!("{mode:?}"),
        }),
    }
}

/// The API server URL as agents should be given it (no trailing `/`).
pub fn hub_server(url: &str) -> String {
    match url.trim_end_matches('/') {
        "" => url.to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// Label selector of a provider's token Secrets (the label the manifest sets).
pub fn revoke_selector(provider: &str) -> String {
    format!(
        "{LABEL_AGENT_NAMESPACE}={}",
        gpufed_api::pull::agent_namespace(provider)
    )
}

/// An issued token: `-o json|yaml` prints exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    /// The GpuProvider.
    pub provider: String,
    /// `<id>.<secret>`.
    pub token: String,
    /// RFC 3339.
    pub expiration: String,
    /// The hub's API server URL, from the kubeconfig context.
    pub hub_server: String,
    /// The provider's agent namespace in the hub.
    pub agent_namespace: String,
}

/// What `--revoke` did: `-o json|yaml` prints this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    /// The GpuProvider.
    pub provider: String,
    /// The provider's agent namespace in the hub.
    pub agent_namespace: String,
    /// How many token Secrets were deleted.
    pub revoked: usize,
    /// Their names (in `kube-system`).
    pub secrets: Vec<String>,
}

/// `text` as one shell word: unchanged when only safe characters, else single-quoted.
pub fn sh_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.,:/=@%+".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The helm command that installs the provider chart in pull mode with this token.
pub fn helm_command(issued: &Issued) -> String {
    format!(
        "helm install gpufed-provider charts/gpufed-provider --set mode=pull \\\n  \
         --set provider.name={} \\\n  --set hub.server={} \\\n  \
         --set-file hub.caData={CA_FILE} \\\n  --set hub.bootstrapToken={}\n",
        sh_quote(&issued.provider),
        sh_quote(&issued.hub_server),
        sh_quote(&issued.token),
    )
}

/// The command that writes the hub's CA certificate to [`CA_FILE`], with the plugin's
/// own `--kubeconfig` and `--context` when they were given.
pub fn ca_command(kubeconfig: Option<&str>, context: Option<&str>) -> String {
    let mut flags = String::new();
    if let Some(k) = kubeconfig {
        flags.push_str(&format!(" --kubeconfig {}", sh_quote(k)));
    }
    if let Some(c) = context {
        flags.push_str(&format!(" --context {}", sh_quote(c)));
    }
    format!(
        "kubectl config view --raw --minify --flatten{flags} \\\n  \
         -o jsonpath='{{.clusters[0].cluster.certificate-authority-data}}' | base64 -d > {CA_FILE}\n"
    )
}

/// The human output of an issued token; `ttl` in seconds, `ca` from [`ca_command`].
pub fn render(issued: &Issued, ttl: u64, ca: &str) -> String {
    let ttl = crate::output::human_duration(i64::try_from(ttl).unwrap_or(i64::MAX));
    format!(
        "Bootstrap token for GpuProvider {} (pull mode):\n\n\
         Token:            {}\n\
         Expires:          {} (in {ttl})\n\
         Hub API server:   {}\n\
         Agent namespace:  {}\n\n\
         The hub's CA certificate, from this kubeconfig:\n\n{ca}\n\
         The agent, installed in the provider's cluster:\n\n{}",
        issued.provider,
        issued.token,
        issued.expiration,
        issued.hub_server,
        issued.agent_namespace,
        helm_command(issued),
    )
}

/// The human output of `--revoke`.
pub fn render_revoked(r: &Revoked) -> String {
    let what = if r.revoked == 1 { "token" } else { "tokens" };
    let mut out = format!(
        "revoked {} bootstrap {what} of GpuProvider {} ({TOKEN_NAMESPACE}, {LABEL_AGENT_NAMESPACE}={})\n",
        r.revoked, r.provider, r.agent_namespace
    );
    for s in &r.secrets {
        out.push_str(&format!("secret/{s} deleted\n"));
    }
    out
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
