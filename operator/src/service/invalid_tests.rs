//! Specs the operator refuses: a name no hub Service or label can carry, and what a
//! refusal leaves of earlier conditions.
#![allow(clippy::unwrap_used)]
use super::rollout_tests::{self, serving};
use super::*;
use gpufed_api::ConditionStatus;
use gpufed_api::conditions::Health;

const T0: i64 = 1_800_000_000;
static NO_REGIONS: Regions = Regions::new();

fn named(name: &str, replicas: u32) -> ComputeService {
    let mut svc = rollout_tests::service(replicas, "vllm", serde_json::json!({}));
    svc.metadata.name = Some(name.to_owned());
    svc
}

/// Valid for a ComputeService's `metadata.name` (a DNS subdomain), but no hub Service
/// (DNS-1035), label value or spread group (≤ 63) can carry it: the replicas' creates
/// were refused every round and the service never had a status.
#[test]
fn a_name_no_hub_service_can_have_stalls_and_plans_no_replicas() {
    let long = format!("l{}", "x".repeat(63));
    for name in ["llama-3.1-chat", "8b-chat", long.as_str()] {
        let p = plan(&named(name, 2), &[], &NO_REGIONS, false, T0);
        assert!(p.create.is_empty() && p.retire.is_empty(), "{name}: {p:?}");
        assert_eq!(p.revision, None, "{name}: nothing recorded");
        let st = &p.status;
        let stalled = conditions::find(&st.conditions, types::STALLED).expect("Stalled");
        assert_eq!(
            (stalled.status, stalled.reason.as_str()),
            (ConditionStatus::True, "InvalidSpec")
        );
        assert!(
            stalled.message.starts_with("metadata.name") && stalled.message.contains("DNS-1035"),
            "{}",
            stalled.message
        );
        let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
        assert_eq!(ready.reason, "InvalidSpec");
    }
    // The longest name that fits, and one with digits inside, are fine.
    let fits = format!("l{}", "x".repeat(62));
    for name in ["llama-8b-chat", fits.as_str()] {
        let p = plan(&named(name, 2), &[], &NO_REGIONS, false, T0);
        assert_eq!(p.create.len(), 2, "{name}");
    }
}

/// A service created before the name was checked (`llama-3.1-8b`, whose replicas ran)
/// and deleted after: its cleanup still sees its replicas, retires the live ones and
/// deletes the metered ones, so the replica list empties and the finalizer goes.
#[test]
fn a_deleted_service_with_a_refused_name_still_retires_and_deletes_its_replicas() {
    use gpufed_api::job_status::{ComputeJobStatus, JobPhase, Placement};
    let mut svc = named("llama-3.1-8b", 2);
    let spec = build::replica_spec(&svc);
    let rev = build::revision(&spec);
    let mut live = build::replica(&svc, 0, &spec, &rev);
    live.status = Some(ComputeJobStatus {
        phase: Some(JobPhase::Running),
        placement: Some(Placement {
            attempt: 1,
            provider: "p".into(),
            gpus: 1,
            price_per_gpu_hour: "2.00".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    // Retired earlier, its attempt stopped.
    let mut stopped = build::replica(&svc, 1, &spec, &rev);
    stopped.spec.suspend = true;
    svc.metadata.deletion_timestamp =
        serde_json::from_value(serde_json::json!("2027-01-15T08:00:00Z")).expect("time");
    let (replicas, taken) = super::super::observe::replicas_and_taken(&svc, [&live, &stopped]);
    assert_eq!((replicas.len(), taken.len()), (2, 0), "{replicas:?}");
    let p = plan(&svc, &replicas, &NO_REGIONS, false, T0);
    assert!(p.create.is_empty(), "{p:?}");
    assert_eq!(p.retire, ["llama-3.1-8b-0"]);
    assert_eq!(p.delete, ["llama-3.1-8b-1"]);
}

/// A refused spec removes a Reconciling left from the last round: kstatus reads the
/// first of Reconciling/Stalled that is True, so it would read InProgress for ever.
#[test]
fn a_refused_spec_removes_a_leftover_reconciling() {
    let mut svc = rollout_tests::service(2, "vllm", serde_json::json!({}));
    let spec = build::replica_spec(&svc);
    let rev = build::revision(&spec);
    let world = [serving(build::replica(&svc, 0, &spec, &rev), true)];
    // Generation 2 was reconciling (one replica short).
    let before = plan(&svc, &world, &NO_REGIONS, false, T0);
    assert!(conditions::is_true(&before.status.conditions, types::RECONCILING));
    svc.status = Some(before.status);
    // Generation 3 is invalid.
    svc.metadata.generation = Some(3);
    svc.spec.max_price_per_gpu_hour = "0".into();
    let p = plan(&svc, &world, &NO_REGIONS, false, T0 + 5);
    let st = &p.status;
    assert!(conditions::is_true(&st.conditions, types::STALLED), "{st:?}");
    assert!(
        conditions::find(&st.conditions, types::RECONCILING).is_none(),
        "{:?}",
        st.conditions
    );
    assert_eq!(
        conditions::health(svc.metadata.generation, st.observed_generation, &st.conditions),
        Health::Failed
    );
}
