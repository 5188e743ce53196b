//! Tests of the placement round's pure parts (written placements, fleet counts, starting status).

use super::write::starting_status;
use super::*;
use gpufed_api::job_status::JobPhase;

fn job(uid: &str, placed: bool) -> Arc<ComputeJob> {
    let rv = if placed { "2" } else { "1" };
    job_rv(uid, placed, rv)
}

fn job_rv(uid: &str, placed: bool, rv: &str) -> Arc<ComputeJob> {
    let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": uid, "namespace": "t", "uid": uid, "resourceVersion": rv},
        "spec": {"workers": 1, "gpusPerWorker": 1, "gpu": {}, "maxPricePerGpuHour": "1.00",
                 "template": {"spec": {"containers": [{"name": "m", "image": "i"}]}}}
    }))
    .expect("job");
    if placed {
        j.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Placed",
                "placement": {"attempt": 1, "provider": "p", "gpus": 1, "pricePerGpuHour": "0.5",
                              "placedTime": "2026-12-01T00:00:00Z", "workers": [{"rank": 0, "node": "n"}]}
            }))
            .expect("status"),
        );
    }
    Arc::new(j)
}

#[test]
fn a_placement_just_written_hides_the_stale_queued_copy_until_the_store_catches_up() {
    let t0 = Instant::now();
    let mut written = Written::new();
    // What the round keeps: its placement over the version it read (rv 1).
    written.insert("a".into(), (t0, job_rv("a", true, "1")));
    let seen = with_written(vec![job("a", false), job("b", false)], &mut written, t0);
    assert!(!mapping::is_queued(&seen[0]), "the round sees its own placement");
    assert!(mapping::is_queued(&seen[1]));
    // The store caught up: its copy wins and the entry is dropped.
    let seen = with_written(vec![job("a", true)], &mut written, t0);
    assert!(seen[0].status.is_some() && written.is_empty());
    // The store moved on some other way (attempt ended, queued again): its copy wins.
    written.insert("b".into(), (t0, job_rv("b", true, "1")));
    let seen = with_written(vec![job_rv("b", false, "7")], &mut written, t0);
    assert!(mapping::is_queued(&seen[0]) && written.is_empty());
    // A write the store never shows (e.g. lost) stops overriding after the TTL.
    written.insert("c".into(), (t0, job_rv("c", true, "1")));
    let seen = with_written(vec![job("c", false)], &mut written, t0 + WRITTEN_TTL);
    assert!(mapping::is_queued(&seen[0]) && written.is_empty());
}

#[test]
fn fleet_gpus_sums_total_and_free_over_every_provider() {
    let node = |name: &str, gpus: u8, free: u8| {
        let mut n = pl::Node::new(
            name,
            "NVIDIA-H100",
            81920,
            pl::ComputeCapability::new(9, 0),
            None,
            gpus,
        );
        n.free = (0..free).collect();
        n
    };
    let provider = |id: &str, nodes| pl::Provider {
        id: id.into(),
        region: "eu".into(),
        healthy: true,
        verified: true,
        reputation: 1.0,
        prices: Default::default(),
        nodes,
        tenants: None,
    };
    let snap = pl::Snapshot {
        providers: vec![
            provider("a", vec![node("a1", 8, 3), node("a2", 8, 8)]),
            provider("b", vec![node("b1", 4, 0)]),
        ],
        ..Default::default()
    };
    assert_eq!(fleet_gpus(&snap), (20, 11));
    assert_eq!(fleet_gpus(&pl::Snapshot::default()), (0, 0));
}

#[test]
fn ready_providers_counts_ready_true_only() {
    let provider = |name: &str, ready: Option<&str>| -> Arc<GpuProvider> {
        let conditions: Vec<_> = ready
            .map(|status| {
                serde_json::json!({"type": "Ready", "status": status, "reason": "R", "message": "",
                                   "lastTransitionTime": "2026-11-25T12:00:00Z"})
            })
            .into_iter()
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuProvider",
                "metadata": {"name": name},
                "spec": {"kubeconfigSecretRef": {"namespace": "ns", "name": "kc"},
                         "payoutWallet": "Dd37AqQW5WHD2PeqABkQney1RpFEQthxKMsfC23DN6gP",
                         "region": "eu", "prices": []},
                "status": {"conditions": conditions}
            }))
            .expect("provider"),
        )
    };
    let all = [
        provider("a", Some("True")),
        provider("b", Some("False")),
        provider("c", None),
        provider("d", Some("True")),
    ];
    assert_eq!(ready_providers(&all), 2);
}

#[test]
fn the_starting_status_is_what_the_job_controller_plans_so_it_writes_nothing_more() {
    // Just after the fixture's placement (long after it, the attempt would time out).
    let now = crate::time::parse("2026-12-01T00:00:01Z").expect("time");
    let placed = job("a", true);
    let written = starting_status(&placed, now);
    assert_eq!(written.phase, Some(JobPhase::Placed));
    assert_eq!(
        written.placement,
        placed.status.as_ref().and_then(|s| s.placement.clone())
    );
    let ready = conditions::find(&written.conditions, types::READY).expect("Ready");
    assert_eq!((ready.status, ready.reason.as_str()), (False, "Starting"));
    // The job's own reconcile, seconds later, before its pods exist: the same status.
    let mut seen = (*placed).clone();
    seen.status = Some(written.clone());
    let next = crate::job::plan::plan(&seen, &crate::job::plan::Member::Pods(Vec::new()), now + 5);
    assert_eq!(next.status, written, "no second status write before the pods run");
    assert!(next.dispatch);

    // A plan that would end the placement at once (a suspended job) is not written
    // with it: the bare placement goes, and the controller decides.
    let mut suspended = (*placed).clone();
    suspended.spec.suspend = true;
    let bare = starting_status(&suspended, now);
    assert_eq!(bare, suspended.status.clone().unwrap_or_default());
}

#[test]
fn a_job_mostly_short_of_cpu_or_memory_says_so_in_its_reason() {
    let per_worker = pl::Resources::cpu_memory(100_000, 0).to_string();
    let why = |reasons: &[(pl::Reason, usize)]| {
        let counts = reasons.iter().cloned().collect();
        pl::Explanation::from_reasons(reasons.iter().map(|r| r.1).sum(), counts)
    };
    let too_large = why(&[
        (
            pl::Reason::WorkerTooLarge {
                per_worker: per_worker.clone(),
            },
            2,
        ),
        (pl::Reason::Busy { gpus: 1 }, 1),
    ]);
    assert_eq!(unplaced_reason(&too_large), INSUFFICIENT_NODE_RESOURCES);
    assert!(
        too_large
            .to_string()
            .contains("2 lack a suitable node with 100 CPU for one worker"),
        "{too_large}"
    );
    let busy = why(&[(
        pl::Reason::NodeResourcesBusy {
            per_worker: per_worker.clone(),
        },
        1,
    )]);
    assert_eq!(unplaced_reason(&busy), INSUFFICIENT_NODE_RESOURCES);
    // Only the most common reason names it.
    let mostly_busy = why(&[
        (pl::Reason::NodeResourcesBusy { per_worker }, 1),
        (pl::Reason::Busy { gpus: 1 }, 2),
    ]);
    assert_eq!(unplaced_reason(&mostly_busy), NO_PROVIDER_FITS);
    let selector = why(&[(
        pl::Reason::NodeSelector {
            selector: "example.com/network=infiniband".into(),
        },
        1,
    )]);
    assert_eq!(unplaced_reason(&selector), NODE_SELECTOR_UNMATCHED);
    assert_eq!(
        unplaced_reason(&why(&[(pl::Reason::TenantNotAdmitted, 1)])),
        TENANT_NOT_ADMITTED
    );
}

#[test]
fn every_unplaced_reason_is_one_the_gauge_counts() {
    let why = |reason: pl::Reason| pl::Explanation::from_reasons(1, [(reason, 1)].into());
    let quota = pl::Explanation::Quota(pl::QuotaExceeded::Gpus {
        limit: 1,
        used: 1,
        need: 1,
    });
    let given: Vec<&str> = [
        quota,
        why(pl::Reason::Protected { budgets: "b".into() }),
        why(pl::Reason::TenantNotAdmitted),
        why(pl::Reason::NodeSelector {
            selector: "k=v".into(),
        }),
        why(pl::Reason::WorkerTooLarge {
            per_worker: "1m CPU".into(),
        }),
        why(pl::Reason::Busy { gpus: 1 }),
    ]
    .iter()
    .map(unplaced_reason)
    // And the reason of a placement held back for a fresh challenge (verification::fresh).
    .chain([crate::verification::fresh::AWAITING_VERIFICATION])
    .collect();
    let mut sorted = given.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), given.len(), "{given:?}");
    let mut known = UNPLACED_REASONS.to_vec();
    known.sort_unstable();
    assert_eq!(
        sorted, known,
        "each reason given is counted, and each counted one given"
    );
}
