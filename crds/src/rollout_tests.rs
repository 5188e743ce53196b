#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn rollout(surge: serde_json::Value, unavailable: serde_json::Value) -> Rollout {
    serde_json::from_value(serde_json::json!({"maxSurge": surge, "maxUnavailable": unavailable}))
        .expect("any integer or string deserializes")
}

#[test]
fn counts_and_percentages_resolve_as_a_deployment_does() {
    // Surge rounds up, unavailable down.
    assert_eq!(rollout("25%".into(), "25%".into()).bounds(10), Some((3, 2)));
    assert_eq!(rollout(1.into(), 0.into()).bounds(8), Some((1, 0)));
    assert_eq!(rollout(0.into(), 2.into()).bounds(8), Some((0, 2)));
    // Unavailable never exceeds the replicas; surge may.
    assert_eq!(rollout("150%".into(), 5.into()).bounds(2), Some((3, 2)));
    // Both round to 0 for few replicas: one may be unavailable, so the rollout moves.
    assert_eq!(rollout("0%".into(), "10%".into()).bounds(3), Some((0, 1)));
}

#[test]
fn the_default_starts_the_whole_new_revision_and_loses_no_capacity() {
    let d = Rollout::default();
    assert_eq!(d.bounds(4), Some((4, 0)));
    assert_eq!(d.bounds(1), Some((1, 0)));
    let parsed: Rollout = serde_json::from_value(serde_json::json!({})).expect("defaults");
    assert_eq!(parsed, d);
}

#[test]
fn bad_values_name_the_field_and_what_is_wrong() {
    let cases = [
        (
            rollout((-1).into(), 0.into()),
            "spec.rollout.maxSurge",
            "-1 is not a count",
        ),
        (
            rollout(1.into(), "101%".into()),
            "spec.rollout.maxUnavailable",
            "more than 100%",
        ),
        (
            rollout("x%".into(), 0.into()),
            "spec.rollout.maxSurge",
            "neither a count nor a percentage",
        ),
        (
            rollout("25".into(), 0.into()),
            "spec.rollout.maxSurge",
            "neither a count nor a percentage",
        ),
        (rollout("%".into(), 0.into()), "spec.rollout.maxSurge", "neither"),
        (
            rollout(0.into(), "0%".into()),
            "spec.rollout.maxUnavailable",
            "may not be 0 when maxSurge is 0",
        ),
    ];
    for (r, field, what) in cases {
        let errors = r.check().expect_err("refused");
        assert!(
            errors.iter().any(|(f, e)| *f == field && e.contains(what)),
            "{r:?}: {errors:?}"
        );
        assert_eq!(r.bounds(4), None, "{r:?}");
    }
    // Both wrong: both named.
    let both = rollout("?".into(), (-2).into()).check().expect_err("refused");
    assert_eq!(both.len(), 2, "{both:?}");
}

#[test]
fn the_schema_is_kubernetes_int_or_string() {
    let schema = schemars::schema_for!(Rollout);
    let json = serde_json::to_value(&schema).expect("json");
    let surge = &json["properties"]["maxSurge"];
    let surge = if surge.get("$ref").is_some() {
        &json["$defs"]["IntOrPercent"]
    } else {
        surge
    };
    assert_eq!(surge["x-kubernetes-int-or-string"], true, "{json}");
}

#[test]
fn the_progress_deadline_defaults_to_ten_minutes_and_may_not_be_zero() {
    assert_eq!(Rollout::default().progress_deadline_seconds, 600);
    let r: Rollout = serde_json::from_value(serde_json::json!({"maxSurge": 1, "progressDeadlineSeconds": 0}))
        .expect("parses");
    let errors = r.check().expect_err("refused");
    assert_eq!(
        errors,
        vec![(
            "spec.rollout.progressDeadlineSeconds",
            "must be at least 1".to_owned()
        )]
    );
    // Every wrong field is named at once.
    let mut worse = r.clone();
    worse.max_surge = IntOrPercent::Count(-1);
    let fields: Vec<&str> = worse
        .check()
        .expect_err("refused")
        .iter()
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(
        fields,
        ["spec.rollout.maxSurge", "spec.rollout.progressDeadlineSeconds"]
    );
    let schema = serde_json::to_value(schemars::schema_for!(Rollout)).expect("json");
    assert_eq!(
        schema["properties"]["progressDeadlineSeconds"]["minimum"], 1,
        "{schema}"
    );
}
