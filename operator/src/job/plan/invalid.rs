//! Whether the job's spec may be acted on (pure), and what a stop may still read of its
//! attempt when it may not.

use gpufed_api::{ComputeJob, check};

use super::{INVALID_TEMPLATE, Member};

/// Why the job waits for a new spec, as (reason, message naming the field); `None` when
/// it may be acted on. `placed`: the job has a live placement.
///
/// A pod template that cannot be built into worker pods (a field of the wrong type, a bad
/// readiness probe) is refused like an invalid spec, before placement: `build` fails only
/// on the spec, never on the placement, so retrying it elsewhere cannot help, and placing
/// it first would hold GPUs for a gang that can never be created. It waits unplaced with
/// `Stalled` until the spec changes, as an invalid spec does, and uses up no attempt. A
/// placed attempt is left alone here: its pods may all run (the template was edited after
/// they were created, which does not touch them); only when one is still to be created
/// does the job controller end it ([`super::invalid_template`]).
///
/// A placed job whose gang shape was edited after placement ([`check::job_placement`]:
/// API servers before 1.25 drop the CEL rule that forbids it) is refused as an invalid
/// spec too: its pods are built from the placement and billed for the placement's GPUs,
/// while the plan counts the gang by the spec, so acting on both would never see the gang
/// run, or create workers of another size beside it.
pub(super) fn invalid(job: &ComputeJob, placed: bool) -> Option<(&'static str, String)> {
    let mut errors = check::job_spec(&job.spec)
        .into_iter()
        .chain(check::job_placement(job));
    match errors.next() {
        Some(e) => Some(("InvalidSpec", e.to_string())),
        None if !placed => super::super::build::template_error(&job.spec).map(|e| (INVALID_TEMPLATE, e)),
        None => None,
    }
}

/// What a stop the user asks for (deletion, suspension) reads of the live attempt of a
/// job whose spec is invalid. The stop still ends the attempt — the finalizer waits for it
/// to end, and suspending is how a placed job's shape is changed — but the pods are read
/// by the spec (the gang's size), which cannot be trusted now: the attempt ends `Stopped`,
/// billed up to now, or up to the last heartbeat of a provider that was lost.
pub(super) fn read_without_spec(member: &Member) -> &Member {
    match member {
        Member::ProviderLost { .. } => member,
        _ => &Member::Unanswered,
    }
}
