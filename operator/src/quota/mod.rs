//! The ComputeQuota controller: observe (the quota, its namespace's jobs in the job
//! cache, as grouped by [`crate::job::views`]) → plan (pure, [`plan::status`]) → status (server-side apply, only when it
//! changed). Enforcement is the placement round's: it hands the namespaces' caps
//! ([`plan::caps`]) to the engine, which holds back a job that would exceed them.
//!
//! Usage changes with every placement and every ended attempt; rather than a second watch
//! of all ComputeJobs, each quota is looked at again every few seconds (writing nothing
//! when nothing changed).

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gpufed_api::ComputeQuota;
use gpufed_api::quota::ComputeQuotaStatus;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{Error, Result};

/// How often a quota's status is refreshed when nothing else wakes it.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The quota controller and whether its cache is listed (placement waits for it: a
/// round before it would place past every quota).
pub fn controller(hub: &kube::Client) -> (Controller<ComputeQuota>, crate::synced::Synced) {
    let (ctl, synced) = crate::synced::controller(
        Api::<ComputeQuota>::all(hub.clone()),
        watcher::Config::default().any_semantic(),
    );
    (
        ctl.trigger_backoff(crate::backoff::WatchBackoff::default()),
        synced,
    )
}

/// Runs the quota controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    controller: Controller<ComputeQuota>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::context::error_policy("quota"), ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Reconciles one quota's status.
#[tracing::instrument(skip_all, fields(quota = %format!("{}/{}", quota.namespace().unwrap_or_default(), quota.name_any())))]
pub async fn reconcile(quota: Arc<ComputeQuota>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.leadership.is_leader() || ctx.jobs_synced.wait().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let views = ctx.job_views.get(&ctx.jobs, std::time::Instant::now());
    let mine: Vec<&gpufed_api::ComputeJob> = views
        .of_namespace(quota.metadata.namespace.as_deref().unwrap_or_default())
        .iter()
        .map(AsRef::as_ref)
        .collect();
    let status = plan::status(&quota, &mine, &crate::time::format(crate::time::now()));
    if quota.status.as_ref() != Some(&status) {
        write_status(&ctx, &quota, &status).await?;
    }
    crate::context::succeeded(&ctx, "quota", quota.as_ref());
    Ok(Action::requeue(REFRESH))
}

async fn write_status(ctx: &Context, quota: &ComputeQuota, status: &ComputeQuotaStatus) -> Result<()> {
    let api: Api<ComputeQuota> = Api::namespaced(ctx.hub.clone(), &quota.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "ComputeQuota",
        "metadata": {"resourceVersion": quota.resource_version()},
        "status": status,
    });
    api.patch_status(
        &quota.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::hub("ComputeQuota status", e))?;
    Ok(())
}
