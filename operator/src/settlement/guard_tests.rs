#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Change, FINALIZER, plan};

fn ns(name: &str, finalizers: &[&str], deleting: bool) -> Namespace {
    let mut n = Namespace::default();
    n.metadata.name = Some(name.into());
    n.metadata.resource_version = Some(format!("rv-{name}"));
    if !finalizers.is_empty() {
        n.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    }
    if deleting {
        n.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
    }
    n
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn a_billable_namespace_is_guarded_and_others_finalizers_are_kept() {
    let nss = [
        ns("team-a", &["example.com/keep"], false),
        ns("team-b", &[], false),
    ];
    let changes = plan(&nss, &set(&["team-a", "team-b"]));
    assert_eq!(
        changes,
        vec![
            Change {
                namespace: "team-a".into(),
                resource_version: "rv-team-a".into(),
                finalizers: vec!["example.com/keep".into(), FINALIZER.into()],
                guard: true,
            },
            Change {
                namespace: "team-b".into(),
                resource_version: "rv-team-b".into(),
                finalizers: vec![FINALIZER.into()],
                guard: true,
            },
        ]
    );
    // Already guarded: nothing to write (an idle round writes nothing).
    let guarded = [ns("team-a", &["example.com/keep", FINALIZER], false)];
    assert!(plan(&guarded, &set(&["team-a"])).is_empty());
}

#[test]
fn a_namespace_with_nothing_left_to_bill_is_released_even_while_it_is_deleted() {
    let nss = [
        ns("done", &[FINALIZER, "example.com/keep"], true),
        ns("idle", &[FINALIZER], false),
        ns("other", &["example.com/keep"], false),
    ];
    let changes = plan(&nss, &BTreeSet::new());
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].namespace, "done");
    assert_eq!(changes[0].finalizers, vec!["example.com/keep".to_string()]);
    assert!(!changes[0].guard);
    assert_eq!(changes[1].namespace, "idle");
    assert!(changes[1].finalizers.is_empty());
}

#[test]
fn a_namespace_being_deleted_keeps_its_guard_while_billable_and_gains_none() {
    let nss = [ns("held", &[FINALIZER], true), ns("late", &[], true)];
    // The API server refuses new finalizers on an object being deleted.
    assert!(plan(&nss, &set(&["held", "late"])).is_empty());
}

#[test]
fn a_namespace_without_a_resource_version_is_not_written() {
    let mut n = ns("team-a", &[], false);
    n.metadata.resource_version = None;
    assert!(plan(&[n], &set(&["team-a"])).is_empty());
}
