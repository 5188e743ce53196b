//! The round's writes to the jobs it decided on: a placement, fenced by the job's
//! resourceVersion and written with the status the job controller would plan next, and
//! the reason of the jobs that settlement cannot charge.

use gpufed_api::ComputeJob;
use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions::{self, types};
use gpufed_api::formats::format_decimal;
use gpufed_api::job_status::{JobPhase, Placement, WorkerPlacement};
use gpufed_placement as pl;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::mapping;

/// Queued jobs of tenants that settlement cannot charge wait (policy `hold`), and say why.
pub(super) async fn hold(ctx: &Context, held: &[std::sync::Arc<ComputeJob>]) {
    let now = crate::time::format(crate::time::now());
    for job in held {
        let Some(why) = ctx.held(&job.namespace().unwrap_or_default()) else {
            continue;
        };
        let current = job
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::PLACED));
        if current.is_some_and(|c| c.reason == "EscrowShortfall" && c.message == why) {
            continue;
        }
        let mut status = job.status.clone().unwrap_or_default();
        let cond = conditions::condition(
            types::PLACED,
            False,
            "EscrowShortfall",
            why,
            job.metadata.generation,
            &now,
        );
        conditions::set(&mut status.conditions, cond);
        status.held = None;
        if let Err(e) = crate::job::write_status(ctx, job, &status).await {
            tracing::debug!(job = %job.name_any(), error = %e, "hold reason not written");
        }
    }
}

/// Writes a placement, fenced by the job's resourceVersion. The round's copy of a job is
/// often one write behind (its own reconcile just wrote conditions): on a conflict, the
/// job is read again and the placement written once more only if the fresh object is
/// still queued with the same spec generation — so a job is never placed twice.
pub(super) async fn write_placement(
    ctx: &Context,
    job: &ComputeJob,
    p: &pl::Placement,
    now: i64,
) -> Result<ComputeJob> {
    match try_write_placement(ctx, job, p, now).await {
        Err(Error::Conflict(_)) if ctx.leadership.is_leader() => match reread_queued(ctx, job).await? {
            Some(fresh) => try_write_placement(ctx, &fresh, p, now).await,
            None => Err(Error::Conflict("job changed since the round's snapshot".into())),
        },
        other => other,
    }
}

/// After a write of the round's decision about `job` met a conflict: the job read again,
/// if it still queues with the spec generation the round decided on, else `None` (the
/// decision no longer applies).
pub(super) async fn reread_queued(ctx: &Context, job: &ComputeJob) -> Result<Option<ComputeJob>> {
    let api: Api<ComputeJob> = Api::namespaced(ctx.hub.clone(), &job.namespace().unwrap_or_default());
    let fresh = api
        .get(&job.name_any())
        .await
        .map_err(|e| Error::hub("ComputeJob", e))?;
    let same = mapping::is_queued(&fresh) && fresh.metadata.generation == job.metadata.generation;
    Ok(same.then_some(fresh))
}

async fn try_write_placement(
    ctx: &Context,
    job: &ComputeJob,
    p: &pl::Placement,
    now: i64,
) -> Result<ComputeJob> {
    let mut status = job.status.clone().unwrap_or_default();
    let attempt = status.attempts.last().map_or(1, |a| a.attempt + 1);
    let now_text = crate::time::format(now);
    status.placement = Some(Placement {
        attempt,
        provider: p.provider.clone(),
        gpus: job.spec.workers * job.spec.gpus_per_worker,
        price_per_gpu_hour: format_decimal(p.price),
        workers: worker_nodes(job, p)
            .enumerate()
            .map(|(rank, node)| WorkerPlacement {
                rank: u32::try_from(rank).unwrap_or(u32::MAX),
                node: node.to_owned(),
                gpu_uuids: Vec::new(),
            })
            .collect(),
        placed_time: now_text.clone(),
        running_time: None,
        node_unreachable_since: None,
        preempted: None,
    });
    status.phase = Some(JobPhase::Placed);
    // The room it held while its victims stopped is its placement now.
    status.held = None;
    let msg = format!(
        "attempt {attempt} on {} ({}) at {} per GPU-hour",
        p.provider,
        p.model,
        format_decimal(p.price)
    );
    conditions::set(
        &mut status.conditions,
        conditions::condition(
            types::PLACED,
            True,
            "Placed",
            msg,
            job.metadata.generation,
            &now_text,
        ),
    );
    let mut placed = job.clone();
    placed.status = Some(status);
    let status = starting_status(&placed, now);
    crate::job::write_status(ctx, job, &status).await?;
    placed.status = Some(status);
    Ok(placed)
}

/// Each worker's node, in rank order: the engine's, or for workers that must share a
/// node (placed as one worker, [`crate::mapping::spec_facts::SpecFacts::workers_together`])
/// every worker on the engine's one node.
pub(crate) fn worker_nodes<'a>(job: &ComputeJob, p: &'a pl::Placement) -> impl Iterator<Item = &'a str> {
    let together = p.workers.len() == 1 && crate::mapping::spec_facts::of(job).workers_together;
    let copies = if together { job.spec.workers as usize } else { 1 };
    p.workers
        .iter()
        .flat_map(move |w| std::iter::repeat_n(w.node.as_str(), copies))
}

/// The status the job controller itself plans for a placed job whose pods do not exist
/// yet (phase `Placed`, `Ready=False/Starting`, usage): written with the placement, it
/// spares each job a second status write before its pods run. Only if that plan keeps
/// the placement live; otherwise the bare placement is written and the controller decides.
pub(super) fn starting_status(placed: &ComputeJob, now: i64) -> gpufed_api::job_status::ComputeJobStatus {
    let bare = placed.status.clone().unwrap_or_default();
    let planned = crate::job::plan::plan(placed, &crate::job::plan::Member::Pods(Vec::new()), now).status;
    if planned.placement == bare.placement && planned.phase == Some(JobPhase::Placed) {
        planned
    } else {
        bare
    }
}
