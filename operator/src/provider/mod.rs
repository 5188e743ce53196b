//! The provider controller: observe the member cluster (I/O) → plan the status (pure)
//! → write it (server-side apply, one field manager). Runs every heartbeat interval.

mod observe;
pub mod plan;

pub use observe::{gpu_node, gpu_pod};

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use gpufed_api::GpuProvider;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::ControllerLabel;

/// Reconciles one provider.
#[tracing::instrument(skip_all, fields(provider = %provider.name_any()))]
pub async fn reconcile(provider: Arc<GpuProvider>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(ctx.config.heartbeat_interval));
    }
    let started = Instant::now();
    let name = provider.name_any();
    let probe = match ctx.members.client(&provider).await {
        Ok(client) => observe::probe(client, &provider).await.map_err(|e| e.to_string()),
        Err(Error::Hub(e)) => return Err(Error::Hub(e)),
        Err(e) => Err(e.to_string()),
    };
    match &probe {
        Ok(view) => ctx.fleet.update(&name, view.clone()).await,
        Err(e) => {
            tracing::warn!(error = %e, "provider unreachable");
            ctx.fleet.mark_unreachable(&name).await;
        }
    }
    let now = crate::time::now();
    let status = plan::status(&provider, &probe, now, &crate::time::format(now));
    if provider.status.as_ref() != Some(&status) {
        write_status(&ctx, &provider, status).await?;
    }
    ctx.metrics
        .reconcile_duration_seconds
        .get_or_create(&ControllerLabel {
            controller: "provider",
        })
        .observe(started.elapsed().as_secs_f64());
    crate::context::succeeded(&ctx, "provider", provider.as_ref());
    Ok(Action::requeue(ctx.config.heartbeat_interval))
}

async fn write_status(
    ctx: &Context,
    provider: &GpuProvider,
    status: gpufed_api::GpuProviderStatus,
) -> Result<()> {
    let api: Api<GpuProvider> = Api::all(ctx.hub.clone());
    // The resourceVersion in an apply body is a precondition: a stale leader's write
    // (or one racing a newer observation) is refused with 409.
    let patch = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "GpuProvider",
        "metadata": {"resourceVersion": provider.resource_version()},
        "status": status,
    });
    api.patch_status(
        &provider.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::hub("GpuProvider status", e))?;
    Ok(())
}

/// The provider controller's watch configuration.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Runs the provider controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    controller: Controller<GpuProvider>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::context::error_policy("provider"), ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
