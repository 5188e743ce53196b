//! The kubeconfig in a provider's Secret: parsed without ever quoting it, and refused when
//! it would make the operator do more than send the credentials it carries.
//!
//! The Secret is the provider's to write. A kubeconfig may name a command to run for a
//! token (`exec`, `auth-provider`) — run inside the operator's pod, with its
//! ServiceAccount token at hand — or files to read (`tokenFile`, `client-certificate`,
//! `client-key`, `certificate-authority`): the operator's own token file, say, sent as a
//! bearer token to the provider's server. Only inline credentials are taken, in the user
//! and cluster the current context names (the only ones used; others are left alone):
//! `token`, `client-certificate-data` with `client-key-data`, `username` with `password`,
//! and `certificate-authority-data` (what `scripts/mint-provider.sh` writes).

use kube::config::Kubeconfig;

use crate::error::{Error, Result};

/// The kubeconfig in a provider's Secret. A parse error says where, never what: the YAML
/// parser quotes the source around the error, and the text around a typo in a kubeconfig
/// is a token or a key — which would reach the GpuProvider's status, logs and tenants'
/// job conditions.
pub(super) fn parse(provider: &str, bytes: &[u8]) -> Result<Kubeconfig> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::member(
            provider,
            format!("kubeconfig is not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|_| {
        Error::member(
            provider,
            "kubeconfig is not a valid kubeconfig YAML document (contents not shown: they may hold credentials)",
        )
    })?;
    if let Some(field) = refused(&kubeconfig) {
        return Err(Error::member(
            provider,
            format!(
                "kubeconfig: {field} is not accepted: a provider's kubeconfig may carry only inline credentials (token, client-certificate-data and client-key-data, username and password, certificate-authority-data), never a command to run or a file to read in the operator's pod"
            ),
        ));
    }
    Ok(kubeconfig)
}

/// The first field of `kubeconfig` that would run a command or read a file in the
/// operator's pod, named as in the kubeconfig (`users[0].user.exec`); `None` when it has
/// none. Only the entries the operator uses are looked at — the current context's cluster
/// and user, found as kube finds them (the first of each name) — so a kubeconfig that also
/// holds, say, an `exec` user for a person's own `kubectl` still works. Without a current
/// context nothing is used (building the client fails, saying so).
pub(super) fn refused(kubeconfig: &Kubeconfig) -> Option<String> {
    let context = kubeconfig
        .current_context
        .as_ref()
        .and_then(|name| kubeconfig.contexts.iter().find(|c| &c.name == name))?
        .context
        .as_ref()?;
    let user = context.user.as_ref().and_then(|name| {
        kubeconfig
            .auth_infos
            .iter()
            .enumerate()
            .find(|(_, u)| &u.name == name)
    });
    if let Some((i, named)) = user
        && let Some(user) = named.auth_info.as_ref()
    {
        let fields = [
            ("exec", user.exec.is_some()),
            ("auth-provider", user.auth_provider.is_some()),
            ("tokenFile", user.token_file.is_some()),
            ("client-certificate", user.client_certificate.is_some()),
            ("client-key", user.client_key.is_some()),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, set)| *set) {
            return Some(format!("users[{i}].user.{field}"));
        }
    }
    let cluster = kubeconfig
        .clusters
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == context.cluster);
    if let Some((i, named)) = cluster
        && named
            .cluster
            .as_ref()
            .is_some_and(|c| c.certificate_authority.is_some())
    {
        return Some(format!("clusters[{i}].cluster.certificate-authority"));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_that_does_not_parse_is_reported_without_its_contents() {
        for bad in [
            &b"sekrit-token-123: [\n"[..],
            b"abc123secret",
            b"users: [{name: u, user: {token: sekrit-token-123}}]\n  bad: indent",
        ] {
            let e = parse("p", bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("kubeconfig"), "{e}");
            assert!(!e.contains("sekrit") && !e.contains("abc123"), "leaked: {e}");
        }
        let e = parse("p", b"\xff\xfe")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://member.example:6443\n{cluster}\
             users:\n- name: u\n  user:\n{user}\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
        )
    }

    #[test]
    fn a_kubeconfig_that_would_run_a_command_or_read_a_file_in_the_operator_is_refused() {
        let ca = "    certificate-authority-data: Y2E=\n";
        for (cluster, user, field) in [
            (
                ca,
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'cat /var/run/secrets/kubernetes.io/serviceaccount/token']\n",
                "users[0].user.exec",
            ),
            (
                ca,
                "    auth-provider:\n      name: gcp\n      config: {cmd-path: /bin/sh}\n",
                "users[0].user.auth-provider",
            ),
            (
                ca,
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                "users[0].user.tokenFile",
            ),
            (
                ca,
                "    client-certificate: /etc/tls/tls.crt\n    client-key-data: a2V5\n",
                "users[0].user.client-certificate",
            ),
            (
                ca,
                "    client-certificate-data: Y2VydA==\n    client-key: /etc/tls/tls.key\n",
                "users[0].user.client-key",
            ),
            (
                "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n",
                "    token: abc\n",
                "clusters[0].cluster.certificate-authority",
            ),
        ] {
            let text = kubeconfig(cluster, user);
            let e = parse("p", text.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(field) && e.contains("not accepted"), "{field}: {e}");
        }
    }

    #[test]
    fn inline_credentials_are_accepted() {
        let ca = "    certificate-authority-data: Y2E=\n";
        for user in [
            "    token: abc\n",
            "    client-certificate-data: Y2VydA==\n    client-key-data: a2V5\n",
            "    username: admin\n    password: pw\n",
        ] {
            let text = kubeconfig(ca, user);
            assert!(parse("p", text.as_bytes()).is_ok(), "{user}");
        }
        // No CA at all (a public CA, or insecure-skip-tls-verify): nothing to read.
        let text = kubeconfig("    insecure-skip-tls-verify: true\n", "    token: abc\n");
        assert!(parse("p", text.as_bytes()).is_ok());
    }

    #[test]
    fn only_the_entries_the_current_context_uses_are_looked_at() {
        // A kubeconfig with a spare exec user and a cluster whose CA is a file, both
        // unused: the current context's inline token and CA are all the operator uses.
        let text = |current: &str| {
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n\
                 - name: laptop\n  cluster:\n    server: https://laptop.example:6443\n    certificate-authority: /home/me/ca.crt\n\
                 - name: member\n  cluster:\n    server: https://member.example:6443\n    certificate-authority-data: Y2E=\n\
                 users:\n\
                 - name: me\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n\
                 - name: hub\n  user:\n    token: abc\n\
                 contexts:\n\
                 - name: mine\n  context: {{cluster: laptop, user: me}}\n\
                 - name: hub\n  context: {{cluster: member, user: hub}}\n\
                 - name: mixed\n  context: {{cluster: laptop, user: hub}}\n\
                 current-context: {current}\n"
            )
        };
        assert!(
            parse("p", text("hub").as_bytes()).is_ok(),
            "unused entries are not used"
        );
        let refused = |current: &str| {
            parse("p", text(current).as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            refused("mine").contains("users[0].user.exec"),
            "{}",
            refused("mine")
        );
        assert!(
            refused("mixed").contains("clusters[0].cluster.certificate-authority"),
            "{}",
            refused("mixed")
        );
        // No current context: nothing is used (the client is not built either).
        let none = text("hub").replace("current-context: hub\n", "");
        assert!(parse("p", none.as_bytes()).is_ok());
    }
}
