use gpufed_api::pull::{BootstrapToken, bootstrap_group};

use super::*;
use crate::fixtures::{T0, T0_TEXT, provider};
use crate::output::{Format, document, parse_time};

fn issued() -> Issued {
    Issued {
        provider: "rtx-home".into(),
        token: "abcdef.0123456789abcdef".into(),
        expiration: "2026-01-02T00:00:00Z".into(),
        hub_server: "https://hub.example.com:6443".into(),
        agent_namespace: "gpufed-agent-rtx-home".into(),
    }
}

#[test]
fn ttls_are_go_durations_up_to_a_week() {
    assert_eq!(ttl_seconds("24h").unwrap(), 86_400);
    assert_eq!(ttl_seconds("1h30m").unwrap(), 5_400);
    assert_eq!(ttl_seconds("168h").unwrap(), MAX_TTL_SECS);
    for bad in [
        "",
        "1d",
        "24",
        "30m1h",
        "-1h",
        "0s",
        "169h",
        "167h61m",
        "99999999999999999999h",
    ] {
        let e = ttl_seconds(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid --ttl: "), "{bad:?}: {e}");
    }
    assert!(ttl_seconds("169h").unwrap_err().to_string().contains("168h"));
    assert!(ttl_seconds("1d").unwrap_err().to_string().contains("1h30m"));
}

#[test]
fn expiration_is_rfc3339_utc_ttl_after_now() {
    assert_eq!(expiration(T0, 0).unwrap(), T0_TEXT);
    let e = expiration(T0, 86_400).unwrap();
    assert_eq!(e, "2026-01-02T00:00:00Z");
    assert_eq!(parse_time(&e), Some(T0 + 86_400));
    assert!(expiration(T0, u64::MAX).is_err());
}

#[test]
fn only_pull_mode_providers_get_tokens() {
    let mut p = provider("rtx-home", None);
    let e = check_pull_mode(&p).unwrap_err().to_string();
    assert!(e.contains("gpuprovider rtx-home has spec.mode Push"), "{e}");
    assert!(e.contains("spec.mode: Pull"), "{e}");
    p.spec.mode = ConnectionMode::Pull;
    assert!(check_pull_mode(&p).is_ok());
}

#[test]
fn the_token_secret_is_what_revoke_selects() {
    // The manifest (gpufed_api::pull) carries the label revoke selects on.
    let t = BootstrapToken::from_random(&[9u8; 22]);
    let m = t.secret_manifest("dc1.example.com", T0_TEXT);
    let (key, value) = revoke_selector("dc1.example.com")
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .unwrap();
    assert_eq!(m["metadata"]["labels"][&key], value.as_str());
    assert_eq!(m["metadata"]["namespace"], TOKEN_NAMESPACE);
    assert_eq!(m["type"], TOKEN_SECRET_TYPE);
    assert_eq!(
        m["stringData"]["auth-extra-groups"],
        bootstrap_group("dc1.example.com").as_str()
    );
}

#[test]
fn hub_server_has_no_trailing_slash() {
    assert_eq!(hub_server("https://10.0.0.1:6443/"), "https://10.0.0.1:6443");
    assert_eq!(hub_server("https://h/k8s/"), "https://h/k8s");
    assert_eq!(hub_server("https://h"), "https://h");
}

#[test]
fn shell_words_are_quoted_only_when_needed() {
    assert_eq!(sh_quote("https://h:6443"), "https://h:6443");
    assert_eq!(sh_quote("a b"), "'a b'");
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
    assert_eq!(sh_quote(""), "''");
}

#[test]
fn the_helm_command_sets_the_provider_charts_pull_values() {
    let cmd = helm_command(&issued());
    let words: Vec<&str> = cmd.split_whitespace().filter(|w| *w != "\\").collect();
    assert_eq!(
        words,
        [
            "helm",
            "install",
            "gpufed-provider",
            "charts/gpufed-provider",
            "--set",
            "mode=pull",
            "--set",
            "provider.name=rtx-home",
            "--set",
            "hub.server=https://hub.example.com:6443",
            "--set-file",
            "hub.caData=hub-ca.pem",
            "--set",
            "hub.bootstrapToken=abcdef.0123456789abcdef",
        ]
    );
    // Every line but the last continues the command.
    let lines: Vec<&str> = cmd.lines().collect();
    assert!(
        lines[..lines.len() - 1].iter().all(|l| l.ends_with(" \\")),
        "{cmd}"
    );
}

#[test]
fn the_table_output_shows_token_expiry_server_namespace_and_helm() {
    let ca = ca_command(Some("/tmp/hub config"), Some("hub"));
    assert!(
        ca.contains("--kubeconfig '/tmp/hub config' --context hub"),
        "{ca}"
    );
    assert!(ca.trim_end().ends_with("| base64 -d > hub-ca.pem"), "{ca}");
    assert!(!ca_command(None, None).contains("--context"));
    let out = render(&issued(), 86_400, &ca);
    for line in [
        "Token:            abcdef.0123456789abcdef",
        "Expires:          2026-01-02T00:00:00Z (in 24h)",
        "Hub API server:   https://hub.example.com:6443",
        "Agent namespace:  gpufed-agent-rtx-home",
        "helm install gpufed-provider charts/gpufed-provider --set mode=pull \\",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing in\n{out}");
    }
    assert!(out.contains(&helm_command(&issued())), "{out}");
    assert!(out.contains(ca.trim_end()), "{out}");
}

#[test]
fn json_and_yaml_carry_exactly_the_five_fields() {
    let json: serde_json::Value = serde_json::from_str(&document(&issued(), Format::Json).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "provider": "rtx-home",
            "token": "abcdef.0123456789abcdef",
            "expiration": "2026-01-02T00:00:00Z",
            "hubServer": "https://hub.example.com:6443",
            "agentNamespace": "gpufed-agent-rtx-home",
        })
    );
    let yaml: serde_json::Value = serde_yaml::from_str(&document(&issued(), Format::Yaml).unwrap()).unwrap();
    assert_eq!(yaml, json);
}

#[test]
fn revoke_reports_how_many() {
    let mut r = Revoked {
        provider: "p".into(),
        agent_namespace: "gpufed-agent-p".into(),
        revoked: 0,
        secrets: vec![],
    };
    assert_eq!(
        render_revoked(&r),
        "revoked 0 bootstrap tokens of GpuProvider p (kube-system, gpufed.io/agent-namespace=gpufed-agent-p)\n"
    );
    r.revoked = 1;
    r.secrets = vec!["bootstrap-token-abcdef".into()];
    let out = render_revoked(&r);
    assert!(out.starts_with("revoked 1 bootstrap token of"), "{out}");
    assert!(out.ends_with("secret/bootstrap-token-abcdef deleted\n"), "{out}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["revoked"], 1);
    assert_eq!(json["agentNamespace"], "gpufed-agent-p");
}
