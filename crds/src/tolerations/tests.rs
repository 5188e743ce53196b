use super::*;

fn taint(key: &str, value: &str, effect: TaintEffect) -> NodeTaint {
    NodeTaint {
        key: key.into(),
        value: value.into(),
        effect,
    }
}

fn equal(key: &str, value: &str, effect: Option<TaintEffect>) -> WorkerToleration {
    WorkerToleration {
        key: key.into(),
        operator: TolerationOperator::Equal,
        value: value.into(),
        effect,
        toleration_seconds: None,
    }
}

use TaintEffect::{NoExecute, NoSchedule, PreferNoSchedule};

#[test]
fn equal_needs_key_value_and_effect_to_match() {
    let t = taint("dedicated", "gpufed", NoSchedule);
    assert!(equal("dedicated", "gpufed", Some(NoSchedule)).tolerates(&t));
    assert!(
        equal("dedicated", "gpufed", None).tolerates(&t),
        "no effect: every effect"
    );
    assert!(!equal("dedicated", "other", Some(NoSchedule)).tolerates(&t));
    assert!(!equal("dedicated", "gpufed", Some(NoExecute)).tolerates(&t));
    assert!(!equal("team", "gpufed", Some(NoSchedule)).tolerates(&t));
    // A taint without a value is tolerated by Equal with an empty value.
    assert!(equal("gpu", "", None).tolerates(&taint("gpu", "", NoSchedule)));
}

#[test]
fn exists_matches_any_value_and_an_empty_key_every_taint() {
    let t = taint("nvidia.com/gpu", "present", NoSchedule);
    assert!(WorkerToleration::exists("nvidia.com/gpu", Some(NoSchedule)).tolerates(&t));
    assert!(!WorkerToleration::exists("nvidia.com/gpu", Some(NoExecute)).tolerates(&t));
    assert!(WorkerToleration::exists("", None).tolerates(&t));
    assert!(WorkerToleration::exists("", None).tolerates(&taint("x", "y", NoExecute)));
    assert!(!WorkerToleration::exists("", Some(NoExecute)).tolerates(&t));
}

#[test]
fn an_empty_key_with_equal_tolerates_nothing() {
    assert!(!equal("", "", None).tolerates(&taint("", "", NoSchedule)));
    assert!(equal("", "", None).problem().is_some());
}

#[test]
fn malformed_tolerations_say_why() {
    let mut exists_with_value = WorkerToleration::exists("k", None);
    exists_with_value.value = "v".into();
    assert_eq!(
        exists_with_value.problem(),
        Some("operator Exists takes no value")
    );
    let mut seconds = equal("k", "v", Some(NoSchedule));
    seconds.toleration_seconds = Some(60);
    assert_eq!(
        seconds.problem(),
        Some("tolerationSeconds needs effect NoExecute")
    );
    seconds.effect = Some(NoExecute);
    assert_eq!(seconds.problem(), None);
    assert_eq!(equal("k", "v", None).problem(), None);
}

#[test]
fn only_hard_taints_that_nothing_tolerates_keep_workers_off() {
    let taints = vec![
        taint("dedicated", "ml", NoSchedule),
        taint("gpufed.io/gpu", "present", NoSchedule),
        taint("spot", "", PreferNoSchedule),
        taint(NOT_READY, "", NoExecute),
        taint("maintenance", "", NoExecute),
    ];
    let base = effective("gpufed.io/gpu", &[]);
    let left: Vec<String> = untolerated(&taints, &base)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(left, ["dedicated=ml:NoSchedule", "maintenance:NoExecute"]);
    let provider = [
        equal("dedicated", "ml", Some(NoSchedule)),
        WorkerToleration::exists("maintenance", None),
    ];
    assert!(untolerated(&taints, &effective("gpufed.io/gpu", &provider)).is_empty());
    // Another resource's taint is not ours to tolerate.
    let other = [taint("nvidia.com/gpu", "present", NoSchedule)];
    assert_eq!(untolerated(&other, &base).len(), 1);
}

#[test]
fn effects_parse_and_print_as_kubernetes_spells_them() {
    for e in [NoSchedule, PreferNoSchedule, NoExecute] {
        assert_eq!(TaintEffect::parse(e.as_str()), Some(e));
        let json = serde_json::to_value(e).expect("json");
        assert_eq!(json, e.as_str());
    }
    assert_eq!(TaintEffect::parse("noschedule"), None);
}

#[test]
fn a_toleration_becomes_the_kubernetes_object() {
    let mut t = WorkerToleration::exists(NOT_READY, Some(NoExecute));
    t.toleration_seconds = Some(300);
    assert_eq!(
        serde_json::to_value(t.to_k8s()).expect("json"),
        serde_json::json!({"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    );
    let k8s = equal("dedicated", "ml", Some(NoSchedule)).to_k8s();
    assert_eq!(
        (
            k8s.key.as_deref(),
            k8s.operator.as_deref(),
            k8s.value.as_deref(),
            k8s.effect.as_deref()
        ),
        (Some("dedicated"), Some("Equal"), Some("ml"), Some("NoSchedule"))
    );
}

#[test]
fn the_spec_field_reads_as_kubernetes_writes_it() {
    let t: WorkerToleration =
        serde_json::from_value(serde_json::json!({"key": "dedicated", "value": "ml"})).expect("parses");
    assert_eq!(t, equal("dedicated", "ml", None));
    let bad = serde_json::from_value::<WorkerToleration>(serde_json::json!({"key": "k", "operator": "In"}));
    assert!(bad.is_err());
}
