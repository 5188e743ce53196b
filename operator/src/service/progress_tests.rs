//! The progress deadline, through the service's plan: rounds at given times, each
//! round's status fed back as the next round's (as the controller's writes would).
use super::*;
use crate::service::build;
use crate::service::plan::plan;
use gpufed_api::conditions::{Health, health};

const T0: i64 = 1_800_000_000;
/// No provider regions (the services here spread by provider).
static NO_REGIONS: crate::service::retire::Regions = crate::service::retire::Regions::new();

fn service(image: &str, generation: i64) -> ComputeService {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm", "namespace": "team", "uid": "s1", "generation": generation},
        "spec": {"replicas": 2, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                 "port": {"port": 8000}, "rollout": {"maxSurge": 1, "progressDeadlineSeconds": 300},
                 "template": {"spec": {"containers": [{"name": "server", "image": image}]}}}
    }))
    .expect("service")
}

/// Replica `index` of `svc`'s current template, placed; not ready ones say why as the
/// job controller does (`Ready=False Starting`).
fn replica(svc: &ComputeService, index: u32, ready: bool) -> ComputeJob {
    let spec = build::replica_spec(svc);
    let job = build::replica(svc, index, &spec, &build::revision(&spec));
    let mut j = crate::service::plan::rollout_tests::serving(job, ready);
    let (status, reason) = if ready {
        (ConditionStatus::True, "Running")
    } else {
        (ConditionStatus::False, "Starting")
    };
    let ready_cond = conditions::condition(
        types::READY,
        status,
        reason,
        "serving pod not ready: readiness probe failed",
        Some(1),
        "2027-01-15T08:00:00Z",
    );
    if let Some(st) = j.status.as_mut() {
        st.conditions = vec![ready_cond];
    }
    j
}

/// One round at `now`: the plan's status becomes the service's.
fn round(svc: &mut ComputeService, world: &[ComputeJob], now: i64) -> crate::service::plan::Plan {
    let p = plan(svc, world, &NO_REGIONS, false, now);
    svc.status = Some(p.status.clone());
    p
}

fn stalled(svc: &ComputeService) -> Option<&Condition> {
    let conds = &svc.status.as_ref().expect("status").conditions;
    conditions::find(conds, types::STALLED).filter(|c| c.status == ConditionStatus::True)
}

fn kstatus(svc: &ComputeService) -> Health {
    let st = svc.status.as_ref().expect("status");
    health(svc.metadata.generation, st.observed_generation, &st.conditions)
}

#[test]
fn a_rollout_whose_new_replica_never_gets_ready_is_reported_stuck_and_keeps_the_old_serving() {
    let v1 = service("vllm:v1", 1);
    let old: Vec<ComputeJob> = (0..2).map(|i| replica(&v1, i, true)).collect();
    let mut svc = service("vllm:v2", 2);
    svc.status = round(&mut v1.clone(), &old, T0 - 1000).status.into();
    assert_eq!(
        svc.status.as_ref().and_then(|s| s.progress.clone()),
        None,
        "v1 was complete"
    );

    let p = round(&mut svc, &old, T0);
    assert_eq!(p.create.len(), 1, "maxSurge 1");
    let mut world = old.clone();
    world.push(replica(&svc, 2, false));
    let started = svc
        .status
        .as_ref()
        .and_then(|s| s.progress.clone())
        .expect("progress");
    assert_eq!(started.last_progress_time, crate::time::format(T0));

    // Within the deadline: progressing, nothing stuck.
    round(&mut svc, &world, T0 + 299);
    assert!(stalled(&svc).is_none());
    assert_eq!(kstatus(&svc), Health::InProgress);

    // Past it: Stalled (kstatus Failed: Reconciling is gone), the old replicas stay.
    let before = svc.status.clone().expect("status").conditions;
    let p = round(&mut svc, &world, T0 + 300);
    let event = crate::job::events::newly_stalled(&before, &p.status.conditions).expect("a Warning");
    assert!(event.warning && event.reason == DEADLINE_EXCEEDED, "{event:?}");
    let c = stalled(&svc).expect("Stalled at the deadline").clone();
    assert_eq!(c.reason, DEADLINE_EXCEEDED);
    for part in [
        "(300s)",
        "0 of 2 replicas of the current template ready",
        "replica llm-2: Ready=False Starting: serving pod not ready",
    ] {
        assert!(c.message.contains(part), "{part:?} in {}", c.message);
    }
    assert_eq!(kstatus(&svc), Health::Failed);
    assert!(
        p.retire.is_empty() && p.create.is_empty(),
        "nothing undone, nothing added"
    );
    assert_eq!(p.ready_addresses.len(), 2, "the old replicas still serve");
    let ready = conditions::find(&p.status.conditions, types::READY).expect("Ready");
    assert_eq!(ready.reason, DEADLINE_EXCEEDED);
    // Reconciling again writes the same status (the message names no clock).
    let again = round(&mut svc, &world, T0 + 400);
    assert_eq!(Some(&again.status), Some(&p.status));
    assert_eq!(
        crate::job::events::newly_stalled(&p.status.conditions, &again.status.conditions),
        None,
        "told once"
    );

    // Progress: the new replica ready clears it; the rollout goes on.
    world[2] = replica(&svc, 2, true);
    let p = round(&mut svc, &world, T0 + 500);
    assert!(stalled(&svc).is_none(), "{:?}", p.status.conditions);
    assert_eq!(kstatus(&svc), Health::InProgress);
    let progress = p
        .status
        .progress
        .clone()
        .expect("still short: one old replica serves");
    assert_eq!(progress.updated_ready_replicas, 1);
    assert_eq!(progress.last_progress_time, crate::time::format(T0 + 500));
}

#[test]
fn progress_restarts_on_a_spec_change_and_ends_when_complete() {
    let mut svc = service("vllm:v1", 1);
    // A new service: short of 2 replicas from the first round.
    let p = round(&mut svc, &[], T0);
    assert_eq!(p.create.len(), 2);
    let world: Vec<ComputeJob> = (0..2).map(|i| replica(&svc, i, false)).collect();
    round(&mut svc, &world, T0 + 299);
    assert!(stalled(&svc).is_none());
    // A spec change restarts the clock (here: a higher priority, same template).
    svc.metadata.generation = Some(2);
    svc.spec.priority = 200;
    round(&mut svc, &world, T0 + 299);
    round(&mut svc, &world, T0 + 500);
    assert!(stalled(&svc).is_none(), "restarted at T0+299");
    round(&mut svc, &world, T0 + 599);
    assert!(stalled(&svc).is_some(), "300 s after the spec change");
    // A replica that goes from ready to not ready is no progress, nor a restart.
    let complete: Vec<ComputeJob> = (0..2).map(|i| replica(&svc, i, true)).collect();
    let p = round(&mut svc, &complete, T0 + 700);
    assert_eq!(p.status.progress, None, "complete");
    assert!(stalled(&svc).is_none());
    assert_eq!(kstatus(&svc), Health::Current);
    let mut one_lost = complete.clone();
    one_lost[1] = replica(&svc, 1, false);
    round(&mut svc, &one_lost, T0 + 800);
    let mut half = one_lost.clone();
    half[0] = replica(&svc, 0, false);
    let p = round(&mut svc, &half, T0 + 900);
    let progress = p.status.progress.expect("short");
    assert_eq!(
        (progress.updated_ready_replicas, progress.last_progress_time),
        (0, crate::time::format(T0 + 800)),
        "fewer ready keeps the clock"
    );
    round(&mut svc, &half, T0 + 1100);
    let c = stalled(&svc).expect("stuck 300 s after losing a replica");
    assert!(c.message.contains("replica llm-0:"), "{}", c.message);
}
