//! The placement round: one global decision over all queued jobs and all providers
//! (the engine needs the whole picture for fair share, packing and reservations), then
//! each placement written to its job's status first — fenced by the job's
//! resourceVersion, so a stale leader or a concurrent round cannot place a job twice.
//! The job controller dispatches once it sees the placement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpufed_api::common::ConditionStatus::False;
use gpufed_api::conditions::{self, types};
use gpufed_api::{ComputeJob, GpuProvider};
use gpufed_placement as pl;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Mutex, watch};

use crate::context::Context;
use crate::error::Result;
use crate::mapping;

/// `Placed=False` reason of a job that only a disruption budget keeps from preempting.
pub const DISRUPTION_BUDGET: &str = "DisruptionBudget";
/// The `Placed` reason of a job that most providers keep out by their tenant policy.
pub const TENANT_NOT_ADMITTED: &str = "TenantNotAdmitted";
/// The `Placed` reason of a job whose node selector most providers' nodes do not satisfy.
pub const NODE_SELECTOR_UNMATCHED: &str = "NodeSelectorUnmatched";
/// The `Placed` reason of a job whose workers' CPU or memory requests most providers
/// cannot hold beside the GPUs: no suitable node is that large, or none has that much
/// free now.
pub const INSUFFICIENT_NODE_RESOURCES: &str = "InsufficientNodeResources";
/// The `Placed` reason of a job no provider fits for any other reason.
pub const NO_PROVIDER_FITS: &str = "NoProviderFits";

/// Every `Placed=False` reason a round gives ([`unplaced_reason`]), for the
/// `gpufed_unplaced_jobs` gauge.
pub const UNPLACED_REASONS: [&str; 7] = [
    NO_PROVIDER_FITS,
    crate::verification::fresh::AWAITING_VERIFICATION,
    crate::quota::plan::QUOTA_EXCEEDED,
    DISRUPTION_BUDGET,
    TENANT_NOT_ADMITTED,
    NODE_SELECTOR_UNMATCHED,
    INSUFFICIENT_NODE_RESOURCES,
];

/// The `Placed=False` message for an unplaced job: the engine's explanation, which for
/// workers that must share a node speaks of them as the one worker they are placed as.
pub fn unplaced_message(job: &ComputeJob, explanation: &pl::Explanation) -> String {
    let text = explanation.to_string();
    if job.spec.workers > 1 && mapping::spec_facts::of(job).workers_together {
        let gpus = job.spec.workers.saturating_mul(job.spec.gpus_per_worker);
        format!(
            "{text} (its {} workers must share one node: {gpus} GPUs on it)",
            job.spec.workers
        )
    } else {
        text
    }
}

/// The `Placed=False` reason for an unplaced job: its quota, or its explanation's most
/// common reason where one has its own name, else [`NO_PROVIDER_FITS`].
pub fn unplaced_reason(explanation: &pl::Explanation) -> &'static str {
    match (explanation, explanation.primary()) {
        (pl::Explanation::Quota(_), _) => crate::quota::plan::QUOTA_EXCEEDED,
        (_, Some(pl::Reason::Protected { .. })) => DISRUPTION_BUDGET,
        (_, Some(pl::Reason::TenantNotAdmitted)) => TENANT_NOT_ADMITTED,
        (_, Some(pl::Reason::NodeSelector { .. })) => NODE_SELECTOR_UNMATCHED,
        (_, Some(pl::Reason::WorkerTooLarge { .. } | pl::Reason::NodeResourcesBusy { .. })) => {
            INSUFFICIENT_NODE_RESOURCES
        }
        _ => NO_PROVIDER_FITS,
    }
}

/// Runs rounds when triggered or every `interval`, while this replica leads.
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let carried = Mutex::new(Carried::default());
    let written = Mutex::new(Written::new());
    loop {
        tokio::select! {
            _ = ctx.placement_trigger.notified() => {}
            _ = tokio::time::sleep(ctx.config.placement_interval) => {}
            _ = shutdown.changed() => return,
        }
        // Let a burst of triggers coalesce into one round.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !ctx.leadership.is_leader() {
            continue;
        }
        if let Err(e) = round(&ctx, &carried, &written).await {
            tracing::warn!(error = %e, "placement round failed");
        }
    }
}

/// What one round hands the next: the engine's reservations for waiting gangs, and the
/// room held for jobs waiting for their evictions ([`mapping::holds`]).
#[derive(Debug, Default)]
pub struct Carried {
    reservations: Vec<pl::Reservation>,
    holds: mapping::holds::Holds,
}

/// Placements this process wrote that the job store may not show yet, by job UID.
pub type Written = BTreeMap<String, (Instant, Arc<ComputeJob>)>;

/// How long a written placement overrides the store's copy at most.
const WRITTEN_TTL: Duration = Duration::from_secs(60);

/// The store's jobs, each replaced by the copy this process just placed while the store
/// still shows the version that placement was written over: the next round (triggered within milliseconds) must neither
/// see that job as queued nor its GPUs as free, or it overcommits a node.
pub fn with_written(
    store: Vec<Arc<ComputeJob>>,
    written: &mut Written,
    now: Instant,
) -> Vec<Arc<ComputeJob>> {
    written.retain(|_, (at, _)| now.duration_since(*at) < WRITTEN_TTL);
    store
        .into_iter()
        .map(|job| {
            let uid = job.uid().unwrap_or_default();
            match written.get(&uid) {
                // The store still has the version the placement was written over.
                Some((_, mine)) if job.resource_version() == mine.resource_version() => mine.clone(),
                Some(_) => {
                    written.remove(&uid);
                    job
                }
                None => job,
            }
        })
        .collect()
}

/// Whether a tenancy eviction mark by `provider` on work of namespace `ns` stands
/// ([`drain::tenancy_evicts`], against the provider and namespace caches).
pub fn tenancy_mark_stands(ctx: &Context, provider: &str, ns: &str) -> bool {
    let p = ctx
        .providers
        .get(&kube::runtime::reflector::ObjectRef::new(provider));
    drain::tenancy_evicts(p.as_deref(), ns, |n| {
        ctx.namespaces_synced
            .is_synced()
            .then(|| namespace_labels(ctx, n))
            .flatten()
    })
}

/// Forgets what this process holds for providers deleted from the hub — views, member
/// clients and their watches, pacing — every round: the sweep the provider controller
/// does needs another provider reconciled, and never comes once the last one is gone.
/// Each is judged by the provider store at that moment (not a list read earlier): a
/// provider is in the store before anything of it is built, so one just created stays.
async fn forget_deleted(ctx: &Context) {
    let present = |p: &str| ctx.providers.get(&ObjectRef::new(p)).is_some();
    let mut gone = ctx.fleet.retain(present).await;
    gone.extend(ctx.members.known().await.into_iter().filter(|p| !present(p)));
    gone.sort();
    gone.dedup();
    for p in gone {
        tracing::info!(provider = %p, "provider deleted: its view and member client are dropped");
        ctx.members.forget(&p).await;
        ctx.members.report_wakes().await_reports(&p, false);
        if let Ok(mut probed) = ctx.probed.lock() {
            probed.remove(&p);
        }
    }
}

/// A hub namespace's labels, `None` when the namespace is not in the cache.
fn namespace_labels(ctx: &Context, ns: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let key = kube::runtime::reflector::ObjectRef::new(ns);
    ctx.namespaces.get(&key).map(|n| n.labels().clone())
}

/// One round.
pub async fn round(ctx: &Context, carried: &Mutex<Carried>, written: &Mutex<Written>) -> Result<usize> {
    // Without the services listed, their disruption budgets are unknown: a round could
    // preempt a protected replica.
    if !ctx.services_synced.is_synced() || !ctx.quotas_synced.is_synced() {
        return Ok(0);
    }
    let store = with_written(ctx.jobs.state(), &mut *written.lock().await, Instant::now());
    let (jobs, held): (Vec<_>, Vec<_>) = store
        .into_iter()
        // The cheap test first: `is_queued` checks the pod template.
        .partition(|j| ctx.held(&j.namespace().unwrap_or_default()).is_none() || !mapping::is_queued(j));
    write::hold(ctx, &held).await;
    // A queued job is placed only once its reconcile has added the cleanup finalizer:
    // the placement would otherwise conflict with that write (and be retried).
    let jobs: Vec<_> = jobs
        .into_iter()
        .filter(|j| {
            j.finalizers().iter().any(|f| f == crate::job::names::FINALIZER) || !mapping::is_queued(j)
        })
        .collect();
    // Decisions and evictions name their jobs by id.
    let index = mapping::JobIndex::new(&jobs);
    let providers = ctx.providers.state();
    // A tenant selector decided before the namespaces are listed would admit nobody, and
    // its tenants' jobs would go to dearer providers.
    let selectors = providers.iter().any(|p| {
        p.spec
            .tenants
            .as_ref()
            .is_some_and(|t| t.namespace_selector.is_some())
    });
    if selectors && !ctx.namespaces_synced.is_synced() {
        tracing::debug!("waiting for the namespace cache (providers' tenant selectors need it)");
        return Ok(0);
    }
    forget_deleted(ctx).await;
    let fleet = ctx.fleet.snapshot().await;
    let (mut snap, mut findings) = mapping::snapshot_checked(&jobs, &providers, &fleet);
    mapping::avoid_forbidding(&mut snap, &jobs, crate::time::now());
    mapping::tenants::admit(&mut snap, &providers, |ns| namespace_labels(ctx, ns));
    let mut carried = carried.lock().await;
    let held_gpus = mapping::holds::apply(&mut snap, &mut carried.holds, &jobs, &fleet, crate::time::now());
    ctx.metrics.held_for_preemptors_gpus.set(i64::from(held_gpus));
    // Disruption budgets; drains before placing: their evictions spend the budgets
    // first, and run even when nothing queues.
    let (budgets, mut replicas) = crate::service::budget::keys(&jobs, &ctx.services.state());
    let now = crate::time::now();
    let drained = drain::round_victims(
        &jobs,
        &providers,
        &replicas,
        &budgets,
        |ns| namespace_labels(ctx, ns),
        now,
    );
    if let Ok(mut held) = ctx.drain_held.write() {
        held.clone_from(&drained.held);
    }
    if !drained.evict.is_empty() {
        drain::mark(ctx, &index, &drained.evict, now, written).await;
        for (job, _, _) in &drained.evict {
            replicas.remove(job);
            if let Some(r) = snap.running.iter_mut().find(|r| &r.job == job) {
                r.evicting = true;
            }
        }
    }
    crate::service::budget::apply(&mut snap, &budgets, &replicas);
    snap.quotas = crate::quota::plan::caps(&ctx.quotas.state(), &jobs, now);
    report_findings(&findings);
    ctx.metrics.set_excluded(&findings);
    ctx.metrics
        .queue_depth_jobs
        .set(i64::try_from(snap.jobs.len()).unwrap_or(i64::MAX));
    let (total, free) = fleet_gpus(&snap);
    ctx.metrics.set_fleet_gpus(total, free);
    let ready = ready_providers(&providers);
    ctx.metrics
        .set_providers(ready, providers.len().saturating_sub(ready));
    if snap.jobs.is_empty() {
        ctx.metrics.held_by_disruption_budget_jobs.set(0);
        ctx.metrics.held_by_quota_jobs.set(0);
        ctx.metrics.set_unplaced(&[]);
        return Ok(0);
    }
    snap.reservations = carried.reservations.clone();
    let cfg = ctx.config.preemption.engine_config();
    let (decisions, left_out) = mapping::sanitize::place_leaving_out(&mut snap, &cfg);
    if !left_out.is_empty() {
        report_findings(&left_out);
        findings.extend(left_out);
        ctx.metrics.set_excluded(&findings);
    }
    let mut decisions = match decisions {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "placement snapshot rejected");
            // Nothing was placed, so nothing is known to be held by a quota or a budget:
            // last round's figures would hide this stall from GpufedQueueStalled.
            ctx.metrics.held_by_disruption_budget_jobs.set(0);
            ctx.metrics.held_by_quota_jobs.set(0);
            return Ok(0);
        }
    };
    carried.reservations = decisions.reservations.clone();
    let by_id = |id: &str| index.get(id).cloned();
    let now = crate::time::now();
    // `verifiedOnly` work starts only on nodes that passed a challenge lately (this
    // term's knowledge of them: see `Verifier::enter_term`).
    ctx.verifier.enter_term(ctx.leadership.term());
    let deferred = ctx.verifier.defer_stale(&snap, &mut decisions.placements);
    // Writes are independent (one job each): send them concurrently, 16 at a time.
    let mut placed = 0;
    // A placement that evicts running work is not written yet: its victims are marked, and
    // it is placed by a later round once they have stopped ([`evict`]).
    let (evicting, placing): (Vec<_>, Vec<_>) =
        decisions.placements.iter().partition(|p| !p.evicts.is_empty());
    for p in evicting {
        if !ctx.leadership.is_leader() {
            break;
        }
        // Its room stays held until its victims are gone, whichever leaves first.
        let hold = mapping::holds::Hold::of(p, &snap);
        evict::evict(ctx, &index, p, hold.as_ref().map(|h| h.status()), now, written).await;
        if let Some(hold) = hold {
            carried.holds.insert(p.job.clone(), hold);
        }
    }
    let todo: Vec<_> = placing
        .into_iter()
        .filter_map(|p| Some((by_id(&p.job)?, p)))
        .collect();
    for chunk in todo.chunks(16) {
        // A replica frozen mid-round (SIGSTOP, a VM pause) may resume after its Lease has
        // passed on: the writes are fenced anyway, but it should not even try.
        if !ctx.leadership.is_leader() {
            tracing::info!("leadership lapsed during the round; its remaining placements are dropped");
            break;
        }
        let results = futures::future::join_all(
            chunk
                .iter()
                .map(|(job, p)| write::write_placement(ctx, job, p, now)),
        )
        .await;
        for ((_, p), result) in chunk.iter().zip(results) {
            match result {
                Ok(job) => {
                    let uid = job.uid().unwrap_or_default();
                    written.lock().await.insert(uid, (Instant::now(), Arc::new(job)));
                    placed += 1;
                    ctx.metrics.placements_total.inc();
                    tracing::info!(job = %p.job, provider = %p.provider, price = p.price, "placed");
                }
                Err(e) => {
                    tracing::info!(job = %p.job, error = %e, "placement not written; next round retries")
                }
            }
        }
    }
    let held = decisions
        .unplaced
        .iter()
        .filter(|u| matches!(u.explanation.primary(), Some(pl::Reason::Protected { .. })))
        .count();
    ctx.metrics
        .held_by_disruption_budget_jobs
        .set(i64::try_from(held).unwrap_or(i64::MAX));
    let by_quota = decisions
        .unplaced
        .iter()
        .filter(|u| matches!(u.explanation, pl::Explanation::Quota(_)))
        .count();
    ctx.metrics
        .held_by_quota_jobs
        .set(i64::try_from(by_quota).unwrap_or(i64::MAX));
    let awaiting = crate::verification::fresh::AWAITING_VERIFICATION;
    let reasons: Vec<&'static str> = decisions
        .unplaced
        .iter()
        .map(|u| unplaced_reason(&u.explanation))
        .chain(deferred.jobs.iter().map(|_| awaiting))
        .collect();
    ctx.metrics.set_unplaced(&reasons);
    // Mostly held back by a service's disruption budget, kept out by providers' tenant
    // policies, node labels or CPU and memory: said in the reason too.
    let unplaced = decisions.unplaced.iter().filter_map(|u| {
        let job = by_id(&u.job)?;
        let message = unplaced_message(&job, &u.explanation);
        Some((job, unplaced_reason(&u.explanation), message))
    });
    let waiting = deferred
        .jobs
        .iter()
        .filter_map(|(id, message)| Some((by_id(id)?, awaiting, message.clone())));
    for (job, reason, message) in unplaced.chain(waiting) {
        let current = job
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::PLACED));
        if current.is_some_and(|c| c.message == message && c.reason == reason) {
            continue;
        }
        let mut status = job.status.clone().unwrap_or_default();
        let cond = conditions::condition(
            types::PLACED,
            False,
            reason,
            message,
            job.metadata.generation,
            &crate::time::format(now),
        );
        conditions::set(&mut status.conditions, cond);
        // No longer waiting for evictions: it holds nothing.
        status.held = None;
        if let Err(e) = crate::job::write_status(ctx, &job, &status).await {
            tracing::debug!(job = %job.name_any(), error = %e, "explanation not written");
        }
    }
    Ok(placed)
}

/// Logs what of the members' reports a round left out. Invalid nodes only at debug: the
/// provider controller warns of them (and sets the provider's `Ready` reason) once a
/// heartbeat, where rounds run every few seconds. A provider left out whole (the engine
/// rejected its part, which cleaned nodes should never cause: a bug) is warned of every
/// time.
fn report_findings(findings: &[mapping::sanitize::Finding]) {
    for f in findings {
        if matches!(f.problem, mapping::sanitize::Problem::Rejected(_)) {
            tracing::warn!(provider = %f.provider, reason = %f.problem, "provider left out of the placement round");
        } else {
            tracing::debug!(provider = %f.provider, reason = %f.problem, "reported node left out of the placement round");
        }
    }
}

/// The snapshot's GPUs: `(total, free)` over the nodes of the providers placement may use
/// this round (Ready and not paused; only ready nodes).
pub fn fleet_gpus(snap: &pl::Snapshot) -> (u64, u64) {
    snap.providers
        .iter()
        .flat_map(|p| &p.nodes)
        .fold((0, 0), |(total, free), n| {
            (total + u64::from(n.gpus), free + n.free.len() as u64)
        })
}

/// How many of `providers` report `Ready=True`.
pub fn ready_providers(providers: &[Arc<GpuProvider>]) -> usize {
    providers
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, types::READY))
        })
        .count()
}

pub mod drain;
mod evict;
pub(crate) mod write;
pub use evict::{PREEMPTING, Preemption, mark_stands, marked_status, waiting_message};

#[cfg(test)]
mod tests;
