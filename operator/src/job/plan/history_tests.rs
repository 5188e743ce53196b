//! Past [`HARD_LIMIT`], a record whose usage the journal lacks is never folded away: the
//! end that would push the history past the bound waits ([`held_back`]) until the meter
//! has journaled the older records, and then every GPU-second is metered.
#![allow(clippy::unwrap_used)]

use super::{record as record_status, *};
use gpufed_api::job_status::{AttemptOutcome, AttemptRecord, JobPhase};
use gpufed_settlement::Journal;

use crate::settlement::meter::{MeterConfig, job_records};

const T0: i64 = 1_800_000_000;

fn record(attempt: u32) -> AttemptRecord {
    let end = T0 + i64::from(attempt) * 7200;
    AttemptRecord {
        attempt,
        provider: format!("p{}", attempt % 3),
        outcome: AttemptOutcome::Preempted,
        message: String::new(),
        reason: None,
        gpu_seconds: 3600,
        gpus: Some(1),
        gpu_uuids: Vec::new(),
        running_time: Some(crate::time::format(end - 3600)),
        price_per_gpu_hour: "2.00".into(),
        end_time: crate::time::format(end),
        removed: true,
        preempted_by: None,
    }
}

fn job(st: &ComputeJobStatus) -> ComputeJob {
    let mut j: ComputeJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "train", "namespace": "team", "uid": "uid-full", "generation": 1},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                 "gpusPerWorker": 1, "maxPricePerGpuHour": "3"}
    }))
    .unwrap();
    j.status = Some(st.clone());
    j
}

fn with_usage(mut st: ComputeJobStatus) -> ComputeJobStatus {
    st.usage = Some(super::super::usage(&st, None));
    st
}

/// What the meter journals for `st` now, and the billing the settlement then writes.
fn meter(journal: &mut Journal, st: &mut ComputeJobStatus) {
    let cfg = MeterConfig {
        slice: 60,
        lag: 0,
        decimals: 6,
    };
    for r in job_records(&job(st), journal, |_| Some(T0), T0 + 1_000_000, &cfg) {
        journal.append(r).unwrap();
    }
    st.billing = Some(crate::settlement::billing::billing(
        &journal.billing("uid-full"),
        6,
    ));
}

#[test]
fn unmetered_records_are_never_folded_past_the_limit_and_the_end_waits_for_the_meter() {
    // As read: the history full of records the journal lacks (settlement was paused).
    let stored = with_usage(ComputeJobStatus {
        attempts: (1..=HARD_LIMIT as u32).map(record).collect(),
        phase: Some(JobPhase::Recovering),
        ..Default::default()
    });
    // Planned: one more attempt ended.
    let mut planned = stored.clone();
    planned.attempts.push(record(HARD_LIMIT as u32 + 1));
    let used = super::super::usage(&planned, None).gpu_seconds;
    planned.usage = Some(super::super::usage(&planned, None));
    let mut trimmed = planned.clone();
    trim(&mut trimmed, Some(&stored), true);
    assert_eq!(
        trimmed.attempts.len(),
        HARD_LIMIT + 1,
        "no unmetered record folded"
    );
    assert!(trimmed.archived.is_none());
    assert!(!fits(&trimmed), "too long for the API server: held back");
    let held = held_back(&job(&stored), &trimmed, true, T0);
    assert!(fits(&held));
    assert_eq!(held.attempts, stored.attempts, "the status as read");
    let c = conditions::find(&held.conditions, types::STALLED).unwrap();
    assert_eq!(c.reason, AWAITING_METERING);
    assert!(c.message.contains("attempt 65"), "{}", c.message);

    // The meter journals what the status as read holds; then the end fits.
    let mut journal = Journal::new();
    let mut stored = held;
    meter(&mut journal, &mut stored);
    let mut planned = trimmed;
    planned.billing.clone_from(&stored.billing);
    planned.phase = Some(JobPhase::Succeeded);
    trim(&mut planned, Some(&stored), true);
    assert!(fits(&planned), "{}", planned.attempts.len());
    assert_eq!(
        super::super::usage(&planned, None).gpu_seconds,
        used,
        "nothing lost"
    );
    // Written, the newest record is metered too: every GPU-second, and the deletion
    // finalizer lets the job go.
    meter(&mut journal, &mut planned);
    assert_eq!(
        planned.billing.as_ref().map(|b| b.metered_gpu_seconds),
        Some(used)
    );
    assert!(crate::mapping::stopped_and_metered(&job(&planned), true));
}

#[test]
fn records_without_usage_fold_past_the_limit_whatever_the_journal_holds() {
    let mut stored = ComputeJobStatus {
        attempts: (1..=HARD_LIMIT as u32).map(record).collect(),
        ..Default::default()
    };
    stored.attempts[3].gpu_seconds = 0;
    stored.attempts[3].removed = false;
    let mut planned = stored.clone();
    planned.attempts.push(record(HARD_LIMIT as u32 + 1));
    trim(&mut planned, Some(&stored), true);
    assert!(fits(&planned));
    assert!(
        planned.attempts.iter().all(|a| a.attempt != 4),
        "nothing to meter: it went"
    );
    assert_eq!(planned.archived.as_ref().map(|a| a.gpu_seconds), Some(0));
}

/// An archive holding usage the journal never had (records archived while settlement was
/// off, or forced out by an older release) keeps the journal's total below what it is
/// judged against for ever: the end waits [`HOLD_LIMIT_SECS`] at most, then the oldest
/// records are archived anyway, with a Warning, and the job goes on.
#[test]
fn an_archive_the_journal_never_saw_holds_an_end_back_for_a_while_not_for_ever() {
    let mut stored = with_usage(ComputeJobStatus {
        attempts: (11..11 + HARD_LIMIT as u32).map(record).collect(),
        archived: Some(gpufed_api::job_status::ArchivedAttempts {
            attempts: 10,
            gpu_seconds: 10 * 3600,
            cost: "20".into(),
            providers: vec!["p0".into()],
        }),
        phase: Some(JobPhase::Running),
        ..Default::default()
    });
    // Stalled before for another reason: the hold's clock starts when the hold does.
    let earlier = conditions::condition(
        types::STALLED,
        True,
        "InvalidSpec",
        "",
        Some(1),
        "2020-01-01T00:00:00Z",
    );
    stored.conditions.push(earlier);
    // The meter journals every record it can see, never the archive.
    let mut journal = Journal::new();
    meter(&mut journal, &mut stored);
    let end = record(11 + HARD_LIMIT as u32);
    let planned_from = |st: &ComputeJobStatus| {
        let mut p = st.clone();
        p.attempts.push(end.clone());
        p.usage = Some(super::super::usage(&p, None));
        p
    };
    let used = super::super::usage(&planned_from(&stored), None).gpu_seconds;
    let t = T0 + 2_000_000;
    let mut planned = planned_from(&stored);
    let Recorded::Held(held) = record_status(&job(&stored), &mut planned, true, t) else {
        panic!("the journal lacks 10 hours of what it is judged against: held")
    };
    let since = |st: &ComputeJobStatus| conditions::find(&st.conditions, types::STALLED).unwrap().clone();
    assert_eq!(since(&held).reason, AWAITING_METERING);
    assert_eq!(since(&held).last_transition_time, crate::time::format(t));
    // The meter has journaled all it ever will; the hold goes on, its clock kept.
    let mut stored = *held;
    meter(&mut journal, &mut stored);
    let mut planned = planned_from(&stored);
    let Recorded::Held(held) = record_status(&job(&stored), &mut planned, true, t + HOLD_LIMIT_SECS - 1)
    else {
        panic!("still within the limit")
    };
    assert_eq!(since(&held).last_transition_time, crate::time::format(t));
    // Then the end is recorded, the oldest record archived anyway, and a Warning says so.
    let stored = *held;
    let mut planned = planned_from(&stored);
    let Recorded::Forced(note) = record_status(&job(&stored), &mut planned, true, t + HOLD_LIMIT_SECS) else {
        panic!("the hold is over")
    };
    assert!(fits(&planned));
    assert_eq!(planned.attempts.last(), Some(&end), "the end is recorded");
    assert_eq!(planned.archived.as_ref().map(|a| a.attempts), Some(11));
    assert_eq!(
        super::super::usage(&planned, None).gpu_seconds,
        used,
        "usage unchanged"
    );
    assert!(note.warning && note.reason == USAGE_MAY_GO_UNBILLED);
    assert!(note.message.contains("may go unbilled"), "{}", note.message);
}

/// A placed attempt's objects refused beside [`HARD_LIMIT`] records the journal lacks:
/// the end is held back, and the objects are not sent again at every check (each refusal
/// held back in turn) until an end can be recorded — the meter caught up, or the hold is
/// over. A first dispatch is not held: it may succeed.
#[test]
fn objects_whose_refusal_is_held_back_are_not_sent_again() {
    let stored = with_usage(ComputeJobStatus {
        attempts: (1..=HARD_LIMIT as u32).map(record).collect(),
        phase: Some(JobPhase::Placed),
        placement: Some(gpufed_api::job_status::Placement {
            attempt: HARD_LIMIT as u32 + 1,
            provider: "p9".into(),
            gpus: 1,
            price_per_gpu_hour: "2.00".into(),
            workers: Vec::new(),
            placed_time: crate::time::format(T0),
            running_time: None,
            node_unreachable_since: None,
            preempted: None,
        }),
        ..Default::default()
    });
    let t = T0 + 2_000_000;
    let j = job(&stored);
    assert!(!room_for_end(&j, &stored, true, t));
    assert!(room_for_end(&j, &stored, false, t), "without settlement it folds");
    let mut shorter = stored.clone();
    shorter.attempts.pop();
    assert!(
        room_for_end(&job(&shorter), &shorter, true, t),
        "room for one more"
    );
    assert!(!dispatch_waits(&j, &stored, true, t), "a first dispatch goes");
    // Its objects were refused: the end is held back, and they wait.
    let mut refused = stored.clone();
    refused.attempts.push(record(HARD_LIMIT as u32 + 1));
    let mut read = held_back(&j, &refused, true, t);
    let starting = conditions::condition(types::RECONCILING, True, "Starting", "", Some(1), "t");
    read.conditions.insert(0, starting);
    let j = job(&read);
    assert!(dispatch_waits(&j, &read, true, t + 30));
    let mut plan = Plan {
        status: read.clone(),
        dispatch: true,
        wants_placement: false,
    };
    hold_dispatch(&j, &mut plan, t + 30);
    assert!(!plan.dispatch);
    let c = conditions::find(&plan.status.conditions, types::STALLED).unwrap();
    assert_eq!(c.reason, AWAITING_METERING);
    assert_eq!(c.last_transition_time, crate::time::format(t), "the hold's start");
    assert!(
        c.message.contains("attempt 65 is not dispatched again"),
        "{}",
        c.message
    );
    let health = conditions::health(None, None, &plan.status.conditions);
    assert_eq!(health, conditions::Health::Failed, "no leftover Reconciling");
    // The hold over, they are sent (a refusal's end is then recorded, [`record`]).
    let held = job(&plan.status);
    assert!(dispatch_waits(&held, &plan.status, true, t + HOLD_LIMIT_SECS - 1));
    assert!(!dispatch_waits(&held, &plan.status, true, t + HOLD_LIMIT_SECS));
    // Metered, at once.
    let mut metered = plan.status.clone();
    meter(&mut Journal::new(), &mut metered);
    assert!(!dispatch_waits(&job(&metered), &metered, true, t + 60));
}
