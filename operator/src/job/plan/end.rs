//! Pure: how the live attempt ends — the attempt's record, its billing, and what the job
//! does next (retry, stop, complete, fail or wait for a new spec) — whether its pods ended
//! it, the member refused to create them, or they cannot be built.

use std::collections::BTreeMap;

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions::{self, types};
use gpufed_api::job::ProviderLossAction;
use gpufed_api::job_status::{
    AttemptOutcome, AttemptRecord, ComputeJobStatus, JobPhase, MAX_ATTEMPT_MESSAGE, Placement,
};

use super::{Plan, attempt, live_gpu_seconds, usage};

/// Condition reason (`Failed`, `Stalled`) of a job whose last attempt the member's API
/// server refused to create.
pub const DISPATCH_REJECTED: &str = "DispatchRejected";

/// Condition reason (`Failed`, `Stalled`) of a job, and reason of its attempt's record,
/// when the member's API server forbade the attempt's objects: a permission the provider
/// has not granted (an older provider chart) or an admission policy.
pub const DISPATCH_FORBIDDEN: &str = "DispatchForbidden";

/// Condition reason (`Failed`, `Stalled`) of a job that ran past `spec.maxDuration`.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// Condition reason (`Failed`, `Stalled`) of a job failed by its provider's loss
/// (`spec.failurePolicy.onProviderLoss: Fail`).
pub const PROVIDER_LOST: &str = "ProviderLost";

/// Seconds after its placement that an attempt whose objects the member forbids is still
/// retried: a freshly installed provider's permissions may take a moment to apply.
pub const FORBIDDEN_GRACE_SECS: i64 = 60;

/// Seconds a job is kept off a provider that forbade its attempt's objects or did not
/// start its gang in time (placement leaves that provider out for the job:
/// [`avoided_providers`]), so that it fails over instead of being placed there again;
/// time enough for the provider to upgrade or make room.
pub const AVOID_SECS: i64 = 900;

/// Condition reason (`Stalled`, `Ready`, `Placed`) of a job whose pod template cannot be
/// built into worker pods: it waits unplaced until its spec changes.
pub const INVALID_TEMPLATE: &str = "InvalidTemplate";

/// Condition reason (`Stalled`, `Ready`) of a job whose checkpoint credentials Secret the
/// operator cannot read: it waits unplaced until it can ([`super::await_credentials`]).
pub const CREDENTIALS_UNAVAILABLE: &str = "CheckpointCredentialsUnavailable";

/// `Ready` reasons of a job whose ended attempt is retried ([`end_attempt`]): `Preempted`
/// after an eviction, `Recovering` after any other end; kept while the job waits.
pub(super) const RETRY_REASONS: [&str; 2] = ["Recovering", "Preempted"];

/// Most characters of the API server's answer kept in the attempt's record (the CRD
/// bounds the record's message at 1024).
const MAX_REJECTION: usize = 800;

/// What ended the live attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// What its pods or provider were seen doing, or the user (suspend, delete);
    /// `pods_ended`: every pod of the attempt seen has ended (none left to remove).
    Observed { pods_ended: bool },
    /// The member refused its objects ([`reject_dispatch`], or a pull-mode agent's report).
    DispatchRejected,
    /// The member forbade its objects past the grace period ([`forbid_dispatch`]).
    DispatchForbidden,
    /// Its gang did not start within `spec.startTimeout` ([`super::start`]).
    StartTimeout,
    /// Its objects cannot be built or completed ([`super::invalid_template`],
    /// [`super::credentials_unavailable`]): the job waits unplaced, `Placed` reason `reason`,
    /// until `until`.
    Waits {
        reason: &'static str,
        until: &'static str,
    },
}

/// `text` cut to at most `max` characters (the CRD counts characters, not bytes), an
/// ellipsis marking the cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some(_) => {
            let keep = text
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(0, |(i, _)| i);
            format!("{}…", &text[..keep])
        }
        None => text.to_owned(),
    }
}

/// A member's answer, cut to leave room in the attempt's record for what is said of it.
pub(super) fn refusal(answer: &str) -> String {
    cut(answer, MAX_REJECTION)
}

/// An attempt record's whole message, cut to the CRD's bound: the answer quoted in it is
/// cut already, but the provider's name (up to 253 characters) and the words around it
/// could still take it past, and the API server would then refuse every status write.
pub(super) fn record_message(message: &str) -> String {
    cut(message, MAX_ATTEMPT_MESSAGE)
}

/// The member's API server refused the live attempt's objects as invalid (HTTP 400 or
/// 422, `refusal` its answer). Retrying the same objects cannot heal that, and waiting
/// would hold the attempt's GPUs in the placement for nothing, so the attempt ends now
/// as `Failed` with the answer in its record, and the failure policy decides as for a
/// failed worker: a new attempt is placed while `maxAttempts` allows (another member's
/// admission rules may accept it), else the job fails with `Failed` and `Stalled`
/// reason `DispatchRejected`. The attempt is not marked removed, so whatever it did
/// create in the member is fenced like a lost attempt's. Billing: none, the gang never
/// ran.
pub fn reject_dispatch(job: &ComputeJob, plan: &mut Plan, refusal: &str, now: i64) {
    let Some(provider) = plan.status.placement.as_ref().map(|p| p.provider.clone()) else {
        return;
    };
    let message = format!(
        "the API server of provider {provider} refused the attempt's objects: {}",
        self::refusal(refusal)
    );
    end_dispatch(job, plan, message, now, Cause::DispatchRejected);
}

/// Ends the live attempt whose dispatch the member refused (`cause`): `Failed`, nothing
/// more dispatched, and a placement round asked for if the failure policy retries.
fn end_dispatch(job: &ComputeJob, plan: &mut Plan, message: String, now: i64, cause: Cause) {
    let st = &mut plan.status;
    end_attempt(
        job,
        st,
        AttemptOutcome::Failed,
        now,
        message,
        &crate::time::format(now),
        cause,
    );
    plan.dispatch = false;
    // A retry needs a placement round; a failed job needs none.
    plan.wants_placement = st.placement.is_none() && st.phase == Some(JobPhase::Recovering);
}

/// Whether an attempt placed at `placement.placedTime` has been forbidden long enough
/// that no retry will heal it ([`FORBIDDEN_GRACE_SECS`]).
pub fn forbidden_for_good(placement: &Placement, now: i64) -> bool {
    crate::time::parse(&placement.placed_time).is_none_or(|t| now - t >= FORBIDDEN_GRACE_SECS)
}

/// What an attempt's record says when `provider` forbade its objects (`answer`).
pub(super) fn forbidden_message(provider: &str, answer: &str) -> String {
    // The answer says why when the job's tenant namespace there is another job's.
    let guess = if answer.contains(crate::job::dispatch::TAKEN) {
        ""
    } else {
        "a permission or policy it has not granted; "
    };
    format!(
        "provider {provider} forbids the attempt's objects ({guess}the job is kept off it for {} min): {}",
        AVOID_SECS / 60,
        refusal(answer)
    )
}

/// The member's API server forbade the live attempt's objects (HTTP 403 that does not
/// pass: [`crate::error::is_forbidden`], `answer` its message). Within
/// [`FORBIDDEN_GRACE_SECS`] of the placement nothing changes and the caller retries the
/// dispatch; after it the attempt ends `Failed` (record reason `DispatchForbidden`), its
/// GPUs are freed and whatever it created is fenced, and the failure policy decides as for
/// a refused dispatch — with placement keeping the job off that provider for
/// [`AVOID_SECS`], so the retry goes elsewhere instead of holding GPUs there for nothing.
/// Returns whether it ended the attempt. Billing: none, the gang never ran.
pub fn forbid_dispatch(job: &ComputeJob, plan: &mut Plan, answer: &str, now: i64) -> bool {
    let Some(p) = plan
        .status
        .placement
        .as_ref()
        .filter(|p| forbidden_for_good(p, now))
    else {
        return false;
    };
    let message = forbidden_message(&p.provider, answer);
    end_dispatch(job, plan, message, now, Cause::DispatchForbidden);
    true
}

/// Providers the job is kept off now: those that forbade one of its attempts, or did not
/// start one in time, less than [`AVOID_SECS`] ago.
pub fn avoided_providers(status: Option<&ComputeJobStatus>, now: i64) -> Vec<String> {
    avoided_until(status, now).into_keys().collect()
}

/// Each provider the job is kept off now ([`avoided_providers`]), with the time (Unix
/// seconds) it is kept off until: [`AVOID_SECS`] after the last such attempt ended.
pub fn avoided_until(status: Option<&ComputeJobStatus>, now: i64) -> BTreeMap<String, i64> {
    let mut until = BTreeMap::new();
    let forbidden = status
        .map(|s| s.attempts.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|a| {
            matches!(
                a.reason.as_deref(),
                Some(DISPATCH_FORBIDDEN | super::start::START_TIMEOUT)
            )
        });
    for a in forbidden {
        let Some(end) = crate::time::parse(&a.end_time).map(|t| t + AVOID_SECS) else {
            continue;
        };
        if now < end {
            let t = until.entry(a.provider.clone()).or_insert(end);
            *t = end.max(*t);
        }
    }
    until
}

/// Ends the live attempt: records it, bills it up to `at`, and either retries (a new
/// placement), stops, completes or fails the job by `outcome` and the failure policy.
pub(super) fn end_attempt(
    job: &ComputeJob,
    st: &mut ComputeJobStatus,
    outcome: AttemptOutcome,
    at: i64,
    message: String,
    now_text: &str,
    cause: Cause,
) {
    let generation = job.metadata.generation;
    let cond = |t: &str, s, r: &str, m: String| conditions::condition(t, s, r, m, generation, now_text);
    let Some(p) = st.placement.clone() else { return };
    let message = record_message(&message);
    let gpu_seconds = live_gpu_seconds(&p, at);
    // Pods of a finished attempt hold no GPUs; lost or stopped ones must still be removed,
    // and so must whatever a refused dispatch did create (a gang's other pods), and a
    // failed gang's workers still running beside the one that failed. A job with
    // checkpoint credentials leaves no copy of them at the provider: its finished
    // attempts are removed too, the copy with them.
    let copied = crate::job::build::credentials::secret_name(&job.spec).is_some();
    let removed = cause == (Cause::Observed { pods_ended: true })
        && !copied
        && matches!(outcome, AttemptOutcome::Succeeded | AttemptOutcome::Failed);
    st.attempts.push(AttemptRecord {
        attempt: p.attempt,
        provider: p.provider.clone(),
        outcome,
        message: message.clone(),
        reason: match cause {
            Cause::DispatchRejected => Some(DISPATCH_REJECTED.to_owned()),
            Cause::DispatchForbidden => Some(DISPATCH_FORBIDDEN.to_owned()),
            Cause::StartTimeout => Some(super::start::START_TIMEOUT.to_owned()),
            Cause::Observed { .. } | Cause::Waits { .. } => None,
        },
        gpu_seconds,
        gpus: Some(p.gpus),
        gpu_uuids: attempt::attempt_gpus(&p),
        running_time: p.running_time.clone(),
        price_per_gpu_hour: p.price_per_gpu_hour.clone(),
        end_time: crate::time::format(at),
        removed,
        preempted_by: p
            .preempted
            .as_ref()
            .filter(|_| outcome == AttemptOutcome::Preempted)
            .map(|m| m.by.clone()),
    });
    st.usage = Some(usage(st, None));
    let attempts_used = p.attempt;
    // Preempted attempts are not the job's failures: they never use up `maxAttempts`.
    if outcome == AttemptOutcome::Preempted {
        st.preemptions = st.preemptions.saturating_add(1);
    }
    // Nor are stopped ones (suspend and resume, a template or credentials that wait).
    if outcome == AttemptOutcome::Stopped {
        st.stops = st.stops.saturating_add(1);
    }
    let counted = attempts_used
        .saturating_sub(st.preemptions)
        .saturating_sub(st.stops);
    let retryable = match outcome {
        AttemptOutcome::Succeeded | AttemptOutcome::DeadlineExceeded | AttemptOutcome::Stopped => false,
        AttemptOutcome::ProviderLost => {
            job.spec.failure_policy.on_provider_loss == ProviderLossAction::Failover
        }
        AttemptOutcome::Failed | AttemptOutcome::NodeLost | AttemptOutcome::Preempted => true,
    };
    let retry =
        retryable && (outcome == AttemptOutcome::Preempted || counted < job.spec.failure_policy.max_attempts);
    if let Cause::Waits { reason, until } = cause {
        st.placement = None;
        st.phase = Some(JobPhase::Queued);
        let msg = format!("attempt {attempts_used} stopped: {message}; waiting for {until}");
        conditions::set(&mut st.conditions, cond(types::PLACED, False, reason, msg));
        conditions::remove(&mut st.conditions, types::RECONCILING);
    } else if outcome == AttemptOutcome::Stopped {
        st.placement = None;
        st.phase = Some(JobPhase::Suspended);
        let msg = format!("attempt {attempts_used} stopped: {message}");
        let reason = if job.metadata.deletion_timestamp.is_some() {
            "Deleting"
        } else {
            "Suspended"
        };
        conditions::set(
            &mut st.conditions,
            cond(types::PLACED, False, reason, msg.clone()),
        );
        conditions::set(&mut st.conditions, cond(types::READY, False, reason, msg));
        conditions::remove(&mut st.conditions, types::RECONCILING);
    } else if outcome == AttemptOutcome::Succeeded {
        st.phase = Some(JobPhase::Succeeded);
        st.completion_time = Some(crate::time::format(at));
        conditions::set(
            &mut st.conditions,
            cond(types::COMPLETE, True, "Succeeded", message.clone()),
        );
        conditions::set(&mut st.conditions, cond(types::READY, True, "Succeeded", message));
        conditions::remove(&mut st.conditions, types::RECONCILING);
    } else if retry {
        st.placement = None;
        st.phase = Some(JobPhase::Recovering);
        let msg = format!(
            "attempt {attempts_used} {outcome:?}: {message}; placing attempt {}",
            attempts_used + 1
        );
        let [recovering, preempted] = RETRY_REASONS;
        let reason = if outcome == AttemptOutcome::Preempted {
            preempted
        } else {
            recovering
        };
        conditions::set(
            &mut st.conditions,
            cond(types::PLACED, False, reason, msg.clone()),
        );
        conditions::set(&mut st.conditions, cond(types::READY, False, reason, msg.clone()));
        conditions::set(&mut st.conditions, cond(types::RECONCILING, True, reason, msg));
    } else {
        st.phase = Some(JobPhase::Failed);
        st.completion_time = Some(crate::time::format(at));
        let msg = format!("attempt {attempts_used} {outcome:?}: {message}");
        let (failed, stalled) = match (cause, outcome) {
            // Not for want of attempts: the job ran out of time, or its policy fails it
            // at the first provider loss.
            (Cause::Observed { .. }, AttemptOutcome::DeadlineExceeded) => {
                (DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
            }
            (Cause::Observed { .. }, AttemptOutcome::ProviderLost)
                if job.spec.failure_policy.on_provider_loss == ProviderLossAction::Fail =>
            {
                (PROVIDER_LOST, PROVIDER_LOST)
            }
            (Cause::Observed { .. }, _) => ("AttemptsExhausted", "JobFailed"),
            (Cause::DispatchRejected, _) => (DISPATCH_REJECTED, DISPATCH_REJECTED),
            (Cause::DispatchForbidden, _) => (DISPATCH_FORBIDDEN, DISPATCH_FORBIDDEN),
            (Cause::StartTimeout, _) => (super::start::START_TIMEOUT, super::start::START_TIMEOUT),
            (Cause::Waits { reason, .. }, _) => (reason, reason), // handled above
        };
        conditions::set(&mut st.conditions, cond(types::FAILED, True, failed, msg.clone()));
        conditions::set(
            &mut st.conditions,
            cond(types::READY, False, "Failed", msg.clone()),
        );
        conditions::set(&mut st.conditions, cond(types::STALLED, True, stalled, msg));
        conditions::remove(&mut st.conditions, types::RECONCILING);
    }
}
