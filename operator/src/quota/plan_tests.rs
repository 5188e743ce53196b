use super::*;
use gpufed_api::job_status::{JobPhase, Placement};

const T: i64 = 1_800_000_000;

fn job(name: &str, ns: &str, placed: Option<(u32, &str)>, phase: Option<JobPhase>) -> Arc<ComputeJob> {
    let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"workers": 1, "gpusPerWorker": 2, "maxPricePerGpuHour": "3",
                 "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}}
    }))
    .expect("job");
    let mut st = gpufed_api::ComputeJobStatus {
        phase,
        ..Default::default()
    };
    if let Some((gpus, price)) = placed {
        st.placement = Some(Placement {
            attempt: 1,
            provider: "p".into(),
            gpus,
            price_per_gpu_hour: price.into(),
            workers: vec![],
            placed_time: "2026-12-04T12:00:00Z".into(),
            running_time: None,
            node_unreachable_since: None,
            preempted: None,
        });
    }
    j.status = Some(st);
    Arc::new(j)
}

fn held(name: &str, ns: &str) -> Arc<ComputeJob> {
    let mut j = (*job(name, ns, None, None)).clone();
    let c = conditions::condition(types::PLACED, False, QUOTA_EXCEEDED, "quota exceeded", None, "t");
    j.status.get_or_insert_with(Default::default).conditions.push(c);
    Arc::new(j)
}

fn quota(name: &str, ns: &str, gpus: Option<u32>, spend: Option<&str>) -> Arc<ComputeQuota> {
    let mut q = ComputeQuota::new(
        name,
        gpufed_api::ComputeQuotaSpec {
            gpus,
            max_spend_per_hour: spend.map(Into::into),
        },
    );
    q.metadata.namespace = Some(ns.into());
    q.metadata.generation = Some(3);
    Arc::new(q)
}

#[test]
fn usage_counts_live_attempts_only() {
    let jobs = [
        job("a", "team", Some((4, "2.5")), Some(JobPhase::Running)),
        job("b", "team", Some((2, "1.25")), Some(JobPhase::Placed)),
        job("done", "team", Some((8, "9")), Some(JobPhase::Succeeded)),
        job("queued", "team", None, Some(JobPhase::Queued)),
    ];
    // 4 × 2.50 + 2 × 1.25 = 12.50 per hour.
    assert_eq!(usage(jobs.iter().map(AsRef::as_ref)), (6, 12_500_000));
}

#[test]
fn every_quota_of_a_namespace_applies_the_lowest_cap_of_each_kind() {
    let quotas = [
        quota("wide", "team", Some(16), Some("40")),
        quota("gpus", "team", Some(8), None),
        quota("money", "team", None, Some("25.5")),
        quota("other", "lab", Some(2), None),
    ];
    let jobs = [
        job("a", "team", Some((4, "2.5")), Some(JobPhase::Running)),
        job("b", "lab", Some((1, "1")), Some(JobPhase::Running)),
    ];
    let caps = caps(&quotas, &jobs, T);
    assert_eq!(
        caps.get("team"),
        Some(&pl::Quota {
            gpus: Some(8),
            spend_per_hour: Some(25_500_000),
            used_gpus: 4,
            used_spend_per_hour: 10_000_000,
        })
    );
    assert_eq!(caps["lab"].gpus, Some(2));
    assert_eq!(caps["lab"].used_gpus, 1);
    assert!(!caps.contains_key("free"), "no quota, no caps");
}

#[test]
fn a_quota_that_caps_nothing_is_not_enforced_and_says_why() {
    let q = quota("empty", "team", None, None);
    assert!(caps(std::slice::from_ref(&q), &[], T).is_empty());
    let st = status(&q, &[], "2026-12-04T12:00:00Z");
    let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
    assert_eq!((ready.status, ready.reason.as_str()), (False, "InvalidSpec"));
    assert!(
        ready
            .message
            .starts_with("spec.gpus: set spec.gpus, spec.maxSpendPerHour"),
        "{}",
        ready.message
    );
    assert_eq!(ready.observed_generation, Some(3));
    let stalled = conditions::find(&st.conditions, types::STALLED).expect("Stalled");
    assert_eq!((stalled.status, stalled.reason.as_str()), (True, "InvalidSpec"));
    // Fixed: Stalled goes, as kstatus wants an abnormal-true condition removed.
    let fixed = ComputeQuota {
        spec: gpufed_api::ComputeQuotaSpec {
            gpus: Some(2),
            max_spend_per_hour: None,
        },
        status: Some(st),
        ..(*q).clone()
    };
    let st = status(&fixed, &[], "2026-12-04T12:01:00Z");
    assert!(
        conditions::find(&st.conditions, types::STALLED).is_none(),
        "{st:?}"
    );
    assert_eq!(
        conditions::find(&st.conditions, types::READY).map(|c| c.status),
        Some(True)
    );
}

#[test]
fn status_shows_usage_waiting_jobs_and_the_caps() {
    let q = quota("team", "team", Some(8), Some("20"));
    let jobs = [
        job("a", "team", Some((4, "2.5")), Some(JobPhase::Running)),
        held("b", "team"),
        held("c", "team"),
        job("d", "team", None, Some(JobPhase::Queued)),
    ];
    let refs: Vec<&ComputeJob> = jobs.iter().map(AsRef::as_ref).collect();
    let st = status(&q, &refs, "2026-12-04T12:00:00Z");
    assert_eq!(
        st.used,
        Some(QuotaUsage {
            gpus: 4,
            spend_per_hour: "10".into()
        })
    );
    assert_eq!(st.waiting_jobs, 2);
    assert_eq!(st.observed_generation, Some(3));
    let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
    assert_eq!(ready.status, True);
    assert_eq!(
        ready.message,
        "caps the namespace at 8 GPUs and 20 per hour; it holds 4 GPUs at 10 per hour"
    );
    // Level-triggered: the same inputs give the same status, so nothing is written again.
    let again = status(
        &ComputeQuota {
            status: Some(st.clone()),
            ..(*q).clone()
        },
        &refs,
        "2026-12-04T12:05:00Z",
    );
    assert_eq!(again, st);
}

/// A job whose attempt on `gpus` GPUs was evicted for `by` 10 s before `T`, its pods not
/// gone yet: `by` waits for them.
fn evicted(name: &str, ns: &str, gpus: u32, by: &str) -> Arc<ComputeJob> {
    let mut j = (*job(name, ns, None, Some(JobPhase::Recovering))).clone();
    j.status
        .get_or_insert_with(Default::default)
        .attempts
        .push(gpufed_api::job_status::AttemptRecord {
            attempt: 1,
            provider: "p".into(),
            outcome: gpufed_api::job_status::AttemptOutcome::Preempted,
            message: "evicted".into(),
            reason: None,
            gpu_seconds: 60,
            gpus: Some(gpus),
            gpu_uuids: Vec::new(),
            running_time: None,
            price_per_gpu_hour: "1".into(),
            end_time: crate::time::format(T - 10),
            removed: false,
            preempted_by: Some(by.into()),
        });
    Arc::new(j)
}

#[test]
fn status_shows_the_room_kept_for_a_waiting_preemptor_as_the_caps_count_it() {
    // Cap 8: `a` runs on 4 GPUs; `urgent` (a 4-GPU gang, ceiling 3) evicted `big` — of
    // another namespace, so the room is read from all jobs — and waits for its pods to
    // go; `c` is held. The round counts 8 of 8; the quota must not say it holds only 4.
    let mut urgent = (*job("urgent", "team", None, Some(JobPhase::Queued))).clone();
    urgent.spec.workers = 2;
    let jobs = [
        job("a", "team", Some((4, "2.5")), Some(JobPhase::Running)),
        evicted("big", "lab", 4, "team/urgent"),
        Arc::new(urgent),
        held("c", "team"),
    ];
    let q = quota("q", "team", Some(8), Some("40"));
    assert_eq!(caps(std::slice::from_ref(&q), &jobs, T)["team"].used_gpus, 8);
    let kept = reserved_by_namespace(&jobs, T);
    assert_eq!(kept, BTreeMap::from([("team".to_owned(), (4, 12_000_000))]));

    let mine: Vec<&ComputeJob> = jobs
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some("team"))
        .map(AsRef::as_ref)
        .collect();
    let st = status_reserving(&q, &mine, kept["team"], "2026-12-04T12:00:00Z");
    assert_eq!(
        (st.used.as_ref().map(|u| u.gpus), st.waiting_jobs),
        (Some(4), 1),
        "live work alone"
    );
    assert_eq!(
        st.reserved,
        Some(QuotaUsage {
            gpus: 4,
            spend_per_hour: "12".into()
        })
    );
    let ready = conditions::find(&st.conditions, types::READY).expect("Ready");
    assert_eq!(
        ready.message,
        "caps the namespace at 8 GPUs and 40 per hour; it holds 4 GPUs at 10 per hour, and \
         reserves 4 GPUs at up to 12 per hour for jobs waiting for the work they preempted to \
         stop: 8 GPUs at 22 per hour count against the caps"
    );

    // Its victim gone: nothing is reserved, and the status says so.
    let later = T + crate::mapping::EVICTION_GRACE_SECS + 1;
    assert!(reserved_by_namespace(&jobs, later).is_empty());
    let current = ComputeQuota {
        status: Some(st),
        ..(*q).clone()
    };
    let st = status_reserving(&current, &mine, (0, 0), "2026-12-04T12:01:00Z");
    assert_eq!(st.reserved, None);
    assert_eq!(
        conditions::find(&st.conditions, types::READY).map(|c| c.message.as_str()),
        Some("caps the namespace at 8 GPUs and 40 per hour; it holds 4 GPUs at 10 per hour")
    );
}

#[test]
fn the_room_a_preemptor_evicted_for_stays_used_while_it_waits() {
    // Quota 4: `small` runs (1 GPU); `urgent` (2 GPUs) evicted `big` for room in the cap
    // and waits for its pods to go; `big` queues again meanwhile. Counting only live work
    // (1 GPU), the round would place `big` back (3 GPUs) into that room, and `urgent`
    // would evict it again next round — and again.
    let jobs = [
        job("small", "team", Some((1, "1")), Some(JobPhase::Running)),
        evicted("big", "team", 3, "team/urgent"),
        job("urgent", "team", None, Some(JobPhase::Queued)),
    ];
    let quotas = [quota("q", "team", Some(4), None)];
    assert_eq!(
        caps(&quotas, &jobs, T)["team"].used_gpus,
        3,
        "1 running + 2 the preemptor took"
    );
    // Its victims gone (past the grace period here): the preemptor no longer waits.
    let later = T + crate::mapping::EVICTION_GRACE_SECS + 1;
    assert_eq!(caps(&quotas, &jobs, later)["team"].used_gpus, 1);

    // So with a cap on spend: the money freed for `urgent` stays its own while it waits,
    // counted at its ceiling (3 per GPU-hour, 2 GPUs) as the price it will pay is not kept.
    let quotas = [quota("q", "team", None, Some("10"))];
    assert_eq!(
        caps(&quotas, &jobs, T)["team"].used_spend_per_hour,
        1_000_000 + 6_000_000,
        "1 GPU at 1 running + 2 at up to 3 the preemptor took"
    );
    assert_eq!(caps(&quotas, &jobs, later)["team"].used_spend_per_hour, 1_000_000);
}
