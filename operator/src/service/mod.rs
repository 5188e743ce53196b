//! The ComputeService controller: observe the replica jobs (the job store) → plan (pure,
//! [`plan`]) → create / retire / delete replicas and write the hub Service and Endpoints
//! → status (server-side apply, resourceVersion as precondition).
//!
//! Placement, dispatch, failover, metering and settlement of each replica are the job
//! controller's: a replica is an ordinary `ComputeJob` with `spec.serving`.

pub mod budget;
pub mod build;
pub mod history;
pub mod listing;
pub mod observe;
pub mod plan;
pub mod progress;
pub mod retire;
mod revisions;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gpufed_api::common::ConditionStatus::{False, True};
use gpufed_api::conditions;
use gpufed_api::service::ServiceSpread;
use gpufed_api::serving::LABEL_SERVICE;
use gpufed_api::{ComputeJob, ComputeService};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::job::events;

/// Condition: the hub Service routes to the ready replicas.
pub const ROUTED: &str = "Routed";

fn replicas(ctx: &Context, svc: &ComputeService) -> Vec<ComputeJob> {
    replicas_and_taken(ctx, svc).0
}

/// The service's replicas, and the names of the jobs of its namespace that look like its
/// replicas but are not ours ([`observe::replicas_and_taken`]).
fn replicas_and_taken(
    ctx: &Context,
    svc: &ComputeService,
) -> (Vec<ComputeJob>, std::collections::BTreeSet<String>) {
    // Fresh from the cache, not `job::views` (up to a second old): what exists decides
    // what is created and retired.
    let jobs = ctx.jobs.state();
    observe::replicas_and_taken(svc, jobs.iter().map(AsRef::as_ref))
}

/// Each provider's region, when the service spreads by region (which replicas retire
/// first depends on it).
fn regions(ctx: &Context, svc: &ComputeService) -> retire::Regions {
    if svc.spec.spread != ServiceSpread::Region {
        return retire::Regions::new();
    }
    let providers = ctx.providers.state();
    providers
        .iter()
        .map(|p| (p.name_any(), p.spec.region.clone()))
        .collect()
}

async fn write_status(
    ctx: &Context,
    svc: &ComputeService,
    status: &gpufed_api::ComputeServiceStatus,
) -> Result<()> {
    let api: Api<ComputeService> = Api::namespaced(ctx.hub.clone(), &svc.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "ComputeService",
        "metadata": {"resourceVersion": svc.resource_version()},
        "status": status,
    });
    api.patch_status(
        &svc.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::hub("ComputeService status", e))?;
    let before = svc.status.as_ref().map_or(&[][..], |s| &s.conditions);
    let stalled = events::newly_stalled(before, &status.conditions);
    if let Some(n) = &stalled {
        let reason = n.reason.clone();
        ctx.metrics
            .service_stalls_total
            .get_or_create(&crate::metrics::StallLabel { reason })
            .inc();
    }
    ctx.reporter.publish(
        kube::Resource::object_ref(svc, &()),
        stalled.into_iter().collect(),
    );
    Ok(())
}

/// The hub Service and its Endpoints; in the result, how many replicas are routed, or
/// why (reason, message) some or all could not be. A Service of that name that is not
/// ours is left alone (never overwritten).
async fn route(
    ctx: &Context,
    svc: &ComputeService,
    ready: &[String],
) -> Result<std::result::Result<usize, (&'static str, String)>> {
    let ns = svc.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(ctx.hub.clone(), &ns);
    let existing = services
        .get_opt(&svc.name_any())
        .await
        .map_err(|e| Error::hub("Service", e))?;
    let ours = |s: &Service| {
        s.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == svc.uid().as_ref())
    };
    if existing.as_ref().is_some_and(|s| !ours(s)) {
        let msg = format!(
            "Service {ns}/{} exists and is not this ComputeService's; no hub address",
            svc.name_any()
        );
        return Ok(Err(("ServiceNameTaken", msg)));
    }
    let pp = PatchParams::apply(crate::FIELD_MANAGER).force();
    let body = crate::job::dispatch::manifest(&build::hub_service(svc)).map_err(Error::Json)?;
    services
        .patch(&svc.name_any(), &pp, &Patch::Apply(&body))
        .await
        .map_err(|e| Error::hub("Service", e))?;
    let endpoints: Api<Endpoints> = Api::namespaced(ctx.hub.clone(), &ns);
    let (eps, refused) = build::hub_endpoints(svc, ready, &ctx.serving_cidrs);
    let body = crate::job::dispatch::manifest(&eps).map_err(Error::Json)?;
    endpoints
        .patch(&svc.name_any(), &pp, &Patch::Apply(&body))
        .await
        .map_err(|e| Error::hub("Endpoints", e))?;
    if !refused.is_empty() {
        let msg = format!(
            "not routed at the hub (not an IP, or outside --serving-endpoint-cidrs): {}",
            refused.join(", ")
        );
        return Ok(Err(("EndpointRefused", msg)));
    }
    Ok(Ok(ready.len()))
}

async fn apply_plan(ctx: &Context, svc: &ComputeService, plan: &plan::Plan) -> Result<()> {
    let ns = svc.namespace().unwrap_or_default();
    let jobs: Api<ComputeJob> = Api::namespaced(ctx.hub.clone(), &ns);
    let revision = |name: &str| {
        let job = ctx.jobs.get(&ObjectRef::new(name).within(&ns));
        job.and_then(|j| j.labels().get(build::LABEL_REVISION).cloned())
            .unwrap_or_else(|| "?".into())
    };
    // What happened, for `kubectl describe csvc` (published even if a later call fails).
    let mut told = Vec::new();
    let result = async {
        // Retire before creating: a replica created first would, for a moment, stand
        // beside the old one it replaces, one more than `rollout.maxSurge` allows (seen by
        // the serving e2e test's 100 ms sampler: 4 live replicas for 2 under maxSurge 1).
        for name in &plan.retire {
            let patch = serde_json::json!({"spec": {"suspend": true}});
            match jobs
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(replica = %name, "replica retiring");
                    ctx.metrics.service_replicas_retired_total.inc();
                    let msg = format!(
                        "replica {name} (revision {}) retiring: its attempt stops and is billed; deleted once metered",
                        revision(name)
                    );
                    told.push(events::note(false, "ReplicaRetiring", "Retire", msg));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::hub("ComputeJob", e)),
            }
        }
        for job in &plan.create {
            // Create, not apply: a lagging store must never resurrect or un-retire a replica.
            match jobs.create(&PostParams::default(), job).await {
                Ok(_) => {
                    tracing::info!(replica = %job.name_any(), "replica created");
                    ctx.metrics.service_replicas_created_total.inc();
                    let rev = job.labels().get(build::LABEL_REVISION).cloned().unwrap_or_default();
                    let msg = format!("replica {} created (revision {rev})", job.name_any());
                    told.push(events::note(false, "ReplicaCreated", "Create", msg));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(Error::hub("ComputeJob", e)),
            }
        }
        for name in &plan.delete {
            match jobs.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(replica = %name, "retired replica deleted (metered)");
                    let msg = format!("replica {name} deleted: stopped, its usage metered");
                    told.push(events::note(false, "ReplicaDeleted", "Delete", msg));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::hub("ComputeJob", e)),
            }
        }
        Ok(())
    }
    .await;
    ctx.reporter.publish(kube::Resource::object_ref(svc, &()), told);
    result
}

async fn apply(svc: Arc<ComputeService>, ctx: &Context) -> Result<Action> {
    // The history decides what a paused service runs, and must be complete to be kept.
    if ctx.revisions_synced.wait().await.is_err() {
        return Err(Error::Waiting("the revision cache is not listed".into()));
    }
    let cached = ctx.revisions.state();
    let existing = history::of(&svc, cached.iter().map(AsRef::as_ref));
    let paused = svc
        .spec
        .paused
        .then(|| history::in_effect(&svc, &existing))
        .flatten();
    let (replicas, taken) = replicas_and_taken(ctx, &svc);
    let mut plan = plan::plan_held(
        &svc,
        &replicas,
        &regions(ctx, &svc),
        ctx.settles,
        paused.as_ref(),
        crate::time::now(),
    );
    for (wanted, given) in plan::avoid_taken_names(&svc.name_any(), &mut plan.create, &replicas, &taken) {
        tracing::warn!(service = %svc.name_any(), %wanted, %given, "replica name taken by a job this service does not own");
    }
    apply_plan(ctx, &svc, &plan).await?;
    if let Some(hash) = &plan.revision {
        let number = revisions::keep(ctx, &svc, &existing, hash, &replicas).await?;
        plan.status.revision = Some(number);
    }
    // A name no Service may have is not routed (the plan stalls it); a routing failure
    // is reported and returned after the status is written, so the service never goes
    // without one.
    let routed = match gpufed_api::service::name_error(&svc.name_any()) {
        Some(e) => Ok(Err((validate::INVALID_SPEC, e))),
        None => route(ctx, &svc, &plan.ready_addresses).await,
    };
    let (status, reason, msg, failed) = match routed {
        Ok(Ok(n)) => (
            True,
            "Routed",
            format!("{n} ready replicas behind the hub Service"),
            None,
        ),
        Ok(Err((reason, msg))) => {
            if reason != "EndpointRefused" {
                plan.status.address = None;
            }
            (False, reason, msg, None)
        }
        Err(e) => (False, "RoutingFailed", e.to_string(), Some(e)),
    };
    let c = conditions::condition(
        ROUTED,
        status,
        reason,
        msg,
        svc.metadata.generation,
        &crate::time::format(crate::time::now()),
    );
    conditions::set(&mut plan.status.conditions, c);
    if svc.status.as_ref() != Some(&plan.status) {
        write_status(ctx, &svc, &plan.status).await?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let settling = !plan.retire.is_empty() || !plan.delete.is_empty();
    let every: u64 = if settling { 3 } else { 15 };
    // A replica that turns available (minReadySeconds) may let an old one retire.
    let next = (plan.recheck_in)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(every, |s| s.clamp(1, every));
    Ok(Action::requeue(Duration::from_secs(next)))
}

/// Deletion: every replica is retired (its attempt stopped and billed) and deleted once
/// metered; only then does the service go. Owner references would delete the jobs too,
/// but without waiting for their last usage to be metered.
async fn cleanup(svc: Arc<ComputeService>, ctx: &Context) -> Result<Action> {
    let replicas = replicas(ctx, &svc);
    if replicas.is_empty() {
        return Ok(Action::await_change());
    }
    let plan = plan::plan(
        &svc,
        &replicas,
        &regions(ctx, &svc),
        ctx.settles,
        crate::time::now(),
    );
    apply_plan(ctx, &svc, &plan).await?;
    Err(Error::Waiting(format!(
        "{} replicas to stop and be metered",
        replicas.len()
    )))
}

/// Reconciles one service.
#[tracing::instrument(skip_all, fields(service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())))]
pub async fn reconcile(svc: Arc<ComputeService>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    // A replica missing from a store that has not synced yet is not a missing replica.
    if ctx.jobs_synced.wait().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    crate::context::finalized(
        &ctx,
        "service",
        build::FINALIZER,
        svc,
        |s| apply(s, &ctx),
        |s| cleanup(s, &ctx),
    )
    .await
}

/// The service controller and the caches it fills.
pub struct Controllers {
    /// Services, woken by the replica jobs and revisions they own.
    pub controller: Controller<ComputeService>,
    /// Whether the cache of services is listed (placement waits for it: the services'
    /// disruption budgets must be known before a round may preempt).
    pub services_synced: crate::synced::Synced,
    /// The services' ControllerRevisions.
    pub revisions: kube::runtime::reflector::Store<ControllerRevision>,
    /// Whether `revisions` is listed.
    pub revisions_synced: crate::synced::Synced,
}

/// The service controller: services, the replica jobs and the revisions they own (a
/// revision deleted by hand is written again).
pub fn controller(hub: &kube::Client) -> Controllers {
    let (ctl, services_synced) = crate::synced::controller(
        Api::<ComputeService>::all(hub.clone()),
        watcher::Config::default().any_semantic(),
    );
    let (revisions, revisions_synced, revision_changes) = crate::synced::reflect(
        Api::<ControllerRevision>::all(hub.clone()),
        watcher::Config::default().labels(LABEL_SERVICE).any_semantic(),
    );
    let controller = ctl
        .owns(
            Api::<ComputeJob>::all(hub.clone()),
            watcher::Config::default().labels(LABEL_SERVICE).any_semantic(),
        )
        .owns_stream(revision_changes)
        .trigger_backoff(crate::backoff::WatchBackoff::default());
    Controllers {
        controller,
        services_synced,
        revisions,
        revisions_synced,
    }
}

/// Runs the service controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    controller: Controller<ComputeService>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::context::error_policy("service"), ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
