//! Pure: a job whose attempt cannot be completed waits unplaced, saying why, until what
//! it lacks — a pod template that builds, its checkpoint credentials — is there.

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus::True;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::AttemptOutcome;

use super::end::{CREDENTIALS_UNAVAILABLE, Cause, INVALID_TEMPLATE, end_attempt};
use super::{Plan, stall};

/// The live attempt's objects cannot be built: `error` names the template's field. A
/// template that is invalid from the start is refused before placement ([`super::plan()`]);
/// this is one made invalid after the attempt was placed (the template may be edited),
/// or placed by an operator before that check, with pods still to create. None of them
/// can be created, on this provider or any other, so the attempt ends now (`Stopped`:
/// nothing more was dispatched; billed only if its gang had run), its GPUs are released
/// and whatever it created is fenced, and the job waits unplaced with `Stalled`,
/// `Ready` and `Placed` reason `InvalidTemplate` until the spec changes — as a job whose
/// template was invalid from the start — instead of holding the GPUs and retrying every
/// second. The ended attempt's number is used, as any ended attempt's.
pub fn invalid_template(job: &ComputeJob, plan: &mut Plan, error: &str, now: i64) {
    let now_text = crate::time::format(now);
    let st = &mut plan.status;
    let message = format!("the pod template cannot be built: {error}");
    end_attempt(
        job,
        st,
        AttemptOutcome::Stopped,
        now,
        message,
        &now_text,
        Cause::Waits {
            reason: INVALID_TEMPLATE,
            until: "a valid spec.template",
        },
    );
    let generation = job.metadata.generation;
    let cond = |t: &str, s, r: &str, m: String| conditions::condition(t, s, r, m, generation, &now_text);
    stall(st, INVALID_TEMPLATE, error.to_owned(), &cond);
    plan.dispatch = false;
    plan.wants_placement = false;
}

/// The job's checkpoint credentials (`why`: the Secret is missing, not readable by the
/// operator, or of a type that is never copied) cannot be read while it waits for
/// placement: it stays unplaced with `Stalled` and `Ready` reason
/// [`CREDENTIALS_UNAVAILABLE`] — placing it would hold GPUs for workers that cannot
/// start — and the placement round leaves it out ([`crate::mapping::is_queued`]) until a
/// later check reads them. The condition keeps its first transition time while the
/// reason stays, so a waiting job is not rewritten at every check.
pub fn await_credentials(job: &ComputeJob, plan: &mut Plan, why: &str, now: i64) {
    let now_text = crate::time::format(now);
    let generation = job.metadata.generation;
    let since = job
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, types::STALLED))
        .filter(|c| c.status == True && c.reason == CREDENTIALS_UNAVAILABLE)
        .map(|c| c.last_transition_time.clone());
    let cond = |t: &str, s, r: &str, m: String| {
        let mut c = conditions::condition(t, s, r, m, generation, &now_text);
        if let Some(since) = since.as_ref().filter(|_| t == types::STALLED) {
            c.last_transition_time.clone_from(since);
        }
        c
    };
    stall(&mut plan.status, CREDENTIALS_UNAVAILABLE, why.to_owned(), &cond);
    plan.wants_placement = false;
}

/// The placed attempt's checkpoint credentials cannot be read when its objects are sent
/// (the round placed it before the job controller checked, or the Secret went away): the
/// attempt ends `Stopped` before anything runs, its GPUs are released, and the job waits
/// as in [`await_credentials`]. The ended attempt's number is used.
pub fn credentials_unavailable(job: &ComputeJob, plan: &mut Plan, why: &str, now: i64) {
    let now_text = crate::time::format(now);
    end_attempt(
        job,
        &mut plan.status,
        AttemptOutcome::Stopped,
        now,
        format!("the checkpoint credentials cannot be read: {why}"),
        &now_text,
        Cause::Waits {
            reason: CREDENTIALS_UNAVAILABLE,
            until: "its checkpoint credentials",
        },
    );
    plan.dispatch = false;
    await_credentials(job, plan, why, now);
}
