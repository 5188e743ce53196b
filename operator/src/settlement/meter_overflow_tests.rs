//! Metering at the edges of the amount range, and usage that cannot be metered: reported,
//! never skipped in silence.
#![allow(clippy::unwrap_used)]

use super::*;
use gpufed_api::job_status::{AttemptOutcome, AttemptRecord, ComputeJobStatus, Placement, Usage};

const T0: i64 = 1_700_000_000;

/// A mint of 18 decimals: a u64 holds 18.446744073709551615 tokens.
const CFG18: MeterConfig = MeterConfig {
    slice: 60,
    lag: 0,
    decimals: 18,
};

fn job(status: ComputeJobStatus) -> ComputeJob {
    let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team-a", "uid": "uid-1"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                 "gpusPerWorker": 1, "maxPricePerGpuHour": "30"}
    }))
    .unwrap();
    j.status = Some(status);
    j
}

fn placement(running: i64, gpus: u32, price: &str) -> Placement {
    Placement {
        attempt: 1,
        provider: "dc-1".into(),
        gpus,
        price_per_gpu_hour: price.into(),
        workers: vec![],
        placed_time: crate::time::format(running - 5),
        running_time: Some(crate::time::format(running)),
        node_unreachable_since: None,
        preempted: None,
    }
}

fn ended(running: i64, end: i64, gpus: u32, price: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: 1,
        provider: "dc-1".into(),
        outcome: AttemptOutcome::Succeeded,
        message: String::new(),
        reason: None,
        gpu_seconds: (end - running) as u64 * u64::from(gpus),
        gpus: Some(gpus),
        gpu_uuids: Vec::new(),
        running_time: Some(crate::time::format(running)),
        price_per_gpu_hour: price.into(),
        end_time: crate::time::format(end),
        removed: false,
        preempted_by: None,
    }
}

/// A live attempt the job controller counted up to `counted`.
fn live(p: Placement, counted: i64) -> ComputeJobStatus {
    let mut st = ComputeJobStatus {
        placement: Some(p),
        ..Default::default()
    };
    st.usage = Some(crate::job::plan::usage(&st, Some(counted)));
    st
}

#[test]
fn a_long_attempt_at_a_high_decimal_price_keeps_metering_its_live_slices() {
    // 18 tokens per GPU-hour in a mint of 18 decimals: an hour's slice fits a u64 amount,
    // the attempt's running total does not after the first hour.
    let mut journal = Journal::new();
    let mut sum = 0u128;
    for hour in 1..=3 {
        let at = T0 + 3600 * hour;
        let st = live(placement(T0, 1, "18"), at);
        let recs = job_records(&job(st), &journal, |_| Some(at), at, &CFG18);
        assert_eq!(recs.len(), 1, "hour {hour}");
        sum += u128::from(recs[0].amount);
        journal.append(recs[0].clone()).unwrap();
    }
    assert_eq!(sum, 3 * 18 * 10u128.pow(18));
}

#[test]
fn a_finished_attempt_worth_more_than_a_u64_is_metered_in_several_records() {
    // 10 hours of 8 GPUs at 10 tokens per GPU-hour: 800 tokens, 43 times what a u64 holds.
    let st = ComputeJobStatus {
        attempts: vec![ended(T0, T0 + 36_000, 8, "10")],
        ..Default::default()
    };
    let recs = job_records(&job(st.clone()), &Journal::new(), |_| None, T0 + 40_000, &CFG18);
    assert!(recs.len() > 43, "{}", recs.len());
    assert!(recs.iter().all(|r| r.validate().is_ok()));
    assert_eq!(recs.iter().map(|r| r.gpu_seconds).sum::<u64>(), 288_000);
    let total: u128 = recs.iter().map(|r| u128::from(r.amount)).sum();
    assert_eq!(total, 800 * 10u128.pow(18));
    let mut journal = Journal::new();
    for r in recs {
        journal.append(r).unwrap();
    }
    assert!(job_records(&job(st.clone()), &journal, |_| None, T0 + 40_000, &CFG18).is_empty());
    assert!(
        unmeterable(&job(st), &journal, |_| None, T0 + 40_000, &CFG18).is_empty(),
        "all metered"
    );
}

#[test]
fn a_price_the_mint_cannot_express_is_reported_not_skipped() {
    // 20 tokens per GPU-hour is more base units than a u64 holds at 18 decimals.
    let st = ComputeJobStatus {
        attempts: vec![ended(T0, T0 + 100, 4, "20")],
        ..Default::default()
    };
    let m = meter_job(&job(st.clone()), &Journal::new(), |_| None, T0 + 200, &CFG18);
    assert!(m.records.is_empty());
    assert_eq!(m.unmetered.len(), 1);
    let u = &m.unmetered[0];
    assert_eq!((u.attempt, u.gpu_seconds, u.reason), (1, 400, PRICE_NOT_BILLABLE));
    assert!(u.message.contains("18.446744073709551615"), "{}", u.message);
    assert_eq!(
        unmeterable(&job(st), &Journal::new(), |_| None, T0 + 200, &CFG18),
        m.unmetered
    );
    // The same price of a running attempt: reported too (nothing is known to wait yet).
    let st = live(placement(T0, 1, "20"), T0 + 600);
    let m = meter_job(
        &job(st.clone()),
        &Journal::new(),
        |_| Some(T0 + 600),
        T0 + 600,
        &CFG18,
    );
    assert!(m.records.is_empty());
    assert_eq!(m.unmetered.len(), 1);
    assert_eq!(
        (m.unmetered[0].gpu_seconds, m.unmetered[0].reason),
        (0, PRICE_NOT_BILLABLE)
    );
    assert_eq!(
        unmeterable(&job(st), &Journal::new(), |_| Some(T0 + 600), T0 + 600, &CFG18),
        m.unmetered
    );
}

#[test]
fn bad_prices_and_end_times_are_reported() {
    let mut a = ended(T0, T0 + 100, 1, "bogus");
    let st = ComputeJobStatus {
        attempts: vec![a.clone()],
        ..Default::default()
    };
    let m = meter_job(&job(st), &Journal::new(), |_| None, T0 + 200, &CFG18);
    assert_eq!(m.unmetered[0].reason, PRICE_NOT_BILLABLE);
    assert!(m.unmetered[0].message.contains("not a decimal"));
    a.price_per_gpu_hour = "1".into();
    a.end_time = "yesterday".into();
    let st = ComputeJobStatus {
        attempts: vec![a],
        ..Default::default()
    };
    let m = meter_job(&job(st), &Journal::new(), |_| None, T0 + 200, &CFG18);
    assert!(m.records.is_empty());
    assert_eq!(m.unmetered[0].reason, END_TIME_INVALID);
}

#[test]
fn a_record_the_journal_refuses_is_reported() {
    // A namespace longer than a DNS label: no valid record can name its tenant.
    let mut j = job(ComputeJobStatus {
        attempts: vec![ended(T0, T0 + 100, 1, "1")],
        ..Default::default()
    });
    j.metadata.namespace = Some("n".repeat(64));
    let m = meter_job(&j, &Journal::new(), |_| None, T0 + 200, &CFG18);
    assert!(m.records.is_empty());
    assert_eq!(m.unmetered[0].reason, USAGE_RECORD_REFUSED);
    assert_eq!(
        unmeterable(&j, &Journal::new(), |_| None, T0 + 200, &CFG18),
        m.unmetered
    );
}

#[test]
fn a_running_time_past_the_metered_position_meters_nothing_live_and_does_not_panic() {
    // Attempt 1 metered up to T0 + 120, then its running time rewritten to T0 + 1000 while
    // the provider's last heartbeat is T0 + 500.
    let cfg = MeterConfig { decimals: 6, ..CFG18 };
    let mut journal = Journal::new();
    let first = live(placement(T0, 4, "2.5"), T0 + 120);
    for r in job_records(&job(first), &journal, |_| Some(T0 + 120), T0 + 120, &cfg) {
        journal.append(r).unwrap();
    }
    assert_eq!(
        journal.position("uid-1", 1, "dc-1").unwrap().metered_until,
        T0 as u64 + 120
    );
    let mut st = live(placement(T0 + 1000, 4, "2.5"), T0 + 2000);
    st.usage = Some(Usage {
        gpu_seconds: 4000,
        cost: "0".into(),
    });
    let m = meter_job(&job(st), &journal, |_| Some(T0 + 500), T0 + 2000, &cfg);
    assert_eq!(m, Metering::default());
}

/// Runs metering rounds at `at` until nothing is left to meter, appending each round's
/// records; returns every round's records. Nothing is ever unmeterable meanwhile.
fn meter_rounds(st: &ComputeJobStatus, journal: &mut Journal, at: i64) -> Vec<Vec<UsageRecord>> {
    let mut rounds = Vec::new();
    for _ in 0..10 {
        let m = meter_job(&job(st.clone()), journal, |_| Some(at), at, &CFG18);
        assert!(m.unmetered.is_empty(), "{:?}", m.unmetered);
        if m.records.is_empty() {
            return rounds;
        }
        for r in &m.records {
            assert_eq!(r.validate(), Ok(()));
            journal.append(r.clone()).unwrap();
        }
        assert!(unmeterable(&job(st.clone()), journal, |_| Some(at), at, &CFG18).is_empty());
        rounds.push(m.records);
    }
    panic!("metering never ends");
}

#[test]
fn a_live_slice_worth_more_than_one_round_is_metered_in_pieces_over_rounds() {
    // 18 tokens per GPU-hour at 18 decimals: one record holds at most ~3689 GPU-seconds,
    // so 70 hours of one GPU unmetered (a long hub outage) need more than
    // MAX_SPREAD_RECORDS records: metered as a first piece of that many, the rest next
    // round (it was refused every round, while the slice only grew).
    let at = T0 + 70 * 3600;
    let st = live(placement(T0, 1, "18"), at);
    let mut journal = Journal::new();
    let rounds = meter_rounds(&st, &mut journal, at);
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0].len() as u64, MAX_SPREAD_RECORDS);
    let all: Vec<_> = rounds.concat();
    assert_eq!(all.iter().map(|r| r.gpu_seconds).sum::<u64>(), 70 * 3600);
    let total: u128 = all.iter().map(|r| u128::from(r.amount)).sum();
    assert_eq!(total, 70 * 18 * 10u128.pow(18), "exactly the slice's amount");
    assert!(
        all.windows(2).all(|w| w[0].end == w[1].start),
        "the pieces tile it"
    );
    let pos = journal.position("uid-1", 1, "dc-1").unwrap();
    assert_eq!(pos.metered_until, at as u64);
}

#[test]
fn an_ended_attempt_worth_more_than_one_round_is_metered_in_pieces_over_rounds() {
    // 20 hours of 8 GPUs at 10 tokens per GPU-hour: 1600 tokens, more than
    // MAX_SPREAD_RECORDS records of at most one u64 each.
    let st = ComputeJobStatus {
        attempts: vec![ended(T0, T0 + 72_000, 8, "10")],
        ..Default::default()
    };
    let mut journal = Journal::new();
    let rounds = meter_rounds(&st, &mut journal, T0 + 80_000);
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0].len() as u64, MAX_SPREAD_RECORDS);
    let all: Vec<_> = rounds.concat();
    assert_eq!(all.iter().map(|r| r.gpu_seconds).sum::<u64>(), 576_000);
    let total: u128 = all.iter().map(|r| u128::from(r.amount)).sum();
    assert_eq!(total, 1600 * 10u128.pow(18));
    assert!(all.windows(2).all(|w| w[0].end == w[1].start));
    assert_eq!(all.last().unwrap().end, (T0 + 72_000) as u64);
}

#[test]
fn a_live_slice_the_journal_refuses_is_found_after_the_round_not_only_logged() {
    // A namespace longer than a DNS label: no record of the live slice can name its tenant,
    // every round.
    let at = T0 + 3600;
    let mut j = job(live(placement(T0, 1, "18"), at));
    j.metadata.namespace = Some("n".repeat(64));
    let journal = Journal::new();
    let m = meter_job(&j, &journal, |_| Some(at), at, &CFG18);
    assert!(m.records.is_empty());
    assert_eq!(m.unmetered.len(), 1);
    assert_eq!(
        (m.unmetered[0].gpu_seconds, m.unmetered[0].reason),
        (0, USAGE_RECORD_REFUSED)
    );
    // What the Warning Event path sees after the round (nothing was journaled): the same.
    assert_eq!(unmeterable(&j, &journal, |_| Some(at), at, &CFG18), m.unmetered);
}
