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
