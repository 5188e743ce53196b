//! Pure: given a job and what was observed of its live attempt, the job's next status
//! and what to do in the member cluster. No I/O, time is an input.

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions::{self, types};
use gpufed_api::formats::{format_decimal, parse_decimal, parse_duration};
use gpufed_api::job_status::{AttemptOutcome, ComputeJobStatus, JobPhase, Usage};

mod attempt;
mod end;
pub mod history;
mod invalid;
mod member;
mod start;
mod waits;
pub use attempt::expire_unreachable;
use attempt::{attempt_outcome, gang_started};
pub use end::{
    AVOID_SECS, CREDENTIALS_UNAVAILABLE, DISPATCH_FORBIDDEN, FORBIDDEN_GRACE_SECS, INVALID_TEMPLATE,
    avoided_providers, avoided_until, forbid_dispatch, reject_dispatch,
};
use end::{Cause, RETRY_REASONS, end_attempt, refusal};
pub use member::{Member, PodPhase, PodView};
pub use start::START_TIMEOUT;
pub use waits::{await_credentials, credentials_unavailable, invalid_template};

/// What the reconcile must do besides writing status.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The next status.
    pub status: ComputeJobStatus,
    /// Apply the live attempt's member objects (missing pods).
    pub dispatch: bool,
    /// The job waits for a placement round.
    pub wants_placement: bool,
}

pub(crate) fn cost_micros(gpu_seconds: u64, price: &str) -> u64 {
    let price = parse_decimal(price).unwrap_or(0);
    u64::try_from(u128::from(gpu_seconds) * u128::from(price) / 3600).unwrap_or(u64::MAX)
}

/// Usage over finished attempts (kept and archived) plus the live one up to `live_until`.
pub fn usage(status: &ComputeJobStatus, live_until: Option<i64>) -> Usage {
    let archived = status.archived.as_ref();
    let mut seconds = archived.map_or(0, |a| a.gpu_seconds);
    let mut micros = archived.map_or(0, |a| parse_decimal(&a.cost).unwrap_or(0));
    // Saturating: prices go up to 10¹² per GPU-hour, so a long job at such a price would
    // overflow (a panic in a debug build, a wrapped cost in a release one).
    for a in &status.attempts {
        seconds = seconds.saturating_add(a.gpu_seconds);
        micros = micros.saturating_add(cost_micros(a.gpu_seconds, &a.price_per_gpu_hour));
    }
    if let (Some(p), Some(until)) = (&status.placement, live_until) {
        let live = live_gpu_seconds(p, until);
        seconds = seconds.saturating_add(live);
        micros = micros.saturating_add(cost_micros(live, &p.price_per_gpu_hour));
    }
    Usage {
        gpu_seconds: seconds,
        cost: format_decimal(micros),
    }
}

/// Sets `Stalled=True` and `Ready=False` with `reason`: the job needs a change of its spec.
/// `Reconciling` goes: kstatus reads the first of the two that is `True`, so a leftover
/// `Reconciling=True` would keep the job `InProgress` instead of `Failed`.
fn stall(
    st: &mut ComputeJobStatus,
    reason: &str,
    message: String,
    cond: &impl Fn(&str, gpufed_api::common::ConditionStatus, &str, String) -> gpufed_api::common::Condition,
) {
    conditions::set(
        &mut st.conditions,
        cond(types::STALLED, True, reason, message.clone()),
    );
    conditions::set(&mut st.conditions, cond(types::READY, False, reason, message));
    conditions::remove(&mut st.conditions, types::RECONCILING);
}

fn live_gpu_seconds(p: &gpufed_api::job_status::Placement, until: i64) -> u64 {
    let start = p.running_time.as_deref().and_then(crate::time::parse);
    start.map_or(0, |s| u64::try_from(until - s).unwrap_or(0) * u64::from(p.gpus))
}

/// Plans the next step of `job` at `now`.
pub fn plan(job: &ComputeJob, member: &Member, now: i64) -> Plan {
    let now_text = crate::time::format(now);
    let generation = job.metadata.generation;
    let mut st = job.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    let cond = |t: &str, s, r: &str, m: String| conditions::condition(t, s, r, m, generation, &now_text);
    let mut out = Plan {
        status: st,
        dispatch: false,
        wants_placement: false,
    };
    let st = &mut out.status;
    // Room held for a job waiting for its evictions (`held`) is the placement round's;
    // a job that no longer queues (placed, suspended, deleted, finished) holds none.
    if !crate::mapping::is_queued(job) {
        st.held = None;
    }
    if matches!(st.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        return out;
    }
    // A spec that cannot be acted on (invalid, its pod template unbuildable, or its gang
    // shape edited after placement) stalls the job: it is not placed, and nothing more of
    // a placed attempt is dispatched, until the spec changes. A placed attempt is still
    // observed and ends as it would — its pods end, its provider or a node is lost, it is
    // preempted or drained, it runs past `maxDuration`, the user stops it — so an edit
    // can neither freeze the attempt's record and billing nor hold a provider's drain.
    // An attempt whose gang shape the edit changed is read by the shape it was placed
    // with ([`invalid::as_placed`]).
    let bad = invalid::invalid(job, st.placement.is_some());
    match &bad {
        Some(b) => stall(st, b.reason, b.message.clone(), &cond),
        None => {
            conditions::remove(&mut st.conditions, types::STALLED);
        }
    }
    if bad.is_some() && st.placement.is_none() {
        return out;
    }
    let shaped = match (&bad, st.placement.as_ref()) {
        (Some(b), Some(p)) if b.shape => Some(invalid::as_placed(job, p)),
        _ => None,
    };
    let job = shaped.as_ref().unwrap_or(job);
    // Workers of an attempt still to be created from a spec that may not be acted on
    // (a shape edit leaves the placement's own gang to start or time out).
    let unbuildable = bad.as_ref().filter(|b| !b.shape).map(|b| b.message.clone());

    // Billing starts when the whole gang runs, by its kubelets' clocks: an operator that
    // was away while the attempt started, or that first looks after it ended, still bills
    // it from then — not from when it happened to look (or not at all).
    if let (Some(p), Member::Pods(pods)) = (st.placement.as_mut(), member)
        && p.running_time.is_none()
        && let Some(t) = gang_started(job, p, pods, now)
    {
        p.running_time = Some(crate::time::format(t));
        st.start_time.get_or_insert_with(|| crate::time::format(t));
    }
    if let (Some(p), Member::Pods(pods)) = (st.placement.as_mut(), member) {
        attempt::record_gpus(p, pods);
    }
    // Billing of an attempt lost on unreachable nodes ends when they were first seen so.
    let unreachable_since = st
        .placement
        .as_ref()
        .and_then(|p| p.node_unreachable_since.as_deref())
        .and_then(crate::time::parse);
    if let (Some(p), Member::Pods(pods)) = (st.placement.as_mut(), member) {
        attempt::track_unreachable(p, pods, now);
    }

    // Ending the live attempt, if something ended it.
    let ended = match (&st.placement, member) {
        (Some(_), Member::ProviderLost { last_heartbeat }) => Some((
            AttemptOutcome::ProviderLost,
            *last_heartbeat,
            "provider heartbeat lost".to_owned(),
        )),
        (Some(p), Member::Pods(pods)) => attempt_outcome(job, pods, unreachable_since, now)
            .or_else(|| attempt::gang_broken(job, p, pods, now)),
        _ => None,
    };
    // Every worker of the gang seen and ended: nothing is left to remove. A worker not
    // seen may still be created (a pull-mode agent behind, a dispatch under way).
    let pods_ended = match member {
        Member::Pods(pods) => attempt::every_worker_ended(job.spec.workers, pods),
        _ => false,
    };
    let mut cause = Cause::Observed { pods_ended };
    let preempted = st
        .placement
        .as_ref()
        .and_then(|p| p.preempted.as_ref())
        .map(|by| match (by.drained_by(), by.refused_by()) {
            (Some(provider), _) => format!("evicted: provider {provider} drains (spec.drain)"),
            (_, Some(provider)) => format!(
                "evicted: provider {provider} no longer takes work from this namespace (spec.tenants.evictRunning)"
            ),
            _ => format!(
                "preempted by {} (priority {} over {})",
                by.by, by.priority, job.spec.priority
            ),
        });
    let deadline = job
        .spec
        .max_duration
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        // `0s` is an invalid spec (refused by CEL and by `check`), not a deadline passed.
        .filter(|d| *d > 0);
    let overdue =
        deadline.is_some_and(|d| attempt::run_seconds(st, now) > i64::try_from(d).unwrap_or(i64::MAX));
    let ended = match ended {
        // Suspending a placed job stops its attempt; the usage up to now is billed and
        // the pods are fenced like any ended attempt's.
        // Deleting a job stops its attempt the same way, so the finalizer can wait for
        // that usage to be metered before the job (and its record) is gone.
        None if job.metadata.deletion_timestamp.is_some() && st.placement.is_some() => {
            Some((AttemptOutcome::Stopped, now, "job deleted".to_owned()))
        }
        None if job.spec.suspend && st.placement.is_some() => Some((
            AttemptOutcome::Stopped,
            now,
            "suspended (spec.suspend)".to_owned(),
        )),
        // A placement round evicted the attempt for a job of higher priority: it ends now,
        // whether or not the member answers (its pods are fenced like a lost attempt's).
        None if preempted.is_some() => preempted.map(|m| (AttemptOutcome::Preempted, now, m)),
        None if overdue && st.placement.is_some() => Some((
            AttemptOutcome::DeadlineExceeded,
            now,
            "ran past spec.maxDuration".to_owned(),
        )),
        // The member refused the attempt's objects: as a refused push-mode dispatch.
        None => match (&st.placement, member) {
            (Some(p), Member::Rejected(answer)) => {
                cause = Cause::DispatchRejected;
                let message = format!(
                    "provider {} refused the attempt's objects: {}",
                    p.provider,
                    refusal(answer)
                );
                Some((AttemptOutcome::Failed, now, message))
            }
            (Some(p), Member::Forbidden(answer)) if end::forbidden_for_good(p, now) => {
                cause = Cause::DispatchForbidden;
                Some((
                    AttemptOutcome::Failed,
                    now,
                    end::forbidden_message(&p.provider, answer),
                ))
            }
            // Its missing workers would be built from a spec that may not be acted on
            // (a pod-security violation, say): the attempt stops, as for an unbuildable
            // template ([`invalid_template`]), and the job waits for a valid spec.
            (Some(_), Member::Pods(pods))
                if pods.len() < job.spec.workers as usize && unbuildable.is_some() =>
            {
                cause = Cause::Waits {
                    reason: "InvalidSpec",
                    until: "a valid spec",
                };
                let why = unbuildable.clone().unwrap_or_default();
                Some((
                    AttemptOutcome::Stopped,
                    now,
                    format!("the spec became invalid with workers still to create: {why}"),
                ))
            }
            (Some(p), Member::Pods(pods)) => start::timed_out(job, p, pods, now).map(|message| {
                cause = Cause::StartTimeout;
                (AttemptOutcome::Failed, now, message)
            }),
            (Some(p), Member::NotTakenUp) => start::timed_out(job, p, &[], now).map(|message| {
                cause = Cause::StartTimeout;
                (
                    AttemptOutcome::Failed,
                    now,
                    format!("{message} (its agent never took the attempt up)"),
                )
            }),
            _ => None,
        },
        other => other,
    };
    if let Some((outcome, at, message)) = ended {
        end_attempt(job, st, outcome, at, message, &now_text, cause);
        // A job that succeeded is stuck no more, whatever its spec says now.
        if st.phase == Some(JobPhase::Succeeded) {
            conditions::remove(&mut st.conditions, types::STALLED);
        }
        return out;
    }
    // From here on the attempt runs on: with a spec that may not be acted on, `Ready`
    // keeps saying why (`stall`) and nothing more is dispatched.
    let acting = bad.is_none();

    match (&st.placement, member) {
        (None, _) => {
            // A job whose attempt ended and is retried stays `Recovering` until its next
            // attempt is placed (the `Ready` message says which attempt ended and why), so
            // a failed-over job that waits for room is told apart from a new one.
            let recovering = !job.spec.suspend && st.phase == Some(JobPhase::Recovering);
            st.phase = Some(if job.spec.suspend {
                JobPhase::Suspended
            } else if recovering {
                JobPhase::Recovering
            } else {
                JobPhase::Queued
            });
            out.wants_placement = !job.spec.suspend;
            if conditions::find(&st.conditions, types::PLACED).is_none() {
                conditions::set(
                    &mut st.conditions,
                    cond(
                        types::PLACED,
                        False,
                        "Queued",
                        "waiting for a placement round".into(),
                    ),
                );
            }
            let told = conditions::find(&st.conditions, types::READY)
                .is_some_and(|c| RETRY_REASONS.contains(&c.reason.as_str()));
            if !(recovering && told) {
                let reason = match (job.spec.suspend, recovering) {
                    (true, _) => "Suspended",
                    (false, true) => "Recovering",
                    (false, false) => "Queued",
                };
                conditions::set(
                    &mut st.conditions,
                    cond(types::READY, False, reason, "not placed".into()),
                );
                conditions::set(
                    &mut st.conditions,
                    cond(types::RECONCILING, True, reason, "waiting for a provider".into()),
                );
            }
        }
        (Some(p), Member::Pods(pods)) => {
            let running = pods.len() == job.spec.workers as usize
                && pods
                    .iter()
                    .all(|p| matches!(p.phase, PodPhase::Running | PodPhase::Succeeded));
            out.dispatch = acting && pods.len() < job.spec.workers as usize;
            let provider = p.provider.clone();
            if !acting {
                st.phase = Some(if running {
                    JobPhase::Running
                } else {
                    JobPhase::Placed
                });
            } else if running {
                st.phase = Some(JobPhase::Running);
                conditions::set(
                    &mut st.conditions,
                    cond(
                        types::READY,
                        True,
                        "Running",
                        format!("all workers run on {provider}"),
                    ),
                );
                conditions::remove(&mut st.conditions, types::RECONCILING);
            } else {
                st.phase = Some(JobPhase::Placed);
                let msg = format!(
                    "{} of {} workers running on {provider}",
                    pods.iter().filter(|p| p.phase == PodPhase::Running).count(),
                    job.spec.workers
                );
                conditions::set(
                    &mut st.conditions,
                    cond(types::READY, False, "Starting", msg.clone()),
                );
                conditions::set(
                    &mut st.conditions,
                    cond(types::RECONCILING, True, "Starting", msg),
                );
            }
            if let Some(w) = attempt::unreachable_worker(pods).filter(|_| acting) {
                let since = p.node_unreachable_since.as_deref().unwrap_or(&now_text);
                let msg = format!(
                    "the node of worker {} on {provider} is unreachable since {since}; its work counts lost after the provider's heartbeat grace period",
                    w.rank
                );
                conditions::set(
                    &mut st.conditions,
                    cond(types::READY, False, "NodeUnreachable", msg),
                );
            }
        }
        (Some(_), _) => {} // provider silent within its grace period: keep waiting
    }
    st.usage = Some(usage(st, Some(now)));
    out
}

#[cfg(test)]
mod tests;
