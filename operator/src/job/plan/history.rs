//! Pure: how long a job's attempt history grows. A job can end many attempts — each
//! preemption, each suspension ends one — and its status must stay small, but a record
//! dropped too early loses what it is read for: the usage it adds to `usage`, the pods of
//! its attempt still to be removed in the member (fencing), the GPU-seconds the meter has
//! not journaled yet, the provider whose tenant namespace goes with the job. So the oldest
//! records beyond [`KEEP`] are folded into `status.archived` (count, GPU-seconds, cost,
//! providers) only once their attempt is fenced and — with settlement on — the journal
//! holds at least their GPU-seconds; until then they stay, up to [`HARD_LIMIT`] (the
//! CRD's bound), past which the oldest is folded regardless (its usage still counts, its
//! tenant namespace is still removed with the job).

use gpufed_api::formats::{format_decimal, parse_decimal};
use gpufed_api::job_status::{ArchivedAttempts, ComputeJobStatus};

use super::cost_micros;

/// Records kept at least (the most recent ones).
pub const KEEP: usize = 20;

/// Most records `status.attempts` may hold (the CRD's `maxItems`).
pub const HARD_LIMIT: usize = 64;

/// Most providers `archived.providers` names (the CRD's `maxItems`).
const MAX_PROVIDERS: usize = 256;

/// Folds the oldest records beyond [`KEEP`] into `archived` where that loses nothing;
/// `settles`: usage is metered into the settlement journal (`status.billing`).
pub fn trim(st: &mut ComputeJobStatus, settles: bool) {
    while st.attempts.len() > KEEP {
        let forced = st.attempts.len() > HARD_LIMIT;
        // The journal does not say per attempt what it holds: only once it holds at least
        // every ended attempt's GPU-seconds (`billing`, by the meter) may one leave.
        let metered = st.billing.as_ref().map_or(0, |b| b.metered_gpu_seconds);
        let ended = st
            .attempts
            .iter()
            .fold(st.archived.as_ref().map_or(0, |a| a.gpu_seconds), |sum, a| {
                sum.saturating_add(a.gpu_seconds)
            });
        let journaled = !settles || metered >= ended;
        // Never the newest record: the next attempt's number is read from it.
        let older = st.attempts.len() - 1;
        let droppable = st.attempts[..older].iter().position(|a| a.removed && journaled);
        let Some(i) = droppable.or(forced.then_some(0)) else {
            return;
        };
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
}

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
        trim(&mut st, false);
        assert_eq!(st.attempts.len(), KEEP);
        assert_eq!(st.attempts[0].attempt, 6, "the oldest went first");
        let a = st.archived.clone().expect("archived");
        assert_eq!((a.attempts, a.gpu_seconds), (5, 5 * 3600));
        assert_eq!(a.cost, "10", "5 GPU-hours at 2.00");
        assert_eq!(a.providers, ["p0", "p1", "p2"]);
        assert_eq!(super::super::usage(&st, None), before, "usage counts the archive");
        // Trimming again is a no-op, and a later trim adds to the archive.
        let again = st.clone();
        trim(&mut st, false);
        assert_eq!(st, again);
        st.attempts.push(record(26, "p9", true));
        trim(&mut st, false);
        let a = st.archived.expect("archived");
        assert_eq!((a.attempts, a.providers.len()), (6, 3), "attempt 6 went, on p0");
        assert_eq!(st.attempts.last().map(|r| r.provider.as_str()), Some("p9"));
    }

    #[test]
    fn the_newest_record_stays_so_the_next_attempt_number_is_not_reused() {
        // 21 records, only the newest fenced: it would be the only one droppable.
        let mut st = status(21, false);
        st.attempts[20].removed = true;
        trim(&mut st, false);
        assert_eq!(st.attempts.len(), 21, "nothing folded");
        assert_eq!(st.attempts.last().map(|a| a.attempt), Some(21));
    }

    #[test]
    fn a_record_still_to_fence_or_to_meter_stays() {
        // Not fenced: its pods may still run in the member.
        let mut st = status(25, false);
        trim(&mut st, false);
        assert_eq!(st.attempts.len(), 25);
        assert!(st.archived.is_none());
        // Fenced, but the journal lacks an hour of the ended attempts: all wait.
        let mut st = status(25, true);
        st.billing = Some(Billing {
            metered_gpu_seconds: 24 * 3600,
            settled_amount: "0".into(),
            ..Default::default()
        });
        trim(&mut st, true);
        assert_eq!(st.attempts.len(), 25);
        trim(&mut st, false);
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
        trim(&mut st, true);
        assert_eq!(st.attempts.len(), KEEP, "all journaled: the oldest go");
    }

    #[test]
    fn past_the_hard_limit_the_oldest_goes_regardless() {
        let mut st = status(HARD_LIMIT as u32 + 2, false);
        let before = super::super::usage(&st, None);
        trim(&mut st, true);
        assert_eq!(st.attempts.len(), HARD_LIMIT);
        assert_eq!(st.archived.as_ref().map(|a| a.attempts), Some(2));
        assert_eq!(super::super::usage(&st, None), before);
    }
}
