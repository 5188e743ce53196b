//! Whether the job's spec may be acted on (pure), and how a placed attempt is read when it
//! may not.

use gpufed_api::job_status::Placement;
use gpufed_api::{ComputeJob, check};

use super::INVALID_TEMPLATE;

/// Why the job waits for a new spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    /// The `Stalled` reason: `InvalidSpec` or `InvalidTemplate`.
    pub reason: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
    /// The gang shape differs from the live placement's ([`check::job_placement`]).
    pub shape: bool,
}

/// Why the job waits for a new spec; `None` when it may be acted on. `placed`: the job has
/// a live placement.
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
/// so its attempt is read by the placement's shape ([`as_placed`]), never by the spec's
/// — that would never see the gang run, or create workers of another size beside it.
pub(super) fn invalid(job: &ComputeJob, placed: bool) -> Option<Invalid> {
    let shape = check::job_placement(job);
    let mut errors = check::job_spec(&job.spec)
        .into_iter()
        .chain(shape.iter().cloned());
    match errors.next() {
        Some(e) => Some(Invalid {
            reason: "InvalidSpec",
            message: e.to_string(),
            shape: !shape.is_empty(),
        }),
        None if !placed => super::super::build::template_error(&job.spec).map(|message| Invalid {
            reason: INVALID_TEMPLATE,
            message,
            shape: false,
        }),
        None => None,
    }
}

/// `job` with the gang shape its live attempt was placed with (`placement`: one entry per
/// worker, its GPUs spread evenly), for reading that attempt's pods while the spec says
/// another shape. A placement without worker entries keeps the spec's worker count.
pub(super) fn as_placed(job: &ComputeJob, placement: &Placement) -> ComputeJob {
    let mut placed = job.clone();
    if let Ok(workers) = u32::try_from(placement.workers.len())
        && workers > 0
    {
        placed.spec.workers = workers;
    }
    if let Some(per_worker) = placement.gpus.checked_div(placed.spec.workers) {
        placed.spec.gpus_per_worker = per_worker;
    }
    placed
}
