//! `spec.minReadySeconds`: a replica counts as available only once it has been ready that
//! long — old replicas retire only for available new ones, and `Ready` waits for them.
use super::rollout_tests::{self, serving};
use super::*;

const T0: i64 = 1_800_000_000;
static NO_REGIONS: Regions = Regions::new();

fn service(image: &str, min_ready: u32) -> ComputeService {
    let mut svc = rollout_tests::service(2, image, serde_json::json!({}));
    svc.spec.min_ready_seconds = min_ready;
    svc
}

/// Ready replicas `indices` of `svc`'s template, ready since `since` (`None`: unknown).
fn ready_since(svc: &ComputeService, indices: std::ops::Range<u32>, since: Option<i64>) -> Vec<ComputeJob> {
    let spec = build::replica_spec(svc);
    let rev = build::revision(&spec);
    indices
        .map(|i| {
            let mut j = serving(build::replica(svc, i, &spec, &rev), true);
            if let Some(e) = j.status.as_mut().and_then(|s| s.endpoint.as_mut()) {
                e.since = since.map(crate::time::format);
            }
            j
        })
        .collect()
}

#[test]
fn old_replicas_retire_only_for_new_ones_ready_for_min_ready_seconds() {
    let v1 = service("vllm:1", 0);
    let mut world = ready_since(&v1, 0..2, None);
    world.extend(ready_since(&service("vllm:2", 30), 2..4, Some(T0)));
    // Without minReadySeconds, both old ones go as soon as the new are ready.
    let p = plan(&service("vllm:2", 0), &world, &NO_REGIONS, false, T0 + 10);
    assert_eq!(sorted(&p.retire), ["llm-0", "llm-1"]);
    assert_eq!(p.recheck_in, None);
    // With 30 s, 10 s in: nothing retires, and the next look is due in 20 s.
    let v2 = service("vllm:2", 30);
    let p = plan(&v2, &world, &NO_REGIONS, false, T0 + 10);
    assert!(p.retire.is_empty(), "{p:?}");
    assert_eq!(p.recheck_in, Some(20));
    let st = &p.status;
    assert_eq!((st.ready_replicas, st.available_replicas), (4, 2), "{st:?}");
    let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
    assert_eq!(ready.reason, "Progressing");
    assert!(
        ready
            .message
            .contains("(2 available: ready for minReadySeconds 30)"),
        "{}",
        ready.message
    );
    assert!(conditions::is_true(&st.conditions, types::RECONCILING));
    // 30 s in: the new ones are available, the old ones retire.
    let p = plan(&v2, &world, &NO_REGIONS, false, T0 + 30);
    assert_eq!(sorted(&p.retire), ["llm-0", "llm-1"]);
}

#[test]
fn ready_waits_for_available_replicas_and_progress_counts_them() {
    let svc = service("vllm:1", 30);
    let world = ready_since(&svc, 0..2, Some(T0));
    let p = plan(&svc, &world, &NO_REGIONS, false, T0 + 5);
    assert!(!conditions::is_true(&p.status.conditions, types::READY));
    assert_eq!(p.status.available_replicas, 0);
    assert_eq!(p.recheck_in, Some(25));
    let progress = p.status.progress.expect("short of the desired state");
    assert_eq!(progress.updated_ready_replicas, 0, "ready is not yet available");
    let p = plan(&svc, &world, &NO_REGIONS, false, T0 + 31);
    assert!(conditions::is_true(&p.status.conditions, types::READY));
    assert_eq!(p.status.available_replicas, 2);
    assert_eq!((p.recheck_in, p.status.progress), (None, None));
}

#[test]
fn availability_counts_from_when_the_replica_turned_ready() {
    let svc = service("vllm:1", 0);
    let ready = ready_since(&svc, 0..1, Some(T0));
    assert_eq!(available_in(&ready[0], 0, T0), Some(0), "0 s: ready is available");
    assert_eq!(available_in(&ready[0], 30, T0 + 10), Some(20));
    assert_eq!(available_in(&ready[0], 30, T0 + 45), Some(0));
    let unknown = ready_since(&svc, 0..1, None);
    assert_eq!(
        available_in(&unknown[0], 30, T0),
        Some(0),
        "no time recorded: long ago"
    );
    let future = ready_since(&svc, 0..1, Some(T0 + 5));
    assert_eq!(
        available_in(&future[0], 0, T0),
        Some(0),
        "another operator's clock ahead"
    );
    let not_ready = serving(ready[0].clone(), false);
    assert_eq!(available_in(&not_ready, 0, T0), None);
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort();
    v
}
