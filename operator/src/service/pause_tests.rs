//! `spec.paused`: template changes are held, replicas are still replaced and scaled with
//! the template in effect, and the service reads `Ready=False Paused` (no deadline).
use super::rollout_tests::{self, serving};
use super::*;
use crate::service::history;
use gpufed_api::ConditionStatus;
use std::collections::BTreeSet;

const T0: i64 = 1_800_000_000;
static NO_REGIONS: Regions = Regions::new();

fn service(replicas: u32, image: &str, paused: bool) -> ComputeService {
    let mut svc = rollout_tests::service(replicas, image, serde_json::json!({}));
    svc.spec.paused = paused;
    svc
}

/// Ready replicas `indices` of `svc`'s template.
fn running(svc: &ComputeService, indices: std::ops::Range<u32>) -> Vec<ComputeJob> {
    let spec = build::replica_spec(svc);
    let rev = build::revision(&spec);
    indices
        .map(|i| serving(build::replica(svc, i, &spec, &rev), true))
        .collect()
}

/// What a paused `svc` runs when its latest revision is `v1`'s template.
fn held_at(svc: &ComputeService, v1: &ComputeService) -> history::History {
    let rev = history::build(v1, &build::revision(&build::replica_spec(v1)), 3);
    let paused = history::in_effect(svc, &[&rev]).expect("a template in effect");
    let world = running(v1, 0..2);
    let p = plan_held(svc, &world, &NO_REGIONS, false, Some(&paused), T0);
    assert!(p.retire.is_empty() && p.create.is_empty(), "{p:?}");
    history::plan(
        svc,
        &[&rev],
        p.revision.as_deref().expect("rev"),
        &BTreeSet::new(),
    )
}

#[test]
fn a_template_change_while_paused_is_neither_rolled_nor_recorded() {
    let v1 = service(2, "vllm:1", false);
    let v2 = service(2, "vllm:2", true);
    let h = held_at(&v2, &v1);
    assert_eq!(
        (h.number, h.create, h.renumber),
        (3, None, None),
        "nothing recorded"
    );
    let rev = history::build(&v1, &build::revision(&build::replica_spec(&v1)), 3);
    let paused = history::in_effect(&v2, &[&rev]).expect("in effect");
    assert_eq!(paused.spec, build::replica_spec(&v1));
    let p = plan_held(&v2, &running(&v1, 0..2), &NO_REGIONS, false, Some(&paused), T0);
    let st = &p.status;
    assert_eq!((st.replicas, st.ready_replicas, st.updated_replicas), (2, 2, 0));
    let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, PAUSED)
    );
    assert!(
        ready.message.contains("0 of 2 on the spec's template"),
        "{}",
        ready.message
    );
    assert!(conditions::find(&st.conditions, types::RECONCILING).is_none());
    assert!(conditions::find(&st.conditions, types::STALLED).is_none());
    assert_eq!(st.progress, None, "no deadline runs while paused");
    // Resumed: the same world rolls to v2.
    let resumed = service(2, "vllm:2", false);
    let p = plan(&resumed, &running(&v1, 0..2), &NO_REGIONS, false, T0);
    assert_eq!(p.create.len(), 2, "{p:?}");
    assert_eq!(p.revision, Some(build::revision(&build::replica_spec(&resumed))));
}

#[test]
fn a_rollout_under_way_holds_where_it_is() {
    let v1 = service(2, "vllm:1", false);
    let v2 = service(2, "vllm:2", true);
    // Mid-rollout: replica 0 on v1 (ready), replica 2 on v2 (ready), v2 is the latest
    // revision. Unpaused, a second v2 replica would start now (and v1's retire once it
    // is ready).
    let mut world = running(&v1, 0..1);
    world.extend(running(&service(2, "vllm:2", false), 2..3));
    let unpaused = plan(&service(2, "vllm:2", false), &world, &NO_REGIONS, false, T0);
    assert_eq!(names(&unpaused.create), ["llm-1"]);
    let latest = history::build(&v2, &build::revision(&build::replica_spec(&v2)), 2);
    let paused = history::in_effect(&v2, &[&latest]).expect("in effect");
    let p = plan_held(&v2, &world, &NO_REGIONS, false, Some(&paused), T0);
    assert!(p.retire.is_empty() && p.create.is_empty(), "{p:?}");
    assert_eq!(p.status.updated_replicas, 1);
}

#[test]
fn a_lost_replica_and_a_scale_up_get_the_template_in_effect() {
    let v1 = service(3, "vllm:1", false);
    let v2 = service(3, "vllm:2", true);
    let rev = history::build(&v1, &build::revision(&build::replica_spec(&v1)), 1);
    let paused = history::in_effect(&v2, &[&rev]).expect("in effect");
    // Two of three left (one ended): one new replica, of v1.
    let p = plan_held(&v2, &running(&v1, 0..2), &NO_REGIONS, false, Some(&paused), T0);
    assert_eq!(names(&p.create), ["llm-2"]);
    assert_eq!(p.create[0].spec, build::replica_spec(&v1));
    assert_eq!(p.create[0].labels()[build::LABEL_REVISION], paused.rev);
    // Scaled down to one while paused: the surplus retires as usual.
    let one = service(1, "vllm:2", true);
    let p = plan_held(&one, &running(&v1, 0..3), &NO_REGIONS, false, Some(&paused), T0);
    assert_eq!(p.retire.len(), 2, "{p:?}");
}

#[test]
fn paused_with_nothing_pending_is_ready() {
    let v1 = service(2, "vllm:1", true);
    let rev = history::build(&v1, &build::revision(&build::replica_spec(&v1)), 1);
    let paused = history::in_effect(&v1, &[&rev]).expect("in effect");
    let p = plan_held(&v1, &running(&v1, 0..2), &NO_REGIONS, false, Some(&paused), T0);
    assert!(conditions::is_true(&p.status.conditions, types::READY));
    // Created paused, nothing recorded yet: it starts its first template.
    assert_eq!(history::in_effect(&v1, &[]), None);
}

fn names(jobs: &[ComputeJob]) -> Vec<String> {
    jobs.iter().map(ResourceExt::name_any).collect()
}

/// `v1` replicas `0..2` ready, and `v2` replicas `new` ready or starting: a rollout of
/// `rollout` held half-way, `v2` the latest revision (in effect).
fn half_way(
    replicas: u32,
    rollout: serde_json::Value,
    new: std::ops::Range<u32>,
    new_ready: bool,
) -> (ComputeService, Vec<ComputeJob>, Paused) {
    let v1 = rollout_tests::service(replicas, "vllm:1", rollout.clone());
    let mut v2 = rollout_tests::service(replicas, "vllm:2", rollout);
    let mut world = running(&v1, 0..2);
    let spec = build::replica_spec(&v2);
    let rev = build::revision(&spec);
    world.extend(new.map(|i| serving(build::replica(&v2, i, &spec, &rev), new_ready)));
    v2.spec.paused = true;
    let latest = history::build(&v2, &rev, 2);
    let paused = history::in_effect(&v2, &[&latest]).expect("in effect");
    (v2, world, paused)
}

#[test]
fn pausing_a_rollout_keeps_its_surge_replicas() {
    // maxSurge 1: v1-0, v1-1 and the surge replica v2-2, all ready. Paused, every replica
    // counted toward `replicas` made one surplus, and llm-2 (the new one) retired.
    let (svc, world, paused) = half_way(2, serde_json::json!({"maxSurge": 1}), 2..3, true);
    let p = plan_held(&svc, &world, &NO_REGIONS, false, Some(&paused), T0);
    assert!(p.retire.is_empty() && p.create.is_empty(), "{p:?}");
    assert_eq!((p.status.replicas, p.status.updated_replicas), (3, 1));
    // The default maxSurge 100%: v2-2 and v2-3 starting; both kept, waiting to be ready.
    let (svc, world, paused) = half_way(2, serde_json::json!({}), 2..4, false);
    let p = plan_held(&svc, &world, &NO_REGIONS, false, Some(&paused), T0);
    assert!(p.retire.is_empty() && p.create.is_empty(), "{p:?}");
    let ready = conditions::find(&p.status.conditions, types::READY).expect("Ready");
    assert_eq!(ready.reason, PAUSED);
}

#[test]
fn a_scale_down_while_a_rollout_is_paused_trims_above_replicas_plus_surge() {
    // Scaled from 2 to 1 with v1-0, v1-1, v2-2 ready: `replicas + maxSurge` is 2, so one
    // goes (not-ready first, then from the most crowded domain, newest first).
    let (mut svc, world, paused) = half_way(2, serde_json::json!({"maxSurge": 1}), 2..3, true);
    svc.spec.replicas = 1;
    let p = plan_held(&svc, &world, &NO_REGIONS, false, Some(&paused), T0);
    assert_eq!(p.retire, ["llm-2"], "{p:?}");
    assert!(p.create.is_empty());
    // A starting replica goes before a serving one.
    let (mut svc, mut world, paused) = half_way(2, serde_json::json!({"maxSurge": 1}), 2..3, true);
    world[0] = serving(world[0].clone(), false);
    svc.spec.replicas = 1;
    let p = plan_held(&svc, &world, &NO_REGIONS, false, Some(&paused), T0);
    assert_eq!(p.retire, ["llm-0"], "{p:?}");
    // Scaled to zero: everything goes, surge or not.
    svc.spec.replicas = 0;
    let p = plan_held(&svc, &world, &NO_REGIONS, false, Some(&paused), T0);
    assert_eq!(p.retire.len(), 3, "{p:?}");
}

#[test]
fn a_held_template_that_is_invalid_is_reported_and_replacements_go_on() {
    let v1 = service(2, "vllm:1", false);
    let rev = history::build(&v1, &build::revision(&build::replica_spec(&v1)), 1);
    // The held template asks for a privileged container: refused once it would roll.
    let mut v2 = service(2, "vllm:2", true);
    v2.spec.template.spec.containers[0]
        .0
        .insert("securityContext".into(), serde_json::json!({"privileged": true}));
    let paused = history::in_effect(&v2, &[&rev]).expect("in effect");
    // One of two replicas ended: replaced with the template in effect, v1.
    let p = plan_held(&v2, &running(&v1, 0..1), &NO_REGIONS, false, Some(&paused), T0);
    assert_eq!(names(&p.create), ["llm-1"], "{p:?}");
    assert_eq!(p.create[0].spec, build::replica_spec(&v1));
    assert_eq!(p.revision.as_deref(), Some(paused.rev.as_str()));
    let st = &p.status;
    let stalled = conditions::find(&st.conditions, types::STALLED).expect("Stalled");
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(
        stalled.message.starts_with("spec.template.spec") && stalled.message.contains("spec.paused"),
        "{}",
        stalled.message
    );
    let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "InvalidSpec")
    );
    assert!(conditions::find(&st.conditions, types::RECONCILING).is_none());
    // Resumed unfixed: refused, nothing created.
    v2.spec.paused = false;
    let p = plan(&v2, &running(&v1, 0..1), &NO_REGIONS, false, T0);
    assert!(p.create.is_empty() && p.revision.is_none(), "{p:?}");
    // Paused, a rollout that could never move still stops everything: it acts at once.
    let mut v3 = service(2, "vllm:1", true);
    v3.spec.rollout =
        serde_json::from_value(serde_json::json!({"maxSurge": 0, "maxUnavailable": 0})).expect("rollout");
    let p = plan_held(&v3, &running(&v1, 0..1), &NO_REGIONS, false, Some(&paused), T0);
    assert!(p.create.is_empty(), "{p:?}");
}
