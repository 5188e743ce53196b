//! The Grafana dashboard of `charts/gpufed` queries only metrics this operator exports, under
//! their exact exposition names: renaming a metric without the dashboard fails here.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

const DASHBOARD: &str = include_str!("../../charts/gpufed/files/dashboards/gpufed.json");

/// The exposition with every metric touched once, so labelled families have samples too.
pub(super) fn exposition() -> String {
    let m = Metrics::new();
    m.reconcile_duration_seconds
        .get_or_create(&ControllerLabel { controller: "job" })
        .observe(0.01);
    m.reconcile_errors_total
        .get_or_create(&ErrorLabel {
            controller: "job",
            category: "member",
        })
        .inc();
    m.queue_depth_jobs.set(3);
    m.placements_total.inc();
    m.evictions_total
        .get_or_create(&EvictionLabel { cause: "drain" })
        .inc();
    m.held_by_disruption_budget_jobs.set(1);
    m.held_by_quota_jobs.set(1);
    m.set_unplaced(&["InsufficientNodeResources"]);
    m.set_providers(2, 1);
    m.set_fleet_gpus(16, 4);
    m.set_excluded(&[]);
    m.metered_gpu_seconds_total.inc();
    m.leader.set(1);
    m.challenges_total
        .get_or_create(&ChallengeLabel { result: "passed" })
        .inc();
    m.member_probes_total
        .get_or_create(&ProbeLabel { kind: "whole" })
        .inc();
    let model = ModelLabel {
        model: "NVIDIA H100 80GB HBM3".into(),
    };
    m.challenge_round_trip_seconds.get_or_create(&model).observe(1.2);
    m.challenge_round_trip_limit_seconds
        .get_or_create(&model)
        .set(4.5);
    m.challenges_started_total
        .get_or_create(&WhyLabel { why: "round" })
        .inc();
    m.challenge_round_lag_seconds.observe(0.2);
    m.challenge_round_grace_seconds.set(5.0);
    m.evidence_recorded_total.inc();
    m.service_replicas_created_total.inc();
    m.service_replicas_retired_total.inc();
    m.service_stalls_total
        .get_or_create(&StallLabel {
            reason: "ProgressDeadlineExceeded".into(),
        })
        .inc();
    m.settlement_backlog_records.set(7);
    m.settlement_batches_settled_total.inc();
    m.settlement_batches_failed_total.inc();
    m.settlement_rpc_errors_total.inc();
    m.encode()
}

/// Sample names of a text exposition (`foo_bucket`, `foo_total`, ...); comments skipped,
/// so a `# HELP foo` line does not count as the sample `foo`.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `gpufed_[a-z_]+` in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("gpufed_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The dashboard's PromQL: targets' `expr`, template variables' `query` and `definition`.
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let exported = sample_names(&exposition());
    let mut exprs = Vec::new();
    expressions(&dashboard(), &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(
        used.len() >= 10,
        "too few gpufed metrics in the dashboard: {used:?}"
    );
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the operator does not export: {missing:?}\nexported: {exported:?}"
    );
    for expr in &exprs {
        let (open, close) = (expr.matches('(').count(), expr.matches(')').count());
        assert_eq!(open, close, "unbalanced parentheses in {expr}");
    }
}

#[test]
fn dashboard_covers_what_the_issue_asks_for() {
    let mut exprs = Vec::new();
    expressions(&dashboard(), &mut exprs);
    let all = exprs.join("\n");
    for needed in [
        "gpufed_queue_depth_jobs",
        "gpufed_unplaced_jobs",
        "gpufed_placements_total",
        "gpufed_providers",
        "gpufed_fleet_gpus",
        "gpufed_settlement_backlog_records",
        "histogram_quantile(0.5, sum by (controller, le) (rate(gpufed_reconcile_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (controller, le) (rate(gpufed_reconcile_duration_seconds_bucket",
        "sum by (controller, category) (rate(gpufed_reconcile_errors_total",
        "gpufed_leader",
        "histogram_quantile(0.99, sum by (model, le) (rate(gpufed_challenge_round_trip_seconds_bucket",
        "gpufed_challenge_round_trip_limit_seconds",
    ] {
        assert!(all.contains(needed), "no panel queries {needed}");
    }
}

#[test]
fn dashboard_has_what_grafana_needs() {
    let d = dashboard();
    for key in ["title", "uid"] {
        let s = d[key].as_str().unwrap_or_default();
        assert!(!s.is_empty(), "no {key}");
    }
    assert!(
        d["uid"].as_str().is_some_and(|u| u.len() <= 40),
        "uid longer than 40"
    );
    assert!(d["schemaVersion"].is_u64(), "no schemaVersion");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "panels refer to ${{datasource}}: the variable must exist"
    );
    let panels = d["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "no panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "panel without title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let (x, w) = (&p["gridPos"]["x"], &p["gridPos"]["w"]);
        let (x, w) = (x.as_u64().expect("gridPos.x"), w.as_u64().expect("gridPos.w"));
        assert!(w >= 1 && x + w <= 24, "{title}: gridPos outside 24 columns");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: datasource");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: no expr"
            );
            assert!(
                t["refId"].as_str().is_some_and(|r| !r.is_empty()),
                "{title}: no refId"
            );
        }
    }
}

#[test]
fn names_are_parsed_from_promql_and_exposition() {
    assert_eq!(
        metric_names(r#"sum(rate(gpufed_a_total{x="gpufed_b"}[5m])) / gpufed_c"#),
        ["gpufed_a_total", "gpufed_b", "gpufed_c"]
    );
    let names =
        sample_names("# HELP gpufed_x X\n# TYPE gpufed_x counter\ngpufed_x_total 1\ngpufed_y{a=\"b\"} 2\n");
    assert_eq!(
        names,
        BTreeSet::from(["gpufed_x_total".to_owned(), "gpufed_y".to_owned()])
    );
}
