use super::*;
use gpufed_api::ConditionStatus;
use gpufed_api::job_status::JobPhase;
use gpufed_api::job_status::{Billing, ComputeJobStatus, Placement};
use gpufed_api::serving::Endpoint;

const T0: i64 = 1_800_000_000;
/// No provider regions (the services here spread by provider).
static NO_REGIONS: Regions = Regions::new();

fn service(replicas: u32) -> ComputeService {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeService",
        "metadata": {"name": "llm", "namespace": "team", "uid": "s1", "generation": 1},
        "spec": {"replicas": replicas, "gpusPerReplica": 1, "maxPricePerGpuHour": "2.00",
                 "port": {"port": 8000},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm"}]}}}
    }))
    .expect("service")
}

/// A replica as the job controller would leave it: created from `svc`'s current spec,
/// running and ready (or not) on `provider`.
fn replica(svc: &ComputeService, index: u32, provider: Option<&str>, ready: bool) -> ComputeJob {
    let spec = build::replica_spec(svc);
    let mut j = build::replica(svc, index, &spec, &build::revision(&spec));
    j.status = Some(ComputeJobStatus {
        phase: Some(if provider.is_some() {
            JobPhase::Running
        } else {
            JobPhase::Queued
        }),
        placement: provider.map(|p| Placement {
            attempt: 1,
            provider: p.into(),
            gpus: 1,
            price_per_gpu_hour: "2.00".into(),
            ..Default::default()
        }),
        endpoint: provider.map(|p| Endpoint {
            provider: p.into(),
            address: Some(format!("10.0.0.{index}:3000{index}")),
            ready,
            since: None,
        }),
        usage: Some(Usage {
            gpu_seconds: 100,
            cost: "0.055555".into(),
        }),
        ..Default::default()
    });
    j
}

fn names(jobs: &[ComputeJob]) -> Vec<String> {
    jobs.iter().map(ResourceExt::name_any).collect()
}

fn ready_cond(st: &ComputeServiceStatus) -> (ConditionStatus, String) {
    let c = conditions::find(&st.conditions, types::READY).expect("Ready");
    (c.status, c.reason.clone())
}

#[test]
fn a_new_service_creates_its_replicas_owned_and_spread() {
    let svc = service(3);
    let p = plan(&svc, &[], &NO_REGIONS, true, T0);
    assert_eq!(names(&p.create), ["llm-0", "llm-1", "llm-2"]);
    let j = &p.create[0];
    assert_eq!(j.spec.workers, 1);
    assert!(j.spec.serving.is_some());
    let spread = j.spec.placement.spread.as_ref().expect("spread");
    assert_eq!(spread.group, "llm");
    assert_eq!(j.owner_references()[0].uid, "s1");
    assert_eq!(j.labels().get(LABEL_SERVICE).map(String::as_str), Some("llm"));
    assert_eq!(p.status.selector.as_deref(), Some("gpufed.io/service=llm"));
    assert_eq!(p.status.address.as_deref(), Some("llm.team.svc:8000"));
    assert_eq!(ready_cond(&p.status).0, ConditionStatus::False);
}

#[test]
fn ready_replicas_make_the_service_ready_and_routable() {
    let svc = service(2);
    let rs = [
        replica(&svc, 0, Some("a"), true),
        replica(&svc, 1, Some("b"), true),
    ];
    let p = plan(&svc, &rs, &NO_REGIONS, true, T0);
    assert!(p.create.is_empty() && p.retire.is_empty() && p.delete.is_empty());
    assert_eq!((p.status.replicas, p.status.ready_replicas), (2, 2));
    assert_eq!(ready_cond(&p.status), (ConditionStatus::True, "Ready".into()));
    assert_eq!(p.ready_addresses, ["10.0.0.0:30000", "10.0.0.1:30001"]);
    assert_eq!(p.status.usage.as_ref().map(|u| u.gpu_seconds), Some(200));
    let providers: Vec<_> = p
        .status
        .replica_status
        .iter()
        .map(|r| r.provider.clone())
        .collect();
    assert_eq!(providers, [Some("a".into()), Some("b".into())]);
    // Only ready replicas are routed.
    let rs = [
        replica(&svc, 0, Some("a"), true),
        replica(&svc, 1, Some("b"), false),
    ];
    let p = plan(&svc, &rs, &NO_REGIONS, true, T0);
    assert_eq!(p.ready_addresses, ["10.0.0.0:30000"]);
    assert_eq!(
        ready_cond(&p.status),
        (ConditionStatus::False, "Progressing".into())
    );
}

#[test]
fn a_finished_replica_is_replaced_at_once_and_deleted_once_metered() {
    let svc = service(2);
    let mut failed = replica(&svc, 0, Some("a"), false);
    if let Some(st) = failed.status.as_mut() {
        st.phase = Some(JobPhase::Failed);
    }
    let rs = [failed.clone(), replica(&svc, 1, Some("b"), true)];
    let p = plan(&svc, &rs, &NO_REGIONS, true, T0);
    assert_eq!(
        names(&p.create),
        ["llm-2"],
        "a new name: the failed one still exists"
    );
    assert!(p.delete.is_empty(), "its usage is not metered yet");
    if let Some(st) = failed.status.as_mut() {
        st.billing = Some(Billing {
            metered_gpu_seconds: 100,
            ..Default::default()
        });
    }
    let p = plan(
        &svc,
        &[failed, replica(&svc, 1, Some("b"), true)],
        &NO_REGIONS,
        true,
        T0,
    );
    assert_eq!(p.delete, ["llm-0"]);
}

#[test]
fn scaling_down_retires_the_not_ready_then_the_newest_and_waits_for_metering() {
    let svc = service(1);
    let rs = [
        replica(&svc, 0, Some("a"), true),
        replica(&svc, 1, Some("b"), false),
        replica(&svc, 2, Some("c"), true),
    ];
    let p = plan(&svc, &rs, &NO_REGIONS, true, T0);
    assert_eq!(p.retire, ["llm-1", "llm-2"]);
    assert_eq!(p.status.replicas, 1, "retiring replicas are not counted");
    let phases: Vec<_> = p.status.replica_status.iter().map(|r| r.phase.clone()).collect();
    assert_eq!(phases, ["Running", "Retiring", "Retiring"]);
    // Retired: the job controller stopped the attempt (no placement); deleted only when
    // its usage is metered, or at once when nothing meters.
    let mut retired = replica(&svc, 2, None, false);
    retired.spec.suspend = true;
    if let Some(st) = retired.status.as_mut() {
        st.phase = Some(JobPhase::Suspended);
    }
    let rs = [replica(&svc, 0, Some("a"), true), retired.clone()];
    assert!(plan(&svc, &rs, &NO_REGIONS, true, T0).delete.is_empty());
    assert_eq!(plan(&svc, &rs, &NO_REGIONS, false, T0).delete, ["llm-2"]);
    // Still running (the job controller has not stopped it yet): never deleted.
    let mut stopping = replica(&svc, 2, Some("c"), true);
    stopping.spec.suspend = true;
    assert!(plan(&svc, &[stopping], &NO_REGIONS, false, T0).delete.is_empty());
}

#[test]
fn scaling_up_takes_the_lowest_free_indexes() {
    let svc = service(4);
    let rs = [
        replica(&svc, 1, Some("a"), true),
        replica(&svc, 3, Some("b"), true),
    ];
    assert_eq!(
        names(&plan(&svc, &rs, &NO_REGIONS, true, T0).create),
        ["llm-0", "llm-2"]
    );
}

#[test]
fn a_spec_change_rolls_new_replicas_in_before_retiring_ready_old_ones() {
    let old_svc = service(2);
    let mut svc = service(2);
    svc.spec.template.spec.containers[0]
        .0
        .insert("image".into(), "vllm:v2".into());
    let old = [
        replica(&old_svc, 0, Some("a"), true),
        replica(&old_svc, 1, Some("b"), true),
    ];
    let p = plan(&svc, &old, &NO_REGIONS, true, T0);
    assert_eq!(names(&p.create), ["llm-2", "llm-3"]);
    assert!(p.retire.is_empty(), "old replicas serve until new ones are ready");
    // One new replica ready: one old one may go.
    let rs = [
        old[0].clone(),
        old[1].clone(),
        replica(&svc, 2, Some("c"), true),
        replica(&svc, 3, Some("d"), false),
    ];
    let p = plan(&svc, &rs, &NO_REGIONS, true, T0);
    assert!(p.create.is_empty());
    assert_eq!(p.retire, ["llm-1"]);
    assert_eq!(ready_cond(&p.status).0, ConditionStatus::False);
}

#[test]
fn an_invalid_spec_stalls_without_touching_replicas() {
    let mut svc = service(2);
    svc.spec.max_price_per_gpu_hour = "0".into();
    let p = plan(&svc, &[], &NO_REGIONS, true, T0);
    assert!(p.create.is_empty());
    let c = conditions::find(&p.status.conditions, types::STALLED).expect("Stalled");
    assert_eq!(c.reason, "InvalidSpec");
    assert!(c.message.contains("spec.maxPricePerGpuHour"), "{}", c.message);
    let mut svc = service(1);
    svc.spec.readiness_probe = Some(gpufed_api::job::OpenObject(
        serde_json::json!({"httpGet": "nope"})
            .as_object()
            .cloned()
            .expect("obj"),
    ));
    let c = plan(&svc, &[], &NO_REGIONS, true, T0);
    let st = conditions::find(&c.status.conditions, types::STALLED).expect("Stalled");
    assert!(st.message.starts_with("spec.readinessProbe"), "{}", st.message);
    assert_eq!(st.reason, "InvalidTemplate");
    assert!(c.create.is_empty(), "no replica is created to wait on its own");
    // A template no pod can be built from: refused the same way, naming the field.
    let mut svc = service(1);
    svc.spec
        .template
        .spec
        .rest
        .insert("hostNetwork".into(), serde_json::json!("yes"));
    let c = plan(&svc, &[], &NO_REGIONS, true, T0);
    assert!(c.create.is_empty());
    let st = conditions::find(&c.status.conditions, types::STALLED).expect("Stalled");
    assert_eq!(st.reason, "InvalidTemplate");
    assert!(st.message.starts_with("spec.template.spec"), "{}", st.message);
    // A spread in the placement would be silently overridden by spec.spread: refused.
    let mut svc = service(1);
    svc.spec.placement.spread = Some(gpufed_api::serving::Spread {
        group: "other".into(),
        across: gpufed_api::serving::SpreadDomain::Region,
    });
    let c = plan(&svc, &[], &NO_REGIONS, true, T0);
    assert!(c.create.is_empty());
    let st = conditions::find(&c.status.conditions, types::STALLED).expect("Stalled");
    assert!(st.message.starts_with("spec.placement.spread"), "{}", st.message);
}

#[test]
fn a_deleted_service_retires_everything_and_creates_nothing() {
    let mut svc = service(2);
    svc.metadata.deletion_timestamp =
        serde_json::from_value(serde_json::json!("2027-01-15T08:00:00Z")).expect("time");
    let rs = [replica(&svc, 0, Some("a"), true)];
    let p = plan(&svc, &rs, &NO_REGIONS, true, T0);
    assert!(p.create.is_empty());
    assert_eq!(p.retire, ["llm-0"]);
}

#[test]
fn planning_twice_gives_the_same_status() {
    let svc = service(2);
    let rs = [
        replica(&svc, 0, Some("a"), true),
        replica(&svc, 1, Some("b"), false),
    ];
    let first = plan(&svc, &rs, &NO_REGIONS, true, T0);
    let mut again = svc.clone();
    again.status = Some(first.status.clone());
    assert_eq!(plan(&again, &rs, &NO_REGIONS, true, T0 + 60).status, first.status);
}

#[test]
fn scaling_down_keeps_the_replicas_spread() {
    // a, a, b: retiring the newest (on b) would leave both on a.
    let mut svc = service(2);
    let rs = [
        replica(&svc, 0, Some("a"), true),
        replica(&svc, 1, Some("a"), true),
        replica(&svc, 2, Some("b"), true),
    ];
    assert_eq!(plan(&svc, &rs, &NO_REGIONS, true, T0).retire, ["llm-1"]);
    // Evenly spread: the newest goes.
    let even = [
        replica(&svc, 0, Some("a"), true),
        replica(&svc, 1, Some("b"), true),
        replica(&svc, 2, Some("c"), true),
    ];
    assert_eq!(plan(&svc, &even, &NO_REGIONS, true, T0).retire, ["llm-2"]);
    // A replica that is not ready goes before any ready one, wherever it is.
    let mut one_down = rs.clone();
    one_down[2] = replica(&svc, 2, Some("b"), false);
    assert_eq!(plan(&svc, &one_down, &NO_REGIONS, true, T0).retire, ["llm-2"]);
    // Down to 1 from a, a, b, b, c: one per crowded domain first, then the newest.
    svc.spec.replicas = 1;
    let five = [
        replica(&svc, 0, Some("a"), true),
        replica(&svc, 1, Some("a"), true),
        replica(&svc, 2, Some("b"), true),
        replica(&svc, 3, Some("b"), true),
        replica(&svc, 4, Some("c"), true),
    ];
    assert_eq!(
        plan(&svc, &five, &NO_REGIONS, true, T0).retire,
        ["llm-3", "llm-1", "llm-4", "llm-2"]
    );
    // No spread: newest first, as before.
    svc.spec.spread = gpufed_api::service::ServiceSpread::None;
    assert_eq!(
        plan(&svc, &five, &NO_REGIONS, true, T0).retire,
        ["llm-4", "llm-3", "llm-2", "llm-1"]
    );
}

#[test]
fn spread_by_region_retires_from_the_most_crowded_region() {
    let mut svc = service(2);
    svc.spec.spread = gpufed_api::service::ServiceSpread::Region;
    let regions: Regions = [("a1", "eu"), ("a2", "eu"), ("b", "us")]
        .into_iter()
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
        .collect();
    let rs = [
        replica(&svc, 0, Some("a1"), true),
        replica(&svc, 1, Some("a2"), true),
        replica(&svc, 2, Some("b"), true),
    ];
    assert_eq!(plan(&svc, &rs, &regions, true, T0).retire, ["llm-1"]);
    // Regions unknown: one domain, the newest goes.
    assert_eq!(plan(&svc, &rs, &NO_REGIONS, true, T0).retire, ["llm-2"]);
}

#[test]
fn a_rollout_keeps_the_old_replicas_that_keep_the_service_spread() {
    // Old replicas on a, b, b; one new replica ready on a. Under maxUnavailable 1 and no
    // surge one old replica stays: keeping the first (on a) would leave a, a; the one
    // kept is on b.
    let old_svc = service(3);
    let mut svc = service(3);
    svc.spec.template.spec.containers[0]
        .0
        .insert("image".into(), "vllm:v2".into());
    svc.spec.rollout =
        serde_json::from_value(serde_json::json!({"maxSurge": 0, "maxUnavailable": 1})).expect("rollout");
    let rs = [
        replica(&old_svc, 0, Some("a"), true),
        replica(&old_svc, 1, Some("b"), true),
        replica(&old_svc, 2, Some("b"), true),
        replica(&svc, 3, Some("a"), true),
    ];
    let p = plan(&svc, &rs, &NO_REGIONS, true, T0);
    assert_eq!(p.retire, ["llm-2", "llm-0"]);
    assert_eq!(names(&p.create), ["llm-4"], "3 live: llm-1, llm-3 and a new one");
}

#[test]
fn a_replica_name_another_job_has_is_skipped_for_the_next_free_one() {
    let svc = service(3);
    // `llm-1` runs as ours; `llm-0` and `llm-2` are jobs of the namespace we do not own.
    let ours = [replica(&svc, 1, Some("a"), true)];
    let mut p = plan(&svc, &ours, &NO_REGIONS, false, T0);
    assert_eq!(names(&p.create), ["llm-0", "llm-2"]);
    let taken = std::collections::BTreeSet::from(["llm-0".to_owned(), "llm-2".to_owned()]);
    let renamed = avoid_taken_names("llm", &mut p.create, &ours, &taken);
    assert_eq!(names(&p.create), ["llm-3", "llm-4"]);
    assert_eq!(
        renamed,
        [
            ("llm-0".to_owned(), "llm-3".to_owned()),
            ("llm-2".to_owned(), "llm-4".to_owned())
        ]
    );
    // Next round, with them ours: nothing more to create, nothing renamed.
    let now_ours = [
        replica(&svc, 1, Some("a"), true),
        replica(&svc, 3, Some("b"), true),
        replica(&svc, 4, Some("c"), true),
    ];
    let mut p = plan(&svc, &now_ours, &NO_REGIONS, false, T0);
    assert!(p.create.is_empty(), "{:?}", names(&p.create));
    assert!(avoid_taken_names("llm", &mut p.create, &now_ours, &taken).is_empty());
}
