#![allow(clippy::unwrap_used)]

use super::*;
use gpufed_api::job_status::{
    ArchivedAttempts, AttemptOutcome, AttemptRecord, ComputeJobStatus, Placement, Usage,
};

const CFG: MeterConfig = MeterConfig {
    slice: 60,
    lag: 10,
    decimals: 6,
};

fn job(status: ComputeJobStatus) -> ComputeJob {
    let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team-a", "uid": "uid-1"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                 "gpusPerWorker": 1, "maxPricePerGpuHour": "3"}
    }))
    .unwrap();
    j.status = Some(status);
    j
}

fn placement(attempt: u32, running: i64) -> Placement {
    Placement {
        attempt,
        provider: "dc-1".into(),
        gpus: 4,
        price_per_gpu_hour: "2.5".into(),
        workers: vec![],
        placed_time: crate::time::format(running - 5),
        running_time: Some(crate::time::format(running)),
        node_unreachable_since: None,
        preempted: None,
    }
}

fn ended(attempt: u32, running: i64, end: i64) -> AttemptRecord {
    AttemptRecord {
        attempt,
        provider: "dc-1".into(),
        outcome: AttemptOutcome::ProviderLost,
        message: String::new(),
        reason: None,
        gpu_seconds: (end - running) as u64 * 4,
        gpus: Some(4),
        gpu_uuids: Vec::new(),
        running_time: Some(crate::time::format(running)),
        price_per_gpu_hour: "2.5".into(),
        end_time: crate::time::format(end),
        removed: false,
        preempted_by: None,
    }
}

/// `st` with the usage the job controller writes when it looks at `at`.
fn counted_at(mut st: ComputeJobStatus, at: i64) -> ComputeJobStatus {
    st.usage = Some(crate::job::plan::usage(&st, Some(at)));
    st
}

#[test]
fn units_convert_both_ways() {
    assert_eq!(to_base_units("2.5", 6), Some(2_500_000));
    assert_eq!(to_base_units("2.5", 9), Some(2_500_000_000));
    // A mint of fewer than 6 decimals would cut prices: nothing is metered in it (and
    // settlement refuses to start with it: `usable_decimals`).
    assert_eq!(to_base_units("1.5", 0), None);
    assert_eq!(to_base_units("2.5", 2), None);
    assert_eq!(to_base_units("2.5", 255), None, "no overflow");
    let mint = gpufed_chain::pubkey::Pubkey([1; 32]);
    for d in [0, 2, 5, 19, 255] {
        let err = crate::settlement::usable_decimals(&mint, d)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{d} decimals")), "{err}");
    }
    assert_eq!(crate::settlement::usable_decimals(&mint, 6).ok(), Some(6));
    assert_eq!(crate::settlement::usable_decimals(&mint, 9).ok(), Some(9));
    assert!(from_base_units(u64::MAX, 255).starts_with("0.000"), "no overflow");
    assert_eq!(
        crate::stake::plan::display_amount(u64::MAX, 255),
        "0",
        "no overflow"
    );
    assert_eq!(to_base_units("x", 6), None);
    assert_eq!(from_base_units(2_500_000, 6), "2.5");
    assert_eq!(from_base_units(3, 6), "0.000003");
    assert_eq!(from_base_units(7, 0), "7");
}

/// `status.billing.settledAmount` is written in the mint's own unit: every amount of every
/// mint settlement takes fits the CRD's pattern (with 6 fractional digits at most, an
/// 18-decimal mint's status write was refused each round).
#[test]
fn a_settled_amount_of_any_usable_mint_fits_the_status_schema() {
    // The pattern as the generated CRD has it, so a field pointed at another one fails here.
    let crd = gpufed_api::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "ComputeJob")
        .unwrap();
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    let field = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["billing"]["properties"]["settledAmount"];
    let pattern = regex::Regex::new(field["pattern"].as_str().unwrap()).unwrap();
    let mint = gpufed_chain::Pubkey::parse("So11111111111111111111111111111111111111112").unwrap();
    for d in 0..=u8::MAX {
        if crate::settlement::usable_decimals(&mint, d).is_err() {
            continue;
        }
        for amount in [0, 1, 277_777_777_777_777, 2_500_000, u64::MAX - 1, u64::MAX] {
            let text = from_base_units(amount, d);
            assert!(pattern.is_match(&text), "{d} decimals: {text}");
        }
    }
    assert_eq!(from_base_units(277_777_777_777_777, 18), "0.000277777777777777");
}

#[test]
fn live_attempt_is_metered_in_slices_behind_the_heartbeat_and_finished_exactly() {
    let t0 = 1_700_000_000;
    let mut journal = Journal::new();
    let mut st = counted_at(
        ComputeJobStatus {
            placement: Some(placement(1, t0)),
            ..Default::default()
        },
        t0 + 131,
    );
    // Too early for a slice (heartbeat 50 s in, lag 10 s → 40 s < 60 s).
    assert!(job_records(&job(st.clone()), &journal, |_| Some(t0 + 50), t0 + 50, &CFG).is_empty());
    // 130 s in: one slice up to hb − lag = 120 s.
    let recs = job_records(&job(st.clone()), &journal, |_| Some(t0 + 130), t0 + 131, &CFG);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].start, recs[0].end, recs[0].gpu_seconds),
        (t0 as u64, t0 as u64 + 120, 480)
    );
    journal.append(recs[0].clone()).unwrap();
    // Re-running with the same inputs produces nothing new (idempotent).
    assert!(job_records(&job(st.clone()), &journal, |_| Some(t0 + 130), t0 + 131, &CFG).is_empty());
    // No heartbeat known: live metering waits.
    assert!(job_records(&job(st.clone()), &journal, |_| None, t0 + 500, &CFG).is_empty());
    // The attempt ends at 200 s (provider lost): the rest is metered exactly.
    st.attempts.push(ended(1, t0, t0 + 200));
    let recs = job_records(&job(st.clone()), &journal, |_| Some(t0 + 200), t0 + 400, &CFG);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].start, recs[0].end, recs[0].gpu_seconds),
        (t0 as u64 + 120, t0 as u64 + 200, 320)
    );
    journal.append(recs[0].clone()).unwrap();
    let total: u64 = [480u64, 320].iter().sum();
    assert_eq!(
        journal
            .position("uid-1", 1, "dc-1")
            .unwrap()
            .cumulative_gpu_seconds,
        total
    );
    // Exactly the price of 800 GPU-seconds at 2.5/h, however it was sliced.
    assert_eq!(journal.billing("uid-1").amount, 800 * 2_500_000 / 3600);
}

#[test]
fn a_live_slice_stops_at_the_first_sighting_of_an_unreachable_node() {
    let t0 = 1_700_000_000;
    let mut journal = Journal::new();
    let mut p = placement(1, t0);
    p.node_unreachable_since = Some(crate::time::format(t0 + 100));
    let mut st = counted_at(
        ComputeJobStatus {
            placement: Some(p),
            ..Default::default()
        },
        t0 + 300,
    );
    // The member still heartbeats at 300 s (grace period): the slice ends at 100 − lag.
    let recs = job_records(&job(st.clone()), &journal, |_| Some(t0 + 300), t0 + 300, &CFG);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].start, recs[0].end), (t0 as u64, t0 as u64 + 90));
    journal.append(recs[0].clone()).unwrap();
    assert!(
        job_records(&job(st.clone()), &journal, |_| Some(t0 + 400), t0 + 400, &CFG).is_empty(),
        "nothing more while the node stays unreachable"
    );
    // Lost past the grace period, billed to the first sighting: the journal and the
    // attempt agree (4 GPUs × 100 s), nothing metered beyond.
    st.attempts.push(ended(1, t0, t0 + 100));
    let recs = job_records(&job(st), &journal, |_| Some(t0 + 400), t0 + 400, &CFG);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].gpu_seconds, 40);
    journal.append(recs[0].clone()).unwrap();
    let metered = journal
        .position("uid-1", 1, "dc-1")
        .unwrap()
        .cumulative_gpu_seconds;
    assert_eq!(metered, 400);
}

#[test]
fn a_live_slice_stops_where_the_job_controller_last_counted_the_attempt() {
    // Placed at t0 on 4 GPUs; the job controller last counted it at t0 + 100 (400
    // GPU-seconds), then the hub was away; the job finished meanwhile. The provider's
    // heartbeat (t0 + 1000) comes back before the job controller records the end: the
    // live slice must not reach past what was counted, or the excess is billed for good.
    let t0 = 1_700_000_000;
    let mut journal = Journal::new();
    let mut st = counted_at(
        ComputeJobStatus {
            placement: Some(placement(1, t0)),
            ..Default::default()
        },
        t0 + 100,
    );
    assert_eq!(st.usage.as_ref().map(|u| u.gpu_seconds), Some(400));
    let recs = job_records(&job(st.clone()), &journal, |_| Some(t0 + 1000), t0 + 1000, &CFG);
    let metered: u64 = recs.iter().map(|r| r.gpu_seconds).sum();
    assert!(metered <= 400, "{metered} GPU-seconds metered of 400 counted");
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].start, recs[0].end),
        (t0 as u64, t0 as u64 + 90),
        "counted − lag"
    );
    journal.append(recs[0].clone()).unwrap();
    // The end recorded at t0 + 100: the rest exactly, and the total is the final usage.
    st.attempts.push(ended(1, t0, t0 + 100));
    let recs = job_records(&job(st), &journal, |_| Some(t0 + 1000), t0 + 1000, &CFG);
    assert_eq!(recs.iter().map(|r| r.gpu_seconds).sum::<u64>(), 40);
    // Nothing counted yet: nothing live is metered.
    let uncounted = ComputeJobStatus {
        placement: Some(placement(1, t0)),
        ..Default::default()
    };
    assert!(
        job_records(
            &job(uncounted),
            &Journal::new(),
            |_| Some(t0 + 1000),
            t0 + 1000,
            &CFG
        )
        .is_empty()
    );
}

#[test]
fn the_live_count_excludes_ended_and_archived_attempts() {
    // Attempt 1 (400 GPU-seconds) kept, 1000 archived; attempt 2 placed at t0 + 300 and
    // counted 100 s in: its live part is 400 GPU-seconds, not the job's 1800.
    let t0 = 1_700_000_000;
    let st = counted_at(
        ComputeJobStatus {
            placement: Some(placement(2, t0 + 300)),
            attempts: vec![ended(1, t0, t0 + 100)],
            archived: Some(ArchivedAttempts {
                attempts: 3,
                gpu_seconds: 1000,
                ..Default::default()
            }),
            ..Default::default()
        },
        t0 + 400,
    );
    assert_eq!(st.usage.as_ref().map(|u| u.gpu_seconds), Some(1800));
    let recs = job_records(
        &job(st.clone()),
        &Journal::new(),
        |_| Some(t0 + 2000),
        t0 + 2000,
        &CFG,
    );
    let live: Vec<_> = recs.iter().filter(|r| r.attempt == 2).collect();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].start, live[0].end), (t0 as u64 + 300, t0 as u64 + 390));
    // A usage below the ended attempts (a stale write) meters nothing live.
    let mut stale = st;
    stale.usage = Some(Usage {
        gpu_seconds: 100,
        cost: "0".into(),
    });
    let recs = job_records(&job(stale), &Journal::new(), |_| Some(t0 + 2000), t0 + 2000, &CFG);
    assert!(recs.iter().all(|r| r.attempt == 1), "{recs:?}");
}

#[test]
fn a_second_attempt_is_metered_separately_and_a_finished_job_keeps_its_placement() {
    let t0 = 1_700_000_000;
    let journal = Journal::new();
    let st = ComputeJobStatus {
        placement: Some(placement(2, t0 + 300)),
        attempts: vec![ended(1, t0, t0 + 100), ended(2, t0 + 300, t0 + 400)],
        ..Default::default()
    };
    let recs = job_records(&job(st), &journal, |_| Some(t0 + 1000), t0 + 1000, &CFG);
    // Attempt 2 is finished (its placement stays on a succeeded job): no live slice.
    assert_eq!(recs.len(), 2);
    assert_eq!(recs.iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![1, 2]);
    assert!(recs.iter().all(|r| r.validate().is_ok()));
    assert!(recs.iter().all(|r| r.tenant == "team-a"));
}

#[test]
fn jobs_without_status_or_with_bad_prices_produce_nothing() {
    let mut j = job(ComputeJobStatus::default());
    j.status = None;
    assert!(job_records(&j, &Journal::new(), |_| Some(0), 0, &CFG).is_empty());
    let mut a = ended(1, 1_700_000_000, 1_700_000_100);
    a.price_per_gpu_hour = "bogus".into();
    let st = ComputeJobStatus {
        attempts: vec![a],
        ..Default::default()
    };
    assert!(job_records(&job(st), &Journal::new(), |_| Some(0), 0, &CFG).is_empty());
}
