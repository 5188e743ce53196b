//! Pull mode's fixed names: the hub namespace each pull-mode provider's agent lives in,
//! its ServiceAccount, the ConfigMaps it exchanges with the hub, the bootstrap group of
//! its registration token, and that token's Secret. The operator, the agent, the
//! kubectl plugin and the tests all derive them from here.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// ServiceAccount (in the provider's hub namespace) whose tokens are the agent's identity.
pub const AGENT_SERVICE_ACCOUNT: &str = "gpufed-agent";
/// ClusterRole (shipped by the hub chart) bound in each agent namespace to the agent.
pub const AGENT_CLUSTER_ROLE: &str = "gpufed-agent";
/// ClusterRole (shipped by the hub chart) bound to the registration token's group: it
/// may only request a token for the agent's ServiceAccount.
pub const BOOTSTRAP_CLUSTER_ROLE: &str = "gpufed-agent-bootstrap";
/// ConfigMap the agent writes: its member's inventory, signed node reports, challenges.
pub const REPORT_CONFIGMAP: &str = "gpufed-agent-report";
/// Key of the report (JSON) in [`REPORT_CONFIGMAP`].
pub const REPORT_KEY: &str = "report.json";
/// ConfigMap the hub writes for the agent: resource name, node selector, interval.
pub const AGENT_CONFIGMAP: &str = "gpufed-agent-config";
/// ConfigMap of challenge requests, the same name on the hub (for the agent) and in the
/// member (for the device plugins).
pub const CHALLENGE_CONFIGMAP: &str = "gpufed-challenge";
/// Field manager of every write the agent makes (in the hub and in its member).
pub const AGENT_FIELD_MANAGER: &str = "gpufed-agent";
/// Label on Assignments: the tenant namespace in the member.
pub const LABEL_TENANT_NAMESPACE: &str = "gpufed.io/tenant-namespace";
/// The longest report interval an agent takes from the hub's config (a larger one, or
/// one that overflows a timer, is read as this).
pub const MAX_INTERVAL_SECONDS: u64 = 3600;
/// The longest challenge poll an agent takes from the hub's config.
pub const MAX_CHALLENGE_POLL_MILLIS: u64 = 60_000;
/// Annotation on an agent namespace: the provider it belongs to.
pub const ANNOTATION_PROVIDER: &str = "gpufed.io/provider";

fn hash8(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `name` ends as a hashed agent namespace does: `-` and 8 lowercase hex digits.
fn ends_like_a_hash(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 9
        && b[b.len() - 9] == b'-'
        && b[b.len() - 8..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// The hub namespace of a pull-mode provider's agent: `gpufed-agent-<provider>`, or,
/// when the provider's name has dots, is too long for a namespace, or ends as such a
/// hashed name does (`-` and 8 hex digits), a DNS label made of its first characters and
/// a hash of the whole name. So a plain name never ends like a hashed one, and no two
/// providers share a namespace (`dc1.example.com` hashes to `…-dc1-example-com-ba79ae45`;
/// a provider named `dc1-example-com-ba79ae45` is hashed too).
pub fn agent_namespace(provider: &str) -> String {
    let plain = format!("gpufed-agent-{provider}");
    if plain.len() <= 63 && !provider.contains('.') && !ends_like_a_hash(provider) {
        return plain;
    }
    let cleaned: String = provider.replace('.', "-");
    let head: String = cleaned.chars().take(63 - "gpufed-agent-".len() - 9).collect();
    format!("gpufed-agent-{}-{}", head.trim_end_matches('-'), hash8(provider))
}

/// The group a provider's registration token authenticates with (besides
/// `system:bootstrappers`); only this group is bound to [`BOOTSTRAP_CLUSTER_ROLE`] in
/// the provider's agent namespace.
pub fn bootstrap_group(provider: &str) -> String {
    format!("system:bootstrappers:gpufed:{}", agent_namespace(provider))
}

/// Name of an Assignment: the tenant namespace and the attempt.
pub fn assignment_name(tenant_namespace: &str, attempt: u32) -> String {
    format!("{tenant_namespace}-a{attempt}")
}

/// The two ClusterRoles pull mode needs, as the hub chart ships them (the operator binds
/// them per agent namespace; a chart test checks the chart against this).
///
/// `gpufed-agent`: its own Assignments (read) and their status (write), its report
/// ConfigMap (write), its config and challenge ConfigMaps (read), and a new token for
/// its own ServiceAccount (renewal). Nothing else: no Secrets, no other namespace, no
/// ComputeJobs, no GpuProviders.
///
/// `gpufed-agent-bootstrap`: only a token for the agent's ServiceAccount (registration).
pub fn cluster_roles() -> Vec<serde_json::Value> {
    let labels = serde_json::json!({"app.kubernetes.io/part-of": "gpufed", "app.kubernetes.io/component": "gpufed-agent"});
    let token_rule = serde_json::json!({
        "apiGroups": [""], "resources": ["serviceaccounts/token"],
        "resourceNames": [AGENT_SERVICE_ACCOUNT], "verbs": ["create"]
    });
    vec![
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": AGENT_CLUSTER_ROLE, "labels": labels},
            "rules": [
                {"apiGroups": [crate::GROUP], "resources": ["assignments"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [crate::GROUP], "resources": ["assignments/status"], "verbs": ["get", "patch", "update"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [REPORT_CONFIGMAP], "verbs": ["get", "patch", "update"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [AGENT_CONFIGMAP], "verbs": ["get"]},
                // Watched by name (field selector metadata.name): relayed at once.
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CHALLENGE_CONFIGMAP], "verbs": ["get", "list", "watch"]},
                token_rule,
            ]
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": BOOTSTRAP_CLUSTER_ROLE, "labels": labels},
            "rules": [token_rule]
        }),
    ]
}

/// A Kubernetes bootstrap token `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, also the Secret's name suffix.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

impl BootstrapToken {
    /// A token from 22 random bytes (each mapped onto `[a-z0-9]`).
    pub fn from_random(bytes: &[u8; 22]) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let chars: String = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        Self {
            id: chars[..6].to_owned(),
            secret: chars[6..].to_owned(),
        }
    }

    /// Parses `<id>.<secret>`; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (id, secret) = text
            .split_once('.')
            .ok_or_else(|| "bootstrap token: expected <id>.<secret>".to_owned())?;
        let ok = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !ok(id, 6) || !ok(secret, 16) {
            return Err("bootstrap token: id must be 6 and secret 16 characters of [a-z0-9]".into());
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The bearer token.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The `kube-system` Secret that makes the API server accept this token (with
    /// `--enable-bootstrap-token-auth`) as `system:bootstrap:<id>` in the provider's
    /// bootstrap group, until `expiration` (RFC 3339).
    pub fn secret_manifest(&self, provider: &str, expiration: &str) -> serde_json::Value {
        let data: BTreeMap<&str, String> = BTreeMap::from([
            ("token-id", self.id.clone()),
            ("token-secret", self.secret.clone()),
            ("expiration", expiration.to_owned()),
            ("usage-bootstrap-authentication", "true".to_owned()),
            ("auth-extra-groups", bootstrap_group(provider)),
            (
                "description",
                format!("gpufed agent registration for provider {provider}"),
            ),
        ]);
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": format!("bootstrap-token-{}", self.id),
                "namespace": "kube-system",
                "labels": {"app.kubernetes.io/managed-by": "gpufed", "gpufed.io/agent-namespace": agent_namespace(provider)},
            },
            "type": "bootstrap.kubernetes.io/token",
            "stringData": data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_label(s: &str) -> bool {
        regex::Regex::new(crate::common::DNS_LABEL_PATTERN)
            .map(|r| r.is_match(s))
            .unwrap_or(false)
    }

    #[test]
    fn agent_namespaces_are_dns_labels_and_distinct() {
        assert_eq!(agent_namespace("rtx-home"), "gpufed-agent-rtx-home");
        let long = "a".repeat(200);
        let dotted = "dc1.example.com";
        for name in [long.as_str(), dotted, "x"] {
            let ns = agent_namespace(name);
            assert!(dns_label(&ns), "{ns}");
        }
        assert_ne!(
            agent_namespace("dc1.example.com"),
            agent_namespace("dc1-example-com")
        );
        assert_ne!(agent_namespace(&"a".repeat(60)), agent_namespace(&"a".repeat(61)));
    }

    #[test]
    fn agent_namespaces_never_collide() {
        let hashed = agent_namespace("dc1.example.com");
        assert_eq!(hashed, "gpufed-agent-dc1-example-com-ba79ae45");
        // A provider named as that hashed form (a DNS subdomain may be) is hashed too.
        let lookalike = "dc1-example-com-ba79ae45";
        let long = "b".repeat(60);
        let long_lookalike = agent_namespace(&long)
            .trim_start_matches("gpufed-agent-")
            .to_owned();
        let names = [
            "dc1.example.com",
            lookalike,
            "dc1-example-com",
            long.as_str(),
            long_lookalike.as_str(),
            "rtx-home",
            "rig-deadbeef",
            "rig-deadbeef0",
            "rig-deadbeef-x",
        ];
        let spaces: Vec<String> = names.iter().map(|n| agent_namespace(n)).collect();
        for (i, a) in spaces.iter().enumerate() {
            assert!(dns_label(a), "{a}");
            for (j, b) in spaces.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{} and {}", names[i], names[j]);
            }
        }
        // Names that do not end like a hash keep their plain namespace (no rename).
        assert_eq!(agent_namespace("rig-deadbeef0"), "gpufed-agent-rig-deadbeef0");
        assert_eq!(agent_namespace("dc1-example-com"), "gpufed-agent-dc1-example-com");
        assert_ne!(agent_namespace("rig-deadbeef"), "gpufed-agent-rig-deadbeef");
    }

    #[test]
    fn bootstrap_group_matches_the_api_servers_pattern() {
        // The pattern the API server requires of auth-extra-groups.
        let re = regex::Regex::new("^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$").expect("regex");
        for name in ["p", "dc1.example.com", &"z".repeat(253)] {
            assert!(re.is_match(&bootstrap_group(name)), "{name}");
        }
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_named() {
        let t = BootstrapToken::from_random(&[7u8; 22]);
        assert_eq!(BootstrapToken::parse(&t.bearer()), Ok(t.clone()));
        assert!(BootstrapToken::parse("abc").is_err_and(|e| e.contains("<id>.<secret>")));
        assert!(BootstrapToken::parse("ABCDEF.0123456789abcdef").is_err());
        let s = t.secret_manifest("p", "2026-12-02T00:00:00Z");
        assert_eq!(
            s["stringData"]["auth-extra-groups"],
            "system:bootstrappers:gpufed:gpufed-agent-p"
        );
        assert_eq!(s["metadata"]["name"], format!("bootstrap-token-{}", t.id));
    }
}
