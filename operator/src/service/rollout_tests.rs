//! Rollouts under `spec.rollout`, driven round by round against a small model of the
//! job controller: created replicas start not ready and are ready one round later,
//! retired ones stop serving at once.
use super::*;
use gpufed_api::ConditionStatus;
use gpufed_api::job_status::JobPhase;
use gpufed_api::job_status::{ComputeJobStatus, Placement};
use gpufed_api::serving::Endpoint;

const T0: i64 = 1_800_000_000;
/// No provider regions (the services here spread by provider).
static NO_REGIONS: Regions = Regions::new();

pub(crate) fn service(replicas: u32, image: &str, rollout: serde_json::Value) -> ComputeService {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm", "namespace": "team", "uid": "s1", "generation": 2},
        "spec": {"replicas": replicas, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                 "port": {"port": 8000}, "rollout": rollout,
                 "template": {"spec": {"containers": [{"name": "server", "image": image}]}}}
    }))
    .expect("service")
}

/// `job` placed and serving, ready or not.
pub(crate) fn serving(mut job: ComputeJob, ready: bool) -> ComputeJob {
    let index = build::replica_index("llm", &job.name_any()).expect("replica name");
    job.status = Some(ComputeJobStatus {
        phase: Some(JobPhase::Running),
        placement: Some(Placement {
            attempt: 1,
            provider: "p".into(),
            gpus: 1,
            price_per_gpu_hour: "2.00".into(),
            ..Default::default()
        }),
        endpoint: Some(Endpoint {
            provider: "p".into(),
            address: Some(format!("10.0.0.{index}:8000")),
            ready,
            since: None,
        }),
        ..Default::default()
    });
    job
}

fn is_ready(j: &ComputeJob) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.endpoint.as_ref())
        .is_some_and(|e| e.ready)
}

/// Rolls `desired` ready replicas of image v1 to v2 under `rollout`; checks the bounds
/// after every round and returns the rounds it took.
fn roll(desired: u32, rollout: serde_json::Value, surge: usize, unavailable: usize) -> usize {
    let old = service(desired, "vllm:v1", rollout.clone());
    let svc = service(desired, "vllm:v2", rollout.clone());
    let spec = build::replica_spec(&old);
    let mut world: Vec<ComputeJob> = (0..desired)
        .map(|i| serving(build::replica(&old, i, &spec, &build::revision(&spec)), true))
        .collect();
    let new_rev = build::revision(&build::replica_spec(&svc));
    let d = desired as usize;
    for round in 1..=(4 * d + 4) {
        // Last round's new replicas passed their probes.
        for j in world.iter_mut().filter(|j| !j.spec.suspend) {
            *j = serving(j.clone(), true);
        }
        let p = plan(&svc, &world, &NO_REGIONS, false, T0);
        for j in world.iter_mut().filter(|j| p.retire.contains(&j.name_any())) {
            j.spec.suspend = true;
            j.status = None; // stopped: no placement, nothing to meter
        }
        world.retain(|j| !p.delete.contains(&j.name_any()));
        world.extend(p.create.iter().cloned().map(|j| serving(j, false)));
        let live: Vec<&ComputeJob> = world.iter().filter(|j| !j.spec.suspend).collect();
        let ready = live.iter().filter(|j| is_ready(j)).count();
        let tag = format!("{desired} replicas, {rollout}, round {round}");
        assert!(live.len() <= d + surge, "{tag}: {} live", live.len());
        assert!(ready + unavailable >= d, "{tag}: {ready} ready");
        let updated = |j: &&ComputeJob| j.labels().get(build::LABEL_REVISION) == Some(&new_rev);
        if live.len() == d && live.iter().all(updated) && p.create.is_empty() && p.retire.is_empty() {
            return round;
        }
    }
    panic!("{desired} replicas under {rollout} did not roll out");
}

#[test]
fn rollouts_stay_within_surge_and_unavailability_and_finish() {
    use serde_json::json;
    for desired in [1, 2, 3, 5, 8] {
        let d = desired as usize;
        // The default: the whole new revision at once, nothing unavailable: one round
        // creates, the next retires, the third finds nothing to do.
        assert_eq!(roll(desired, json!({}), d, 0), 3);
        // One at a time: a round per replica, plus the last retirement and a quiet round.
        let one_by_one = roll(desired, json!({"maxSurge": 1, "maxUnavailable": 0}), 1, 0);
        assert_eq!(one_by_one, d + 2, "one at a time, {desired} replicas");
        roll(desired, json!({"maxSurge": 0, "maxUnavailable": 1}), 0, 1);
        roll(desired, json!({"maxSurge": 2, "maxUnavailable": 1}), 2, 1);
        // Percentages: surge rounds up, unavailable down.
        let up = d.div_ceil(4);
        roll(
            desired,
            json!({"maxSurge": "25%", "maxUnavailable": "25%"}),
            up,
            d / 4,
        );
        // Both round to 0: one replica may be unavailable.
        roll(
            desired,
            json!({"maxSurge": "0%", "maxUnavailable": "10%"}),
            0,
            (d / 10).max(1),
        );
    }
}

#[test]
fn a_rollout_reports_its_progress() {
    let old = service(2, "vllm:v1", serde_json::json!({"maxSurge": 1}));
    let svc = service(2, "vllm:v2", serde_json::json!({"maxSurge": 1}));
    let spec = build::replica_spec(&old);
    let world: Vec<ComputeJob> = (0..2)
        .map(|i| serving(build::replica(&old, i, &spec, &build::revision(&spec)), true))
        .collect();
    let p = plan(&svc, &world, &NO_REGIONS, false, T0);
    assert_eq!(p.create.len(), 1, "one surge replica");
    assert!(p.retire.is_empty());
    assert_eq!(p.status.updated_replicas, 0);
    let c = conditions::find(&p.status.conditions, types::RECONCILING).expect("Reconciling");
    assert!(c.message.contains("0 of 2 updated"), "{}", c.message);
    let c = conditions::find(&p.status.conditions, types::READY).expect("Ready");
    assert_eq!(c.status, ConditionStatus::False);
}

#[test]
fn a_rollout_that_could_never_move_is_refused_and_nothing_changes() {
    let svc = service(
        3,
        "vllm:v2",
        serde_json::json!({"maxSurge": 0, "maxUnavailable": "0%"}),
    );
    let p = plan(&svc, &[], &NO_REGIONS, false, T0);
    assert!(p.create.is_empty() && p.retire.is_empty());
    let c = conditions::find(&p.status.conditions, types::STALLED).expect("Stalled");
    assert_eq!(c.reason, "InvalidSpec");
    assert!(c.message.contains("spec.rollout.maxUnavailable"), "{}", c.message);
}
