//! Offline checks of the rendered charts: CRDs, the RBAC audit of every CI value set,
//! optional objects, the operator's and the agent's args, the device plugin's DaemonSet
//! (chartsupport/device_plugin.rs, also run alone by charts.rs' render-only test).

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

use super::audit::{assert_least_privilege, check_agent_cluster_roles};
use super::device_plugin::check_device_plugin;
use super::pull::check_pull_mode;
use super::{MINUTE, NS, of_kind, render};
use crate::common;

/// The charts as rendered with their default values (pull mode: ci/pull-values.yaml).
pub struct Rendered {
    /// The CRD chart.
    pub crds: Vec<Value>,
    /// The hub chart.
    pub hub_docs: Vec<Value>,
    /// The provider chart (push mode).
    pub provider_docs: Vec<Value>,
    /// The provider chart in pull mode.
    pub pull_docs: Vec<Value>,
}

/// Offline checks of the rendered charts; returns them for the apply.
pub fn check_rendered(helm: &Path) -> Rendered {
    let crds = render(helm, "gpufed-crds", "gpufed-crds", &[]);
    assert_eq!(of_kind(&crds, "CustomResourceDefinition").len(), 6);
    for crd in &crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{} must survive helm uninstall",
            crd["metadata"]["name"]
        );
    }
    let hub_docs = render(helm, "gpufed", "gpufed", &[]);
    let provider_docs = render(helm, "gpufed-provider", "gpufed-provider", &[]);
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
            helm,
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
    let ha = render(helm, "gpufed", "gpufed", &["--set", "replicas=2"]);
    assert_eq!(
        of_kind(&ha, "PodDisruptionBudget").len(),
        1,
        "PDB when replicas > 1"
    );
    let with_prom = render(
        helm,
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
    check_alerts(helm, &hub_docs);
    // The Grafana dashboard: off by default; on, one ConfigMap the sidecar picks up by label.
    assert!(
        of_kind(&hub_docs, "ConfigMap").is_empty(),
        "no ConfigMap by default"
    );
    let with_dash = render(helm, "gpufed", "gpufed", &["--set", "dashboards.enabled=true"]);
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
    let argv = super::argv("gpufed-operator", container);
    let args = gpufed_operator::cli::Args::try_parse_from(&argv).expect("operator accepts the chart's args");
    assert_eq!(args.namespace, NS, "Lease in the release namespace");
    assert_eq!(args.verify_interval, Duration::from_secs(3600));
    assert_eq!(args.challenge_timeout, 2 * MINUTE);
    assert_eq!(args.challenge_round_grace, Duration::from_secs(5));
    assert_eq!(
        args.challenge_bands, None,
        "no bands by default (no GPU verifies)"
    );
    assert!(
        args.serving_endpoint_cidrs.is_empty(),
        "no serving endpoint networks by default"
    );
    check_challenge_bands(helm);
    check_agent_cluster_roles(&hub_docs);
    let pull_docs = check_pull_mode(helm, &provider_docs);
    check_device_plugin(helm);
    Rendered {
        crds,
        hub_docs,
        provider_docs,
        pull_docs,
    }
}

/// With bands (ci/ha-values.yaml), the chart renders them into a ConfigMap mounted where
/// `--challenge-bands` points, in a form the operator accepts. An evidence cooldown the
/// operator would refuse is refused by the chart, with the value named.
pub fn check_challenge_bands(helm: &Path) {
    for (cooldown, ok) in [
        ("10m", false),
        ("14m59s", false),
        ("15m", true),
        ("1h", true),
        ("24h", true),
    ] {
        let set = format!("verification.evidenceCooldown={cooldown}");
        match super::try_render(helm, "gpufed", "gpufed", &["--set", &set]) {
            Ok(_) => assert!(ok, "{cooldown} rendered"),
            Err(e) => assert!(
                !ok && e.contains("evidenceCooldown") && e.contains(cooldown),
                "{cooldown}: {e}"
            ),
        }
    }
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
    assert_eq!(cfg.bands.bands.len(), 2);
    let h100 = cfg.bands.get("NVIDIA H100 80GB HBM3").expect("the H100 band");
    assert_eq!(
        h100.params.arith,
        gpufed_trust::workload::Arith::F64,
        "arith: f64 arrives"
    );
    assert_eq!(cfg.interval, 30 * MINUTE);
    assert_eq!(cfg.timeout, 3 * MINUTE);
    assert_eq!(cfg.before_start, 5 * MINUTE);
    // The stake values of ci/ha-values.yaml reach the operator as it reads them.
    let stake = args.stake().expect("stake flags").expect("stake controller on");
    assert_eq!(stake.slash_bps, 500);
    assert_eq!(cfg.stake_per_gpu, "10");
    assert_eq!(cfg.stake_multipliers.get("nvidia-h100-80gb-hbm3"), Some(&25_000));
    // settlement.mintDecimals reaches the operator (wrapped SOL: 9).
    let settlement = args
        .settlement()
        .expect("settlement flags")
        .expect("settlement on");
    assert_eq!(settlement.mint_decimals, Some(9));
    // serving.endpointCidrs reaches the operator as one comma-separated flag.
    let cidrs: Vec<String> = args
        .serving_endpoint_cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "2001:db8::/32"]);
}

/// The alerting rules: no PrometheusRule by default or without the API; with both, every
/// alert of files/alerts/gpufed.yaml but the disabled, each with the added labels and its
/// own severity.
fn check_alerts(helm: &Path, defaults: &[Value]) {
    assert!(
        of_kind(defaults, "PrometheusRule").is_empty(),
        "no alerts by default"
    );
    let on = ["--set", "alerts.enabled=true"];
    assert!(
        of_kind(&render(helm, "gpufed", "gpufed", &on), "PrometheusRule").is_empty(),
        "no PrometheusRule without the API"
    );
    let docs = render(
        helm,
        "gpufed",
        "gpufed",
        &[
            "--set",
            "alerts.enabled=true",
            "--set",
            "alerts.labels.team=platform",
            "--set",
            "alerts.labels.severity=page",
            "--set",
            "alerts.ruleLabels.release=prom",
            "--set",
            "alerts.disabled={GpufedInvalidInventory}",
            "--api-versions",
            "monitoring.coreos.com/v1",
        ],
    );
    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["metadata"]["labels"]["release"], "prom");
    let file: Value = serde_yaml::from_str(
        &std::fs::read_to_string(common::repo_root().join("charts/gpufed/files/alerts/gpufed.yaml"))
            .expect("the rules file"),
    )
    .expect("YAML");
    let alerts = |groups: &Value| -> Vec<(String, Value)> {
        let groups = groups.as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| (r["alert"].as_str().unwrap_or_default().to_owned(), r))
            .collect()
    };
    let want: Vec<String> = alerts(&file["groups"])
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name != "GpufedInvalidInventory")
        .collect();
    let rendered = alerts(&rules[0]["spec"]["groups"]);
    let names: Vec<&String> = rendered.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        want.iter().collect::<Vec<_>>(),
        "every alert but the disabled one"
    );
    for (name, rule) in &rendered {
        assert_eq!(rule["labels"]["team"], "platform", "{name}");
        assert_ne!(
            rule["labels"]["severity"], "page",
            "{name}: its own severity stays"
        );
        assert!(
            rule["expr"].as_str().is_some_and(|e| e.contains("gpufed_")),
            "{name}"
        );
        assert!(rule["annotations"]["description"].is_string(), "{name}");
    }
}
