//! The ComputeQuota controller: observe (the quota, its namespace's jobs in the job
//! cache, as grouped by [`crate::job::views`]) → plan (pure, [`plan::status`]) → status (server-side apply, only when it
//! changed). Enforcement is the placement round's: it hands the namespaces' caps
//! ([`plan::caps`]) to the engine, which holds back a job that would exceed them.
//!
//! Usage changes with every placement and every ended attempt; rather than a second watch
//! of all ComputeJobs, each quota is looked at again every few seconds (writing nothing
//! when nothing changed).

pub mod plan;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Room reserved per namespace for its jobs waiting for their evictions
/// ([`plan::reserved_by_namespace`]). Their victims may be any namespace's, so it is
/// built from the whole job cache — at most once per [`crate::job::views::MAX_AGE`],
/// not once per quota refresh (as the views, for the same reason).
#[derive(Debug, Default)]
pub struct Reserved {
    memo: Mutex<Option<(Instant, Arc<Rooms>)>>,
}

type Rooms = BTreeMap<String, (u32, gpufed_placement::Micros)>;

impl Reserved {
    fn get(&self, ctx: &Context, at: Instant, now: i64) -> Arc<Rooms> {
        let build = || Arc::new(plan::reserved_by_namespace(&ctx.jobs.state(), now));
        // Built under the lock: quotas reconciled meanwhile wait for this build.
        let Ok(mut memo) = self.memo.lock() else {
            return build();
        };
        if let Some((built, rooms)) = memo.as_ref()
            && at.saturating_duration_since(*built) < crate::job::views::MAX_AGE
        {
            return Arc::clone(rooms);
        }
        let rooms = build();
        *memo = Some((at, Arc::clone(&rooms)));
        rooms
    }
}

/// Runs the quota controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    controller: Controller<ComputeQuota>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let reserved = Arc::new(Reserved::default());
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            move |quota, ctx| reconcile(quota, ctx, Arc::clone(&reserved)),
            crate::context::error_policy("quota"),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Reconciles one quota's status.
#[tracing::instrument(skip_all, fields(quota = %format!("{}/{}", quota.namespace().unwrap_or_default(), quota.name_any())))]
pub async fn reconcile(
    quota: Arc<ComputeQuota>,
    ctx: Arc<Context>,
    reserved: Arc<Reserved>,
) -> Result<Action> {
    if !ctx.leadership.is_leader() || ctx.jobs_synced.wait().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let (at, now) = (Instant::now(), crate::time::now());
    let namespace = quota.metadata.namespace.as_deref().unwrap_or_default();
    let views = ctx.job_views.get(&ctx.jobs, at);
    let mine: Vec<&gpufed_api::ComputeJob> =
        views.of_namespace(namespace).iter().map(AsRef::as_ref).collect();
    // What the placement round counts against the caps besides live work
    // ([`plan::caps`]): shown, or a job held "8 of its 8 GPUs" meets a quota saying 4.
    let kept = reserved
        .get(&ctx, at, now)
        .get(namespace)
        .copied()
        .unwrap_or_default();
    let status = plan::status_reserving(&quota, &mine, kept, &crate::time::format(now));
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
