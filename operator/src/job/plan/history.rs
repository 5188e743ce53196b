//! Pure: how long a job's attempt history grows. A job can end many attempts — each
//! preemption, each suspension ends one — and its status must stay small, but a record
//! dropped too early loses what it is read for: the usage it adds to `usage`, the pods of
//! its attempt still to be removed in the member (fencing), the GPU-seconds the meter has
//! not journaled yet, the provider whose tenant namespace goes with the job. So the oldest
//! records beyond [`KEEP`] are folded into `status.archived` (count, GPU-seconds, cost,
//! providers) only once their attempt is fenced and — with settlement on — the journal
//! holds their GPU-seconds; until then they stay, up to [`HARD_LIMIT`] (the CRD's bound),
//! past which the oldest whose usage is journaled (or that has none) is folded even if not
//! fenced (its tenant namespace is still removed with the job). A record whose usage the
//! journal lacks is never folded: the meter reads only `status.attempts`, so its
//! GPU-seconds would never be metered, and the deletion finalizer, which waits for the
//! journal to hold `usage` (archive included), would wait for ever. When nothing can be
//! folded the status does not [`fit`](fits), and the job controller writes
//! [`held_back`] instead: the end of the live attempt waits until the meter catches up —
//! and its objects are not sent again meanwhile ([`dispatch_waits`]).
//!
//! The journal does not say per attempt what it holds, only its total for the job, which
//! is judged against the archive and the records: an archive holding GPU-seconds the
//! journal never had (records archived while settlement was off, or forced out by an
//! older release) makes the records look unmetered for ever. So a hold lasts at most
//! [`HOLD_LIMIT_SECS`]: then the oldest records are archived anyway ([`record`]), with a
//! Warning that GPU-seconds may go unbilled, and the job goes on.

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus::True;
use gpufed_api::conditions::{self, types};
use gpufed_api::formats::{format_decimal, parse_decimal};
use gpufed_api::job_status::{ArchivedAttempts, AttemptRecord, ComputeJobStatus};

use super::{Plan, cost_micros};
use crate::job::events::{Note, note};

/// Records kept at least (the most recent ones).
pub const KEEP: usize = 20;

/// Most records `status.attempts` may hold (the CRD's `maxItems`).
pub const HARD_LIMIT: usize = 64;

/// Most providers `archived.providers` names (the CRD's `maxItems`).
const MAX_PROVIDERS: usize = 256;

/// `Stalled` reason of a job whose ended attempt cannot be recorded yet ([`held_back`]).
pub const AWAITING_METERING: &str = "AwaitingMetering";

/// Longest a job waits `AwaitingMetering`: the meter journals every settlement round
/// (seconds apart), so a longer wait means settlement is paused or the journal's total
/// can never cover the archive; the oldest records are then archived anyway ([`record`]).
pub const HOLD_LIMIT_SECS: i64 = 15 * 60;

/// Warning Event of records archived before the journal was seen to hold their usage.
pub const USAGE_MAY_GO_UNBILLED: &str = "UsageMayGoUnbilled";

/// The GPU-seconds of the ended attempts the meter can have seen: the archive's and those
/// of the records `stored` (the status as read) holds. A record ended in this reconcile is
/// not in the status the meter read, so the journal cannot hold its GPU-seconds yet
/// (beyond the live slices of its attempt): counting it would keep every older record from
/// ever counting as journaled.
fn seen_gpu_seconds(st: &ComputeJobStatus, seen: impl Fn(&AttemptRecord) -> bool) -> u64 {
    st.attempts
        .iter()
        .filter(|a| seen(a))
        .fold(st.archived.as_ref().map_or(0, |a| a.gpu_seconds), |sum, a| {
            sum.saturating_add(a.gpu_seconds)
        })
}

/// Folds the oldest records beyond [`KEEP`] into `archived` where that loses nothing;
/// `stored`: the status as read (its records are those the meter may have journaled);
/// `settles`: usage is metered into the settlement journal (`status.billing`).
pub fn trim(st: &mut ComputeJobStatus, stored: Option<&ComputeJobStatus>, settles: bool) {
    let stored: Vec<u32> = stored.map_or_else(Vec::new, |s| s.attempts.iter().map(|a| a.attempt).collect());
    let seen = |a: &AttemptRecord| stored.contains(&a.attempt);
    while st.attempts.len() > KEEP {
        let forced = st.attempts.len() > HARD_LIMIT;
        // The journal does not say per attempt what it holds: only once it holds at least
        // every seen ended attempt's GPU-seconds (`billing`, by the meter) may one leave.
        let metered = st.billing.as_ref().map_or(0, |b| b.metered_gpu_seconds);
        let journaled = metered >= seen_gpu_seconds(st, seen);
        let metered_in_full = |a: &AttemptRecord| !settles || a.gpu_seconds == 0 || (journaled && seen(a));
        // Never the newest record: the next attempt's number is read from it.
        let older = st.attempts.len() - 1;
        let droppable = st.attempts[..older]
            .iter()
            .position(|a| a.removed && metered_in_full(a));
        let overflow = || st.attempts[..older].iter().position(metered_in_full);
        let Some(i) = droppable.or_else(|| forced.then(overflow).flatten()) else {
            return;
        };
        fold(st, i);
    }
}

/// Moves record `i` into `archived` (its usage, cost and provider still count).
fn fold(st: &mut ComputeJobStatus, i: usize) {
    let a = st.attempts.remove(i);
    let archived = st.archived.get_or_insert_with(|| ArchivedAttempts {
        cost: "0".into(),
        ..Default::default()
    });
    archived.attempts = archived.attempts.saturating_add(1);
    archived.gpu_seconds = archived.gpu_seconds.saturating_add(a.gpu_seconds);
    let cost = parse_decimal(&archived.cost)
        .unwrap_or(0)
        .saturating_add(cost_micros(a.gpu_seconds, &a.price_per_gpu_hour));
    archived.cost = format_decimal(cost);
    if !archived.providers.contains(&a.provider) && archived.providers.len() < MAX_PROVIDERS {
        archived.providers.push(a.provider);
        archived.providers.sort();
    }
}

/// Whether the API server takes `st`: its history within the CRD's bound.
pub fn fits(st: &ComputeJobStatus) -> bool {
    st.attempts.len() <= HARD_LIMIT
}

/// When `job` (as read) began to wait `AwaitingMetering`, if it does.
fn held_since(job: &ComputeJob) -> Option<i64> {
    let st = job.status.as_ref()?;
    conditions::find(&st.conditions, types::STALLED)
        .filter(|c| c.status == True && c.reason == AWAITING_METERING)
        .and_then(|c| crate::time::parse(&c.last_transition_time))
}

/// Whether `job` has waited `AwaitingMetering` for [`HOLD_LIMIT_SECS`] by `now`.
fn overdue(job: &ComputeJob, now: i64) -> bool {
    held_since(job).is_some_and(|since| now.saturating_sub(since) >= HOLD_LIMIT_SECS)
}

/// The metering numbers a hold's message gives: the history's records, and the
/// GPU-seconds metered of those ended.
fn backlog(st: &ComputeJobStatus) -> String {
    let metered = st.billing.as_ref().map_or(0, |b| b.metered_gpu_seconds);
    let ended = seen_gpu_seconds(st, |_| true);
    format!(
        "the history holds {} records whose GPU-seconds the settlement journal lacks ({metered} of {ended} metered)",
        st.attempts.len()
    )
}

/// Sets `Stalled=True/AwaitingMetering` on `st`, its transition time when the hold began
/// (kept from `job` as read, so [`HOLD_LIMIT_SECS`] runs from there; `now` for a new
/// hold, whatever stalled the job before), and removes `Reconciling` (kstatus reads the
/// first of the two that is `True`).
fn awaiting(job: &ComputeJob, st: &mut ComputeJobStatus, message: String, now: i64) {
    let since = held_since(job).unwrap_or(now);
    let c = conditions::condition(
        types::STALLED,
        True,
        AWAITING_METERING,
        message,
        job.metadata.generation,
        &crate::time::format(since),
    );
    conditions::remove(&mut st.conditions, types::STALLED);
    conditions::set(&mut st.conditions, c);
    conditions::remove(&mut st.conditions, types::RECONCILING);
}

/// What the job controller writes when `planned` does not [`fit`](fits) — its newest
/// record cannot be added beside [`HARD_LIMIT`] records whose usage the journal lacks
/// (settlement paused, say): the status as read (`job.status`, with the fences just made
/// and trimmed), its live attempt still placed, and `Stalled=True/AwaitingMetering`
/// saying so. The attempt's end is recorded, billed as planned now, once the meter has
/// journaled the older records and they fold (or the hold is over, [`record`]); nothing
/// is lost meanwhile, and the status stays one the API server accepts.
pub fn held_back(job: &ComputeJob, planned: &ComputeJobStatus, settles: bool, now: i64) -> ComputeJobStatus {
    let mut st = job.status.clone().unwrap_or_default();
    trim(&mut st, job.status.as_ref(), settles);
    let newest = planned.attempts.last().map_or(0, |a| a.attempt);
    let message = format!(
        "attempt {newest} has ended, but {}: it is recorded once they are metered and archived, \
         or after {HOLD_LIMIT_SECS}s, when the oldest are archived anyway",
        backlog(&st)
    );
    awaiting(job, &mut st, message, now);
    st
}

/// What becomes of a planned status ([`record`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// It fits, trimmed: write it.
    Fits,
    /// It fits because, the hold over, its oldest records were archived without the
    /// journal seen to hold their usage: write it, and publish this Warning.
    Forced(Note),
    /// Its newest record cannot be added yet: write this instead ([`held_back`]).
    Held(Box<ComputeJobStatus>),
}

/// Trims `planned` (the status the plan made of `job`) and says whether it can be
/// written: it fits; or it waits ([`held_back`]), for [`HOLD_LIMIT_SECS`] at most; after
/// that its oldest records are archived until it fits, whatever the journal holds — the
/// job never waits for ever on a journal that cannot catch up.
pub fn record(job: &ComputeJob, planned: &mut ComputeJobStatus, settles: bool, now: i64) -> Recorded {
    trim(planned, job.status.as_ref(), settles);
    if fits(planned) {
        return Recorded::Fits;
    }
    if !overdue(job, now) {
        return Recorded::Held(Box::new(held_back(job, planned, settles, now)));
    }
    let backlog = backlog(planned);
    let mut folded = 0;
    // Never the newest record: the next attempt's number is read from it.
    while !fits(planned) && planned.attempts.len() > 1 {
        fold(planned, 0);
        folded += 1;
    }
    let message = format!(
        "{backlog}; after {HOLD_LIMIT_SECS}s waiting for the meter, the {folded} oldest were archived \
         anyway: GPU-seconds the journal lacked may go unbilled"
    );
    Recorded::Forced(note(true, USAGE_MAY_GO_UNBILLED, "Archive", message))
}

/// Whether the end of `planned`'s live attempt could be recorded now — were its objects
/// refused at dispatch, say ([`super::reject_dispatch`]) — rather than [`held_back`].
pub fn room_for_end(job: &ComputeJob, planned: &ComputeJobStatus, settles: bool, now: i64) -> bool {
    let (Some(last), Some(p)) = (planned.attempts.last(), planned.placement.as_ref()) else {
        return true;
    };
    let mut st = planned.clone();
    st.attempts.push(AttemptRecord {
        attempt: p.attempt,
        provider: p.provider.clone(),
        gpu_seconds: 0,
        removed: false,
        ..last.clone()
    });
    trim(&mut st, job.status.as_ref(), settles);
    fits(&st) || overdue(job, now)
}

/// Whether the live attempt's objects must not be sent (again) now: `job` waits
/// `AwaitingMetering` — an end was held back, its objects refused, say — and an end
/// still has no room ([`room_for_end`]). Sending them would only have them refused again
/// at every check, each refusal held back in turn. A first dispatch is never held: it
/// may well succeed, and holding it would run down the attempt's start timeout.
pub fn dispatch_waits(job: &ComputeJob, planned: &ComputeJobStatus, settles: bool, now: i64) -> bool {
    held_since(job).is_some() && !room_for_end(job, planned, settles, now)
}

/// The live attempt is not dispatched while [`dispatch_waits`]:
/// `Stalled=True/AwaitingMetering` says so, and it is dispatched again once the meter
/// has journaled the older records (or the hold is over).
pub fn hold_dispatch(job: &ComputeJob, plan: &mut Plan, now: i64) {
    plan.dispatch = false;
    let attempt = plan.status.placement.as_ref().map_or(0, |p| p.attempt);
    let message = format!(
        "attempt {attempt} is not dispatched again while an end waits to be recorded: {}; \
         it is once they are metered and archived, or after {HOLD_LIMIT_SECS}s",
        backlog(&plan.status)
    );
    awaiting(job, &mut plan.status, message, now);
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod full_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_api::job_status::{AttemptOutcome, AttemptRecord, Billing};

    fn record(attempt: u32, provider: &str, removed: bool) -> AttemptRecord {
        AttemptRecord {
            attempt,
            provider: provider.into(),
            outcome: AttemptOutcome::Preempted,
            message: String::new(),
            reason: None,
            gpu_seconds: 3600,
            gpus: Some(1),
            gpu_uuids: Vec::new(),
            running_time: None,
            price_per_gpu_hour: "2.00".into(),
            end_time: "2026-01-01T00:00:00Z".into(),
            removed,
            preempted_by: None,
        }
    }

    fn status(n: u32, removed: bool) -> ComputeJobStatus {
        let mut st = ComputeJobStatus {
            attempts: (1..=n)
                .map(|i| record(i, &format!("p{}", i % 3), removed))
                .collect(),
            ..Default::default()
        };
        st.usage = Some(super::super::usage(&st, None));
        st
    }

    #[test]
    fn old_fenced_records_fold_into_the_archive_and_usage_is_unchanged() {
        let mut st = status(25, true);
        let before = super::super::usage(&st, None);
        trim(&mut st, None, false);
        assert_eq!(st.attempts.len(), KEEP);
        assert_eq!(st.attempts[0].attempt, 6, "the oldest went first");
        let a = st.archived.clone().expect("archived");
        assert_eq!((a.attempts, a.gpu_seconds), (5, 5 * 3600));
        assert_eq!(a.cost, "10", "5 GPU-hours at 2.00");
        assert_eq!(a.providers, ["p0", "p1", "p2"]);
        assert_eq!(super::super::usage(&st, None), before, "usage counts the archive");
        // Trimming again is a no-op, and a later trim adds to the archive.
        let again = st.clone();
        trim(&mut st, None, false);
        assert_eq!(st, again);
        st.attempts.push(record(26, "p9", true));
        trim(&mut st, None, false);
        let a = st.archived.expect("archived");
        assert_eq!((a.attempts, a.providers.len()), (6, 3), "attempt 6 went, on p0");
        assert_eq!(st.attempts.last().map(|r| r.provider.as_str()), Some("p9"));
    }

    #[test]
    fn the_newest_record_stays_so_the_next_attempt_number_is_not_reused() {
        // 21 records, only the newest fenced: it would be the only one droppable.
        let mut st = status(21, false);
        st.attempts[20].removed = true;
        trim(&mut st, None, false);
        assert_eq!(st.attempts.len(), 21, "nothing folded");
        assert_eq!(st.attempts.last().map(|a| a.attempt), Some(21));
    }

    #[test]
    fn a_record_still_to_fence_or_to_meter_stays() {
        // Not fenced: its pods may still run in the member.
        let mut st = status(25, false);
        trim(&mut st, None, false);
        assert_eq!(st.attempts.len(), 25);
        assert!(st.archived.is_none());
        // Fenced, but the journal lacks an hour of the ended attempts: all wait.
        let mut st = status(25, true);
        st.billing = Some(Billing {
            metered_gpu_seconds: 24 * 3600,
            settled_amount: "0".into(),
            ..Default::default()
        });
        let read = st.clone();
        trim(&mut st, Some(&read), true);
        assert_eq!(st.attempts.len(), 25);
        trim(&mut st, None, false);
        assert_eq!(
            st.attempts.len(),
            KEEP,
            "without settlement nothing is to be metered"
        );
        let mut st = status(25, true);
        st.billing = Some(Billing {
            metered_gpu_seconds: 25 * 3600,
            settled_amount: "0".into(),
            ..Default::default()
        });
        let read = st.clone();
        trim(&mut st, Some(&read), true);
        assert_eq!(st.attempts.len(), KEEP, "all journaled: the oldest go");
    }

    #[test]
    fn past_the_hard_limit_the_oldest_journaled_goes_even_unfenced() {
        let mut st = status(HARD_LIMIT as u32 + 2, false);
        st.billing = Some(Billing {
            metered_gpu_seconds: (HARD_LIMIT as u64 + 2) * 3600,
            settled_amount: "0".into(),
            ..Default::default()
        });
        let before = super::super::usage(&st, None);
        let read = st.clone();
        trim(&mut st, Some(&read), true);
        assert_eq!(st.attempts.len(), HARD_LIMIT);
        assert_eq!(st.archived.as_ref().map(|a| a.attempts), Some(2));
        assert_eq!(super::super::usage(&st, None), before);
        assert!(fits(&st));
    }
}
