#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use gpufed_settlement::{AttemptMeter, JobRef, Journal, PlanConfig};

#[test]
fn tenants_of_batches_in_flight_still_need_their_escrows() {
    let mut journal = Journal::new();
    for (tenant, at) in [("team-a", 0), ("team-b", 600)] {
        let job = JobRef {
            namespace: tenant.into(),
            name: "j".into(),
            uid: format!("uid-{tenant}"),
        };
        let mut meter = AttemptMeter::new(job, 1, "dc-1".into(), tenant.into(), 2_500_000);
        journal
            .append(meter.record(1_700_000_000 + at, 1_700_000_060 + at, 8).unwrap())
            .unwrap();
    }
    let all: BTreeSet<String> = ["team-a".to_owned(), "team-b".to_owned()].into();
    assert_eq!(super::tenants_to_pay(&journal), all);
    // Every record batched and in flight: nothing pending, both escrows still needed.
    journal
        .plan_batch(&PlanConfig::default(), &BTreeSet::new(), 0)
        .unwrap();
    assert_eq!(journal.pending_iter().count(), 0);
    assert_eq!(super::tenants_to_pay(&journal), all);
}

#[test]
fn namespaces_with_jobs_or_unsettled_usage_are_billable() {
    let mut journal = Journal::new();
    let job = JobRef {
        namespace: "gone-team".into(),
        name: "j".into(),
        uid: "uid-gone".into(),
    };
    let mut meter = AttemptMeter::new(job, 1, "dc-1".into(), "gone-team".into(), 2_500_000);
    journal
        .append(meter.record(1_700_000_000, 1_700_000_060, 8).unwrap())
        .unwrap();
    let live: gpufed_api::ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "live-team", "uid": "u1"},
        "spec": {"workers": 1, "gpusPerWorker": 1, "maxPricePerGpuHour": "2",
                 "template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}}
    }))
    .unwrap();
    let jobs = vec![std::sync::Arc::new(live)];
    let want: BTreeSet<String> = ["gone-team".to_owned(), "live-team".to_owned()].into();
    assert_eq!(super::billable_tenants(&journal, &jobs), want);
    assert_eq!(super::billable_tenants(&Journal::new(), &[]), BTreeSet::new());
}
