//! The alerting rules of `charts/gpufed` (files/alerts/gpufed.yaml) are PromQL that
//! Prometheus accepts, over metrics and labels this operator exports: each expression is
//! parsed by a PromQL parser, and its selectors, matchers, `by` labels and the
//! `$labels.…` its annotations print are checked against the exposition. A metric or
//! label renamed without the rules fails here, not silently at 3 a.m.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{self, Expr, LabelModifier};
use serde::Deserialize;

use super::dashboard_tests::exposition;

const RULES: &str = include_str!("../../charts/gpufed/files/alerts/gpufed.yaml");

#[derive(Debug, Deserialize)]
struct File {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rules() -> Vec<(String, Rule)> {
    let file: File = serde_yaml::from_str(RULES).expect("the rules are YAML of the rule-file format");
    file.groups
        .into_iter()
        .flat_map(|g| {
            let name = g.name;
            g.rules.into_iter().map(move |r| (name.clone(), r))
        })
        .collect()
}

/// Each exported sample name (`foo_total`, `foo_bucket`, …) and the label names it carries.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default().to_owned();
        let labels = out.entry(name).or_default();
        if let Some((_, rest)) = line.split_once('{') {
            let inner = rest.split_once('}').map_or(rest, |(l, _)| l);
            labels.extend(
                inner
                    .split(',')
                    .filter_map(|kv| Some(kv.split_once('=')?.0.to_owned())),
            );
        }
    }
    out
}

/// What is wrong with `expr` against the exported metrics; empty when nothing is.
fn problems(expr: &Expr, exported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    walk(expr, exported, &mut out);
    out
}

/// The label names of each selector whose series `expr`'s result is built from.
fn selector_labels<'a>(
    expr: &Expr,
    exported: &'a BTreeMap<String, BTreeSet<String>>,
) -> Vec<&'a BTreeSet<String>> {
    match expr {
        Expr::VectorSelector(vs) => vs
            .name
            .as_ref()
            .and_then(|n| exported.get(n))
            .into_iter()
            .collect(),
        Expr::MatrixSelector(ms) => selector_labels(&Expr::VectorSelector(ms.vs.clone()), exported),
        Expr::Aggregate(a) => selector_labels(&a.expr, exported),
        Expr::Unary(u) => selector_labels(&u.expr, exported),
        Expr::Paren(p) => selector_labels(&p.expr, exported),
        Expr::Subquery(s) => selector_labels(&s.expr, exported),
        // The result of `a OP b` carries `a`'s labels (`and on (instance) …` filters by
        // the right side without adding its labels).
        Expr::Binary(b) => selector_labels(&b.lhs, exported),
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .flat_map(|a| selector_labels(a, exported))
            .collect(),
        _ => Vec::new(),
    }
}

fn walk(expr: &Expr, exported: &BTreeMap<String, BTreeSet<String>>, out: &mut Vec<String>) {
    match expr {
        Expr::VectorSelector(vs) => {
            let Some(name) = &vs.name else {
                out.push(format!("a selector without a metric name: {vs}"));
                return;
            };
            let Some(labels) = exported.get(name) else {
                out.push(format!("{name} is not exported"));
                return;
            };
            for m in vs.matchers.matchers.iter().filter(|m| m.name != "__name__") {
                if !labels.contains(&m.name) {
                    out.push(format!("{name} has no label {}", m.name));
                }
            }
        }
        Expr::MatrixSelector(ms) => walk(&Expr::VectorSelector(ms.vs.clone()), exported, out),
        Expr::Aggregate(a) => {
            if let Some(LabelModifier::Include(by)) = &a.modifier {
                for sel in selector_labels(&a.expr, exported) {
                    for l in by.labels.iter().filter(|l| !sel.contains(*l)) {
                        out.push(format!("`by ({l})` over a metric without it in {expr}"));
                    }
                }
            }
            walk(&a.expr, exported, out);
        }
        Expr::Unary(u) => walk(&u.expr, exported, out),
        Expr::Paren(p) => walk(&p.expr, exported, out),
        Expr::Subquery(s) => walk(&s.expr, exported, out),
        Expr::Binary(b) => {
            walk(&b.lhs, exported, out);
            walk(&b.rhs, exported, out);
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, exported, out)),
        _ => {}
    }
}

/// The labels an alert of `expr` carries, where the shape tells: an aggregation's `by`
/// labels, none for one without, `absent`'s none; a binary expression keeps its left
/// side's. `None`: not known here (then annotations are not checked).
fn output_labels(expr: &Expr) -> Option<BTreeSet<String>> {
    match expr {
        Expr::Aggregate(a) => match &a.modifier {
            Some(LabelModifier::Include(by)) => Some(by.labels.iter().cloned().collect()),
            None if a.param.is_none() => Some(BTreeSet::new()),
            _ => None,
        },
        Expr::Binary(b) => output_labels(&b.lhs),
        Expr::Paren(p) => output_labels(&p.expr),
        Expr::Call(c) if c.func.name == "absent" => Some(BTreeSet::new()),
        _ => None,
    }
}

/// Every `$labels.NAME` in a Prometheus template.
fn templated_labels(text: &str) -> BTreeSet<String> {
    text.split("$labels.")
        .skip(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .collect()
}

#[test]
fn every_alert_parses_and_names_only_exported_metrics_and_labels() {
    let exported = exported();
    let all = rules();
    assert!(all.len() >= 10, "too few alerts: {}", all.len());
    for (group, r) in &all {
        let expr = parser::parse(&r.expr).unwrap_or_else(|e| panic!("{group}/{}: {e}: {}", r.alert, r.expr));
        let wrong = problems(&expr, &exported);
        assert!(wrong.is_empty(), "{group}/{}: {wrong:?}", r.alert);
        let printed: BTreeSet<String> = r.annotations.values().flat_map(|t| templated_labels(t)).collect();
        if let Some(carried) = output_labels(&expr) {
            let missing: Vec<_> = printed.difference(&carried).collect();
            assert!(
                missing.is_empty(),
                "{group}/{}: annotations print $labels the alert does not carry: {missing:?}",
                r.alert
            );
        }
    }
}

#[test]
fn every_alert_is_named_rated_and_explained() {
    let all = rules();
    let mut names = BTreeSet::new();
    for (group, r) in &all {
        assert!(group.starts_with("gpufed-"), "{group}");
        assert!(
            r.alert.starts_with("Gpufed") && r.alert.chars().all(|c| c.is_ascii_alphanumeric()),
            "{}",
            r.alert
        );
        assert!(names.insert(r.alert.clone()), "{} twice", r.alert);
        let severity = r.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{}: severity {severity:?}",
            r.alert
        );
        for key in ["summary", "description"] {
            assert!(
                r.annotations.get(key).is_some_and(|t| !t.trim().is_empty()),
                "{}: no {key}",
                r.alert
            );
        }
        if let Some(f) = &r.for_ {
            gpufed_api::formats::parse_duration(f).unwrap_or_else(|e| panic!("{}: for {f}: {e}", r.alert));
        }
    }
    // The failures users fear most each have an alert: the operator gone, fake GPUs, the
    // chain down, providers vanishing.
    for needed in [
        "GpufedOperatorAbsent",
        "GpufedGpuVerificationFailures",
        "GpufedSettlementStalled",
        "GpufedProvidersNotReady",
    ] {
        assert!(names.contains(needed), "no {needed}");
    }
}

#[test]
fn the_checks_catch_unknown_metrics_labels_and_printed_labels() {
    let exported = exported();
    let check = |q: &str| problems(&parser::parse(q).expect(q), &exported);
    assert_eq!(
        check("gpufed_nonexistent_total > 0"),
        ["gpufed_nonexistent_total is not exported"]
    );
    assert_eq!(
        check(r#"gpufed_evictions_total{provider="a"}"#),
        ["gpufed_evictions_total has no label provider"]
    );
    assert_eq!(
        check(r#"rate(gpufed_evictions_total{cause="drain"}[5m])"#),
        Vec::<String>::new()
    );
    assert_eq!(
        check("sum by (provider) (gpufed_placement_excluded_nodes)").len(),
        1
    );
    let leader_only =
        "sum by (reason) (gpufed_placement_excluded_nodes and on (instance) gpufed_leader == 1)";
    assert_eq!(check(leader_only), Vec::<String>::new());
    assert!(parser::parse("sum by (reason (gpufed_providers)").is_err());
    let carried = output_labels(
        &parser::parse("sum by (reason) (gpufed_placement_excluded_nodes) > 0").expect("parses"),
    );
    assert_eq!(carried, Some(BTreeSet::from(["reason".to_owned()])));
    assert_eq!(
        templated_labels("{{ $labels.reason }} on {{$labels.provider}}"),
        BTreeSet::from(["provider".to_owned(), "reason".to_owned()])
    );
}

#[path = "metrics_alerts_eval_tests.rs"]
mod eval;
