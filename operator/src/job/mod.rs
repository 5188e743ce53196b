//! The job controller: observe the live attempt in its member cluster (I/O) → plan
//! (pure, [`plan`]) → dispatch / fence / clean up (I/O) → status (server-side apply
//! with the observed resourceVersion as precondition).

pub mod build;
pub mod credentials;
pub(crate) mod dispatch;
pub mod events;
mod fence;
mod live;
mod marks;
pub mod names;
pub(crate) mod observe;
pub mod plan;
pub mod serving;
pub mod ttl;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gpufed_api::common::ConditionStatus::True;
use gpufed_api::conditions::{self, types};
use gpufed_api::job_status::{ComputeJobStatus, JobPhase};
use gpufed_api::{ComputeJob, GpuProvider};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::member::Link;

/// Writes a job's status by server-side apply; the resourceVersion it was computed
/// from is a precondition, so a write based on stale state (a stale leader, a racing
/// round) fails with 409 instead of overwriting newer facts.
pub async fn write_status(ctx: &Context, job: &ComputeJob, status: &ComputeJobStatus) -> Result<ComputeJob> {
    let api: Api<ComputeJob> = Api::namespaced(ctx.hub.clone(), &job.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"resourceVersion": job.resource_version()},
        "status": status,
    });
    let written = api
        .patch_status(
            &job.name_any(),
            &PatchParams::apply(crate::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::hub("ComputeJob status", e))?;
    ctx.reporter.publish(
        kube::Resource::object_ref(job, &()),
        events::transitions(job.status.as_ref(), status),
    );
    Ok(written)
}

/// The provider named `name`, by key from the store (no scan of the whole fleet).
fn provider(ctx: &Context, name: &str) -> Option<Arc<GpuProvider>> {
    ctx.providers.get(&ObjectRef::new(name))
}

async fn connect(ctx: &Context, name: &str) -> Result<(Arc<GpuProvider>, Link)> {
    let provider = provider(ctx, name).ok_or_else(|| Error::member(name, "GpuProvider not found"))?;
    let link = ctx.members.link(&provider).await?;
    Ok((provider, link))
}

/// Records archived once the hold for the meter ran out ([`plan::history::record`]).
fn unbilled(ctx: &Context, job: &ComputeJob, note: events::Note) {
    tracing::warn!(message = %note.message, "attempt records archived before they were seen metered");
    ctx.reporter
        .publish(kube::Resource::object_ref(job, &()), vec![note]);
}

/// Seconds a new job waits for the placement round to write its first status.
const FIRST_STATUS_WAIT: i64 = 5;

/// Whether `job` has member-side work on `provider`: its live attempt runs there, an
/// ended attempt's pods there are not removed yet, or it is being deleted after running
/// there (its tenant namespace goes).
pub fn touches_provider(job: &ComputeJob, provider: &str) -> bool {
    let Some(st) = job.status.as_ref() else {
        return false;
    };
    let deleting = job.metadata.deletion_timestamp.is_some();
    st.placement.as_ref().is_some_and(|p| p.provider == provider)
        || st
            .attempts
            .iter()
            .any(|a| a.provider == provider && (deleting || !a.removed))
        || (deleting
            && st
                .archived
                .as_ref()
                .is_some_and(|a| a.providers.iter().any(|p| p == provider)))
}

/// Seconds since the job was created (0 when unknown).
fn age(job: &ComputeJob, now: i64) -> i64 {
    job.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| now - t.0.as_second())
}

async fn apply(job: Arc<ComputeJob>, ctx: &Context) -> Result<Action> {
    let now = crate::time::now();
    let removed = fence::fence_old_attempts(ctx, &job).await;
    let stored = job.status.clone();
    let mut job = (*job).clone();
    if let Some(st) = job.status.as_mut() {
        st.attempts
            .iter_mut()
            .filter(|a| removed.contains(&a.attempt))
            .for_each(|a| a.removed = true);
    }
    marks::drop_stale_mark(ctx, &mut job);
    let member = live::observe_live(ctx, &job, now).await;
    let mut plan = plan::plan(&job, &member, now);
    if job.spec.serving.is_some() {
        plan.status.endpoint = live::observe_endpoint(ctx, &job, &member, &plan.status, now).await;
    }
    // An end held back for the meter (objects refused, say): they are not sent again yet.
    let held_dispatch = plan.dispatch && plan::history::dispatch_waits(&job, &plan.status, ctx.settles, now);
    if held_dispatch {
        tracing::warn!("the attempt history is full of unmetered records; the dispatch waits for the meter");
        plan::history::hold_dispatch(&job, &mut plan, now);
    }
    // Checkpoint credentials: checked while the job waits for placement (a job whose
    // Secret cannot be read is not placed), read again for each attempt's objects.
    let waiting = plan.wants_placement && plan.status.placement.is_none();
    let creds = if plan.dispatch || waiting {
        credentials::read(&ctx.hub, &job).await?
    } else {
        credentials::Read::NotNeeded
    };
    if let credentials::Read::Unavailable(why) = &creds {
        tracing::info!(reason = %why, "checkpoint credentials unavailable; the job waits");
        if plan.dispatch {
            plan::credentials_unavailable(&job, &mut plan, why, now);
        } else {
            plan::await_credentials(&job, &mut plan, why, now);
        }
    }
    if plan.dispatch
        && let Some(p) = plan.status.placement.clone()
    {
        let (provider, link) = connect(ctx, &p.provider).await?;
        let built = build::build(&job, &p, &provider.spec.resource_name).map(|mut objects| {
            build::tolerate(&mut objects, &provider.spec.effective_tolerations());
            if let credentials::Read::Data(data) = creds {
                build::with_credentials(&mut objects, &job, p.attempt, data);
            }
            objects
        });
        match built {
            Ok(objects) => match link.dispatch(&objects).await {
                // No retry heals a refusal: end the attempt (status, Event), free its GPUs.
                Err(Error::Rejected { provider, message }) => {
                    tracing::warn!(%provider, error = %message, "member refused the attempt's objects");
                    plan::reject_dispatch(&job, &mut plan, &message, now);
                }
                // Retried within the grace period (permissions may still be applying);
                // after it, ended like a refusal and the job is kept off that provider.
                Err(Error::Forbidden { provider, message }) => {
                    if !plan::forbid_dispatch(&job, &mut plan, &message, now) {
                        return Err(Error::Forbidden { provider, message });
                    }
                    tracing::warn!(%provider, error = %message, "member forbids the attempt's objects; failing over");
                }
                other => other?,
            },
            // Placed before its template became invalid (the plan refuses such a job before
            // placement): end the attempt and free its GPUs; the job waits for a new spec.
            Err(msg) => {
                tracing::warn!(error = %msg, "the attempt's objects cannot be built");
                plan::invalid_template(&job, &mut plan, &msg, now);
            }
        }
    }
    // An end not recordable beside records the meter lacks: the status as read waits.
    let forced = match plan::history::record(&job, &mut plan.status, ctx.settles, now) {
        plan::history::Recorded::Fits => None,
        plan::history::Recorded::Forced(note) => Some(note),
        plan::history::Recorded::Held(held) => {
            tracing::warn!("the attempt history is full of unmetered records; the attempt's end waits");
            if stored.as_ref() != Some(&*held) {
                write_status(ctx, &job, &held).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    // A new job's first status comes from the placement round (its placement, or why it
    // waits), unless the round has not written one after a while: writing `Queued` here
    // first would cost every job one more hub write and make the round's write conflict.
    let first_from_round = stored.is_none() && plan.wants_placement && age(&job, now) < FIRST_STATUS_WAIT;
    if stored.as_ref() != Some(&plan.status) && !first_from_round {
        write_status(ctx, &job, &plan.status).await?;
    }
    forced.into_iter().for_each(|note| unbilled(ctx, &job, note));
    if plan.wants_placement {
        ctx.placement_trigger.notify_one();
    }
    if first_from_round {
        return Ok(Action::requeue(Duration::from_secs(FIRST_STATUS_WAIT as u64)));
    }
    let unfenced = plan.status.attempts.iter().any(|a| !a.removed);
    if let Some(action) = ttl::enforce(ctx, &job, &plan.status, now).await? {
        // Stranded attempts are still looked after until the job goes.
        return Ok(if unfenced {
            Action::requeue(Duration::from_secs(5))
        } else {
            action
        });
    }
    Ok(match plan.status.phase {
        _ if held_dispatch => Action::requeue(Duration::from_secs(30)),
        // A finished job still removes attempts stranded on providers that were cut off.
        Some(JobPhase::Succeeded | JobPhase::Failed) if unfenced => Action::requeue(Duration::from_secs(5)),
        Some(JobPhase::Succeeded | JobPhase::Failed) => Action::await_change(),
        Some(JobPhase::Running) => Action::requeue(Duration::from_secs(10)),
        Some(JobPhase::Queued | JobPhase::Suspended) => Action::requeue(Duration::from_secs(30)),
        // A retry that waits for room, like a queued job (the round's write wakes it);
        // sooner while the ended attempt's objects are still to be removed.
        Some(JobPhase::Recovering) if plan.status.placement.is_none() && unfenced => {
            Action::requeue(Duration::from_secs(5))
        }
        Some(JobPhase::Recovering) if plan.status.placement.is_none() => {
            Action::requeue(Duration::from_secs(30))
        }
        _ => Action::requeue(Duration::from_secs(1)),
    })
}

/// Deletion: stop the live attempt (its usage up to now goes into status, like a
/// suspension), remove the tenant namespace in every member the job touched, and let the
/// job go only once that usage is metered — deleting a running job loses no GPU-seconds.
/// A member that does not answer leaves the finalizer in place and the job `Stalled`
/// (never hangs silently); the cleanup is retried with backoff.
async fn cleanup(job: Arc<ComputeJob>, ctx: &Context) -> Result<Action> {
    let ns = names::tenant_namespace(&job.namespace().unwrap_or_default(), &job.name_any());
    let live =
        job.status.as_ref().is_some_and(|s| s.placement.is_some()) && !crate::mapping::is_finished(&job);
    let job = if live {
        let now = crate::time::now();
        let member = live::observe_live(ctx, &job, now).await;
        let mut stopped = plan::plan(&job, &member, now).status;
        let forced = match plan::history::record(&job, &mut stopped, ctx.settles, now) {
            plan::history::Recorded::Fits => None,
            plan::history::Recorded::Forced(note) => Some(note),
            plan::history::Recorded::Held(held) => {
                if job.status.as_ref() != Some(&*held) {
                    write_status(ctx, &job, &held).await?;
                }
                let why = "the attempt's end waits for the meter to journal the older records";
                return Err(Error::Waiting(why.into()));
            }
        };
        if job.status.as_ref() == Some(&stopped) {
            job
        } else {
            let written = write_status(ctx, &job, &stopped).await?;
            forced.into_iter().for_each(|note| unbilled(ctx, &job, note));
            Arc::new(written)
        }
    } else {
        job
    };
    let st = job.status.clone().unwrap_or_default();
    let mut providers: Vec<String> = st.attempts.iter().map(|a| a.provider.clone()).collect();
    providers.extend(st.placement.iter().map(|p| p.provider.clone()));
    providers.extend(st.archived.iter().flat_map(|a| a.providers.iter().cloned()));
    providers.sort();
    providers.dedup();
    // Its ended attempts keep counting for its providers' reputation once it is gone
    // (idempotent: recorded by attempt). Only for providers that still exist: a deleted
    // one's ledger went with it.
    for name in &providers {
        if ctx.providers.get(&ObjectRef::new(name)).is_some() {
            ctx.verifier.record_deleted(name, &job);
        }
    }
    let mut failures = Vec::new();
    for name in &providers {
        // A provider deleted from the hub has nothing left to clean. Any other failure to
        // reach one — its kubeconfig Secret missing during a rotation included — keeps the
        // job: its workers may still hold GPUs on the member.
        let result = if provider(ctx, name).is_none() {
            Ok(())
        } else {
            match connect(ctx, name).await {
                Ok((_, link)) => fence::remove_namespace(&link, &ns, &job)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    if failures.is_empty() {
        if crate::mapping::stopped_and_metered(&job, ctx.settles) {
            return Ok(Action::await_change());
        }
        let used = st.usage.as_ref().map_or(0, |u| u.gpu_seconds);
        let metered = st.billing.as_ref().map_or(0, |b| b.metered_gpu_seconds);
        let waiting = format!("{metered} of {used} GPU-seconds metered; the job goes once all are");
        // Settlement that cannot run (e.g. no RPC node at start and no recorded mint
        // decimals) would hold the deletion without a word: say so on the job.
        if let Some(why) = ctx.settlement_paused() {
            let msg = format!("{waiting}, but settlement is paused: {why}");
            stalled(ctx, &job, st, "SettlementPaused", &msg).await?;
            return Err(Error::Waiting(msg));
        }
        return Err(Error::Waiting(waiting));
    }
    let msg = format!("cannot remove member resources: {}", failures.join("; "));
    stalled(ctx, &job, st, "MemberUnreachable", &msg).await?;
    Err(Error::Member {
        provider: providers.join(","),
        message: msg,
    })
}

/// Sets `Stalled=True` with `reason` on a job being deleted (written only when it changes,
/// so a waiting finalizer does not rewrite its status on every retry).
async fn stalled(
    ctx: &Context,
    job: &ComputeJob,
    mut status: ComputeJobStatus,
    reason: &str,
    msg: &str,
) -> Result<()> {
    let unchanged = conditions::find(&status.conditions, types::STALLED)
        .is_some_and(|c| c.status == True && c.reason == reason && c.message == msg);
    if unchanged {
        return Ok(());
    }
    let c = conditions::condition(
        types::STALLED,
        True,
        reason,
        msg.to_string(),
        job.metadata.generation,
        &crate::time::format(crate::time::now()),
    );
    conditions::set(&mut status.conditions, c);
    conditions::remove(&mut status.conditions, types::RECONCILING);
    write_status(ctx, job, &status).await?;
    Ok(())
}

/// Reconciles one job.
#[tracing::instrument(skip_all, fields(job = %format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())))]
pub async fn reconcile(job: Arc<ComputeJob>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    // A provider missing from a store that has not synced yet is not a lost provider.
    if ctx.providers_synced.wait().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    crate::context::finalized(
        &ctx,
        "job",
        names::FINALIZER,
        job,
        |j| apply(j, &ctx),
        |j| cleanup(j, &ctx),
    )
    .await
}

/// Runs the job controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    controller: Controller<ComputeJob>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::context::error_policy("job"), ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The job controller's watch configuration.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

#[cfg(test)]
mod touch_tests;
